"""The bench's modules share the output folder's layout (:mod:`causalfuse.bench.files`) without importing one another in a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import causalfuse.bench

BENCH = Path(causalfuse.bench.__file__).parent


def _bench_imports(module: Path) -> set[str]:
    """The sibling modules ``module`` imports anywhere (functions included), e.g. ``{"files", "scenes"}``."""
    siblings = {p.stem for p in BENCH.glob("*.py")}
    found = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found & siblings


def test_no_import_cycle_between_bench_modules():
    graph = {p.stem: _bench_imports(p) for p in BENCH.glob("*.py")}
    assert graph["files"] == set()
    assert "runner" not in graph["report"] | graph["scenes"]

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                seen.add(nxt)
                todo.append(nxt)
        return seen

    cycles = sorted(name for name in graph if name in reach(name))
    assert cycles == [], f"modules that import themselves through others: {cycles}"

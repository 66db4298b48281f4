"""Issue 14's target, checked: which methods does a method beat on 3 of the 4 metrics, VIF among them?

The issue asks that the bundled ``causalfuse`` beat every published method of
``../shared/PEERS.md`` and every classical method of the bench, on each val
set, on at least 3 of the paper's 4 metrics (MI, VIF, Qabf, SSIM) with VIF
among them. This script applies that rule to the means of a bench run
(``results.csv``; the bench's own methods and its ``--external`` columns)
and of the published tables in ``PEERS.md`` (the methods the bench did not
score), for every method against every other, and prints per set:

* for each candidate, the competitors it does not beat and the metrics on
  which it is behind them;
* how many methods meet the rule on that set (against all the others).

Means are over all the images of a set that the bench scored for the method
(a method that lacks images gets its row marked with the count). Ties count
as not beating.

    python benchmarks/target_rule.py bench-val --peers ../shared/PEERS.md
    python benchmarks/target_rule.py bench-val --peers ../shared/PEERS.md --candidates causalfuse causalfuse-nobaffm
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

METRICS = ("MI", "VIF", "Qabf", "SSIM")
REQUIRED = "VIF"  # the metric that must be among those won
WINS_NEEDED = 3

#: PEERS.md names its sets as the tables' headings do; the bench names them by folder.
SET_ALIASES = {"LLVIP_test": "LLVIP"}

Scores = dict[str, dict[str, dict[str, float]]]  # set -> method -> metric -> mean


class RuleError(ValueError):
    """A file this script reads is missing or not in the expected form."""


def bench_means(folder: Path) -> tuple[Scores, dict[tuple[str, str], int]]:
    """Means of ``METRICS`` per set and method of a bench run, and the image count of each (the bench's own summary)."""
    from causalfuse.bench.results import load_run, summarise
    from causalfuse.errors import CausalFuseError

    if not (folder / "results.csv").is_file():
        raise RuleError(f"{folder / 'results.csv'}: not found (give the output folder of a `causalfuse bench` run)")
    try:
        cells = summarise(load_run(folder))
    except CausalFuseError as exc:
        raise RuleError(str(exc)) from None
    scores: Scores = defaultdict(lambda: defaultdict(dict))
    counts: dict[tuple[str, str], int] = {}
    for (dataset, metric, method), cell in cells.items():
        if metric in METRICS and cell.n:
            scores[dataset][method][metric] = cell.mean
            counts[dataset, method] = max(counts.get((dataset, method), 0), cell.n)
    return scores, counts


def peers_means(path: Path) -> Scores:
    """The published methods' means from the ``### <set>`` tables of ``PEERS.md`` (bold marks dropped)."""
    if not path.is_file():
        raise RuleError(f"{path}: not found")
    scores: Scores = defaultdict(lambda: defaultdict(dict))
    dataset, methods = None, []
    for line in path.read_text().splitlines():
        heading = re.match(r"^###\s+(\S+)", line)
        if heading:
            name = heading.group(1)
            dataset, methods = SET_ALIASES.get(name, name), []
            continue
        if dataset is None or not line.startswith("|"):
            continue
        cells = [c.strip().strip("*") for c in line.strip().strip("|").split("|")]
        if cells[0] == "metric":
            methods = cells[1:]
        elif cells[0] in METRICS and methods:
            for method, cell in zip(methods, cells[1:]):
                try:
                    scores[dataset][method][cells[0]] = float(cell)
                except ValueError as exc:
                    raise RuleError(f"{path}: {dataset}, {method}, {cells[0]}: {cell!r} is not a number") from exc
    if not scores:
        raise RuleError(f"{path}: no table of the form '### <set>' / '| metric | <methods> |' found")
    return scores


def beats(a: dict[str, float], b: dict[str, float]) -> bool:
    """The issue's rule: ``a`` higher than ``b`` on at least 3 of the 4 metrics, VIF among them."""
    won = [m for m in METRICS if a[m] > b[m]]
    return REQUIRED in won and len(won) >= WINS_NEEDED


def merge(bench: Scores, peers: Scores, drop: set[str]) -> Scores:
    """The bench's means with the published methods the bench did not score added (PEERS.md's numbers)."""
    merged: Scores = {}
    for dataset in sorted(set(bench) | set(peers)):
        methods = {m: dict(v) for m, v in peers.get(dataset, {}).items()}
        methods.update({m: dict(v) for m, v in bench.get(dataset, {}).items()})
        merged[dataset] = {m: v for m, v in methods.items() if m not in drop and all(k in v for k in METRICS)}
    return merged


def report(scores: Scores, candidates: list[str] | None, counts: dict[tuple[str, str], int]) -> str:
    """The Markdown report (see the module text)."""
    out = [f"Rule: higher on at least {WINS_NEEDED} of {', '.join(METRICS)}, {REQUIRED} among them.", ""]
    for dataset, methods in scores.items():
        out += [f"## {dataset} ({len(methods)} methods)", "", "| method | n | beats | does not beat (behind on) |", "|---|---:|---:|---|"]
        meeting = []
        for name in sorted(methods, key=lambda m: (candidates is not None and m not in candidates, m)):
            if candidates is not None and name not in candidates:
                continue
            others = [o for o in methods if o != name]
            lost = [o for o in others if not beats(methods[name], methods[o])]
            if not lost:
                meeting.append(name)
            behind = "; ".join(f"{o} ({', '.join(m for m in METRICS if methods[name][m] <= methods[o][m])})" for o in sorted(lost))
            n = counts.get((dataset, name))
            out.append(f"| {name} | {n if n else 'published'} | {len(others) - len(lost)} of {len(others)} | {behind or '-'} |")
        out += ["", f"Methods that meet the rule on {dataset}: {', '.join(meeting) if meeting else 'none'}.", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bench", type=Path, help="output folder of a `causalfuse bench` run (its results.csv)")
    parser.add_argument("--peers", type=Path, help="PEERS.md with the published methods' tables (../shared/PEERS.md)")
    parser.add_argument("--candidates", nargs="+", help="methods to report (default: every method)")
    parser.add_argument("--drop", nargs="+", default=[], help="methods to leave out (as candidates and as competitors)")
    args = parser.parse_args(argv)
    try:
        bench, counts = bench_means(args.bench)
        peers = peers_means(args.peers) if args.peers else {}
        scores = merge(bench, peers, set(args.drop))
        unknown = [c for c in args.candidates or [] if not any(c in methods for methods in scores.values())]
        if unknown:
            raise RuleError(f"no scores for {', '.join(unknown)} in {args.bench / 'results.csv'}" + (f" or {args.peers}" if args.peers else ""))
        print(report(scores, args.candidates, counts))
    except RuleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Images per second of ``fuse_folder``: this checkout against an earlier commit, interleaved in one run.

    python benchmarks/folder_speed.py [--methods causalfuse laplacian-pyramid] [--repeats 2] [--baseline REV]

Both versions fuse the same folders (default ``../shared/data/val/RoadScene50``,
50 colour pairs of about 500 x 330) into temporary folders with
``overwrite=True``, each run in a fresh process as ``causalfuse fuse`` runs:
one untimed warm-up run of each version first (so both meet a warm
``torch.compile`` cache), then old, new, old, new, ... Interleaving is what
makes the ratio fair on a machine that other processes share: a change of load
hits both versions alike. The load average is printed beside every run, and
the CPU time of the process during ``fuse_folder`` (model creation included):
CPU time above the run's seconds means its threads did run side by side.

The rate is the one ``fuse_folder`` reports: pairs written per second from the
first read to the last write (the first pair includes loading the compiled
kernels, the same for both). The baseline (default: the commit before folder
runs were pipelined, i.e. before ``causalfuse/_pipeline.py`` was added) is
taken with ``git archive`` into a temporary folder. The two versions' outputs
are compared byte for byte at the end.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CAUSALFUSE_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data" / "val" / "RoadScene50"

# Run in the child with PYTHONPATH set to one version's src folder.
CHILD = """
import importlib, json, sys, time
import causalfuse
fuse_module = importlib.import_module("causalfuse.fuse")  # the submodule (the package's `fuse` is the function)
cpu = time.process_time()
result = fuse_module.fuse_folder(*sys.argv[1:4], method=sys.argv[4], overwrite=True, progress=False)
print(json.dumps({"written": len(result.written), "seconds": result.seconds, "cpu": time.process_time() - cpu,
                  "module": causalfuse.__file__}))
"""


def default_baseline() -> str:
    """The commit before the one that added the folder pipeline (``src/causalfuse/_pipeline.py``)."""
    added = subprocess.run(
        ["git", "log", "--diff-filter=A", "--format=%H", "--", "src/causalfuse/_pipeline.py"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()
    if not added:
        sys.exit("no commit adds src/causalfuse/_pipeline.py here; pass --baseline REV")
    return f"{added[-1]}^"


def extract(rev: str, dest: Path) -> Path:
    """The ``src`` folder of ``rev``, written below ``dest``."""
    archive = subprocess.run(["git", "archive", rev, "src"], cwd=REPO, capture_output=True, check=True).stdout
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


def run_once(src: Path, ir: Path, vi: Path, out: Path, method: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(ir), str(vi), str(out), method], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        sys.exit(f"{method} with {src} failed:\n{proc.stderr[-2000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    if not res["module"].startswith(str(src)):
        sys.exit(f"the child imported {res['module']}, not the version in {src}")
    return res


def same_outputs(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.glob("*.png"))
    if names != sorted(p.name for p in b.glob("*.png")):
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    return not mismatch and not errors


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ir", type=Path, default=DATA / "ir")
    parser.add_argument("--vi", type=Path, default=DATA / "vi")
    parser.add_argument("--methods", nargs="+", default=["causalfuse", "laplacian-pyramid"])
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each version per method (default 2)")
    parser.add_argument("--baseline", help="the commit to compare against (default: the one before the folder pipeline)")
    args = parser.parse_args(argv)

    baseline = subprocess.run(
        ["git", "rev-parse", "--short", args.baseline or default_baseline()], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    print(f"{os.cpu_count()} cores; load average at start {load()}; baseline {baseline}", flush=True)
    with tempfile.TemporaryDirectory(prefix="folder_speed.") as tmp:
        tmp = Path(tmp)
        versions = {"old": extract(baseline, tmp / "old"), "new": REPO / "src"}
        for method in args.methods:
            outs = {name: tmp / f"out-{method}-{name}" for name in versions}
            for name, src in versions.items():
                run_once(src, args.ir, args.vi, outs[name], method)  # warm-up: compile cache, file cache
            rates: dict[str, list[float]] = {name: [] for name in versions}
            for i in range(args.repeats):
                for name, src in versions.items():
                    before = load()
                    res = run_once(src, args.ir, args.vi, outs[name], method)
                    rate = res["written"] / res["seconds"]
                    rates[name].append(rate)
                    print(
                        f"{method:18s} {name} run {i + 1}: {res['written']} pairs in {res['seconds']:6.1f} s, "
                        f"{rate:5.2f} images/s, CPU {res['cpu']:6.1f} s  (load {before} -> {load()})",
                        flush=True,
                    )
            old, new = (statistics.median(rates[name]) for name in ("old", "new"))
            identical = "identical" if same_outputs(outs["old"], outs["new"]) else "DIFFERENT"
            print(
                f"{method:18s} median images/s: old {old:.2f}, new {new:.2f} -> {new / old:.2f}x; outputs {identical}",
                flush=True,
            )
    print(f"load average at end {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

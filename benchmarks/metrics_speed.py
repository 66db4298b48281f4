"""How long each metric takes on one colour triplet (630 x 460 and 1280 x 1024).

    python benchmarks/metrics_speed.py [--repeats 7] [--colour gray|vifb|both] [--small-only] [--metrics all,fmi]

The 630 x 460 triplet is VIFB's ``carLight`` (ADF fusion) from
``../shared/oracle/vifb`` when present, else synthetic; the 1280 x 1024 one
is an LLVIP pair from ``../shared/data`` (fused = pixel average) when
present, else synthetic. Prints the median wall time and the median CPU time
of this process per metric (one thread, on the prepared channels) and in
total (the ``all`` selection; each further group, e.g. ``fmi``, on a line of
its own), then the wall time of the whole ``compute`` call from the 8-bit
images (validation and colour handling included) with all metrics and with
the paper's four, on one thread and in threads (one per core). Folder
scoring runs one process per core on top of this.
CPU time is the better number on a loaded machine: wall time also counts
the time other processes hold the cores.

The totals and ``compute(all)`` are the metrics of ``all`` (published
tables); the metrics that belong to groups (``liu2012``, ``piella``, ``fmi``)
are timed one by one after them, each on its own, with their groups. Those
are also timed on two threads of their own (``2 thr``: Qp and FMI split their
work into tasks; the others do not use threads), and set against the
original's time under GNU Octave where it is known (``octave``, ``x``: how
many times faster on one thread), from the Octave runs of
``../shared/oracle/more_metrics``: Qp about 2 s and NCIE 3 to 8 s per
630 x 460 triplet (the lower end is used: the speed-up is at least that),
FMI 7.6 ms per 3 x 3 window (about 36 minutes per feature at 630 x 460).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CAUSALFUSE_SHARED", REPO.parent / "shared"))


def _synthetic(h: int, w: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127 + 90 * np.sin(xx / 23.0) * np.cos(yy / 31.0)
    vi = np.clip(base[..., None] + rng.normal(0, 12, (h, w, 3)) + [0, 15, -15], 0, 255).astype(np.uint8)
    ir = np.clip(255 - base + rng.normal(0, 8, (h, w)), 0, 255).astype(np.uint8)
    ir3 = np.repeat(ir[..., None], 3, axis=2)
    fused = ((vi.astype(np.uint16) + ir3) // 2).astype(np.uint8)
    return fused, ir3, vi


def _triplets() -> list[tuple[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    from causalfuse.io import load_image

    out = []
    vifb = SHARED / "oracle" / "vifb"
    if (vifb / "fused" / "ADF" / "carLight.jpg").exists():
        t = tuple(load_image(vifb / sub / "carLight.jpg") for sub in ("fused/ADF", "ir", "vi"))
        out.append(("630x460 VIFB carLight/ADF", t))
    else:
        out.append(("630x460 synthetic", _synthetic(460, 630)))
    llvip = SHARED / "data" / "train" / "LLVIP"
    pair = None
    if (llvip / "ir").is_dir():
        for p in sorted((llvip / "ir").iterdir()):
            q = next((llvip / "vi").glob(p.stem + ".*"), None)
            if q is not None:
                ir, vi = load_image(p), load_image(q)
                if ir.shape[:2] == (1024, 1280) and vi.ndim == 3 and ir.dtype == vi.dtype == np.uint8:
                    ir3 = ir if ir.ndim == 3 else np.repeat(ir[..., None], 3, axis=2)
                    fused = ((vi.astype(np.uint16) + ir3) // 2).astype(np.uint8)
                    pair = (f"1280x1024 LLVIP {p.stem} (average)", (fused, ir3, vi))
                    break
    out.append(pair or ("1280x1024 synthetic", _synthetic(1024, 1280, 1)))
    return out


#: The originals' seconds under GNU Octave for the 630 x 460 triplet (see the docstring).
OCTAVE_S = {"Qp": 2.0, "NCIE": 3.0}
#: fmi.m's interpreted window loop under Octave, seconds per 3 x 3 window (both branches).
OCTAVE_FMI_WINDOW_S = 7.6e-3


def _octave_seconds(name: str, shape: tuple[int, ...], small: bool) -> float | None:
    """The original's time under Octave for one triplet of this size, where known."""
    if name.startswith("FMI_"):
        return OCTAVE_FMI_WINDOW_S * (shape[0] - 2) * (shape[1] - 2)
    return OCTAVE_S.get(name) if small else None


def _time(info, p, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of one metric on a prepared triplet, the sources' caches cleared each time."""
    from causalfuse.metrics import _run

    walls, cpus = [], []
    for _ in range(repeats):
        _clear_caches()  # one triplet: nothing known about its sources yet
        w0, c0 = time.perf_counter(), time.process_time()
        _run(info, p)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def _clear_caches() -> None:
    """Forget the sources' cached maps (kept between calls when many methods share a pair)."""
    from causalfuse.metrics import _filters

    _filters.source_cache.clear()
    try:
        from causalfuse.metrics import perceptual

        perceptual.clear_source_cache()
    except (ImportError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--colour", choices=("gray", "vifb", "both"), default="both")
    ap.add_argument("--small-only", action="store_true", help="only the 630 x 460 triplet")
    ap.add_argument("--metrics", default=None, help="names or groups to time (default: every registered metric)")
    args = ap.parse_args(argv)

    from causalfuse.metrics import _run, _thread_count, compute, get_metric, list_groups, list_metrics, prepare
    from causalfuse.metrics import resolve_metrics, set_default_threads

    names = [m.name for m in resolve_metrics(args.metrics)] if args.metrics else list_metrics()
    groups = {g: [n for n in members if n in names] for g, members in list_groups().items()}
    outside_all = [n for n in names if n not in list_groups()["all"]]
    colours = ["gray", "vifb"] if args.colour == "both" else [args.colour]
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; median of {args.repeats} runs; ms")
    triplets = _triplets()
    for k, (label, (f, ir, vi)) in enumerate(triplets[:1] if args.small_only else triplets):
        for colour in colours:
            prep_t = time.perf_counter()
            p = prepare(f, ir, vi, colour)  # type: ignore[arg-type]
            prep_ms = (time.perf_counter() - prep_t) * 1e3
            for name in names:  # warm-up (caches, imports)
                _run(get_metric(name), p)
            rows = []
            try:
                for name in names:
                    info = get_metric(name)
                    set_default_threads(1)  # the metric's own threads (FFTs, tasks): one
                    wall, cpu = _time(info, p, args.repeats)
                    wall2 = None
                    if name in outside_all:
                        set_default_threads(2)
                        wall2, _ = _time(info, p, args.repeats)
                    octave = _octave_seconds(name, f.shape, k == 0) if colour == "gray" else None  # the runs were grey
                    rows.append((name, wall * 1e3, cpu * 1e3, wall2, octave))
            finally:
                set_default_threads(None)
            print(f"\n{label}, colour={colour} (input preparation {prep_ms:.1f} ms)")
            width = max(8, *(len(n) for n in names))
            print(f"{'metric':<{width}} {'wall':>8} {'cpu':>8} {'2 thr':>8} {'octave':>8} {'x':>6}")
            for name, w, c, w2, octave in rows:
                two = f"{w2 * 1e3:8.1f}" if w2 is not None else f"{'':8}"
                octave_s = f"{octave:7.1f}s {octave * 1e3 / w:6.0f}" if octave is not None else ""
                print(f"{name:<{width}} {w:8.1f} {c:8.1f} {two} {octave_s}".rstrip())
            for group, members in groups.items():
                if members:
                    label3 = "total" if group == "all" else f"{group} total"
                    chosen = [r for r in rows if r[0] in members]
                    print(f"{label3:<{width}} {sum(r[1] for r in chosen):8.1f} {sum(r[2] for r in chosen):8.1f}")
            four = [r for r in rows if r[0] in ("MI", "VIF", "Qabf", "SSIM")]
            if four:
                print(f"{'paper 4':<{width}} {sum(r[1] for r in four):8.1f} {sum(r[2] for r in four):8.1f}")
            n = _thread_count(None)
            # compute() on the selections of published tables ('all' keeps the 18; groups are timed above)
            all_label = "all" if len(groups["all"]) == len(list_groups()["all"]) else "all, those chosen"
            for label2, which in ((all_label, groups["all"]), ("paper 4", [r[0] for r in four])):
                if not which:
                    continue
                for threads in sorted({1, n}):
                    walls = []
                    for _ in range(args.repeats):
                        _clear_caches()
                        w0 = time.perf_counter()
                        compute(f, ir, vi, which, colour=colour, threads=threads)  # type: ignore[arg-type]
                        walls.append(time.perf_counter() - w0)
                    print(
                        f"compute({label2}) from the 8-bit images, {threads} thread{'s' if threads > 1 else ''}: "
                        f"{statistics.median(walls) * 1e3:.1f} ms wall"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

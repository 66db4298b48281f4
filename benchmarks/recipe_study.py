"""Learning curves of training recipes on the val sets: quality against training budget.

Each *variant* is a set of training-configuration overrides (the keys of
``causalfuse train --set``) on top of a common recipe. Every variant and
seed is trained once, up to the largest budget, and snapshotted and scored
at every budget on the way (training resumes exactly, so the curve of one
run is what separate runs of each budget would give). Scores are the
paper's four metrics (MI, VIF, Qabf, SSIM; grey, as published tables) plus
two measures of wash-out: the mean grey level of the fused image and the
share of its pixels at 250 or above, with the sources' means beside them.

Everything is kept in the output folder and reused: ``runs/<variant>-s<seed>/``
(training runs, ``model_<steps>.safetensors`` snapshots) and ``scores.csv``
(one row per image and metric, written a whole (variant, seed, budget) at a
time). Re-running the same command resumes; ``--report-only`` re-makes
``summary.md`` and ``curves.png`` from ``scores.csv``. With ``--compare A B``
the summary adds a paired per-image Wilcoxon test of variant A against B
(per-image values averaged over the seeds first).

    python benchmarks/recipe_study.py -o study \\
        --train-data ../shared/data/train/MSRS ../shared/data/train/LLVIP \\
        --dictionary dict_n25.safetensors --lrrnet-weights ../shared/weights/lrrnet/lrrnet_official.model \\
        --val ../shared/data/val --budgets 100 300 \\
        --variant max=loss.intensity_target=max --variant mean=loss.intensity_target=mean
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from causalfuse.errors import CausalFuseError

METRICS = ("MI", "VIF", "Qabf", "SSIM")
EXTRA = ("mean_grey", "white_share")
FIELDS = ("variant", "seed", "steps", "dataset", "image", "metric", "value")


# ---------------------------------------------------------------- arguments


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=key=value[,key=value...]`` (or just ``NAME``: the common recipe) -> (name, overrides)."""
    name, _, rest = text.partition("=")
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise CausalFuseError(f"--variant {text!r}: expected NAME=key=value[,key=value...] with a plain NAME")
    return name, [item for item in rest.split(",") if item]


def parse_model(text: str) -> tuple[str, str, Path]:
    """``NAME[@SEED]=PATH`` of a trained checkpoint -> (name, seed, path)."""
    label, sep, path = text.partition("=")
    name, _, seed = label.partition("@")
    if not sep or not name or not (seed or "0").isdigit() or not Path(path).is_file():
        raise CausalFuseError(f"--model {text!r}: expected NAME[@SEED]=PATH of an existing checkpoint")
    return name, seed or "0", Path(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", required=True, help="study folder (created; reused to resume)")
    p.add_argument("--train-data", nargs="+", default=[])
    p.add_argument("--dictionary", help="confounder dictionaries (needed by variants with BAFFM)")
    p.add_argument("--lrrnet-weights", help="LRRNet's published weights (encoder initialisation)")
    p.add_argument("--val", default="../shared/data/val", help="folder of val sets (<set>/ir, <set>/vi)")
    p.add_argument("--max-images", type=int, default=0, help="score only the first K pairs of each val set (0: all)")
    p.add_argument("--budgets", type=int, nargs="+", default=[100, 300])
    p.add_argument("--variant", action="append", default=[], help="NAME=key=value[,key=value...] (repeatable)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--set", action="append", default=[], dest="common", help="override for every variant (key=value)")
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--head-only-steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--reference", action="append", default=[], help="method scored beside as it is (e.g. laplacian-pyramid, causalfuse: the bundled weights)")
    p.add_argument("--model", action="append", default=[], metavar="NAME[@SEED]=PATH", help="a trained checkpoint scored as variant NAME (seed SEED) at its recorded step count")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"), help="paired Wilcoxon test of variant A against B")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


# ---------------------------------------------------------------- scores file


def read_scores(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def append_scores(path: Path, rows: list[dict]) -> None:
    """Append one complete block of rows (the header first if the file is new), flushed to disk."""
    new = not path.exists()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
        f.flush()


# ---------------------------------------------------------------- scoring


def val_sets(root: Path, max_images: int) -> dict[str, list]:
    from causalfuse.bench.runner import dataset_roots, resolve_datasets

    pairs = resolve_datasets(dataset_roots([str(root)]))
    return {name: (p[:max_images] if max_images else p) for name, p in pairs.items()}


def score_method(fn, sets: dict[str, list], key: dict, progress: bool) -> list[dict]:
    """Fuse and score every val pair with ``fn`` (a luminance fusion method); rows for ``scores.csv``."""
    from tqdm.auto import tqdm

    from causalfuse import metrics
    from causalfuse.bench.runner import _fuse_one
    from causalfuse.io import load_image, rgb2gray_levels

    rows = []
    total = sum(len(p) for p in sets.values())
    with tqdm(total=total, desc=f"score {key['variant']} s{key['seed']} @{key['steps']}", disable=not progress, dynamic_ncols=True) as bar:
        for dataset, pairs in sets.items():
            for pair in pairs:
                fused, _ = _fuse_one(fn, pair)
                fused8 = np.rint(fused * 255.0).astype(np.uint8)
                values = metrics.compute(fused8, load_image(pair.ir), load_image(pair.vi), metrics=list(METRICS))
                grey = rgb2gray_levels(fused8.astype(np.float64)) if fused8.ndim == 3 else fused8.astype(np.float64)
                values["mean_grey"] = float(grey.mean())
                values["white_share"] = float((grey >= 249.5).mean())
                for metric, value in values.items():
                    rows.append({**key, "dataset": dataset, "image": pair.name, "metric": metric, "value": repr(float(value))})
                bar.update(1)
    return rows


# ---------------------------------------------------------------- training


def train_to(args, name: str, overrides: list[str], seed: int, steps: int, run: Path) -> Path:
    """The snapshot of variant ``name``, seed ``seed`` after ``steps`` steps (trained or resumed as needed)."""
    from causalfuse.train.config import TrainConfig, apply_overrides
    from causalfuse.train.loop import MODEL_FILE, STATE_FILE, train

    snapshot = run / f"model_{steps}.safetensors"
    if snapshot.exists():
        return snapshot
    base = TrainConfig(
        data=list(args.train_data), dictionary=args.dictionary, lrrnet_weights=args.lrrnet_weights, output=str(run),
        crop=args.crop, batch=args.batch, lr=args.lr, head_lr=args.head_lr, head_only_steps=args.head_only_steps,
        steps=steps, seed=seed, threads=args.threads, device=args.device, checkpoint_every=25, log_every=5,
        progress=not args.no_progress,
    ).to_dict()
    cfg = TrainConfig.from_dict(apply_overrides(base, [*args.common, *overrides])).validate()
    if not cfg.net.use_baffm and cfg.dictionary is not None:
        cfg.dictionary = None  # the ablation never reads the dictionary
    result = train(cfg, resume=(run / STATE_FILE).exists())
    if result.step < steps or not (run / MODEL_FILE).exists():
        raise CausalFuseError(f"{run} stopped at step {result.step} of {steps} ({result.stopped}); run again to resume")
    shutil.copyfile(run / MODEL_FILE, snapshot)
    return snapshot


# ---------------------------------------------------------------- report


def _means(rows: list[dict[str, str]]) -> dict[tuple, dict[str, list[float]]]:
    """(variant, steps, dataset, metric) -> {seed: mean over images}, plus image counts."""
    acc: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        acc[(r["variant"], int(r["steps"]), r["dataset"], r["metric"], r["seed"])].append(float(r["value"]))
    out: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: {"seed_means": [], "n": []})
    for (variant, steps, dataset, metric, _seed), values in sorted(acc.items()):
        finite = [v for v in values if math.isfinite(v)]
        cell = out[(variant, steps, dataset, metric)]
        cell["seed_means"].append(statistics.fmean(finite) if finite else float("nan"))
        cell["n"].append(len(finite))
    return out


def _fmt_cell(cell: dict) -> str:
    m = cell["seed_means"]
    text = f"{statistics.fmean(m):.3f}"
    if len(m) > 1:
        text += f" ± {statistics.stdev(m):.3f}"
    return text


def wilcoxon_rows(rows: list[dict[str, str]], a: str, b: str, steps: int) -> list[str]:
    """Markdown rows: per dataset and metric, mean difference A - B, wins of A, Wilcoxon p (per-image, seeds averaged)."""
    from scipy.stats import wilcoxon

    per: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        if r["variant"] in (a, b) and int(r["steps"]) == steps:
            per[(r["variant"], r["dataset"], r["metric"], r["image"])].append(float(r["value"]))
    out = []
    datasets = sorted({k[1] for k in per})
    for dataset in datasets:
        for metric in METRICS:
            images = sorted({k[3] for k in per if k[1] == dataset and k[2] == metric and k[0] == a} & {k[3] for k in per if k[1] == dataset and k[2] == metric and k[0] == b})
            if not images:
                continue
            da = np.array([np.mean(per[(a, dataset, metric, i)]) for i in images])
            db = np.array([np.mean(per[(b, dataset, metric, i)]) for i in images])
            diff = da - db
            p = float(wilcoxon(da, db).pvalue) if np.any(diff != 0) else 1.0
            out.append(f"| {dataset} | {metric} | {len(images)} | {diff.mean():+.4f} | {int((diff > 0).sum())}/{len(images)} | {p:.2g} |")
    return out


def write_report(outdir: Path, compare: list[str] | None = None) -> tuple[Path, Path | None]:
    rows = read_scores(outdir / "scores.csv")
    if not rows:
        raise CausalFuseError(f"{outdir / 'scores.csv'}: no scores yet")
    cells = _means(rows)
    datasets = sorted({k[2] for k in cells})
    lines = ["# Recipe study: val-set means", "",
             "Means over the images of each set (the count in brackets), then mean ± standard deviation over seeds "
             "where there are several. `mean_grey`: mean grey level of the fused image (0-255); `white_share`: share "
             "of its pixels at 250 or above.", ""]
    for dataset in datasets:
        keys = sorted({(k[0], k[1]) for k in cells if k[2] == dataset}, key=lambda k: (k[0], k[1]))
        lines += [f"## {dataset}", "", "| variant | steps | seeds | images | " + " | ".join(METRICS + EXTRA) + " |",
                  "|---|---:|---:|---:|" + "---:|" * (len(METRICS) + len(EXTRA))]
        for variant, steps in keys:
            row = [cells.get((variant, steps, dataset, m)) for m in METRICS + EXTRA]
            first = next(c for c in row if c)
            n = sorted(set(first["n"]))
            lines.append(f"| {variant} | {steps} | {len(first['seed_means'])} | {'/'.join(map(str, n))} | "
                         + " | ".join(_fmt_cell(c) if c else "-" for c in row) + " |")
        lines.append("")
    if compare:
        a, b = compare
        common = sorted({int(r["steps"]) for r in rows if r["variant"] == a} & {int(r["steps"]) for r in rows if r["variant"] == b})
        for steps in common:
            lines += [f"## {a} against {b} at {steps} steps (paired, per image, seeds averaged)", "",
                      "| set | metric | images | mean difference | images where A is higher | Wilcoxon p |", "|---|---|---:|---:|---:|---:|"]
            lines += wilcoxon_rows(rows, a, b, steps) + [""]
    summary = outdir / "summary.md"
    tmp = summary.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(summary)
    return summary, _curves(outdir, cells, datasets)


def _curves(outdir: Path, cells: dict, datasets: list[str]) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return None
    shown = METRICS + ("mean_grey",)
    fig, axes = plt.subplots(len(datasets), len(shown), figsize=(3.2 * len(shown), 2.6 * len(datasets)), squeeze=False)
    variants = sorted({k[0] for k in cells})
    ref_styles = iter([("k", "--"), ("k", ":"), ("k", "-."), ("0.5", "--"), ("0.5", ":"), ("0.5", "-.")] * 4)
    styles = {v: next(ref_styles) for v in variants if all(k[1] == 0 for k in cells if k[0] == v)}
    for i, dataset in enumerate(datasets):
        for j, metric in enumerate(shown):
            ax = axes[i][j]
            for variant in variants:
                pts = sorted((k[1], c["seed_means"]) for k, c in cells.items() if k[0] == variant and k[2] == dataset and k[3] == metric)
                if not pts:
                    continue
                xs = [max(s, 1) for s, _ in pts]
                ys = [statistics.fmean(m) for _, m in pts]
                if variant in styles:  # a reference method: a horizontal line
                    colour, style = styles[variant]
                    ax.axhline(ys[0], ls=style, lw=1, color=colour, label=variant)
                    continue
                # bars: the spread over seeds where there are several (points of one seed have none)
                err = [statistics.stdev(m) if len(m) > 1 else 0.0 for _, m in pts]
                ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, label=variant)
            ax.set_xscale("log")
            budgets = sorted({max(k[1], 1) for k in cells if k[0] not in styles})
            ax.set_xticks(budgets, [str(b) for b in budgets])  # the budgets themselves, not log-scale decades
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_title(f"{dataset}: {metric}", fontsize=9)
            ax.tick_params(labelsize=7)
            if i == len(datasets) - 1:
                ax.set_xlabel("training steps", fontsize=8)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    path = outdir / "curves.png"
    tmp = outdir / "curves.tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    outdir = Path(args.output)
    try:
        if not args.report_only:
            run_study(args, outdir)
        summary, figure = write_report(outdir, args.compare)
    except CausalFuseError as exc:
        print(f"recipe_study: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {summary}" + (f" and {figure}" if figure else ""))
    return 0


def run_study(args, outdir: Path) -> None:
    from causalfuse.checkpoint import read_metadata
    from causalfuse.models.registry import create_method

    variants = [parse_variant(v) for v in args.variant]
    if not variants and not args.reference and not args.model:
        raise CausalFuseError("nothing to do: give --variant NAME=..., --model NAME=PATH or --reference METHOD")
    if variants and not args.train_data:
        raise CausalFuseError("training variants needs --train-data DIR [DIR ...]")
    outdir.mkdir(parents=True, exist_ok=True)
    sets = val_sets(Path(args.val), args.max_images)
    scores = outdir / "scores.csv"
    done = {(r["variant"], r["seed"], r["steps"]) for r in read_scores(scores)}
    for method in args.reference:
        key = {"variant": method, "seed": "0", "steps": "0"}
        if (method, "0", "0") not in done:
            append_scores(scores, score_method(create_method(method), sets, key, not args.no_progress))
    for text in args.model:
        name, seed, path = parse_model(text)
        steps = str(read_metadata(path).get("info", {}).get("budget", {}).get("steps", 0))
        if (name, seed, steps) not in done:
            fn = create_method("causalfuse", weights=str(path), device=args.device)
            append_scores(scores, score_method(fn, sets, {"variant": name, "seed": seed, "steps": steps}, not args.no_progress))
    for name, overrides in variants:
        for seed in args.seeds:
            run = outdir / "runs" / f"{name}-s{seed}"
            for steps in sorted(set(args.budgets)):
                if (name, str(seed), str(steps)) in done:
                    continue
                t0 = time.perf_counter()
                snapshot = train_to(args, name, overrides, seed, steps, run)
                fn = create_method("causalfuse", weights=str(snapshot), device=args.device)
                append_scores(scores, score_method(fn, sets, {"variant": name, "seed": str(seed), "steps": str(steps)}, not args.no_progress))
                print(f"{name} seed {seed}: {steps} steps trained and scored ({time.perf_counter() - t0:.0f} s)", flush=True)
                write_report(outdir, args.compare)


if __name__ == "__main__":
    sys.exit(main())

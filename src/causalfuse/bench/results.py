"""A bench run's results, read back from its CSVs: the means each table shows, their counts and ranks.

``load_run(OUTDIR)`` reads ``config.json`` and the CSVs written by
:mod:`.runner`; :func:`summarise` gives one :class:`Cell` per (dataset,
method, metric): the mean over the images that have a finite value, its
standard deviation and counts, whether it is comparable with the other
methods' (averaged over as many images) and its rank ("best" following each
metric's ``higher_is_better``). NaN values are left out of the means and
counted; :func:`table_notes` says where.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import CausalFuseError
from .files import (
    CLUSTER_FIELDS,
    ERROR_FIELDS,
    MISSING_FIELDS,
    PAIR_FIELDS,
    RESULT_FIELDS,
    SCENE_FIELDS,
    read_csv,
)

__all__ = ["RunData", "Cell", "load_run", "summarise", "image_counts", "table_notes", "summary_rows", "arrow", "count_text"]

DIGITS = 4  # as the paper prints its tables


@dataclass
class RunData:
    """Everything the report needs, read from an output folder."""

    outdir: Path
    config: dict[str, Any]
    results: list[dict[str, str]]
    methods: list[dict[str, str]]
    pairs: list[dict[str, str]]
    errors: list[dict[str, str]]
    missing: list[dict[str, str]]
    scenes: list[dict[str, str]]
    clusters: list[dict[str, str]]
    method_labels: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    higher_is_better: dict[str, bool] = field(default_factory=dict)


def load_run(outdir: str | os.PathLike) -> RunData:
    """Read the configuration and CSVs of a bench output folder."""
    outdir = Path(outdir)
    config_path = outdir / "config.json"
    if not config_path.is_file():
        raise CausalFuseError(f"{outdir}: not a bench output folder (no config.json); run `causalfuse bench` first")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise CausalFuseError(f"{config_path}: damaged ({exc})") from None
    run = RunData(
        outdir,
        config,
        read_csv(outdir / "results.csv", RESULT_FIELDS),
        read_csv(outdir / "methods.csv", ("method",)),
        read_csv(outdir / "pairs.csv", PAIR_FIELDS),
        read_csv(outdir / "errors.csv", ERROR_FIELDS),
        read_csv(outdir / "missing.csv", MISSING_FIELDS),
        read_csv(outdir / "scenes.csv", SCENE_FIELDS),
        read_csv(outdir / "scene_clusters.csv", CLUSTER_FIELDS),
    )
    run.method_labels = [m["label"] for m in config.get("methods", [])]
    run.metrics = list(config.get("metrics", []))
    # A resumed run may have left out methods, datasets or metrics of an earlier one.
    datasets = set(config.get("datasets", {}))
    keep = lambda r: r["method"] in run.method_labels and r["dataset"] in datasets  # noqa: E731
    run.results = [r for r in run.results if keep(r) and r["metric"] in run.metrics]
    run.methods = [r for r in run.methods if r["method"] in run.method_labels]
    run.errors = [r for r in run.errors if keep(r)]
    run.missing = [r for r in run.missing if keep(r)]
    seen: list[str] = []
    for row in run.pairs:
        if row["dataset"] not in seen:
            seen.append(row["dataset"])
    run.datasets = seen or list(config.get("datasets", {}))
    run.higher_is_better = {m: _direction(m) for m in run.metrics}
    return run


def _direction(metric: str) -> bool:
    try:
        from ..metrics import get_metric

        return bool(get_metric(metric).higher_is_better)
    except Exception:  # noqa: BLE001 - a metric not registered in this installation
        return True


# ------------------------------------------------------------------- summaries


@dataclass
class Cell:
    """Mean, standard deviation and image count of one (dataset, metric, method).

    Attributes:
        n: the finite values behind the mean.
        rank: 0 best, 1 second, None otherwise (or not ranked).
        nan: values that are NaN (or inf), left out of the mean.
        comparable: the mean covers every image of the dataset that any
            method has a finite value for; only such means are ranked.
    """

    mean: float
    std: float
    n: int
    rank: int | None = None
    nan: int = 0
    comparable: bool = True


def summarise(run: RunData) -> dict[tuple[str, str, str], Cell]:
    """(dataset, metric, method) -> :class:`Cell`, with ranks per dataset and metric.

    NaN values (a metric undefined on an image, as in the original code) are
    left out of the mean and counted; ``n`` counts the finite values. (The
    original MATLAB code averages with ``mean``, where one NaN makes the mean
    NaN.) A mean over fewer images than another method's on the same dataset
    (an image missing, failed, or NaN where another method has a value) is
    not comparable and is not ranked, so it cannot come out best by leaving
    a hard image out.
    """
    from ..metrics.folder import comparable_means

    values: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in run.results:
        values.setdefault((r["dataset"], r["metric"], r["method"]), {})[r["image"]] = float(r["value"])
    finite = {key: {image for image, v in vs.items() if math.isfinite(v)} for key, vs in values.items()}
    comparable_of = comparable_means(finite, lambda key: key[:2])  # within a dataset and metric
    cells: dict[tuple[str, str, str], Cell] = {}
    for key, vs in values.items():
        kept = np.array([v for v in vs.values() if math.isfinite(v)])
        nan = len(vs) - kept.size
        comparable = comparable_of[key]
        if kept.size:
            std = float(kept.std(ddof=1)) if kept.size > 1 else 0.0
            cells[key] = Cell(float(kept.mean()), std, int(kept.size), nan=nan, comparable=comparable)
        else:
            cells[key] = Cell(math.nan, math.nan, 0, nan=nan, comparable=False)
    for dataset in run.datasets:
        for metric in run.metrics:
            _rank([cells.get((dataset, metric, m)) for m in run.method_labels], run.higher_is_better.get(metric, True))
    return cells


def _rank(cells: Sequence[Cell | None], higher_is_better: bool) -> None:
    """Mark the best (0) and second best (1) value as displayed among the comparable cells; ties share a mark."""
    ranked = [c for c in cells if c is not None and c.comparable and math.isfinite(c.mean)]
    shown = sorted({round(c.mean, DIGITS) for c in ranked}, reverse=higher_is_better)
    for c in ranked:
        position = shown.index(round(c.mean, DIGITS))
        c.rank = position if position < 2 else None


def image_counts(run: RunData) -> dict[tuple[str, str], tuple[int, int, int, int, int]]:
    """(dataset, method) -> (scored, expected, missing, failed, not run) image counts.

    Failed images are those in errors.csv; "not run" are the others without a
    score (an interrupted run).
    """
    expected: dict[str, int] = {}
    for r in run.pairs:
        expected[r["dataset"]] = expected.get(r["dataset"], 0) + 1
    scored: dict[tuple[str, str], set[str]] = {}
    for r in run.results:
        scored.setdefault((r["dataset"], r["method"]), set()).add(r["image"])
    missing: dict[tuple[str, str], int] = {}
    for r in run.missing:
        missing[(r["dataset"], r["method"])] = missing.get((r["dataset"], r["method"]), 0) + 1
    errors: dict[tuple[str, str], set[str]] = {}
    for r in run.errors:
        errors.setdefault((r["dataset"], r["method"]), set()).add(r["image"])
    out = {}
    for d in run.datasets:
        for m in run.method_labels:
            done = scored.get((d, m), set())
            miss = missing.get((d, m), 0)
            unscored = max(0, expected.get(d, 0) - len(done) - miss)
            failed_images = errors.get((d, m), set())
            failed = unscored if "*" in failed_images else min(unscored, len(failed_images - done))
            out[(d, m)] = (len(done), expected.get(d, 0), miss, failed, unscored - failed)
    return out


def _unscored(counts: tuple[int, int, int, int, int]) -> list[str]:
    """Why images have no score, e.g. ``["1 missing", "2 failed"]``."""
    _n, _expected, miss, failed, not_run = counts
    return [f"{miss} missing"] * bool(miss) + [f"{failed} failed"] * bool(failed) + [f"{not_run} not run"] * bool(not_run)


def count_text(counts: tuple[int, int, int, int, int]) -> str:
    reasons = _unscored(counts)
    return f"{counts[0]}" + (f" ({', '.join(reasons)})" if reasons else "")


NAN_RULE = (
    "NaN (or inf) values are left out of the means; the original MATLAB code averages with mean, "
    "where one NaN makes the mean NaN"
)


def table_notes(run: RunData, cells: dict[tuple[str, str, str], Cell]) -> list[str]:
    """The notes under the tables, one sentence each: what the means cover, what is missing, where NaN is."""
    counts = image_counts(run)
    notes = ["Each mean is over all of the dataset's images (see the images row or column) unless the cell gives n=k."]
    if any(not c.comparable for c in cells.values()):
        notes.append(
            "†: not ranked: the mean covers fewer images than another method's on the same dataset (an image "
            "missing, failed or NaN where another method has a value); bold and underline compare the others only."
        )
    for d in run.datasets:
        for m in run.method_labels:
            n, expected, *_ = counts[(d, m)]
            if n < expected:
                reasons = ", ".join(_unscored(counts[(d, m)]))
                notes.append(f"{m} on {d}: no score for {expected - n} of {expected} images ({reasons}).")
    nan = [
        f"{m} on {d}, {metric}: NaN in {c.nan} of {counts[(d, m)][1]}"
        for d in run.datasets
        for metric in run.metrics
        for m in run.method_labels
        if (c := cells.get((d, metric, m))) is not None and c.nan
    ]
    notes.append(f"{NAN_RULE}: " + "; ".join(nan) + "." if nan else f"{NAN_RULE}; there are none here.")
    return notes


def summary_rows(run: RunData, cells: dict[tuple[str, str, str], Cell]) -> list[dict[str, Any]]:
    """The rows of summary.csv: every mean with its image counts and rank (1 best, 2 second, empty otherwise)."""
    counts = image_counts(run)
    rows = []
    for d in run.datasets:
        for metric in run.metrics:
            for m in run.method_labels:
                c = cells.get((d, metric, m))
                if c is None:
                    continue
                rows.append(
                    {
                        "dataset": d,
                        "metric": metric,
                        "method": m,
                        "mean": repr(c.mean),
                        "std": repr(c.std),
                        "n": c.n,
                        "nan": c.nan,
                        "images": counts[(d, m)][1],
                        "comparable": int(c.comparable),
                        "rank": "" if c.rank is None else c.rank + 1,
                    }
                )
    return rows


def arrow(run: RunData, metric: str) -> str:
    """``↑`` where higher is better for ``metric``, else ``↓``."""
    return "↑" if run.higher_is_better.get(metric, True) else "↓"

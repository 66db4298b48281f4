"""Tables, figures and the HTML report of a bench run, made from its CSVs alone.

``write_report(OUTDIR)`` reads ``config.json`` and the CSVs written by
:mod:`.runner` (results, methods, pairs, errors, missing, scenes) and writes:

- ``tables.md`` and ``tables.tex``: the paper's Table 1 form (rows: datasets x
  metrics, columns: methods) and the ablation form of its Tables 2 and 3
  (rows: datasets x methods, columns: metrics); best in bold, second
  underlined, "best" following each metric's ``higher_is_better``; a row of
  image counts per dataset says how many images each mean covers and how many
  are missing or failed. A mean over fewer of the dataset's images says
  ``(n=k)``; one over fewer images than another method's (an image missing,
  failed or NaN where another method has a value) is marked † and not
  ranked; NaN values are left out of the means and counted in the notes
  under the tables (see :func:`summarise`);
- ``summary.csv``: every mean with its counts (``n``, ``nan``, the dataset's
  ``images``), whether it is ``comparable`` and its ``rank``;
- ``report/grid_<dataset>.png``: a few images x (IR, VI, every method), with
  an optional zoomed inset; ``report/bars_<dataset>.png``: metric means with
  standard-deviation error bars; ``report/scenes.png``;
- ``report.html``: one self-contained page (figures embedded as data URIs)
  with the tables, figures, timing and the scene-bias section.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from ..errors import CausalFuseError
from ..io import atomic_path
from .files import (
    CLUSTER_FIELDS,
    ERROR_FIELDS,
    MISSING_FIELDS,
    PAIR_FIELDS,
    RESULT_FIELDS,
    SCENE_FIELDS,
    SUMMARY_FIELDS,
    external_folder,
    fused_path,
    read_csv,
    write_csv,
)

__all__ = ["RunData", "Cell", "load_run", "summarise", "table_notes", "markdown_tables", "latex_tables", "write_report"]

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


def _count_text(counts: tuple[int, int, int, int, int]) -> str:
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


# ---------------------------------------------------------------------- tables

Form = Literal["paper", "ablation"]


def _fmt(cell: Cell | None, n_images: int) -> str:
    """The mean as printed; ``(n=k)`` when it covers fewer than the dataset's ``n_images``, † when not ranked."""
    if cell is None:
        return "–"
    text = "nan" if not math.isfinite(cell.mean) else f"{cell.mean:.{DIGITS}f}"
    if cell.n < n_images:
        text += f" (n={cell.n})"
    return text + ("" if cell.comparable else " †")


def _arrow(run: RunData, metric: str) -> str:
    return "↑" if run.higher_is_better.get(metric, True) else "↓"


def _table_rows(run: RunData, cells: dict, form: Form) -> tuple[list[str], list[list[tuple[str, int | None]]]]:
    """Header and body of a table as (text, rank) cells, shared by every output format."""
    counts = image_counts(run)
    body: list[list[tuple[str, int | None]]] = []
    if form == "paper":
        header = ["Datasets", "Metrics", *run.method_labels]
        for d in run.datasets:
            for i, metric in enumerate(run.metrics):
                row: list[tuple[str, int | None]] = [(d if i == 0 else "", None), (f"{metric} {_arrow(run, metric)}", None)]
                for m in run.method_labels:
                    c = cells.get((d, metric, m))
                    row.append((_fmt(c, counts[(d, m)][1]), c.rank if c else None))
                body.append(row)
            body.append([("", None), ("images", None), *[(_count_text(counts[(d, m)]), None) for m in run.method_labels]])
    else:
        header = ["Datasets", "Method", *[f"{m} {_arrow(run, m)}" for m in run.metrics], "images"]
        for d in run.datasets:
            for i, m in enumerate(run.method_labels):
                row = [(d if i == 0 else "", None), (m, None)]
                for metric in run.metrics:
                    c = cells.get((d, metric, m))
                    row.append((_fmt(c, counts[(d, m)][1]), c.rank if c else None))
                row.append((_count_text(counts[(d, m)]), None))
                body.append(row)
    return header, body


def markdown_table(run: RunData, cells: dict, form: Form = "paper") -> str:
    header, body = _table_rows(run, cells, form)
    numeric = len(header) - 2

    def mark(text: str, rank: int | None) -> str:
        return f"**{text}**" if rank == 0 else f"<u>{text}</u>" if rank == 1 else text

    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * numeric]
    lines += ["| " + " | ".join(mark(t, r) for t, r in row) + " |" for row in body]
    return "\n".join(lines)


_LATEX_ESCAPES = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def _latex_escape(text: str) -> str:
    text = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
    return text.replace("↑", r"$\uparrow$").replace("↓", r"$\downarrow$").replace("–", "--").replace(" †", "†").replace("†", r"$^\dagger$")


def latex_table(run: RunData, cells: dict, form: Form = "paper", caption: str = "", notes: Sequence[str] = ()) -> str:
    header, body = _table_rows(run, cells, form)

    def mark(text: str, rank: int | None) -> str:
        text = _latex_escape(text)
        return rf"\textbf{{{text}}}" if rank == 0 else rf"\underline{{{text}}}" if rank == 1 else text

    lines = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_latex_escape(caption)}}}" if caption else "",
        r"\begin{tabular}{ll" + "r" * (len(header) - 2) + "}",
        r"\toprule",
        " & ".join(_latex_escape(h) for h in header) + r" \\",
        r"\midrule",
    ]
    for i, row in enumerate(body):
        if i and row[0][0]:
            lines.append(r"\midrule")
        lines.append(" & ".join(mark(t, r) for t, r in row) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines += [r"\par\smallskip", r"{\footnotesize\raggedright", *(_latex_escape(note) + r"\par" for note in notes), "}"]
    lines.append(r"\end{table}")
    return "\n".join(line for line in lines if line)


def html_table(run: RunData, cells: dict, form: Form = "paper", css_class: str = "results") -> str:
    header, body = _table_rows(run, cells, form)
    out = [f'<table class="{css_class}">', "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for row in body:
        group = ' class="group"' if row[0][0] else ""
        tds = []
        for j, (text, rank) in enumerate(row):
            t = html.escape(text)
            t = f"<strong>{t}</strong>" if rank == 0 else f"<u>{t}</u>" if rank == 1 else t
            cls = ' class="num"' if j >= 2 else ""
            tds.append(f"<td{cls}>{t}</td>")
        out.append(f"<tr{group}>" + "".join(tds) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


LEGEND = "Bold: best, underlined: second best among the means over the same images (↑ higher is better, ↓ lower is better)."


def markdown_tables(run: RunData, cells: dict | None = None) -> str:
    cells = summarise(run) if cells is None else cells
    notes = "\n\n".join(table_notes(run, cells))
    return (
        "# Benchmark results\n\n"
        f"Colour: {run.config.get('colour', 'gray')}. {LEGEND}\n\n"
        "## Comparison (the paper's Table 1 form)\n\n"
        + markdown_table(run, cells, "paper")
        + f"\n\n{notes}\n\n## Ablation form (the paper's Tables 2 and 3)\n\n"
        + markdown_table(run, cells, "ablation")
        + "\n\nThe same means, marks and notes as above.\n"
    )


def latex_tables(run: RunData, cells: dict | None = None) -> str:
    cells = summarise(run) if cells is None else cells
    notes = table_notes(run, cells)
    return (
        "% Generated by causalfuse bench; needs \\usepackage{booktabs}.\n"
        + latex_table(run, cells, "paper", "Quantitative comparison (Bold: optimal, underline: suboptimal).", notes)
        + "\n\n"
        + latex_table(run, cells, "ablation", "Ablation studies (Bold: optimal, underline: suboptimal).", notes)
        + "\n"
    )


# --------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _plt().close(fig)
    return path


def _pick(names: Sequence[str], k: int) -> list[str]:
    if k <= 0 or not names:
        return []
    idx = sorted({int(round(i)) for i in np.linspace(0, len(names) - 1, min(k, len(names)))})
    return [names[i] for i in idx]


def grid_figure(
    run: RunData,
    dataset: str,
    path: Path,
    *,
    images: int = 4,
    zoom: Sequence[float] | None = None,
    max_side: int = 320,
) -> Path | None:
    """A few images of ``dataset`` x (IR, VI, every method), with an optional zoomed inset.

    Args:
        zoom: (x, y, w, h) of the inset region as fractions of the image.
        max_side: images are shown downsampled to at most this many pixels.
    """
    from PIL import Image

    from ..io import read_image

    pairs = {r["image"]: r for r in run.pairs if r["dataset"] == dataset}
    chosen = _pick(list(pairs), images)
    if not chosen:
        return None
    plt = _plt()
    columns = ["infrared", "visible", *run.method_labels]
    first = read_image(pairs[chosen[0]]["vi"])
    aspect = first.shape[0] / first.shape[1]
    cell = 1.7
    fig, axes = plt.subplots(
        len(chosen), len(columns), figsize=(cell * len(columns), cell * aspect * len(chosen) + 0.5), squeeze=False
    )
    for i, name in enumerate(chosen):
        sources = {"infrared": Path(pairs[name]["ir"]), "visible": Path(pairs[name]["vi"])}
        for j, col in enumerate(columns):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            path_ = sources.get(col) or _fused_file(run, dataset, col, name)
            if i == 0:
                ax.set_title(col, fontsize=8)
            if j == 0:
                ax.set_ylabel(name, fontsize=7)
            if path_ is None or not path_.is_file():
                ax.text(0.5, 0.5, "missing", ha="center", va="center", fontsize=8, color="#a00", transform=ax.transAxes)
                continue
            try:
                img = read_image(path_)
            except CausalFuseError:
                ax.text(0.5, 0.5, "unreadable", ha="center", va="center", fontsize=8, color="#a00", transform=ax.transAxes)
                continue
            h, w = img.shape[:2]
            scale = min(1.0, max_side / max(h, w))
            if scale < 1.0:
                pil = Image.fromarray(np.rint(img * 255).astype(np.uint8))
                img = np.asarray(pil.resize((max(1, int(w * scale)), max(1, int(h * scale))), Image.BILINEAR)) / 255.0
            kwargs = {"cmap": "gray", "vmin": 0, "vmax": 1} if img.ndim == 2 else {}
            ax.imshow(img, interpolation="nearest", **kwargs)
            if zoom is not None:
                _inset(ax, img, zoom, kwargs)
    fig.suptitle(f"{dataset}: sources and fused images", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path)


def _fused_file(run: RunData, dataset: str, label: str, image: str) -> Path | None:
    spec = next((m for m in run.config.get("methods", []) if m["label"] == label), None)
    if spec is None:
        return None
    if spec.get("external"):
        from ..data.paired import list_images

        root = Path(spec["external"])
        if not root.is_dir():
            return None
        folder = external_folder(root, dataset, len(run.datasets))
        return list_images(folder).get(image) if folder is not None else None
    return fused_path(run.outdir, dataset, label, image)


def _inset(ax, img: np.ndarray, zoom: Sequence[float], kwargs: dict) -> None:
    from matplotlib.patches import Rectangle

    h, w = img.shape[:2]
    x, y, zw, zh = zoom
    x0, y0 = int(x * w), int(y * h)
    x1, y1 = max(x0 + 2, int((x + zw) * w)), max(y0 + 2, int((y + zh) * h))
    crop = img[y0:y1, x0:x1]
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="#ff3030", lw=0.8))
    inset = ax.inset_axes([0.56, 0.0, 0.44, 0.44])
    inset.imshow(crop, interpolation="nearest", **kwargs)
    inset.set_xticks([])
    inset.set_yticks([])
    for spine in inset.spines.values():
        spine.set_edgecolor("#ff3030")


def bar_figure(run: RunData, cells: dict, dataset: str, path: Path) -> Path | None:
    """Mean of every metric per method, with standard-deviation error bars."""
    if not run.metrics or not run.method_labels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(run.metrics), figsize=(max(3.0, 0.45 * len(run.method_labels) + 1.2) * len(run.metrics), 3.2), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    xs = np.arange(len(run.method_labels))
    for ax, metric in zip(axes[0], run.metrics):
        cs = [cells.get((dataset, metric, m)) for m in run.method_labels]
        means = [c.mean if c else math.nan for c in cs]
        stds = [c.std if c else 0.0 for c in cs]
        ax.bar(xs, means, yerr=stds, capsize=2, color=[colours[i % len(colours)] for i in range(len(xs))], error_kw={"lw": 0.8})
        ax.set_xticks(xs)
        ax.set_xticklabels(run.method_labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(f"{metric} {_arrow(run, metric)}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{dataset}: mean ± standard deviation over images", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


# ------------------------------------------------------------------ the report


def _data_uri(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _img(path: Path | None, alt: str) -> str:
    uri = _data_uri(path)
    return f'<figure><img src="{uri}" alt="{html.escape(alt)}"><figcaption>{html.escape(alt)}</figcaption></figure>' if uri else ""


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { padding: .25em .6em; border-bottom: 1px solid #eee; }
th { background: #f4f4f4; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.group td { border-top: 2px solid #bbb; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .85em; color: #666; }
.warn { background: #fff4e0; border-left: 4px solid #e8a33d; padding: .5em 1em; }
.note { color: #555; font-size: .9em; }
code { background: #f4f4f4; padding: 0 .2em; }
"""


def _html_simple_table(header: Sequence[str], rows: Sequence[Sequence[Any]], css_class: str, numeric_from: int = 1) -> str:
    out = [f'<table class="{css_class}"><thead><tr>' + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead><tbody>"]
    for row in rows:
        out.append(
            "<tr>"
            + "".join(f'<td{" class=num" if j >= numeric_from else ""}>{html.escape(str(v))}</td>' for j, v in enumerate(row))
            + "</tr>"
        )
    out.append("</tbody></table>")
    return "\n".join(out)


def _timing_rows(run: RunData) -> list[list[str]]:
    rows = []
    for r in run.methods:
        params = r.get("parameters") or ""
        rows.append(
            [
                r["method"],
                r.get("kind", ""),
                f"{int(params):,}" if params else "–",
                _ms(r.get("ms_per_image")),
                f"{float(r['images_per_s']):.2f}" if r.get("images_per_s") else "–",
                r.get("images_timed", ""),
            ]
        )
    return rows


def _ms(text: str | None) -> str:
    if not text:
        return "–"
    ms = float(text)
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


TIMING_HEADER = ["method", "kind", "parameters", "ms per image (median)", "images/s", "images timed"]


def _scene_section(run: RunData, report_dir: Path) -> tuple[str, str]:
    """HTML and Markdown of the scene-bias section ('' when the run has no scene data)."""
    if not run.scenes or not run.clusters:
        return (
            "<h2>Scene bias</h2><p class=note>No scene assignments in this run (pass <code>--dictionary FILE</code>).</p>",
            "",
        )
    from .scenes import scene_bias, scene_figure

    bias = scene_bias(
        run.results, run.scenes, run.clusters, methods=run.method_labels, metrics=run.metrics, higher_is_better=run.higher_is_better
    )
    fig = scene_figure(bias, run.method_labels, run.metrics, report_dir / "scenes.png")
    n = len(bias.clusters)
    cluster_header = ["cluster", "training images", "training frequency", "status", "test images"]
    cluster_rows = [
        [f"z{c['cluster']}", c["train_count"], f"{100 * c['train_frequency']:.2f}%", c["status"], c["test_images"]]
        for c in sorted(bias.clusters, key=lambda c: -c["train_frequency"])
    ]
    stats_header = ["method", "metric", "best cluster", "worst cluster", "spread", "rare/absent mean (images)", "common mean", "gap rare − common", "gap vs. all methods", "frequency trend ρ"]

    def f(x: float) -> str:
        return "–" if x is None or not math.isfinite(x) else f"{x:.{DIGITS}f}"

    stats_rows = []
    for s in bias.stats:
        stats_rows.append(
            [
                s.method,
                f"{s.metric} {_arrow(run, s.metric)}",
                f"z{s.best[0]}: {f(s.best[1])}" if s.best else "–",
                f"z{s.worst[0]}: {f(s.worst[1])}" if s.worst else "–",
                f(s.spread),
                f"{f(s.rare_mean)} ({s.rare_images})",
                f(s.common_mean),
                f(s.gap),
                f(s.relative_gap),
                "–" if not math.isfinite(s.frequency_trend) else f"{s.frequency_trend:+.2f}",
            ]
        )
    rare = [c for c in bias.clusters if c["status"] != "common"]
    n_rare_images = sum(c["test_images"] for c in rare)
    intro = (
        f"Every test image (visible) is assigned to the nearest of the N = {n} scene prototypes of the visible "
        f"confounder dictionary. Rare: training frequency below 1/(2N) = {100 / (2 * n):.2f}%; absent: no training image. "
        f"{len(rare)} of {n} clusters are rare or absent; {_plural(n_rare_images, 'test image')} {'falls' if n_rare_images == 1 else 'fall'} in them. "
        f"Spread: best minus worst cluster mean (clusters with at least {bias.min_images} test images). "
        "Gap vs. all methods: the rare-minus-common gap of the method's score minus the mean score of all methods on the "
        "same image, which removes how hard each image is (negative for a higher-is-better metric: the method loses "
        "ground on rare scenes). Frequency trend ρ: Spearman correlation over test images between the training "
        "frequency of the image's cluster and the method's score relative to all methods, oriented so that positive "
        "means the method does better on scenes the training set shows often (scene bias); it does not depend on the "
        "rare threshold."
    )
    html_out = (
        "<h2 id=scenes>Scene bias</h2>"
        f"<p class=note>{html.escape(intro)}</p>"
        + _html_simple_table(stats_header, stats_rows, "scene-stats", numeric_from=2)
        + _img(fig, "metric mean per scene cluster")
        + "<h3>Scene clusters</h3>"
        + _html_simple_table(cluster_header, cluster_rows, "scene-clusters")
    )
    md = ["## Scene bias", "", intro, "", "| " + " | ".join(stats_header) + " |", "|" + "---|" * len(stats_header)]
    md += ["| " + " | ".join(str(v) for v in row) + " |" for row in stats_rows]
    md += ["", "| " + " | ".join(cluster_header) + " |", "|" + "---|" * len(cluster_header)]
    md += ["| " + " | ".join(str(v) for v in row) + " |" for row in cluster_rows]
    return html_out, "\n".join(md) + "\n"


def write_report(outdir: str | os.PathLike, *, log: Callable[[str], None] | None = None, figures: bool = True) -> Path:
    """Write tables.md, tables.tex, the figures and report.html from the CSVs of ``outdir``.

    Returns:
        The path of ``report.html``.
    """
    run = load_run(outdir)
    out = run.outdir
    report_dir = out / "report"
    report_dir.mkdir(exist_ok=True)
    cells = summarise(run)
    md = markdown_tables(run, cells)
    tex = latex_tables(run, cells)

    grids, bars = {}, {}
    if figures:
        zoom = run.config.get("zoom")
        k = int(run.config.get("figure_images", 4))
        for d in run.datasets:
            grids[d] = grid_figure(run, d, report_dir / f"grid_{_file_safe(d)}.png", images=k, zoom=zoom)
            bars[d] = bar_figure(run, cells, d, report_dir / f"bars_{_file_safe(d)}.png")
    scene_html, scene_md = _scene_section(run, report_dir)
    timing = _timing_rows(run)
    md += "\n## Timing\n\n| " + " | ".join(TIMING_HEADER) + " |\n|" + "---|" * len(TIMING_HEADER) + "\n"
    md += "\n".join("| " + " | ".join(str(v) for v in row) + " |" for row in timing) + "\n"
    if scene_md:
        md += "\n" + scene_md

    write_csv(out / "summary.csv", SUMMARY_FIELDS, summary_rows(run, cells))
    with atomic_path(out / "tables.md") as tmp:
        tmp.write_text(md, encoding="utf-8")
    with atomic_path(out / "tables.tex") as tmp:
        tmp.write_text(tex, encoding="utf-8")

    warnings_html = ""
    if run.missing:
        per: dict[tuple[str, str], int] = {}
        for r in run.missing:
            per[(r["method"], r["dataset"])] = per.get((r["method"], r["dataset"]), 0) + 1
        items = "".join(f"<li>{html.escape(m)} on {html.escape(d)}: {n} images missing</li>" for (m, d), n in per.items())
        warnings_html += (
            "<div class=warn><strong>Missing images</strong> (those means cover only the images present, "
            f"are marked † and are not ranked; see the notes under the results):<ul>{items}</ul></div>"
        )
    if run.errors:
        rows = [[r["method"], r["dataset"], r["image"], r["stage"], r["message"][:300]] for r in run.errors]
        warnings_html += "<div class=warn><strong>Failures</strong> (the rest of the run continued):" + _html_simple_table(
            ["method", "dataset", "image", "stage", "message"], rows, "errors", numeric_from=99
        ) + "</div>"

    datasets_html = "".join(
        f"<h3>{html.escape(d)}</h3>" + _img(grids.get(d), f"{d}: images x methods") + _img(bars.get(d), f"{d}: metric means")
        for d in run.datasets
    )
    notes_html = "".join(f"<p class=note>{html.escape(note)}</p>" for note in table_notes(run, cells))
    config = run.config
    n_images = len(run.pairs)
    meta = (
        f"{len(run.method_labels)} methods, {len(run.datasets)} datasets ({n_images} image pairs), "
        f"metrics {', '.join(run.metrics)} on {config.get('colour', 'gray')} images; causalfuse {config.get('causalfuse_version', '?')}."
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>causalfuse bench report</title>
<style>{_CSS}</style></head>
<body>
<h1>causalfuse bench report</h1>
<p class=note>{html.escape(meta)}</p>
{warnings_html}
<h2 id=results>Results (the paper's Table 1 form)</h2>
<p class=note>{html.escape(LEGEND)} The <em>images</em> rows give how many images each mean covers.</p>
{html_table(run, cells, "paper", "results")}
{notes_html}
<h2 id=ablation>Ablation form (the paper's Tables 2 and 3)</h2>
{html_table(run, cells, "ablation", "ablation")}
<p class=note>The same means, marks and notes as above.</p>
<h2 id=timing>Timing</h2>
<p class=note>Fusion of the luminance channel only (no file I/O), on this machine; parameters where the method is a network.</p>
{_html_simple_table(TIMING_HEADER, timing, "timing", numeric_from=2)}
<h2 id=figures>Figures</h2>
{datasets_html}
{scene_html}
</body></html>
"""
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    if log:
        log(f"bench: report written to {path} (tables: {out / 'tables.md'}, {out / 'tables.tex'})")
    return path


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _file_safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]", "_", name)

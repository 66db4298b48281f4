"""The report of a bench run, made from its CSVs alone.

``write_report(OUTDIR)`` reads the run (:func:`.results.load_run`) and writes:

- ``tables.md`` and ``tables.tex`` (:mod:`.tables`): the paper's Table 1 form
  and the ablation form of its Tables 2 and 3, with image counts and notes;
- ``summary.csv``: every mean with its counts (``n``, ``nan``, the dataset's
  ``images``), whether it is ``comparable`` and its ``rank``;
- ``report/grid_<dataset>.png``, ``report/bars_<dataset>.png`` (:mod:`.figures`)
  and ``report/scenes.png``;
- ``report.html``: one self-contained page (figures embedded as data URIs)
  with the tables, figures, timing and the scene-bias section.
"""

from __future__ import annotations

import base64
import html
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from ..io import atomic_path
from .files import SUMMARY_FIELDS, write_csv
from .figures import bar_figure, grid_figure
from .results import DIGITS, Cell, RunData, arrow, load_run, summarise, summary_rows, table_notes
from .tables import LEGEND, html_table, latex_tables, markdown_tables

__all__ = ["write_report"]


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
                f"{s.metric} {arrow(run, s.metric)}",
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

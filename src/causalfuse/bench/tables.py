"""The paper's tables of a bench run: Markdown, LaTeX and HTML.

The paper's Table 1 form (rows: datasets x metrics, columns: methods) and the
ablation form of its Tables 2 and 3 (rows: datasets x methods, columns:
metrics); best in bold, second underlined; a row of image counts per dataset
says how many images each mean covers and how many are missing or failed. A
mean over fewer of the dataset's images says ``(n=k)``; one over fewer images
than another method's is marked † and not ranked (see
:mod:`.results`).
"""

from __future__ import annotations

import html
import math
from typing import Literal, Sequence

from .results import DIGITS, Cell, RunData, arrow, count_text, image_counts, summarise, table_notes

__all__ = ["LEGEND", "markdown_table", "latex_table", "html_table", "markdown_tables", "latex_tables"]

Form = Literal["paper", "ablation"]


def _fmt(cell: Cell | None, n_images: int) -> str:
    """The mean as printed; ``(n=k)`` when it covers fewer than the dataset's ``n_images``, † when not ranked."""
    if cell is None:
        return "–"
    text = "nan" if not math.isfinite(cell.mean) else f"{cell.mean:.{DIGITS}f}"
    if cell.n < n_images:
        text += f" (n={cell.n})"
    return text + ("" if cell.comparable else " †")


def _table_rows(run: RunData, cells: dict, form: Form) -> tuple[list[str], list[list[tuple[str, int | None]]]]:
    """Header and body of a table as (text, rank) cells, shared by every output format."""
    counts = image_counts(run)
    body: list[list[tuple[str, int | None]]] = []
    if form == "paper":
        header = ["Datasets", "Metrics", *run.method_labels]
        for d in run.datasets:
            for i, metric in enumerate(run.metrics):
                row: list[tuple[str, int | None]] = [(d if i == 0 else "", None), (f"{metric} {arrow(run, metric)}", None)]
                for m in run.method_labels:
                    c = cells.get((d, metric, m))
                    row.append((_fmt(c, counts[(d, m)][1]), c.rank if c else None))
                body.append(row)
            body.append([("", None), ("images", None), *[(count_text(counts[(d, m)]), None) for m in run.method_labels]])
    else:
        header = ["Datasets", "Method", *[f"{m} {arrow(run, m)}" for m in run.metrics], "images"]
        for d in run.datasets:
            for i, m in enumerate(run.method_labels):
                row = [(d if i == 0 else "", None), (m, None)]
                for metric in run.metrics:
                    c = cells.get((d, metric, m))
                    row.append((_fmt(c, counts[(d, m)][1]), c.rank if c else None))
                row.append((count_text(counts[(d, m)]), None))
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

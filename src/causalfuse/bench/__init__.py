"""Benchmarking fusion methods: methods x datasets x metrics, tables, figures, reports.

- :mod:`.classical`: classical baselines (average, max-abs, Laplacian pyramid,
  DWT, GFF), registered as fusion methods.
- :mod:`.runner`: :func:`run_bench` fuses every dataset with every method
  (fused images cached on disk), scores them and writes a tidy CSV.
- :mod:`.results`: a run read back from its CSVs, and the means, counts and
  ranks its tables show.
- :mod:`.tables` (Markdown, LaTeX, HTML) and :mod:`.figures` (image grids,
  metric bars) of a run.
- :mod:`.report`: ``tables.md``, ``tables.tex``, ``summary.csv``, the figures
  and one self-contained HTML report, from the CSVs of a run.
- :mod:`.scenes`: the scene-bias report (metrics per scene prototype of a
  confounder dictionary).
"""

from __future__ import annotations

__all__ = ["run_bench", "BenchConfig", "MethodSpec", "write_report"]


def __getattr__(name: str):
    # Lazy: importing the package must not pull matplotlib or torch.
    if name in ("run_bench", "BenchConfig", "MethodSpec"):
        from . import runner

        return getattr(runner, name)
    if name == "write_report":
        from .report import write_report

        return write_report
    raise AttributeError(name)

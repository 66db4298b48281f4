"""The files of a bench output folder: where they are, their columns, CSV reading and writing.

The runner (:mod:`.runner`), the scene assignment (:mod:`.scenes`) and the
report (:mod:`.report`) all read or write these files; keeping their layout
here lets each of them import it without importing one another.

An output folder ``OUTDIR`` of a run holds:

==========================  ===================================================
``config.json``             the run's configuration (methods, data, metrics...)
``fused/<dataset>/<method>/<image>.png``
                            fused images, written atomically and reused when
                            present (an interrupted run resumes)
``results.csv``             dataset, image, method, metric, value (tidy)
``timing.csv``              dataset, image, method, ms (fusion only, no I/O)
``methods.csv``             per method: kind, weights, parameters, median ms per
                            image, images per second
``errors.csv``              dataset, image, method, stage, message
``missing.csv``             dataset, image, method (external folders lacking
                            an image)
``pairs.csv``               dataset, image, ir, vi: the source files
``scenes.csv`` and ``scene_clusters.csv``
                            scene assignments (see :mod:`.scenes`)
``summary.csv``             dataset, metric, method, mean, std, n, nan, images,
                            comparable, rank: written with the report's tables
                            (see :mod:`.report`)
==========================  ===================================================
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..io import atomic_path

__all__ = [
    "RESULT_FIELDS",
    "TIMING_FIELDS",
    "ERROR_FIELDS",
    "MISSING_FIELDS",
    "PAIR_FIELDS",
    "METHOD_FIELDS",
    "SCENE_FIELDS",
    "CLUSTER_FIELDS",
    "SUMMARY_FIELDS",
    "read_csv",
    "write_csv",
    "safe_name",
    "fused_path",
    "external_folder",
]

RESULT_FIELDS = ("dataset", "image", "method", "metric", "value")
TIMING_FIELDS = ("dataset", "image", "method", "ms")
ERROR_FIELDS = ("dataset", "image", "method", "stage", "message")
MISSING_FIELDS = ("dataset", "image", "method")
PAIR_FIELDS = ("dataset", "image", "ir", "vi")
METHOD_FIELDS = ("method", "kind", "source", "weights", "parameters", "images_timed", "ms_per_image", "images_per_s")
SCENE_FIELDS = ("dataset", "image", "cluster", "distance")
CLUSTER_FIELDS = ("cluster", "train_count", "train_frequency", "status")
SUMMARY_FIELDS = ("dataset", "metric", "method", "mean", "std", "n", "nan", "images", "comparable", "rank")


def read_csv(path: str | os.PathLike, fields: Sequence[str]) -> list[dict[str, str]]:
    """Rows of a CSV written by :func:`write_csv`; [] when absent.

    Rows that lack a field (a line cut by an interruption) are dropped.
    """
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if all(r.get(k) is not None for k in fields)]


def write_csv(path: str | os.PathLike, fields: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """Write the whole CSV atomically (a reader never sees half a file)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)


def safe_name(name: str) -> str:
    """A folder name for a dataset or method label."""
    return re.sub(r"[^A-Za-z0-9._+@-]", "_", name)


def fused_path(outdir: Path, dataset: str, label: str, image: str) -> Path:
    """Where the run keeps the fused image of a (registered) method."""
    return outdir / "fused" / safe_name(dataset) / safe_name(label) / f"{image}.png"


def external_folder(root: Path, dataset: str, n_datasets: int) -> Path | None:
    """Where the fused images of ``dataset`` are in an external folder."""
    for child in root.iterdir():
        if child.is_dir() and child.name.lower() == dataset.lower():
            return child
    return root if n_datasets == 1 else None


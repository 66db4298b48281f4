"""Every value of the VIFB reference file, computed by the original MATLAB code.

``../shared/oracle/vifb_reference_dev.csv`` holds 3,780 values (21 VIFB
triplets x 12 fusion methods x 15 metric columns, stored at 5 significant
digits). Each must agree within 1e-4 relative, or 1e-6 absolute near zero.
The VIFB columns use VIFB's colour convention; ``VIFF_gray`` is VIF on
``rgb2gray`` images and ``VIFF_rgb`` VIF in the VIFB colour mode.
"""

from __future__ import annotations

import csv
from collections import defaultdict

import pytest

from causalfuse.metrics import get_metric, list_metrics
from causalfuse.metrics.folder import Triplet, score_triplets

from .conftest import shared_path

# About 90 s of CPU in all (3,780 values, both colour modes), spread over all cores.
pytestmark = pytest.mark.slow

REL_TOL = 1e-4
ABS_TOL = 1e-6
# The reference file's columns that are not a VIFB metric name.
EXTRA_COLUMNS = {"VIFF_gray": ("VIF", "gray"), "VIFF_rgb": ("VIF", "vifb")}
VIFB_COLUMNS = [
    "Avg_gradient", "Cross_entropy", "Edge_intensity", "Entropy", "Mutinf", "Psnr", "Qabf",
    "Qcb", "Qcv", "Rmse", "Spatial_frequency", "Ssim", "Variance",
]  # fmt: skip


def _by_vifb_name() -> dict[str, str]:
    return {get_metric(n).vifb_name: get_metric(n).name for n in list_metrics() if get_metric(n).vifb_name}


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[tuple[str, str], float]]:
    path = shared_path("oracle", "vifb_reference_dev.csv")
    table: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            table[row["metric"]][(row["image"], row["method"])] = float(row["value"])
    return table


@pytest.fixture(scope="module")
def computed(reference) -> dict[str, dict[tuple[str, str], float]]:
    """All values, both colour modes, scored on all cores (a few seconds on 2 idle cores)."""
    root = shared_path("oracle", "vifb")
    keys = sorted({k for col in reference.values() for k in col})
    triplets = [
        Triplet(img, meth, root / "fused" / meth / f"{img}.jpg", root / "ir" / f"{img}.jpg", root / "vi" / f"{img}.jpg")
        for img, meth in keys
    ]
    names = _by_vifb_name()
    vifb_metrics = sorted({names[c] for c in reference if c in names} | {"VIF"})
    out: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for colour, metrics in (("vifb", vifb_metrics), ("gray", ["VIF"])):
        for r in score_triplets(triplets, metrics, colour=colour, jobs=None):
            out[f"{r.metric}/{colour}"][(r.image, r.method)] = r.value
    return out


def test_reference_file_is_complete(reference):
    assert sorted(reference) == sorted(VIFB_COLUMNS + list(EXTRA_COLUMNS))
    assert sum(len(v) for v in reference.values()) == 3780


@pytest.mark.parametrize("column", VIFB_COLUMNS + list(EXTRA_COLUMNS))
def test_matches_original_matlab(column, reference, computed):
    if column in EXTRA_COLUMNS:
        name, colour = EXTRA_COLUMNS[column]
    else:
        name, colour = _by_vifb_name().get(column), "vifb"
        if name is None:
            pytest.skip(f"no metric registered with vifb_name={column!r} yet")
    ours = computed[f"{name}/{colour}"]
    ref = reference[column]
    assert len(ref) == 252
    bad = []
    for key, want in sorted(ref.items()):
        got = ours[key]
        if not (abs(got - want) <= ABS_TOL or abs(got - want) <= REL_TOL * abs(want)):
            bad.append(f"{key[0]}/{key[1]}: {got:.8g} vs {want:.8g}")
    assert not bad, f"{column}: {len(bad)} of {len(ref)} values off:\n" + "\n".join(bad[:20])


# ----------------------------------------------------------------------------- VIFF on flat windows

#: oracle/viff_edge holds 10 significant digits.
EDGE_REL_TOL = 1e-6


def _edge_cases() -> list[tuple[str, float]]:
    path = shared_path("oracle", "viff_edge", "reference.csv")
    with open(path, newline="") as fh:
        return [(row["case"], float(row["value"])) for row in csv.DictReader(fh) if row["metric"] == "VIFF"]


def test_viff_equals_the_original_on_exactly_constant_windows():
    """Twelve triplets with constant patches (saturated, black, a constant fused image) and two controls.

    Five of them change by up to 40 % when constant windows are computed
    exactly instead of with the original's arithmetic (oracle/viff_edge/README.md).
    """
    import numpy as np
    from PIL import Image

    from causalfuse.metrics.visual import viff

    cases = _edge_cases()
    assert len(cases) == 12
    bad = []
    for case, want in cases:
        folder = shared_path("oracle", "viff_edge", case)
        ir, vi, fused = (np.asarray(Image.open(folder / f"{n}.png")).astype(np.float64) for n in ("ir", "vi", "fused"))
        got = viff(fused, ir, vi)
        if not abs(got - want) <= EDGE_REL_TOL * abs(want):
            bad.append(f"{case}: {got:.10g} vs {want:.10g}")
    assert not bad, "\n".join(bad)

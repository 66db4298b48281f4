"""Qp against the original MATLAB code (``metricZhao`` of Zheng Liu's toolbox under GNU Octave).

``../shared/oracle/more_metrics/reference.csv`` holds ``metricZhao(VI, IR, F)``
(with ``myphasecong3`` and Kovesi's low-pass filter; see its README) on the
21 grey VIFB pairs x 12 fusion methods, 10 significant digits. Inputs are
MATLAB ``rgb2gray`` images (``colour="gray"``). Every value must agree
within 1e-4 relative; none is NaN.

Phase congruency goes through FFTs and the hard threshold PC > 0.1, so a
rounding difference could in principle move a pixel across the threshold
(README); on these 252 triplets none does: the package agrees within
2.4e-6 relative (3e-8 for the median triplet; the filter responses are
complex64, see ``phase_congruency``).
"""

from __future__ import annotations

import math

import pytest

from causalfuse.metrics.folder import Triplet, score_triplets

from .conftest import more_metrics_reference, shared_path

# About 75 s on 2 loaded cores (three phase-congruency transforms of 24 FFTs per triplet).
pytestmark = pytest.mark.slow

REL_TOL = 1e-4


@pytest.fixture(scope="module")
def reference() -> dict[tuple[str, str], float]:
    return more_metrics_reference(["Qp"])["Qp"]


def test_reference_file_is_complete(reference):
    assert len(reference) == 252
    assert not any(math.isnan(v) for v in reference.values())


def test_matches_original_matlab(reference):
    root = shared_path("oracle", "vifb")
    triplets = [
        Triplet(image, method, root / "fused" / method / f"{image}.jpg", root / "ir" / f"{image}.jpg", root / "vi" / f"{image}.jpg")
        for image, method in sorted(reference)
    ]
    got = {(r.image, r.method): r.value for r in score_triplets(triplets, ["Qp"], colour="gray", jobs=None)}
    bad = [
        f"{image}/{method}: {got[image, method]:.10g} vs {want:.10g}"
        for (image, method), want in sorted(reference.items())
        if not abs(got[image, method] - want) <= REL_TOL * abs(want)
    ]
    assert not bad, f"{len(bad)} of {len(reference)} values off:\n" + "\n".join(bad[:20])

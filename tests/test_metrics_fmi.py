"""FMI (Haghighat's ``fmi.m``): identities, the original's quirks, feature maps, and the
compiled window loop against a line-by-line transcription of ``fmi.m``."""

from __future__ import annotations

import cmath
import math

import numpy as np
import pytest

from causalfuse import CausalFuseError
from causalfuse.metrics import compute, get_metric, list_groups
from causalfuse.metrics.fmi import feature_map, feature_mutual_information, fmi_window_mean

FEATURES = ["none", "gradient", "dct", "edge"]
NAMES = {"none": "FMI_pixel", "gradient": "FMI_gradient", "dct": "FMI_dct", "edge": "FMI_edge"}


# ----------------------------------------------------------------------------- transcription of fmi.m


def _branch_transcribed(x: list[float], f: list[float]) -> float:
    """One branch of ``fmi.m`` (x = a source's window, f = the fused window, both
    normalised, column-major), statement by statement in the original's order."""
    n = len(x)
    sx, sf = sum(x[0:3]) + sum(x[3:6]) + sum(x[6:9]), sum(f[0:3]) + sum(f[3:6]) + sum(f[6:9])
    xp = [v / sx for v in x]
    fp = [v / sf for v in f]
    xc, fc = [xp[0]], [fp[0]]
    for i in range(1, n):
        xc.append(xp[i] + xc[i - 1])
        fc.append(fp[i] + fc[i - 1])
    xt = [v - sum(xp) / n for v in xp]
    ft = [v - sum(fp) / n for v in fp]
    cross = sum(a * b for a, b in zip(xt, ft))
    c = 0.0 if cross == 0 else cross / math.sqrt(sum(a * a for a in xt) * sum(b * b for b in ft))
    ex = ex2 = ef = ef2 = 0.0
    for i in range(1, n + 1):
        ex += i * xp[i - 1]
        ex2 += i**2 * xp[i - 1]
        ef += i * fp[i - 1]
        ef2 += i**2 * fp[i - 1]
    xsd, fsd = math.sqrt(ex2 - ex**2), math.sqrt(ef2 - ef**2)
    if c >= 0:
        def bound(i: int, j: int) -> float:
            return 0.5 * (fc[i] + xc[j] - abs(fc[i] - xc[j]))
    else:
        def bound(i: int, j: int) -> float:
            return 0.5 * (fc[i] + xc[j] - 1 + abs(fc[i] + xc[j] - 1))
    if c == 0 or xsd == 0 or fsd == 0:
        phi = 0.0
    else:
        cov = 0.0
        for i in range(n):
            for j in range(n):
                cov = cov + bound(i, j) - fc[i] * xc[j]
        phi = c / (cov / (fsd * xsd))

    def mass(i: int, j: int) -> float:
        up = bound(i, j)
        if i > 0:
            up -= bound(i - 1, j)
        if j > 0:
            up -= bound(i, j - 1)
        if i > 0 and j > 0:
            up += bound(i - 1, j - 1)
        return phi * up + (1 - phi) * fp[i] * xp[j]

    def term(p: float) -> float:
        return (-p * (cmath.log(p) / math.log(2))).real if p < 0 else -p * math.log2(p)  # real(-p log2 p)

    cells = [(0, 0)] + [(i, 0) for i in range(1, n)] + [(0, j) for j in range(1, n)]
    cells += [(i, j) for i in range(1, n) for j in range(1, n)]
    joint = 0.0
    for i, j in cells:
        p = mass(i, j)
        if p != 0:
            joint += term(p)
    hx = sum(-v * math.log2(v) for v in xp if v != 0)
    hf = sum(-v * math.log2(v) for v in fp if v != 0)
    mi = hx + hf - joint
    return 0.0 if mi == 0 else 2 * mi / (hx + hf)


def _normalised(w: list[float]) -> list[float]:
    lo, hi = min(w), max(w)
    return [1.0] * len(w) if hi == lo else [(v - lo) / (hi - lo) for v in w]


def _fmi_transcribed(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """``fmi.m``'s window loop with w = 3, including the fused window normalised in place."""
    rows, cols = f.shape
    scores = []
    for q in range(cols - 2):
        for p in range(rows - 2):
            aw, bw, fw = (list(x[p : p + 3, q : q + 3].ravel(order="F")) for x in (a, b, f))
            if aw == fw:
                s_a = 1.0
            else:
                aw, fw = _normalised(aw), _normalised(fw)
                s_a = _branch_transcribed(aw, fw)
            if bw == fw:  # fw as the a-branch left it
                s_b = 1.0
            else:
                bw, fw = _normalised(bw), _normalised(fw)
                s_b = _branch_transcribed(bw, fw)
            scores.append((s_a + s_b) / 2)
    return sum(scores) / len(scores)


def _cases():
    rng = np.random.default_rng(7)
    yield "small integers (many ties and equal windows)", [rng.integers(0, 4, (9, 11)).astype(float) for _ in range(3)]
    yield "binary maps", [(rng.random((10, 9)) > 0.6).astype(float) for _ in range(3)]
    yield "8-bit", [rng.integers(0, 256, (8, 8)).astype(float) for _ in range(3)]
    yield "signed floats (DCT-like)", [rng.normal(0, 30, (8, 9)) for _ in range(3)]
    base = rng.integers(0, 256, (9, 9)).astype(float)
    yield "sources close to the fused image", [base, base + rng.integers(-1, 2, base.shape), np.round(base * 0.9)]


@pytest.mark.parametrize("label,images", list(_cases()), ids=[c[0] for c in _cases()])
def test_window_loop_equals_a_transcription_of_fmi_m(label, images):
    a, b, f = (np.ascontiguousarray(x) for x in images)
    assert fmi_window_mean(a, b, f) == pytest.approx(_fmi_transcribed(a, b, f), rel=1e-12, abs=1e-14)


# ----------------------------------------------------------------------------- identities and quirks


@pytest.mark.parametrize("feature", FEATURES)
def test_identical_images_score_one(feature):
    x = np.random.default_rng(1).integers(0, 256, (20, 17)).astype(np.float64)
    assert feature_mutual_information(x, x, x, feature=feature) == 1.0


def test_the_infrared_branch_compares_with_the_fused_window_as_the_visible_branch_left_it():
    """fmi.m normalises the fused window in place in the visible branch; the infrared
    branch then compares its raw window with that. A window with one pixel above a flat
    background normalises to a one-point pdf, which scores 0 (no entropy, no MI)."""
    fused = np.full((3, 3), 121.0)
    fused[0, 0] = 122.0
    brighter = fused + 1.0  # differs from the fused window, normalises to the same one-point pdf
    # visible window equal to the fused one: 1; the fused window stays raw, so the equal
    # infrared window scores 1 too
    assert feature_mutual_information(fused, fused, fused) == 1.0
    assert feature_mutual_information(fused, brighter, fused) == 0.5
    # visible window different: the fused window is normalised first, and the infrared
    # window, equal to the raw fused one, no longer counts as equal
    assert feature_mutual_information(fused, fused, brighter) == 0.0
    a, b, f = brighter, fused, fused
    assert _fmi_transcribed(a, b, f) == 0.0


def test_below_three_pixels_the_map_is_empty_and_compute_refuses_by_name():
    x = np.full((2, 40), 7.0)
    for name in NAMES.values():
        assert math.isnan(get_metric(name).fn(x, x, x))  # mean2 of an empty map
    with pytest.raises(CausalFuseError, match=r"too small for FMI_edge \(at least 3 x 3\)"):
        compute(x.astype(np.uint8), x.astype(np.uint8), x.astype(np.uint8), ["FMI_edge"])
    y = np.random.default_rng(2).integers(0, 256, (3, 3), dtype=np.uint8)
    assert 0.0 <= compute(y, y[::-1].copy(), y.T.copy(), ["FMI_pixel"])["FMI_pixel"] <= 1.0


def test_registered_as_the_fmi_group_outside_all():
    groups = list_groups()
    assert groups["fmi"] == ["FMI_dct", "FMI_edge", "FMI_gradient", "FMI_pixel"]
    assert not set(groups["fmi"]) & set(groups["all"])
    for name in NAMES.values():
        info = get_metric(name.lower())
        assert info.higher_is_better and info.min_size == 3 and "10.1016/j.compeleceng.2011.07.012" in info.reference


# ----------------------------------------------------------------------------- feature maps


def test_gradient_feature_is_the_x_derivative_only():
    x = np.array([[0.0, 2, 8, 9], [1, 1, 1, 1], [5, 3, 0, 0]])
    want = np.array([[2.0, 4, 3.5, 1], [0, 0, 0, 0], [-2, -2.5, -1.5, 0]])
    np.testing.assert_array_equal(feature_map(x, "gradient"), want)


def test_dct_feature_is_the_orthonormal_dct_of_the_whole_image():
    x = np.full((6, 10), 3.0)
    d = feature_map(x, "dct")
    assert d[0, 0] == pytest.approx(3.0 * math.sqrt(60))
    assert np.abs(d.ravel()[1:]).max() < 1e-12
    y = np.random.default_rng(3).random((5, 7))
    assert np.sum(feature_map(y, "dct") ** 2) == pytest.approx(np.sum(y**2))  # orthonormal


@pytest.mark.parametrize("background", [0.0, 255.0])
def test_edge_feature_matches_octaves_sobel_on_a_single_point(background):
    """Octave's own tests of edge(): a single bright (or dark) pixel gives a diamond."""
    x = np.full((5, 5), background)
    x[2, 2] = 255.0 - background
    want = np.zeros((5, 5))
    want[1, 2] = want[2, 1] = want[2, 3] = want[3, 2] = 1.0
    np.testing.assert_array_equal(feature_map(x, "edge"), want)


def test_edge_feature_is_binary_and_empty_on_a_flat_image():
    assert not feature_map(np.full((8, 8), 90.0), "edge").any()
    e = feature_map(np.random.default_rng(4).integers(0, 256, (30, 30)).astype(float), "edge")
    assert set(np.unique(e)) <= {0.0, 1.0} and 0 < e.sum() < e.size


def _sobel_edges_numpy(x: np.ndarray) -> np.ndarray:
    """Octave's edge(x / 255) in NumPy, term by term in conv2's order (what the compiled kernel must equal)."""
    im = x / 255.0
    rows, cols = im.shape
    pad = np.pad(im, 1, mode="edge")

    def at(di, dj):
        return pad[di : di + rows, dj : dj + cols]

    g1 = -0.125 * at(2, 2) + 0.125 * at(0, 2) - 0.25 * at(2, 1) + 0.25 * at(0, 1) - 0.125 * at(2, 0) + 0.125 * at(0, 0)
    g2 = -0.125 * at(2, 2) - 0.25 * at(1, 2) - 0.125 * at(0, 2) + 0.125 * at(2, 0) + 0.25 * at(1, 0) + 0.125 * at(0, 0)
    strength = g1 * g1 + g2 * g2
    total = 0.0
    for v in strength.ravel(order="F"):
        total += v
    strength[strength <= 4.0 * (total / strength.size)] = 0.0
    s = np.pad(strength, 1)
    c = s[1:-1, 1:-1]
    thin = ((c > s[1:-1, :-2]) & (c > s[1:-1, 2:])) | ((c > s[:-2, 1:-1]) & (c > s[2:, 1:-1]))
    return thin.astype(np.float64)


@pytest.mark.parametrize("shape", [(30, 30), (7, 41), (1, 5), (3, 1)])
def test_edge_kernel_equals_numpy(shape):
    rng = np.random.default_rng(shape[0])
    for x in (rng.integers(0, 256, shape).astype(float), np.round(rng.random(shape) * 4) * 60):
        np.testing.assert_array_equal(feature_map(x, "edge"), _sobel_edges_numpy(x))


def test_same_value_on_any_number_of_threads():
    from causalfuse.metrics import set_default_threads

    rng = np.random.default_rng(9)
    a, b = rng.integers(0, 256, (2, 20, 300)).astype(float)
    f = np.round((a + b) / 2)
    values = []
    try:
        for threads in (1, 2, 3):
            set_default_threads(threads)
            values.append(fmi_window_mean(a, b, f))
    finally:
        set_default_threads(None)
    assert len(set(values)) == 1


def test_unknown_feature_is_refused():
    with pytest.raises(ValueError, match="'wavelet'"):
        feature_map(np.zeros((4, 4)), "wavelet")  # type: ignore[arg-type]

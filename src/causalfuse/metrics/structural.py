"""Metrics built on structural similarity (SSIM) maps.

VIFB's SSIM = SSIM(VI, F) + SSIM(IR, F), and, as Zheng Liu's toolbox for
Liu et al. (TPAMI 2012) computes them, Piella and Heijmans' Q_S, Q_W and
Q_E, Yang et al.'s Q_Y and Cvejic et al.'s Q_C (groups ``piella`` and
``liu2012``, not part of ``all``). Every function takes one channel on the
0-255 scale.
"""

from __future__ import annotations

import numpy as np

from ._filters import filter2_valid, fspecial_gaussian_octave, gaussian_1d, row_runs, source_cache
from ._kernels import cvejic_sum, piella_sums, ssim_sum, window_means_octave, yang_sum
from ._registry import register_metric

__all__ = ["cvejic_qc", "piella_qe", "piella_qs", "piella_qw", "ssim", "ssim_single", "yang_qy"]

_WINDOW = gaussian_1d(11, 1.5)
_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Local mean and second moment of one image (cached for sources)."""
    m = filter2_valid(np.stack([x, x * x]), _WINDOW)
    return m[0], m[1]


def _ssim_pair_maps(fused: np.ndarray, sources: list[np.ndarray]) -> list[float]:
    """Mean SSIM of each source against ``fused``, sharing the fused image's statistics."""
    f = np.asarray(fused, dtype=np.float64)
    srcs = [np.asarray(s, dtype=np.float64) for s in sources]
    filt = filter2_valid(np.stack([f, f * f] + [s * f for s in srcs]), _WINDOW)
    if filt.shape[-1] == 0 or filt.shape[-2] == 0:
        return [float("nan")] * len(srcs)  # image smaller than the window: MATLAB's mean2 of empty is NaN
    ub, eb2 = filt[0], filt[1]
    out = []
    for i, s in enumerate(srcs):
        ua, ea2 = source_cache.get_or_compute("ssim", s, _moments)
        out.append(ssim_sum(ua, ea2, ub, eb2, filt[2 + i], _C1, _C2) / ub.size)
    return out


def ssim_single(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al.'s SSIM of two images: 11 x 11 Gaussian (sigma 1.5), 'valid', K = (0.01, 0.03), L = 255."""
    return _ssim_pair_maps(b, [a])[0]


@register_metric(
    "SSIM",
    higher_is_better=True,
    reference="Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, Image quality assessment: from error visibility "
    "to structural similarity, IEEE Transactions on Image Processing 13(4):600-612, 2004, doi:10.1109/TIP.2003.819861",
    vifb_name="Ssim",
    min_size=11,
)
def ssim(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """VIFB's SSIM: SSIM(VI, F) + SSIM(IR, F), so the maximum is 2 (``metricsSsim``).

    Each term is the mean of the SSIM map with an 11 x 11 Gaussian window
    (sigma 1.5), 'valid' filtering (no padding), K1 = 0.01, K2 = 0.03, L = 255.
    Constant windows need no special case: the original's variance residue
    there (about 1e-11) is nothing beside C2 = 58.5, so a window where the two
    images are constant at a and b scores (2ab + C1) / (a^2 + b^2 + C1), and
    three equal constant images score 2.
    Below 11 x 11 pixels no window fits: the map is empty and, as the
    original's ``mean2`` of an empty map, the result is NaN
    (:func:`~causalfuse.metrics.compute` refuses such images).
    """
    s_vi, s_ir = _ssim_pair_maps(fused, [vi, ir])
    return s_vi + s_ir


# ----------------------------------------------------------------------------- fusion metrics built on SSIM maps
# Qs, Qw, Qe (Piella and Heijmans), Qy (Yang et al.) and Qc (Cvejic et al.),
# as Zheng Liu's toolbox for Liu et al., TPAMI 2012 computes them
# (``metricPeilla.m``, ``metricYang.m``, ``metricCvejic.m``): the original
# is called (VI, IR, F), so ``a`` below is the visible image, ``b`` the
# infrared one, ``f`` the fused one.
#
# Flat windows. Where an image is constant over a window its local variance
# (and its covariance with anything) is only the rounding residue of
# ``filter2(w, x.*x) - mu.^2``, about 1e-11, and these metrics divide such
# residues by each other: lambda = s_a^2 / (s_a^2 + s_b^2) where both sources
# are flat, Qy's and Qc's SSIM maps, whose C1 = C2 = 2e-16 are below the
# residue, and Qc's weight s_af / (s_af + s_bf), whose sign and clipping the
# residue decides wherever any of the three images is flat (or a covariance
# is exactly 0, as for patterns uncorrelated by symmetry).
# There the value is decided by the rounding of the original's sums, so the
# separable filters are used everywhere else and those windows are summed
# again term by term in the order of Octave's ``conv2``
# (:func:`~._kernels.window_means_octave`, 2-D kernel as Octave's
# ``fspecial`` builds it), which reproduces the reference values computed
# under Octave to 1e-10, residue-dominated ones included. MATLAB may sum in
# another order and give other residues there.

_PIELLA_G = _WINDOW
_PIELLA_W = fspecial_gaussian_octave(11, 1.5, renormalise=True)
_LIU_G = gaussian_1d(7, 1.5)
_LIU_W = fspecial_gaussian_octave(7, 1.5, renormalise=True)
_LIU_C = 2e-16
#: Windows with a local variance (Qc: a covariance, or their sum) below this in
#: absolute value are summed again the original's way.
#: Constant windows sit near 1e-11 (rounding residue); a window of an 8-bit
#: image that is not constant has a variance of at least about 1e-6 (one
#: pixel in a corner of the 11 x 11 window off by one level). Windows between
#: are harmless either way: the original's sum is reproduced exactly, and a
#: variance of 1e-6 computed separably is off by only about 1e-5 relative.
_FLAT = 1e-6
#: The originals' SSIM helpers refuse images below 11 x 11 (also the 7 x 7 ones).
_LIU_MIN_SIZE = 11
_PIELLA = (
    "G. Piella, H. Heijmans, A new quality metric for image fusion, Proceedings of the 2003 International Conference "
    "on Image Processing (ICIP), vol. 3, pp. III-173-176, 2003, doi:10.1109/ICIP.2003.1247209"
)


def _moments_and_flat(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = filter2_valid(np.stack([x, x * x]), g)
    return m[0], m[1], m[1] - m[0] * m[0] < _FLAT


def _source_moments(x: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, ...]:
    """Local mean, second moment and flat-window mask of a source (cached)."""
    return source_cache.get_or_compute(f"ssim_flat{g.size}", x, lambda im: _moments_and_flat(im, g))


def _as_original_at(mask: np.ndarray, stats: list[np.ndarray], images: list[np.ndarray], win: np.ndarray) -> list[np.ndarray]:
    """``stats`` (local means of ``images``, one each) with the windows of ``mask`` summed the original's way."""
    if not mask.any():
        return stats
    rows, starts, lengths = row_runs(mask)
    exact = window_means_octave(np.stack(images), win, rows, starts, lengths)
    out = []
    for x, values in zip(stats, exact):
        x = x.copy()  # the sources' maps belong to the cache
        x[mask] = values  # row-major order, as the runs
        out.append(x)
    return out


def _piella_sums(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, int]:
    """(sum of q, sum of c q, sum of c, number of windows) over the 11 x 11 windows (:func:`~._kernels.piella_sums`)."""
    f = np.asarray(fused, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ua, eaa, flat_a = _source_moments(a, _PIELLA_G)
    ub, ebb, flat_b = _source_moments(b, _PIELLA_G)
    if ua.size == 0:
        return 0.0, 0.0, 0.0, 0  # no window fits: the quotients below are NaN
    # lambda is the only quantity made of residues alone here (SSIM's C1, C2 dwarf them)
    ua, eaa, ub, ebb = _as_original_at(flat_a & flat_b, [ua, eaa, ub, ebb], [a, a * a, b, b * b], _PIELLA_W)
    uf, eff, eaf, ebf = filter2_valid(np.stack([f, f * f, a * f, b * f]), _PIELLA_G)
    return (*piella_sums(ua, eaa, ub, ebb, uf, eff, eaf, ebf, _C1, _C2), uf.size)


def _piella_weighted(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Q_W: the terms of Q_S weighted by c = max(s_a^2, s_b^2) / sum(c)."""
    _, cq, c, n = _piella_sums(fused, a, b)
    return cq / c if n else float("nan")


def _edge_magnitude(x: np.ndarray) -> np.ndarray:
    """``sqrt(gx.^2 + gy.^2)`` with ``filter2([1 0 -1; 1 0 -1; 1 0 -1], x, 'same')`` and its transpose (zero padding)."""
    p = np.pad(np.asarray(x, dtype=np.float64), 1)
    cols = p[:-2] + p[1:-1] + p[2:]  # three-row sums
    rows = p[:, :-2] + p[:, 1:-1] + p[:, 2:]  # three-column sums
    gx = cols[:, :-2] - cols[:, 2:]
    gy = rows[:-2] - rows[2:]
    return np.sqrt(gx * gx + gy * gy)


def _source_edges(x: np.ndarray) -> np.ndarray:
    return source_cache.get_or_compute("piella_edges", x, lambda im: (_edge_magnitude(im),))[0]


def _piella_weighted_edges(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Q_W of the edge images (``Qw`` of ``metricPeilla``'s case 3)."""
    return _piella_weighted(_edge_magnitude(fused), _source_edges(a), _source_edges(b))


@register_metric("Qs", higher_is_better=True, reference=_PIELLA, min_size=11, groups=("piella", "liu2012"))
def piella_qs(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Piella and Heijmans' fusion quality index Q_S (``metricPeilla(VI, IR, F, 1)``).

    With Wang's SSIM maps (11 x 11 Gaussian, sigma 1.5, 'valid', K = (0.01,
    0.03), L = 255) and the sources' local variances s_vi^2, s_ir^2:
    Q_S = mean(lambda SSIM(F, VI) + (1 - lambda) SSIM(F, IR)), lambda =
    s_vi^2 / (s_vi^2 + s_ir^2) (0.5 added to both where their sum is 0).
    Where both sources are constant over a window lambda is a ratio of
    rounding residues; it is computed there with the original's arithmetic
    (see the comment above :data:`_FLAT`). Images below 11 x 11: NaN (the
    original's ``ssim_index`` returns no map).
    """
    q, _, _, n = _piella_sums(fused, vi, ir)
    return q / n if n else float("nan")


@register_metric("Qw", higher_is_better=True, reference=_PIELLA, min_size=11, groups=("piella", "liu2012"))
def piella_qw(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Piella and Heijmans' weighted fusion quality index Q_W (``metricPeilla(VI, IR, F, 2)``).

    The terms of :func:`piella_qs` weighted by c = max(s_vi^2, s_ir^2) /
    sum(max(s_vi^2, s_ir^2)) over the windows, so that windows with more
    detail in a source count more. Images below 11 x 11: NaN.
    """
    return _piella_weighted(fused, vi, ir)


@register_metric("Qe", higher_is_better=True, reference=_PIELLA, min_size=11, groups=("piella", "liu2012"))
def piella_qe(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Piella and Heijmans' edge-dependent fusion quality index Q_E = Q_W(VI, IR, F) * Q_W(VI', IR', F') (alpha = 1).

    The primed images are edge magnitudes sqrt(gx^2 + gy^2) from
    ``filter2([1 0 -1; 1 0 -1; 1 0 -1], x, 'same')`` and its transpose
    (zero padding). ``metricPeilla(..., 3)`` as published fails (its last
    line multiplies by ``Q``, which only case 1 defines); the Q_W of the
    edge images it computes equals ``metricPeilla(VI', IR', F', 2)``, and
    Q_E is that times ``metricPeilla(VI, IR, F, 2)``, the paper's
    definition with the file's ``alpha = 1`` (copies that edit the line to
    ``Qe = Qw*Qw^alpha`` give Q_W(edges) squared instead). Images below
    11 x 11: NaN.
    """
    return _piella_weighted(fused, vi, ir) * _piella_weighted_edges(fused, vi, ir)


def _liu_stats(fused: np.ndarray, a: np.ndarray, b: np.ndarray, *, cross_ab: bool) -> list[np.ndarray] | None:
    """The local moments of ``ssim_yang`` (7 x 7 Gaussian, sigma 1.5, 'valid'), flat windows summed the original's way.

    Returns [mu_a, E(a^2), mu_b, E(b^2), mu_f, E(f^2), E(af), E(bf)] and,
    with ``cross_ab``, E(ab); None below the originals' 11 x 11.
    """
    f = np.asarray(fused, dtype=np.float64)
    if min(f.shape) < _LIU_MIN_SIZE:
        return None
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    ua, eaa, flat_a = _source_moments(a, _LIU_G)
    ub, ebb, flat_b = _source_moments(b, _LIU_G)
    own_images = [f, f * f, a * f, b * f] + ([a * b] if cross_ab else [])
    own = filter2_valid(np.stack(own_images), _LIU_G)
    if cross_ab:  # Yang: lambda and the SSIM maps of two images constant over the window
        flat_f = own[1] - own[0] * own[0] < _FLAT
        mask = (flat_a & flat_b) | (flat_f & (flat_a | flat_b))
        return _as_original_at(mask, [ua, eaa, ub, ebb, *own], [a, a * a, b, b * b, *own_images], _LIU_W)
    # Cvejic: the weight w = s_af / (s_af + s_bf) is clipped by the signs of
    # s_af, s_bf and their sum (w < 0, w > 1), so every window where one of
    # them is residue counts: an image constant over the window, or
    # covariances that are exactly 0 or cancel. Each side's statistics are
    # needed where its covariance or the sum is residue (an SSIM map of two
    # constant images only matters where both covariances are residue).
    uf, eff, eaf, ebf = own
    s_af = eaf - ua * uf
    s_bf = ebf - ub * uf
    cancel = np.abs(s_af + s_bf) < _FLAT
    ua, eaa, uf, eff, eaf = _as_original_at((np.abs(s_af) < _FLAT) | cancel, [ua, eaa, uf, eff, eaf], [a, a * a, f, f * f, a * f], _LIU_W)
    ub, ebb, uf, eff, ebf = _as_original_at((np.abs(s_bf) < _FLAT) | cancel, [ub, ebb, uf, eff, ebf], [b, b * b, f, f * f, b * f], _LIU_W)
    return [ua, eaa, ub, ebb, uf, eff, eaf, ebf]


@register_metric(
    "Qy",
    higher_is_better=True,
    reference="C. Yang, J.-Q. Zhang, X.-R. Wang, X. Liu, A novel similarity based quality metric for image fusion, "
    "Information Fusion 9(2):156-160, 2008, doi:10.1016/j.inffus.2006.09.001",
    min_size=_LIU_MIN_SIZE,
    groups=("liu2012",),
)
def yang_qy(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Yang et al.'s similarity-based metric Q_Y (``metricYang(VI, IR, F)``).

    SSIM maps with a 7 x 7 Gaussian (sigma 1.5), 'valid', C1 = C2 = 2e-16;
    where SSIM(VI, IR) >= 0.75: lambda SSIM(VI, F) + (1 - lambda) SSIM(IR, F),
    lambda = s_vi^2 / (s_vi^2 + s_ir^2); elsewhere max(SSIM(VI, F),
    SSIM(IR, F)); Q_Y is the mean.

    NaN where the original gives NaN: where both sources are 0 over a window
    lambda is 0 / 0 (and the original's ``Q1 .* bin`` keeps the NaN either
    way). With C1 and C2 below the rounding residue of a constant window,
    the SSIM maps and lambda on windows where images are constant are ratios
    of residues: they are computed here with the original's arithmetic as
    Octave performs it, so the package returns the Octave reference value
    also where such windows dominate (e.g. 905 or -99, outside [-1, 1]).
    Those values mean nothing about the fusion and MATLAB may give others;
    the reference tests do not hold them to the tolerance. Images below
    11 x 11: NaN (``ssim_yang`` refuses them).
    """
    stats = _liu_stats(fused, vi, ir, cross_ab=True)
    if stats is None:
        return float("nan")
    ua, eaa, ub, ebb, uf, eff, eaf, ebf, eab = stats
    return yang_sum(ua, eaa, ub, ebb, uf, eff, eab, eaf, ebf, _LIU_C) / uf.size


@register_metric(
    "Qc",
    higher_is_better=True,
    reference="N. Cvejic, A. Loza, D. Bull, N. Canagarajah, A similarity metric for assessment of image fusion "
    "algorithms, International Journal of Signal Processing 2(3):178-182, 2005 (World Academy of Science, "
    "Engineering and Technology; no DOI)",
    min_size=_LIU_MIN_SIZE,
    groups=("liu2012",),
)
def cvejic_qc(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Cvejic et al.'s similarity metric Q_C (``metricCvejic(VI, IR, F, 2)``).

    SSIM maps as :func:`yang_qy`; w = s_vi,f / (s_vi,f + s_ir,f) from the
    local covariances with F; sim = w SSIM(VI, F) + (1 - w) SSIM(IR, F), set
    to 0 where w < 0 and to 1 where w > 1 (the similarity is clipped, not the
    weight); Q_C is the mean. The sources are not interchangeable (which
    one is first decides the clipping): the order is the original's call
    with the visible image first; ``cvejic_qc(fused, ir=vi, vi=ir)`` gives
    the swapped call.

    NaN where the original gives NaN: wherever s_vi,f + s_ir,f is exactly 0
    (F constant at 0 over a 7 x 7 window, e.g. a black border), w = 0 / 0
    passes both clipping tests and the mean is NaN; most fused images with
    black regions score NaN. On windows where F (or both sources) is
    constant w is a ratio of rounding residues; it is computed with the
    original's arithmetic as Octave performs it, so the package returns the
    Octave reference value also where such windows dominate (above 1, e.g.
    308); those values mean nothing about the fusion, MATLAB may give
    others, and the reference tests do not hold them to the tolerance.
    Images below 11 x 11: NaN.
    """
    stats = _liu_stats(fused, vi, ir, cross_ab=False)
    if stats is None:
        return float("nan")
    ua, eaa, ub, ebb, uf, eff, eaf, ebf = stats
    return cvejic_sum(ua, eaa, ub, ebb, uf, eff, eaf, ebf, _LIU_C) / uf.size

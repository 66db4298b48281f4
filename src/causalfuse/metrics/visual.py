"""Visual information fidelity for fusion: VIFF (Han et al., 2013).

Takes one channel on the 0-255 scale. Local statistics are separable
Gaussian-window 'valid' filters (faster here than FFT at these sizes); the
sources' own statistics are kept in a small cache, since a benchmark scores
many fused images against the same pair.

Flat windows are the exception. On a window where an image is constant (a
clipped highlight, a saturated sky) the original's 2-D filter leaves a
variance residue of up to about 3e-10 instead of 0, and its
``sigma^2 < 1e-10`` tests and gains act on that residue: they decide whether
the window counts as flat and which source is taken. So at the first scale
(17 x 17, the only one where this changes the value) every window where an
image is constant (variance below :data:`_FLAT`) at a level whose residue
reaches 1e-10 is computed again with the original's arithmetic
(:func:`~._kernels.window_means_octave`, the 2-D ``fspecial`` kernel as
Octave builds it). Ordinary windows keep the fast path: their variance is at
least about 5e-5 for 8-bit images, far from the thresholds (:data:`_FLAT`
lies between).
"""

from __future__ import annotations

import numpy as np

from ._filters import filter2_valid, filter2_valid_decimated, fspecial_gaussian_octave, gaussian_1d, row_runs, source_cache
from ._kernels import viff_arguments, window_means_octave
from ._registry import register_metric

__all__ = ["viff"]

_SIGMA_N_SQ = 0.005 * 255 * 255
_C = 1e-7
_SCALE_WEIGHTS = np.array([1.0, 0.0, 0.15, 1.0]) / 2.15
_WINDOWS = [gaussian_1d(2 ** (5 - s) + 1, (2 ** (5 - s) + 1) / 5.0) for s in range(1, 5)]  # 17, 9, 5, 3
#: First-scale windows with a variance below this, in any image, are computed with the original's arithmetic.
_FLAT = 1e-6
_WINDOW_2D = fspecial_gaussian_octave(17, 17 / 5.0)


@register_metric(
    "VIF",
    higher_is_better=True,
    reference="Y. Han, Y. Cai, Y. Cao, X. Xu, A new image fusion performance metric based on visual information "
    "fidelity, Information Fusion 14(2):127-135, 2013, doi:10.1016/j.inffus.2011.08.002",
    vifb_name="VIFF",
    min_size=41,
)
def viff(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """VIFF of Han et al.: multi-scale VIF of the fused image against both sources.

    At each of 4 scales (windows 17, 9, 5, 3, Gaussian sigma N/5; for scales
    after the first the images are filtered 'valid' and decimated by 2), the
    VIF statistics of each source against F are computed with noise variance
    0.005 * 255^2 and Sheikh's clipping; at each pixel the source with the
    smaller gain g gives both the VID and VIND terms (the infrared image on
    ties); F_s = sum(VID + C) / sum(VIND + C), C = 1e-7, and
    VIFF = sum_s p_s F_s with p = [1, 0, 0.15, 1] / 2.15.

    Where an image is constant over a first-scale window the original's
    ``sigma^2 < 1e-10`` tests act on its 2-D filter's rounding residue; those
    windows are computed with its arithmetic (see the module docstring), and
    three equal constant images score 1 (sum(0 + C) / sum(0 + C) per scale).

    Below 41 pixels in height or width the coarsest scale is empty and, as in
    the original (a sum over nothing, 0 / 0), the result is NaN
    (:func:`~causalfuse.metrics.compute` refuses such images).
    """
    return _viff(fused, vi, ir)  # Han's VIFF_Public(Im1, Im2, ImF) called with Im1 = visible, as the references were


def _chain(image: np.ndarray) -> tuple[np.ndarray, ...]:
    """One image's own part of VIFF: per scale the (filtered, decimated) image, its local mean and second moment.

    Returns 12 arrays: images of scales 1-4, then means, then second moments
    (empty where a scale's statistics are not needed: weight 0).
    """
    imgs, mus, e2s = [], [], []
    x = np.asarray(image, dtype=np.float64)
    empty = np.zeros((0, 0))
    for s, g in enumerate(_WINDOWS):
        if s > 0:
            x = filter2_valid_decimated(x, g)
        imgs.append(x)
        if _skip(s, x, g):
            mus.append(empty)
            e2s.append(empty)
        else:
            st = filter2_valid(np.stack([x, x * x]), g)
            mus.append(st[0])
            e2s.append(st[1])
    return (*imgs, *mus, *e2s)


def _skip(s: int, x: np.ndarray, g: np.ndarray) -> bool:
    # A scale of weight 0 only feeds the next one (unless it is empty: then the original's 0 * NaN is NaN).
    return _SCALE_WEIGHTS[s] == 0 and min(x.shape) >= g.size


def _viff(fused: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """VIFF with the original's argument order: ``first`` is taken where its gain is strictly smaller."""
    cf = _chain(fused)
    ca = source_cache.get_or_compute("viff", first, _chain)
    cb = source_cache.get_or_compute("viff", second, _chain)
    total = 0.0
    for s, g in enumerate(_WINDOWS):
        f, a, b = cf[s], ca[s], cb[s]
        if _skip(s, f, g):
            continue
        mu2, e22 = cf[4 + s], cf[8 + s]
        if mu2.size == 0:
            return float("nan")  # smaller than the window: sum of nothing, 0 / 0 in the original
        cross = filter2_valid(np.stack([a * f, b * f]), g)
        stats = [ca[4 + s], ca[8 + s], cross[0], cb[4 + s], cb[8 + s], cross[1], mu2, e22]
        if s == 0:
            stats = _flat_windows_as_original(stats, a, b, f)
        args = viff_arguments(*stats, _SIGMA_N_SQ)
        args += 1.0
        vid, vind = np.log10(args, out=args)
        total += _SCALE_WEIGHTS[s] * ((vid + _C).sum() / (vind + _C).sum())
    return float(total)


def _flat_windows_as_original(stats: list[np.ndarray], a: np.ndarray, b: np.ndarray, f: np.ndarray) -> list[np.ndarray]:
    """The first scale's statistics with every window the residue decides recomputed the original's way.

    Those are the windows where an image is constant at a level whose
    residue (in the original's arithmetic) reaches the 1e-10 threshold. At
    other levels (0, 255 and all but ten of the 8-bit levels) every test
    sees "flat" in both arithmetics and the results agree, so only the
    flagged windows pay for the slow sum.
    """
    mu_a, e2_a, _, mu_b, e2_b, _, mu_f, e2_f = stats
    decisive = _decisive(a, mu_a, e2_a) | _decisive(b, mu_b, e2_b) | _decisive(f, mu_f, e2_f)
    if not decisive.any():
        return stats
    rows, starts, lengths = row_runs(decisive)
    top, bottom = rows[0], rows[-1] + _WINDOW_2D.shape[0]  # only the image rows those windows read
    a, b, f = (np.asarray(x[top:bottom], dtype=np.float64) for x in (a, b, f))
    images = np.stack([a, a * a, a * f, b, b * b, b * f, f, f * f])  # the products of ``stats``, in its order
    exact = window_means_octave(images, _WINDOW_2D, rows - top, starts, lengths)
    out = [x.copy() for x in stats]  # the sources' maps belong to the cache
    for x, values in zip(out, exact):
        x[decisive] = values  # row-major order, as the runs
    return out


def _decisive(image: np.ndarray, mu: np.ndarray, e2: np.ndarray) -> np.ndarray:
    """Windows where ``image`` is constant at a level whose residue the original's tests act on."""
    flat = e2 - mu * mu < _FLAT
    if not flat.any():
        return flat
    levels = np.rint(mu[flat])
    if not np.array_equal(image, np.rint(image)) or levels.min() < 0 or levels.max() > 255:
        return flat  # not 8-bit levels: a flat window need not be constant; all take the slow sum
    decisive = np.zeros_like(flat)
    decisive[flat] = _residue_reaches_threshold()[levels.astype(np.intp)]
    return decisive


_RESIDUE_TABLE: np.ndarray | None = None


def _residue_reaches_threshold() -> np.ndarray:
    """For each 8-bit level v: whether the original's variance of a constant-v 17 x 17 window is at least 1e-10.

    Computed once, term by term in the original's order (the same sums as
    :func:`~._kernels.window_means_octave`): ten levels (154, 178, 196,
    199, 228, 229, 230, 238, 247, 254) with the kernel of Octave's ``fspecial``.
    """
    global _RESIDUE_TABLE
    if _RESIDUE_TABLE is None:
        v = np.arange(256, dtype=np.float64)
        mean = np.zeros(256)
        second = np.zeros(256)
        m, n = _WINDOW_2D.shape
        for q in range(n - 1, -1, -1):
            for p in range(m - 1, -1, -1):
                w = _WINDOW_2D[p, q]
                mean = mean + w * v
                second = second + w * (v * v)
        _RESIDUE_TABLE = second - mean * mean >= 1e-10
    return _RESIDUE_TABLE

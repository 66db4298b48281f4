"""Zhao et al.'s phase-congruency metric Q_P, as Zheng Liu's toolbox computes it.

``metricZhao.m`` with ``myphasecong3.m`` (Z. Liu's revision of Kovesi's
``phasecong3``) and Kovesi's ``lowpassfilter.m``: group ``liu2012``, not
part of ``all``. Every function takes one channel on the 0-255 scale.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np
from scipy import fft as sfft
from scipy.ndimage import correlate1d

from ._filters import gaussian_1d, source_cache
from ._kernels import phase_orientation_sums
from ._registry import register_metric
from ._threads import thread_count

__all__ = ["phase_congruency", "zhao_qp"]

# myphasecong3's defaults, which metricZhao uses.
_NSCALE = 4
_NORIENT = 6
_MIN_WAVELENGTH = 3.0
_MULT = 2.1
_SIGMA_ON_F = 0.55
_DTHETA_ON_SIGMA = 1.2
_K = 2.0
_CUT_OFF = 0.5
_G = 10.0
#: Kovesi's guard against division by zero.
_EPSILON = 1e-4
#: metricZhao's feature threshold: a pixel is a feature where PC > 0.1.
_FEATURE_THRESHOLD = 0.1
_C = 1e-4
_WINDOW = gaussian_1d(11, 1.5)


def _fft_workers() -> int:
    """FFT threads: those of :func:`causalfuse.metrics.compute` on the main thread, else 1 (see :mod:`.perceptual`)."""
    if threading.current_thread() is threading.main_thread():
        return thread_count(None)
    return 1


def _axis_range(n: int) -> np.ndarray:
    """Kovesi's normalised frequency coordinates along one axis, from -0.5 to about 0.5 (centred)."""
    if n % 2:
        return (np.arange(n, dtype=np.float64) - (n - 1) / 2) / (n - 1)
    return (np.arange(n, dtype=np.float64) - n / 2) / n


@functools.lru_cache(maxsize=8)
def _filter_bank(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """The log-Gabor filters (norient, nscale, rows, cols), zero frequency at [0, 0], and each orientation's noise sums.

    Returns ``(filters, noise_sums)``; ``noise_sums[o]`` is
    ``2 sum(sum_s f_s^2) + 4 sum(sum_{i<j} f_i f_j)`` with ``f_s`` the real
    part of the spatial filter at scale ``s`` rescaled by sqrt(rows cols):
    the total noise energy squared per unit noise power.
    """
    x = _axis_range(cols)[None, :]
    y = _axis_range(rows)[:, None]
    radius = np.sqrt(x * x + y * y)
    # The low-pass filter (radius 0.45, order 15) is myphasecong3.m's own
    # subfunction ``lowpassfilter``, which shadows Kovesi's file of that name:
    # its grid is (k - fix(n/2)) / n, moved by fftshift. For even sizes that
    # is the grid above and Kovesi's (Aug. 2005) file gives the same filter;
    # for odd sizes they differ, and no reference value tells them apart.
    lx = (np.arange(cols) - cols // 2)[None, :] / cols
    ly = (np.arange(rows) - rows // 2)[:, None] / rows
    lowpass = sfft.fftshift(1.0 / (1.0 + (np.sqrt(lx * lx + ly * ly) / 0.45) ** 30))
    radius[rows // 2, cols // 2] = 1.0  # so that log(radius) is finite; undone below
    theta = sfft.ifftshift(np.arctan2(-y, x) * np.ones_like(radius))
    radius = sfft.ifftshift(radius)
    sintheta, costheta = np.sin(theta), np.cos(theta)

    log_gabor = np.empty((_NSCALE, rows, cols))
    for s in range(_NSCALE):
        fo = 1.0 / (_MIN_WAVELENGTH * _MULT**s)
        log_gabor[s] = np.exp(-(np.log(radius / fo) ** 2) / (2 * math.log(_SIGMA_ON_F) ** 2)) * lowpass
        log_gabor[s, 0, 0] = 0.0
    theta_sigma = math.pi / _NORIENT / _DTHETA_ON_SIGMA
    filters = np.empty((_NORIENT, _NSCALE, rows, cols))
    noise_sums = np.empty(_NORIENT)
    for o in range(_NORIENT):
        angle = o * math.pi / _NORIENT
        ds = sintheta * math.cos(angle) - costheta * math.sin(angle)
        dc = costheta * math.cos(angle) + sintheta * math.sin(angle)
        spread = np.exp(-(np.abs(np.arctan2(ds, dc)) ** 2) / (2 * theta_sigma**2))
        filters[o] = log_gabor * spread
        spatial = sfft.ifft2(filters[o], workers=_fft_workers()).real * math.sqrt(rows * cols)
        sum_an2 = (spatial * spatial).sum(axis=0).sum()
        sum_aiaj = sum((spatial[i] * spatial[j]) for i in range(_NSCALE) for j in range(i + 1, _NSCALE)).sum()
        noise_sums[o] = 2 * sum_an2 + 4 * sum_aiaj
    filters.flags.writeable = False
    return filters, noise_sums


def phase_congruency(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase congruency and its maximum and minimum moments, as ``myphasecong3`` computes them.

    Kovesi's PC_2 measure with 4 scales (minimum wavelength 3, factor 2.1,
    sigmaOnf 0.55), 6 orientations (dThetaOnSigma 1.2), noise threshold
    k = 2 divided by 1.7, frequency-spread weighting (cutOff 0.5, g = 10).

    Args:
        image: (H, W) array.

    Returns:
        ``(pc, M, m)``, each (H, W): ``totalEnergy ./ (totalSumAn + eps)`` and
        the maximum and minimum moments of the per-orientation PC covariance.
    """
    im = np.asarray(image, dtype=np.float64)
    rows, cols = im.shape
    filters, noise_sums = _filter_bank(rows, cols)
    workers = _fft_workers()
    spectrum = sfft.fft2(im, workers=workers)
    total_energy = np.zeros((rows, cols))
    total_sum_an = np.zeros((rows, cols))
    covx2 = np.zeros((rows, cols))
    covy2 = np.zeros((rows, cols))
    covxy = np.zeros((rows, cols))
    for o in range(_NORIENT):
        eo = sfft.ifft2(spectrum * filters[o], workers=workers)  # (nscale, rows, cols): even + i odd
        sum_an, max_an, energy, an0_sq = phase_orientation_sums(eo)

        # Noise: the median squared amplitude at the smallest scale, a Rayleigh
        # (chi-squared 2 d.o.f.) statistic, turned into a mean noise power.
        em_n = np.sum(filters[o, 0] ** 2)
        noise_power = -np.median(an0_sq) / math.log(0.5) / em_n
        tau = math.sqrt(noise_power * noise_sums[o] / 2)
        threshold = (tau * math.sqrt(math.pi / 2) + _K * math.sqrt((2 - math.pi / 2) * tau**2)) / 1.7
        energy = np.maximum(energy - threshold, 0.0)

        width = sum_an / (max_an + _EPSILON) / _NSCALE
        weight = 1.0 / (1.0 + np.exp((_CUT_OFF - width) * _G))
        weighted = weight * energy
        total_sum_an += sum_an
        total_energy += weighted
        with np.errstate(invalid="ignore", divide="ignore"):
            pc = weighted / sum_an
        angle = o * math.pi / _NORIENT
        covx = pc * math.cos(angle)
        covy = pc * math.sin(angle)
        covx2 += covx * covx
        covy2 += covy * covy
        covxy += covx * covy

    pc = total_energy / (total_sum_an + _EPSILON)
    covx2 /= _NORIENT / 2
    covy2 /= _NORIENT / 2
    covxy /= _NORIENT
    denom = np.sqrt(covxy * covxy + (covx2 - covy2) ** 2) + _EPSILON
    return pc, (covy2 + covx2 + denom) / 2, (covy2 + covx2 - denom) / 2


def _filter2_same(x: np.ndarray) -> np.ndarray:
    """``filter2(w, x, 'same')`` with the 11 x 11 Gaussian (sigma 1.5): zero padding, separable."""
    out = correlate1d(x, _WINDOW, axis=-1, mode="constant")
    return correlate1d(out, _WINDOW, axis=-2, mode="constant")


def _correlation(a, b, best, f, mask_a, mask_b, mask_best) -> float:
    """metricZhao's ``correlation_coeffcient``: masked local correlations with F, pixel-wise max, over the max map's mask."""
    a = mask_a * a
    b = mask_b * b
    best = mask_best * best
    mu_f = _filter2_same(f)
    var_f = _filter2_same(f * f) - mu_f * mu_f
    result = np.zeros_like(f)
    for x, mask in ((a, mask_a), (b, mask_b), (best, mask_best)):
        mu = _filter2_same(x)
        var = _filter2_same(x * x) - mu * mu
        cov = _filter2_same(x * f) - mu * mu_f
        r = np.zeros_like(f)
        r[mask] = (cov[mask] + _C) / (np.sqrt(np.abs(var[mask] * var_f[mask])) + _C)
        result = np.fmax(result, r) if x is not a else r
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.float64(result.sum()) / np.float64(mask_best.sum()))


@register_metric(
    "Qp",
    higher_is_better=True,
    reference="J. Zhao, R. Laganiere, Z. Liu, Performance assessment of combinative pixel-level image fusion based on "
    "an absolute feature measurement, International Journal of Innovative Computing, Information and Control "
    "3(6A):1433-1447, 2007",
    min_size=2,
    groups=("liu2012",),
)
def zhao_qp(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Zhao et al.'s Q_P: ``metricZhao(VI, IR, F)`` of Zheng Liu's toolbox, in [0, 1] for typical images.

    Phase congruency PC and its maximum and minimum moments M, m
    (:func:`phase_congruency`) of each image; the "max" maps take, per
    pixel, the features of the source with the larger PC (VI's only where
    its PC is strictly larger). For each feature, the local correlation
    coefficients (11 x 11 Gaussian, sigma 1.5, zero-padded 'same',
    (s_xf + C) / (sqrt|s_x^2 s_f^2| + C), C = 1e-4) of the VI, IR and max
    maps, each masked by its own PC > 0.1, with F's map; per pixel the
    largest of the three (0 outside a mask), summed and divided by the
    number of pixels where the max map's PC > 0.1 (NaN or inf when there is
    none, as the original). Q_P is the product of the three features'
    values. Images below 2 x 2 have no frequency grid (the original's is NaN).

    Args:
        fused, ir, vi: (H, W) arrays on the 0-255 scale.

    Returns:
        Q_P (higher is better).
    """
    a = np.asarray(vi, dtype=np.float64)
    b = np.asarray(ir, dtype=np.float64)
    f = np.asarray(fused, dtype=np.float64)
    pa, Ma, ma = source_cache.get_or_compute("phasecong", a, phase_congruency)
    pb, Mb, mb = source_cache.get_or_compute("phasecong", b, phase_congruency)
    pf, Mf, mf = phase_congruency(f)
    first = pa > pb
    other = ~first
    p_max = first * pa + other * pb
    M_max = first * Ma + other * Mb
    m_max = first * ma + other * mb
    masks = (pa > _FEATURE_THRESHOLD, pb > _FEATURE_THRESHOLD, p_max > _FEATURE_THRESHOLD)
    return (
        _correlation(pa, pb, p_max, pf, *masks)
        * _correlation(Ma, Mb, M_max, Mf, *masks)
        * _correlation(ma, mb, m_max, mf, *masks)
    )

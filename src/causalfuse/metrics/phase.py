"""Zhao et al.'s phase-congruency metric Q_P, as Zheng Liu's toolbox computes it.

``metricZhao.m`` with ``myphasecong3.m`` (Z. Liu's revision of Kovesi's
``phasecong3``) and Kovesi's ``lowpassfilter.m``: group ``liu2012``, not
part of ``all``. Every function takes one channel on the 0-255 scale.

Speed: one 630 x 460 triplet takes about 0.5 s of CPU (Octave: about 2 s),
three times less than in float64 with NumPy loops. About 40 % of it is the
72 inverse FFTs of the filter responses (complex64; the transforms of
length 460 = 4 x 5 x 23 cost twice as much per point as those of length
630, and padding would change the circular convolutions), 25 % the
compiled pass over each orientation's four scales, 12 % the local
correlations and the rest the products with the filters, the noise
medians and the forward FFTs. Two threads take the two halves of the
orientations of each image and the three features' correlations
(:func:`zhao_qp`); the filter bank of each image size is kept (8 sizes,
28 MB at 630 x 460).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np
from scipy import fft as sfft

from ._filters import gaussian_1d, source_cache
from ._kernels import (
    median_nonnegative,
    phase_congruency_moments,
    phase_orientation_add,
    phase_smallest_power,
    zhao_correlation,
)
from ._registry import register_metric
from ._threads import metric_threads

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
#: The sources' (pc, M, m) in :data:`._filters.source_cache`.
_CACHE_TAG = "phasecong"


def _threads() -> int:
    """Qp's threads (:func:`._threads.metric_threads`).

    They share the FFTs of the filter bank, and the two halves of each phase
    congruency and the three features' correlations of :func:`zhao_qp`
    (tasks whose FFTs then run on one thread each).
    """
    return metric_threads()


def _axis_range(n: int) -> np.ndarray:
    """Kovesi's normalised frequency coordinates along one axis, from -0.5 to about 0.5 (centred)."""
    if n % 2:
        return (np.arange(n, dtype=np.float64) - (n - 1) / 2) / (n - 1)
    return (np.arange(n, dtype=np.float64) - n / 2) / n


class _Bank(NamedTuple):
    """The log-Gabor filter bank of one image size (see :func:`_filter_bank`)."""

    filters: np.ndarray  # (norient, nscale, rows, cols) float32, zero frequency at [0, 0]
    noise_sums: np.ndarray  # (norient,)
    energies: np.ndarray  # (norient,): sum of the squared smallest-scale filter, in float64


@functools.lru_cache(maxsize=8)
def _filter_bank(rows: int, cols: int) -> _Bank:
    """The log-Gabor filters, each orientation's noise sums and its smallest filter's energy.

    ``noise_sums[o]`` is ``2 sum(sum_s f_s^2) + 4 sum(sum_{i<j} f_i f_j)``
    with ``f_s`` the real part of the spatial filter at scale ``s`` rescaled
    by sqrt(rows cols): the total noise energy squared per unit noise power
    (computed without transforms, see below).
    ``energies[o]`` is ``sum(filter[o, 0]^2)`` (myphasecong3's ``EM_n``).
    Both come from the float64 filters; the filters are kept as float32
    (the precision of the FFTs they feed, see :func:`phase_congruency`).
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
    filters = np.empty((_NORIENT, _NSCALE, rows, cols), dtype=np.float32)
    noise_sums = np.empty(_NORIENT)
    energies = np.empty(_NORIENT)
    for o in range(_NORIENT):
        angle = o * math.pi / _NORIENT
        ds = sintheta * math.cos(angle) - costheta * math.sin(angle)
        dc = costheta * math.cos(angle) + sintheta * math.sin(angle)
        spread = np.exp(-(np.abs(np.arctan2(ds, dc)) ** 2) / (2 * theta_sigma**2))
        bank = log_gabor * spread
        filters[o] = bank
        energies[o] = np.sum(bank[0] ** 2)
        # 2 sum(sum_s f_s^2) + 4 sum(sum_{i<j} f_i f_j) = 2 sum((sum_s f_s)^2), taken over the
        # frequencies (Parseval): the real part of a spatial filter is the inverse transform of the
        # filter's even part (F(u) + F(-u)) / 2, and the rescaling cancels the transform's 1 / N.
        total = bank.sum(axis=0)
        even = (total + np.roll(total[::-1, ::-1], 1, axis=(0, 1))) / 2
        noise_sums[o] = 2 * np.sum(even * even)
    filters.flags.writeable = False
    return _Bank(filters, noise_sums, energies)


def _orientation_totals(spectrum: np.ndarray, bank: _Bank, orientations: range) -> np.ndarray:
    """The totals (5, H, W) of :func:`._kernels.phase_orientation_add` over some orientations, from the image's spectrum."""
    rows, cols = spectrum.shape
    workers = _threads()
    totals = np.zeros((5, rows, cols))  # totalEnergy, totalSumAn, covx2, covy2, covxy
    eo = np.empty((_NSCALE, rows, cols), dtype=np.complex64)
    for o in orientations:
        np.multiply(spectrum, bank.filters[o], out=eo)
        eo = sfft.ifft2(eo, workers=workers, overwrite_x=True)  # (nscale, rows, cols): even + i odd

        # Noise: the median squared amplitude at the smallest scale, a Rayleigh
        # (chi-squared 2 d.o.f.) statistic, turned into a mean noise power.
        noise_power = -median_nonnegative(phase_smallest_power(eo).ravel()) / math.log(0.5) / bank.energies[o]
        tau = math.sqrt(noise_power * bank.noise_sums[o] / 2)
        threshold = (tau * math.sqrt(math.pi / 2) + _K * math.sqrt((2 - math.pi / 2) * tau**2)) / 1.7
        angle = o * math.pi / _NORIENT
        phase_orientation_add(eo, threshold, _CUT_OFF, _G, math.cos(angle), math.sin(angle), totals)
    return totals


#: The orientations in two halves, each summed on its own, then added: two
#: tasks for two threads, and the same sums whatever the number of threads.
_HALVES = (range(_NORIENT // 2), range(_NORIENT // 2, _NORIENT))


def _start_phase_congruency(
    image: np.ndarray, pool: ThreadPoolExecutor | None
) -> Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`phase_congruency` of ``image``, its two halves run in ``pool`` (or now): call the result for (pc, M, m)."""
    im = np.asarray(image, dtype=np.float64)
    bank = _filter_bank(*im.shape)
    spectrum = sfft.fft2(im, workers=1 if pool else _threads()).astype(np.complex64)  # the pool is busy
    if pool is None:
        parts = [_orientation_totals(spectrum, bank, half) for half in _HALVES]
        return lambda: phase_congruency_moments(parts[0], parts[1], _NORIENT)
    futures = [pool.submit(_orientation_totals, spectrum, bank, half) for half in _HALVES]
    return lambda: phase_congruency_moments(futures[0].result(), futures[1].result(), _NORIENT)


def phase_congruency(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase congruency and its maximum and minimum moments, as ``myphasecong3`` computes them.

    Kovesi's PC_2 measure with 4 scales (minimum wavelength 3, factor 2.1,
    sigmaOnf 0.55), 6 orientations (dThetaOnSigma 1.2), noise threshold
    k = 2 divided by 1.7, frequency-spread weighting (cutOff 0.5, g = 10).

    The image's spectrum is taken in float64, the 24 filter responses (the
    bulk of the time: inverse FFTs of the image's size, whatever its
    factors) in complex64, and every sum over scales and orientations in
    float64 (:func:`._kernels.phase_orientation_add`). That moves Q_P by
    2.4e-6 relative at most on the 252 VIFB reference triplets (3e-8 for
    the median one; in float64 throughout, about 1e-9), for 1.4 times the
    speed.

    Args:
        image: (H, W) array.

    Returns:
        ``(pc, M, m)``, each (H, W): ``totalEnergy ./ (totalSumAn + eps)`` and
        the maximum and minimum moments of the per-orientation PC covariance.
    """
    return _start_phase_congruency(image, None)()


def _correlation(a, b, best, f, masks) -> float:
    """metricZhao's ``correlation_coeffcient``: masked local correlations with F, pixel-wise max, over the max map's mask.

    ``masks`` (3, H, W): those of ``a``, ``b`` and ``best``. The local means
    are ``filter2(w, x, 'same')`` with the 11 x 11 Gaussian (sigma 1.5):
    zero padding, separable (:func:`._kernels.zhao_correlation`).
    """
    total, count = zhao_correlation(a, b, best, f, masks, _WINDOW, _C)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.float64(total) / np.float64(count))


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
    known = (source_cache.get(_CACHE_TAG, a), source_cache.get(_CACHE_TAG, b), None)
    threads = _threads()
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        # Every phase congruency not known yet is started (two tasks each), then collected.
        started = [
            _start_phase_congruency(x, pool) if hit is None else (lambda hit=hit: hit)
            for x, hit in zip((a, b, f), known)
        ]
        (pa, Ma, ma), (pb, Mb, mb), (pf, Mf, mf) = maps = [start() for start in started]
        for x, hit, computed in zip((a, b), known, maps):
            if hit is None:
                source_cache.put(_CACHE_TAG, x, computed)
        first = pa > pb
        other = ~first
        p_max = first * pa + other * pb
        M_max = first * Ma + other * Mb
        m_max = first * ma + other * mb
        masks = np.stack((pa > _FEATURE_THRESHOLD, pb > _FEATURE_THRESHOLD, p_max > _FEATURE_THRESHOLD))
        features = ((pa, pb, p_max, pf), (Ma, Mb, M_max, Mf), (ma, mb, m_max, mf))
        if pool is None:
            values = [_correlation(*maps, masks) for maps in features]
        else:
            values = list(pool.map(lambda maps: _correlation(*maps, masks), features))
    finally:
        if pool is not None:
            pool.shutdown()
    return values[0] * values[1] * values[2]

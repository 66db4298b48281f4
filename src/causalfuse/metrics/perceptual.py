"""Human-perception metrics: Chen-Blum (Qcb) and Chen-Varshney (Qcv).

Both follow Z. Liu's MATLAB toolbox as the VIFB benchmark runs it, quirks
included, so that the values equal VIFB's tables:

* every image is first stretched to 0-255 and rounded (``normalize1``; an
  all-zero image is left alone, any other constant image becomes NaN);
* the contrast sensitivity filters are applied on the FFT of the whole image
  (circular), on MATLAB's ``freqspace`` grid scaled by the image size;
* Qcv cuts the images into distinct 16 x 16 blocks, zero-padding the last
  ones (``blkproc``), and averages the squared filtered error over the padded
  block (so a partial border block is divided by 256, not by its pixels);
* Qcb's local contrast uses 31 x 31 *unnormalised* Gaussians with zero
  padding (``filter2(G, x, 'same')``).

The contrast sensitivity filtering is done with real FFTs, Qcb's Gaussians
with compiled separable filters and the block sums with reshapes, so one
630 x 460 channel costs tens of milliseconds (the MATLAB code takes seconds).
The sources' filtered maps are kept in a small cache keyed by the rounded
image, so scoring many fused images of one pair costs about a third of that.
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict

import numpy as np
from scipy import fft as sfft

from ._filters import filter2_valid
from ._kernels import qcb_contrast_power, sobel_power_block_sums, stretch_round
from ._registry import register_metric
from ._threads import metric_threads

__all__ = ["clear_source_cache", "qcb", "qcv"]


def _fft_workers() -> int:
    """Threads for one FFT: :func:`._threads.metric_threads`."""
    return metric_threads()


def _normalize1(x: np.ndarray) -> np.ndarray:
    """Z. Liu's ``normalize1``: stretch to [0, 255] and round half away from zero.

    An all-zero image is returned unchanged; any other constant image becomes
    NaN everywhere (0 / 0 in the original).
    """
    x = np.asarray(x, dtype=np.float64)
    hi = x.max()
    lo = x.min()
    if hi == 0 and lo == 0:
        return x.copy()
    if hi == lo:
        return np.full(x.shape, np.nan)  # 0 / 0
    # ((x - lo) / (hi - lo)) * 255 in the original's operation order, so that
    # halves land alike; the values are >= 0, where MATLAB's round (half away
    # from zero) is floor(v + 0.5).
    return stretch_round(np.ascontiguousarray(x), float(lo), float(hi))


def _freq_radius(shape: tuple[int, int], divisor: float) -> np.ndarray:
    """Radius of MATLAB's ``freqspace([m, n], 'meshgrid')`` grid scaled by (n, m) / divisor.

    Returned in unshifted (FFT) order and only for the non-negative column
    frequencies, ready to multiply an ``rfft2`` spectrum. The grid is even in
    both axes (``freqspace`` is centred on the bin ``fftshift`` moves DC to), so
    the filtered image is real, as MATLAB's ``abs``/``.^2`` then see it.
    """
    m, n = shape
    # freqspace: ((0:N-1) - floor(N/2)) * 2 / N, which fftshift places so that
    # frequency index k (in fftfreq order) sits at 2 k / N.
    ku = np.fft.fftfreq(n) * n  # integer frequency indices, FFT order
    kv = np.fft.fftfreq(m) * m
    u = (n / divisor) * (ku[: n // 2 + 1] * (2.0 / n))
    v = (m / divisor) * (kv * (2.0 / m))
    return np.sqrt(u[None, :] ** 2 + v[:, None] ** 2)


def _irfft2(spec: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``irfft2`` as two 1-D passes (the same numbers; pocketfft's 2-D c2r is ~20 % slower here)."""
    workers = _fft_workers()
    columns = sfft.ifft(spec, axis=-2, workers=workers, overwrite_x=True)
    return sfft.irfft(columns, n=shape[1], axis=-1, workers=workers, overwrite_x=True)


def _times_real(spec: np.ndarray, response: np.ndarray) -> np.ndarray:
    """``spec * response`` for a complex spectrum and a real response, in place.

    Real and imaginary parts are each multiplied by the response: the same
    numbers as the complex product with ``response + 0j``, in half the work.
    """
    parts = spec.view(np.float64).reshape(spec.shape + (2,))
    parts *= response[..., None]
    return spec


def _csf_filter(images: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Circular filtering ``real(ifft2(fft2(x) .* H))`` of a stack (..., m, n)."""
    m, n = images.shape[-2:]
    spec = sfft.rfft2(images, workers=_fft_workers())
    return _irfft2(_times_real(spec, response), (m, n))


class _SourceCache:
    """Small LRU of per-image intermediate maps, keyed by the normalised image.

    Scoring several fused images against the same sources (a benchmark: one
    pair, many methods) recomputes the sources' filtered maps every time;
    they depend only on the rounded 0-255 image, so they are kept, up to
    ``max_bytes`` (keys included). Thread-safe; a pure speed-up.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple, tuple[np.ndarray, ...]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(tag: str, normalized: np.ndarray) -> tuple | None:
        # After normalize1 the values are integers in 0..255 (or NaN): exact as uint8.
        if not np.isfinite(normalized).all():
            return None
        return (tag, normalized.shape, normalized.astype(np.uint8).tobytes())

    def get(self, key: tuple | None) -> tuple[np.ndarray, ...] | None:
        if key is None:
            return None
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: tuple | None, value: tuple[np.ndarray, ...]) -> None:
        if key is None:
            return
        size = len(key[2]) + sum(v.nbytes for v in value)
        if size > self._max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = value
            self._bytes += size
            while self._bytes > self._max_bytes:
                old_key, old_value = self._entries.popitem(last=False)
                self._bytes -= len(old_key[2]) + sum(v.nbytes for v in old_value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


# A colour pair scored with both metrics needs 12 entries (2 sources x 3
# channels x 2 metrics): about 32 MB at 630 x 460, 140 MB at 1280 x 1024.
_CACHE = _SourceCache(max_bytes=256 * 2**20)


def clear_source_cache() -> None:
    """Free the sources' intermediate maps kept between calls of :func:`qcb` and :func:`qcv`."""
    _CACHE.clear()


def _maps(tag: str, images: list[np.ndarray], compute, cached: tuple[bool, ...]) -> list[tuple[np.ndarray, ...]]:
    """``compute`` (a batch function on a stack) for each image, using the cache where allowed."""
    keys = [_CACHE.key(tag, im) if use else None for im, use in zip(images, cached)]
    out: list[tuple[np.ndarray, ...] | None] = [_CACHE.get(k) for k in keys]
    todo = [i for i, v in enumerate(out) if v is None]
    if todo:
        results = compute(np.stack([images[i] for i in todo]))
        for j, i in enumerate(todo):
            out[i] = tuple(r[j] for r in results)
            if keys[i] is not None:
                # Own copies: a view would keep the whole batch alive in the cache.
                _CACHE.put(keys[i], tuple(r[j].copy() for r in results))
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------- Qcb

_QCB_F0 = 15.3870
_QCB_F1 = 1.3456
_QCB_A = 0.7622
_QCB_K = 1.0
_QCB_H = 1.0
_QCB_Z = 1e-4
_QCB_HALF = 15  # the Gaussians are 31 x 31 whatever the image size


def _gaussian_factor(sigma: float) -> np.ndarray:
    """1-D factor of the toolbox's unnormalised 31 x 31 Gaussian.

    The 2-D kernel is ``exp(-(x^2 + y^2) / (2 sigma^2)) / (2 pi sigma^2)``
    (not normalised to sum 1; the normalisation cancels in the contrast ratio
    anyway except for the truncation, which the factorisation keeps).
    """
    x = np.arange(-_QCB_HALF, _QCB_HALF + 1, dtype=np.float64)
    return np.exp(-(x * x) / (2.0 * sigma * sigma)) / np.sqrt(2.0 * np.pi * sigma * sigma)


@functools.lru_cache(maxsize=8)
def _qcb_response(shape: tuple[int, int]) -> np.ndarray:
    """The DoG contrast sensitivity function on the ``rfft2`` grid of an image of this shape."""
    r = _freq_radius(shape, 30.0)
    response = np.exp(-((r / _QCB_F0) ** 2)) - _QCB_A * np.exp(-((r / _QCB_F1) ** 2))
    response.flags.writeable = False
    return response


def _qcb_contrast_power(stack: np.ndarray) -> tuple[np.ndarray]:
    """k C^p / (h C^q + Z) of the CSF-filtered images of a stack (k, m, n), p = 3, q = 2.

    The local contrast is ``|G1 * x / G2 * x - 1|`` with the two 31 x 31
    Gaussians applied as MATLAB's ``filter2(G, x, 'same')`` does it: direct
    (separable) correlation with zero padding.
    """
    filtered = _csf_filter(stack, _qcb_response(stack.shape[-2:]))
    padded = np.pad(filtered, [(0, 0), (_QCB_HALF, _QCB_HALF), (_QCB_HALF, _QCB_HALF)])
    g1, g2 = (filter2_valid(padded, _gaussian_factor(sigma)) for sigma in (2.0, 4.0))
    return (qcb_contrast_power(g1, g2, _QCB_K, _QCB_H, _QCB_Z),)


@register_metric(
    "Qcb",
    higher_is_better=True,
    reference="Y. Chen and R. S. Blum, A new automated quality assessment algorithm for image fusion, "
    "Image and Vision Computing 27(10):1421-1432, 2009, doi:10.1016/j.imavis.2007.12.002",
    colour="per_channel",
    vifb_name="Qcb",
)
def qcb(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Chen-Blum perceptual fusion quality, as Z. Liu's ``metricChenBlum.m``.

    The three images are stretched to 0-255 and rounded, filtered with the
    DoG contrast sensitivity function (f0 = 15.3870, f1 = 1.3456, a = 0.7622
    on a frequency grid scaled by size / 30), and their local contrast
    ``|G2 * x / G4 * x - 1|`` (31 x 31 Gaussians of sigma 2 and 4) is mapped
    to ``C^3 / (C^2 + 1e-4)``. Each source's contrast preservation (the
    smaller over the larger of its and the fused value) is weighted by the
    sources' squared-contrast saliency and averaged over the image.

    Args:
        fused, ir, vi: 2-D arrays of one channel, same shape (0-255 scale;
            the metric rescales each image itself).

    Returns:
        Qcb in [0, 1], higher is better. NaN for any constant image, as in
        the original: ``normalize1`` turns a non-zero constant into 0 / 0 and
        keeps an all-zero image, whose local contrast is then 0 / 0.

    Reference: Y. Chen and R. S. Blum, Image and Vision Computing 27 (2009),
    doi:10.1016/j.imavis.2007.12.002.
    """
    images = [_normalize1(ir), _normalize1(vi), _normalize1(fused)]
    (c1,), (c2,), (cf,) = _maps("qcb", images, _qcb_contrast_power, cached=(True, True, False))
    with np.errstate(divide="ignore", invalid="ignore"):
        q1f = _contrast_preservation(c1, cf)
        q2f = _contrast_preservation(c2, cf)
        s1 = c1 * c1  # saliency: squared contrast
        s2 = c2 * c2
        quality = (s1 * q1f + s2 * q2f) / (s1 + s2)
    return float(quality.mean())


def _contrast_preservation(c: np.ndarray, cf: np.ndarray) -> np.ndarray:
    """The original's ``(c./cf).*mask + (cf./c).*(1-mask)``, mask = c < cf: min / max, NaN where either is 0.

    Where the smaller value is 0 the unused quotient is x / 0 = Inf and
    ``Inf * 0`` makes the sum NaN (both 0: 0 / 0). A contrast of exactly 0
    needs the two Gaussian-filtered values to be equal, so this is practically
    never met on images, but it is what the original computes.
    """
    lo = np.minimum(c, cf)
    out = lo / np.maximum(c, cf)  # NaN stays NaN
    out[lo == 0] = np.nan
    return out


# --------------------------------------------------------------------- Qcv

_QCV_WINDOW = 16


def _block_sums(x: np.ndarray, size: int) -> np.ndarray:
    """Sums over distinct size x size blocks, zero-padding the last ones (``blkproc``)."""
    m, n = x.shape[-2:]
    bm = -(-m // size)
    bn = -(-n // size)
    if (bm * size, bn * size) != (m, n):
        padded = np.zeros(x.shape[:-2] + (bm * size, bn * size), dtype=x.dtype)
        padded[..., :m, :n] = x
        x = padded
    return x.reshape(x.shape[:-2] + (bm, size, bn, size)).sum(axis=(-3, -1))


@functools.lru_cache(maxsize=8)
def _qcv_response(shape: tuple[int, int]) -> np.ndarray:
    """The Mannos-Sakrison CSF on the ``rfft2`` grid of an image of this shape (scaled by size / 8)."""
    r = _freq_radius(shape, 8.0)
    response = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))
    response.flags.writeable = False
    return response


def _qcv_csf(stack: np.ndarray) -> np.ndarray:
    """Mannos-Sakrison CSF filtering of a stack."""
    return _csf_filter(stack, _qcv_response(stack.shape[-2:]))


def _qcv_source_maps(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block saliency (sum of |grad|^5 per 16 x 16 block) and CSF-filtered image, for a stack."""
    padded = np.pad(stack, [(0, 0), (1, 1), (1, 1)])
    saliency = sobel_power_block_sums(padded, _QCV_WINDOW)  # |grad|^alpha, alpha = 5
    return saliency, _qcv_csf(stack)


@register_metric(
    "Qcv",
    higher_is_better=False,
    reference="H. Chen and P. K. Varshney, A human perception inspired quality metric for image fusion "
    "based on regional information, Information Fusion 8(2):193-207, 2007, doi:10.1016/j.inffus.2005.10.001",
    colour="per_channel",
    vifb_name="Qcv",
)
def qcv(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """Chen-Varshney fusion quality (a weighted distortion: lower is better).

    As Z. Liu's ``metricChen.m``: the images are stretched to 0-255 and
    rounded; each source's saliency in a 16 x 16 block is the sum of its Sobel
    gradient magnitude to the power 5; the source-minus-fused difference is
    filtered with the Mannos-Sakrison CSF (frequency grid scaled by size / 8)
    and its mean square taken per block (over the zero-padded 16 x 16 block);
    Qcv is the saliency-weighted mean of the block distortions.

    Args:
        fused, ir, vi: 2-D arrays of one channel, same shape (0-255 scale;
            the metric rescales each image itself).

    Returns:
        Qcv >= 0, lower is better. On constant images, as the original: a
        non-zero constant image gives NaN (0 / 0 in ``normalize1``); an
        all-zero image is kept, so an all-zero fused image gives a finite
        value, an all-zero source no saliency (the other source alone
        counts), and two all-zero sources 0 / 0 = NaN.

    Reference: H. Chen and P. K. Varshney, Information Fusion 8 (2007),
    doi:10.1016/j.inffus.2005.10.001.
    """
    sources = [_normalize1(ir), _normalize1(vi)]
    (sal1, csf1), (sal2, csf2) = _maps("qcv", sources, _qcv_source_maps, cached=(True, True))
    csf_f = _qcv_csf(_normalize1(fused)[None])[0]
    saliency = np.stack([sal1, sal2])
    # The CSF is linear: CSF(source - fused) = CSF(source) - CSF(fused).
    diff = np.stack([csf1 - csf_f, csf2 - csf_f])
    distortion = _block_sums(diff * diff, _QCV_WINDOW) / float(_QCV_WINDOW * _QCV_WINDOW)

    with np.errstate(divide="ignore", invalid="ignore"):
        return float((saliency * distortion).sum() / saliency.sum())

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

The filtering is done with real FFTs and the block sums with reshapes, so one
630 x 460 channel costs milliseconds (the MATLAB code takes seconds).
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from ._registry import register_metric

__all__ = ["qcb", "qcv"]

_FFT_WORKERS = 2


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
    with np.errstate(invalid="ignore", divide="ignore"):
        # Same operation order as the original, so that halves land alike.
        scaled = ((x - lo) / (hi - lo)) * 255.0
    # Values are >= 0 here: MATLAB's round (half away from zero) is floor(x + 0.5).
    return np.floor(scaled + 0.5)


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


def _csf_filter(images: np.ndarray, response: np.ndarray) -> np.ndarray:
    """Circular filtering ``real(ifft2(fft2(x) .* H))`` of a stack (..., m, n)."""
    m, n = images.shape[-2:]
    spec = sfft.rfft2(images, workers=_FFT_WORKERS)
    return sfft.irfft2(spec * response, s=(m, n), workers=_FFT_WORKERS)


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


def _qcb_contrast(filtered: np.ndarray) -> np.ndarray:
    """|G1 * x / G2 * x - 1| with zero-padded 'same' filtering, for a stack (k, m, n).

    Both Gaussians are applied in one padded FFT (linear, not circular, so
    the zero padding of ``filter2(..., 'same')`` is reproduced).
    """
    m, n = filtered.shape[-2:]
    pad = 2 * _QCB_HALF
    fm = sfft.next_fast_len(m + pad, real=True)
    fn = sfft.next_fast_len(n + pad, real=True)
    spec = sfft.rfft2(filtered, s=(fm, fn), workers=_FFT_WORKERS)
    out = []
    for sigma in (2.0, 4.0):
        g = _gaussian_factor(sigma)
        # Separable kernel spectrum: outer product of the 1-D spectra.
        gr = sfft.rfft(g, n=fn)
        gc = sfft.fft(g, n=fm)
        full = sfft.irfft2(spec * (gc[:, None] * gr[None, :]), s=(fm, fn), workers=_FFT_WORKERS)
        out.append(full[..., _QCB_HALF : _QCB_HALF + m, _QCB_HALF : _QCB_HALF + n])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.abs(out[0] / out[1] - 1.0)


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
        Qcb in [0, 1], higher is better. NaN where the original gives NaN
        (a constant non-zero image, or two flat sources).

    Reference: Y. Chen and R. S. Blum, Image and Vision Computing 27 (2009),
    doi:10.1016/j.imavis.2007.12.002.
    """
    stack = np.stack([_normalize1(ir), _normalize1(vi), _normalize1(fused)])
    m, n = stack.shape[-2:]
    r = _freq_radius((m, n), 30.0)
    dog = np.exp(-((r / _QCB_F0) ** 2)) - _QCB_A * np.exp(-((r / _QCB_F1) ** 2))
    contrast = _qcb_contrast(_csf_filter(stack, dog))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        squared = contrast * contrast  # C^q with q = 2; C^p with p = 3 below
        cp = (_QCB_K * (squared * contrast)) / (_QCB_H * squared + _QCB_Z)
        c1, c2, cf = cp
        q1f = np.where(c1 < cf, c1 / cf, cf / c1)
        q2f = np.where(c2 < cf, c2 / cf, cf / c2)
        s1 = c1 * c1
        s2 = c2 * c2
        total = s1 + s2
        quality = (s1 / total) * q1f + (s2 / total) * q2f
    return float(quality.mean())


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


def _sobel_magnitude_zero_pad(x: np.ndarray) -> np.ndarray:
    """|grad| from ``filter2`` (correlation, zero padding, 'same') with the Sobel pair."""
    p = np.pad(x, [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)])
    # Vertical smoothing [1 2 1] then horizontal difference, and vice versa.
    sv = p[..., :-2, :] + 2.0 * p[..., 1:-1, :] + p[..., 2:, :]
    gx = sv[..., 2:] - sv[..., :-2]
    sh = p[..., :, :-2] + 2.0 * p[..., :, 1:-1] + p[..., :, 2:]
    gy = sh[..., 2:, :] - sh[..., :-2, :]
    return np.sqrt(gx * gx + gy * gy)


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
        Qcv >= 0, lower is better; NaN when both sources are flat (0 / 0) or
        one image is a non-zero constant.

    Reference: H. Chen and P. K. Varshney, Information Fusion 8 (2007),
    doi:10.1016/j.inffus.2005.10.001.
    """
    im1 = _normalize1(ir)
    im2 = _normalize1(vi)
    f = _normalize1(fused)
    m, n = f.shape

    grads = _sobel_magnitude_zero_pad(np.stack([im1, im2]))
    g2 = grads * grads
    saliency = _block_sums(g2 * g2 * grads, _QCV_WINDOW)  # |grad|^alpha, alpha = 5

    r = _freq_radius((m, n), 8.0)
    mannos_sakrison = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))
    diff = _csf_filter(np.stack([im1 - f, im2 - f]), mannos_sakrison)
    distortion = _block_sums(diff * diff, _QCV_WINDOW) / float(_QCV_WINDOW * _QCV_WINDOW)

    with np.errstate(divide="ignore", invalid="ignore"):
        return float((saliency * distortion).sum() / saliency.sum())

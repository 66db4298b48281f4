"""Feature mutual information (FMI), as Haghighat's ``fmi.m`` computes it.

Four metrics, in the group ``fmi`` (not part of ``all``): ``FMI_pixel``
(raw pixels, the ``'none'`` feature), ``FMI_dct``, ``FMI_edge`` and
``FMI_gradient``, each ``fmi(VI, IR, F, feature, 3)`` of the original
(source a = visible, b = infrared).

What ``fmi.m`` computes (mhaghighat/fmi, blob c2c3cfb5): a feature map of
each image, then for every 3 x 3 window inside the image and each source x:
score 1 if the raw x window equals the fused window, else both windows
min-max normalised to [0, 1] (a constant one becomes all ones), pdfs =
window / sum (column-major), cdfs, Pearson's c of the two pdfs, the
population standard deviations of the index 1..9 under each pdf, and a
joint pdf by the simplified Nelsen method: phi times the mass of the
Frechet upper bound (c >= 0; the lower bound and theta for c < 0) plus
(1 - phi) times the product of the marginals, phi = c / (correlation of the
bound). Entropies in bits (``real(-p log2 p)`` for negative joint masses);
score = 2 MI / (H(x) + H(f)). The map value is the mean of the two sources'
scores, FMI the mean of the map.

The original's quirk is kept: the fused window is normalised in place in
the visible branch, so the infrared branch's equality test compares the raw
infrared window with the *normalised* fused window. An infrared window equal
to the fused one then scores like any other (0 instead of 1 when it has one
pixel above a flat background, a one-point pdf). On kettle/GTF this moves
FMI_pixel by 6e-4 and FMI_gradient by 5e-4; FMI_edge did not change on the
triplets checked (binary windows normalise to themselves).

Features:

* ``none``: the image (0-255).
* ``gradient``: MATLAB's ``gradient(x)``, the x-derivative only (central
  differences, one-sided at the left and right borders). It depends on the
  input scale: on 8-bit images a source's and the fused gradient windows are
  often exactly equal (score 1), which rounding after ``/ 255`` would break.
* ``dct``: the orthonormal 2-D DCT-II of the whole image (MATLAB's
  ``dct2``); the windows slide over the coefficient map.
* ``edge``: GNU Octave's ``edge(x / 255)`` (image package 2.14, the default
  Sobel method): correlation with ``fspecial('sobel') / 8`` and its
  transpose with replicated borders (summed in Octave's ``conv2`` order),
  squared strength gx^2 + gy^2, threshold 4 x its mean, and Octave's simple
  thinning (a pixel above the threshold that is strictly larger than both
  horizontal, or both vertical, neighbours, zeros outside the image). This
  is not MATLAB's Sobel thinning (directional non-maximum suppression), so
  FMI_edge is the Octave value.

FMI with wavelet features (``'wavelet'``: one-level ``dwt2(x, 'dmey')``) is
left out: it needs MATLAB's 102-tap Discrete Meyer filter from the Wavelet
Toolbox, which was not available to check against (Octave has neither
``dwt2`` nor ``dmey``, and PyWavelets' 62-tap ``dmey`` is a different filter).

Speed: the window loop is compiled (Numba). It follows ``fmi.m``'s
arithmetic for everything that decides a branch (equality tests, min-max,
pdfs, c, the standard deviations), and evaluates the joint entropy from the
marginal entropies plus the cells that carry mass of the Frechet bound
(a merge of the two cdfs, at most 17 cells) instead of all 81 cells: equal
to the line-by-line computation within about 1e-14 (checked in the tests
against a transcription of ``fmi.m``) and to the original's values within
3e-10 relative on all 1,008 VIFB reference values (stored at 10 significant
digits). One 630 x 460 triplet takes about 0.05 (edge) to 0.35 s of CPU per
feature; the original takes about 40 minutes per feature under Octave. The
columns of windows are shared among threads (:func:`fmi_window_mean`) when
:func:`causalfuse.metrics.compute` runs on the main thread with more than
one (not inside its own worker threads).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
from numba import njit
from scipy.fft import dctn

from ._kernels import _JIT
from ._registry import register_metric
from ._threads import metric_threads

__all__ = [
    "Feature",
    "feature_map",
    "feature_mutual_information",
    "fmi_column_sums",
    "fmi_dct",
    "fmi_edge",
    "fmi_gradient",
    "fmi_pixel",
    "fmi_window_mean",
]

Feature = Literal["none", "gradient", "dct", "edge"]

_REFERENCE = (
    "M. B. A. Haghighat, A. Aghagolzadeh, H. Seyedarabi, A non-reference image fusion metric based on mutual "
    "information of image features, Computers and Electrical Engineering 37(5):744-756, 2011, "
    "doi:10.1016/j.compeleceng.2011.07.012 (Fast-FMI: M. Haghighat, M. A. Razian, AICT 2014, "
    "doi:10.1109/ICAICT.2014.7035956)"
)

_L = 9  # entries of a 3 x 3 window


# ----------------------------------------------------------------------------- window loop


@njit(inline="always", **_JIT)
def _take(x, p, q, out):
    """The 3 x 3 window with top left (p, q), column-major as MATLAB's ``X(:)``."""
    k = 0
    for dj in range(3):
        for di in range(3):
            out[k] = x[p + di, q + dj]
            k += 1


@njit(inline="always", **_JIT)
def _equal(x, y):
    for k in range(_L):
        if x[k] != y[k]:
            return False
    return True


@njit(inline="always", **_JIT)
def _normalise(w):
    """In place: min-max to [0, 1]; a constant window becomes all ones."""
    lo = w[0]
    hi = w[0]
    for k in range(1, _L):
        lo = min(lo, w[k])
        hi = max(hi, w[k])
    if hi == lo:
        for k in range(_L):
            w[k] = 1.0
    else:
        d = hi - lo
        for k in range(_L):
            w[k] = (w[k] - lo) / d


@njit(inline="always", **_JIT)
def _stats(w, st):
    """Marginal statistics of a normalised window, in ``fmi.m``'s order of operations.

    Fills ``st`` (4, 9): pdf, cdf, pdf minus its mean, log2 of the pdf (0
    where the pdf is 0). Returns (sum of squared centred pdf, population
    standard deviation of the index, entropy in bits, sum of the pdf).
    """
    # sum(sum(w)): the column sums, then their sum
    total = ((w[0] + w[1]) + w[2] + ((w[3] + w[4]) + w[5])) + ((w[6] + w[7]) + w[8])
    s = 0.0
    acc = 0.0
    for k in range(_L):
        v = w[k] / total
        st[0, k] = v
        acc = v + acc
        st[1, k] = acc
        s += v
    mean = s / _L
    sq = 0.0
    e = 0.0
    e2 = 0.0
    h = 0.0
    for k in range(_L):
        v = st[0, k]
        t = v - mean
        st[2, k] = t
        sq += t * t
        i = k + 1.0
        e += i * v
        e2 += (i * i) * v
        if v != 0.0:
            lv = math.log2(v)
            st[3, k] = lv
            h += -v * lv
        else:
            st[3, k] = 0.0
    return sq, math.sqrt(e2 - e * e), h, s


@njit(inline="always", **_JIT)
def _upper_row_sum(fi, xc):
    """sum_j min(F_i, X_j): one row of the Frechet upper bound's cdf."""
    m0, m1, m2 = min(fi, xc[0]), min(fi, xc[1]), min(fi, xc[2])
    m3, m4, m5 = min(fi, xc[3]), min(fi, xc[4]), min(fi, xc[5])
    m6, m7, m8 = min(fi, xc[6]), min(fi, xc[7]), min(fi, xc[8])
    return (((m0 + m1) + (m2 + m3)) + ((m4 + m5) + (m6 + m7))) + m8


@njit(inline="always", **_JIT)
def _lower_row_sum(fi, xc):
    """sum_j max(F_i + X_j - 1, 0): one row of the Frechet lower bound's cdf."""
    g = fi - 1.0
    m0, m1, m2 = max(g + xc[0], 0.0), max(g + xc[1], 0.0), max(g + xc[2], 0.0)
    m3, m4, m5 = max(g + xc[3], 0.0), max(g + xc[4], 0.0), max(g + xc[5], 0.0)
    m6, m7, m8 = max(g + xc[6], 0.0), max(g + xc[7], 0.0), max(g + xc[8], 0.0)
    return (((m0 + m1) + (m2 + m3)) + ((m4 + m5) + (m6 + m7))) + m8


@njit(**_JIT)
def _branch_score(xs, xsq, xsd, xh, xsum, fs, fsq, fsd, fh, fsum):
    """2 MI / (H(x) + H(f)) of one source window and the fused window (one branch of ``fmi.m``)."""
    cross = 0.0
    for k in range(_L):
        cross += xs[2, k] * fs[2, k]
    c = 0.0 if cross == 0.0 else cross / math.sqrt(xsq * fsq)
    if xsd == 0.0 or fsd == 0.0 or c == 0.0:
        # phi = 0: the product of the marginals, whose entropy follows from theirs.
        joint = xsum * fh + fsum * xh
    else:
        fpdf, fc, flog = fs[0], fs[1], fs[3]
        xpdf, xc, xlog = xs[0], xs[1], xs[3]
        upper = c >= 0.0
        bound = 0.0
        for i in range(_L):
            bound += _upper_row_sum(fc[i], xc) if upper else _lower_row_sum(fc[i], xc)
        fcs = 0.0
        xcs = 0.0
        for k in range(_L):
            fcs += fc[k]
            xcs += xc[k]
        weight = c / ((bound - fcs * xcs) / (fsd * xsd))  # phi, or theta for c < 0
        rest = 1.0 - weight
        # Every cell's independent part (1 - phi) pf px, then the cells where the bound has mass
        # are corrected to their true terms.
        if rest != 0.0:
            log_rest = math.log2(abs(rest))
            joint = rest * ((xsum * fh + fsum * xh) - (fsum * xsum) * log_rest)
        else:
            log_rest = 0.0
            joint = 0.0
        # The bound's cells: a merge of the cdfs (the lower bound pairs F with 1 - X, X reversed).
        i = 0
        j = 0 if upper else _L - 1
        prev = 0.0
        while i < _L and 0 <= j < _L:
            fi = fc[i]
            if upper:
                xj = xc[j]
            else:
                xj = 1.0 - (xc[j - 1] if j > 0 else 0.0)
            top = min(fi, xj)
            if top > prev:
                ind = (rest * fpdf[i]) * xpdf[j]
                q = weight * (top - prev) + ind
                if q != 0.0:
                    joint -= q * math.log2(abs(q))  # real(-q log2 q) also for q < 0
                if ind != 0.0:
                    joint += ind * (log_rest + flog[i] + xlog[j])
                prev = top
            if fi <= xj:
                i += 1
            if xj <= fi:
                j += 1 if upper else -1
    mi = (xh + fh) - joint
    if mi == 0.0:
        return 0.0
    return (2.0 * mi) / (xh + fh)


@njit(**_JIT)
def fmi_column_sums(a, b, f, q0, q1):
    """Sums of ``fmi.m``'s map over each column q0 <= q < q1 of 3 x 3 windows (top to bottom) of ``a``, ``b``, ``f``.

    Feature maps ``a``, ``b`` (sources) and ``f`` (fused), (H, W) float64
    with H, W >= 3; column q holds the H - 2 windows with left column q.
    """
    rows = f.shape[0]
    aw = np.empty(_L)
    bw = np.empty(_L)
    fw = np.empty(_L)
    xs = np.empty((4, _L))
    fs = np.empty((4, _L))
    out = np.empty(q1 - q0)
    for q in range(q0, q1):
        total = 0.0
        for p in range(rows - 2):
            _take(a, p, q, aw)
            _take(b, p, q, bw)
            _take(f, p, q, fw)
            f_ready = False
            fsq = fsd = fh = fsum = 0.0
            if _equal(aw, fw):
                score_a = 1.0
            else:
                _normalise(aw)
                _normalise(fw)  # in place, as fmi.m: the b-branch compares with this
                fsq, fsd, fh, fsum = _stats(fw, fs)
                f_ready = True
                xsq, xsd, xh, xsum = _stats(aw, xs)
                score_a = _branch_score(xs, xsq, xsd, xh, xsum, fs, fsq, fsd, fh, fsum)
            if _equal(bw, fw):
                score_b = 1.0
            else:
                _normalise(bw)
                if not f_ready:
                    _normalise(fw)
                    fsq, fsd, fh, fsum = _stats(fw, fs)
                xsq, xsd, xh, xsum = _stats(bw, xs)
                score_b = _branch_score(xs, xsq, xsd, xh, xsum, fs, fsq, fsd, fh, fsum)
            total += (score_a + score_b) / 2.0
        out[q - q0] = total
    return out


#: Columns of windows per task: several tasks per thread, as the columns' costs differ.
_COLUMNS_PER_TASK = 64


def fmi_window_mean(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Mean of ``fmi.m``'s map of 3 x 3 windows for feature maps ``a``, ``b`` (sources) and ``f`` (fused).

    All (H, W) float64 with H, W >= 3; the map has (H - 2) x (W - 2) windows.
    Summed column by column (:func:`fmi_column_sums`, in threads: see
    :func:`._threads.metric_threads`), then over the columns in order, so the
    value does not depend on the number of threads. ``mean2`` adds the map in
    one running sum; the two differ by rounding (about 1e-14 relative on
    630 x 460 images, the size of a long running sum's own error).
    """
    columns = f.shape[1] - 2
    threads = metric_threads()
    if threads == 1 or columns <= _COLUMNS_PER_TASK:
        sums = fmi_column_sums(a, b, f, 0, columns)
    else:
        starts = range(0, columns, _COLUMNS_PER_TASK)
        with ThreadPoolExecutor(threads) as pool:
            parts = pool.map(lambda q: fmi_column_sums(a, b, f, q, min(q + _COLUMNS_PER_TASK, columns)), starts)
            sums = np.concatenate(list(parts))
    return float(_sequential_sum(sums) / ((f.shape[0] - 2) * columns))


# ----------------------------------------------------------------------------- feature maps


@njit(**_JIT)
def _sequential_sum(x):
    """Octave's ``sum`` of a vector: one running total, in order."""
    acc = 0.0
    for v in x:
        acc += v
    return acc


@njit(**_JIT)
def _sobel_edges_octave_kernel(im):
    """Octave's Sobel ``edge`` of ``im`` (already / 255), as 0/1 float64; see :func:`_sobel_edges_octave`."""
    rows, cols = im.shape
    strength = np.empty((rows, cols))
    for i in range(rows):
        i0 = max(i - 1, 0)  # replicated borders
        i2 = min(i + 1, rows - 1)
        for j in range(cols):
            j0 = max(j - 1, 0)
            j2 = min(j + 1, cols - 1)
            # imfilter correlates with h = fspecial('sobel') / 8 = [1 2 1; 0 0 0; -1 -2 -1] / 8 (and h');
            # Octave's conv2 of the rotated kernel adds the terms by kernel columns from the last,
            # each from the bottom row up (the zero terms change nothing).
            g1 = -0.125 * im[i2, j2] + 0.125 * im[i0, j2]
            g1 = g1 - 0.25 * im[i2, j]
            g1 = g1 + 0.25 * im[i0, j]
            g1 = g1 - 0.125 * im[i2, j0]
            g1 = g1 + 0.125 * im[i0, j0]
            g2 = -0.125 * im[i2, j2] - 0.25 * im[i, j2]
            g2 = g2 - 0.125 * im[i0, j2]
            g2 = g2 + 0.125 * im[i2, j0]
            g2 = g2 + 0.25 * im[i, j0]
            g2 = g2 + 0.125 * im[i0, j0]
            strength[i, j] = g1 * g1 + g2 * g2
    total = 0.0  # Octave's sum: one running total, column-major
    for j in range(cols):
        for i in range(rows):
            total += strength[i, j]
    thresh = 4.0 * (total / strength.size)
    for i in range(rows):
        for j in range(cols):
            if strength[i, j] <= thresh:
                strength[i, j] = 0.0
    # simple_thinning: strictly above both horizontal, or both vertical, neighbours (zeros outside)
    edges = np.zeros((rows, cols))
    for i in range(rows):
        for j in range(cols):
            c = strength[i, j]
            left = strength[i, j - 1] if j > 0 else 0.0
            right = strength[i, j + 1] if j < cols - 1 else 0.0
            up = strength[i - 1, j] if i > 0 else 0.0
            down = strength[i + 1, j] if i < rows - 1 else 0.0
            if (c > left and c > right) or (c > up and c > down):
                edges[i, j] = 1.0
    return edges


def _sobel_edges_octave(x: np.ndarray) -> np.ndarray:
    """Octave's ``edge(x / 255)`` (image package 2.14, default Sobel) as 0/1 float64 (compiled)."""
    return _sobel_edges_octave_kernel(np.ascontiguousarray(x / 255.0))


def feature_map(x: np.ndarray, feature: Feature) -> np.ndarray:
    """``fmi.m``'s feature map of one image (H, W) on the 0-255 scale, as float64 (H, W).

    Raises:
        ValueError: an unknown feature.
    """
    x = np.asarray(x, dtype=np.float64)
    if feature == "none":
        return x
    if feature == "gradient":
        return np.gradient(x, axis=1) if x.shape[1] > 1 else np.zeros_like(x)
    if feature == "dct":
        return dctn(x, type=2, norm="ortho", workers=metric_threads())
    if feature == "edge":
        return _sobel_edges_octave(x)
    raise ValueError(f"feature must be 'none', 'gradient', 'dct' or 'edge', got {feature!r}")


def feature_mutual_information(
    fused: np.ndarray, ir: np.ndarray, vi: np.ndarray, *, feature: Feature = "none"
) -> float:
    """Haghighat's FMI with 3 x 3 windows: ``fmi(VI, IR, F, feature, 3)`` of ``fmi.m``.

    Args:
        fused, ir, vi: one channel each (H, W), float64 or uint8 on the 0-255 scale.
        feature: ``"none"`` (raw pixels), ``"gradient"`` (x-derivative),
            ``"dct"`` (orthonormal DCT-II of the whole image) or ``"edge"``
            (Octave's Sobel edge map); see the module docstring.

    Returns:
        The mean over all 3 x 3 windows of (FMI(VI, F) + FMI(IR, F)) / 2,
        normally in [0, 1] (the simplified Nelsen joint pdf can have negative
        masses, so this is not guaranteed). NaN below 3 x 3 pixels: no window
        fits and the original's ``mean2`` of an empty map is NaN.
    """
    f = np.asarray(fused, dtype=np.float64)
    if min(f.shape) < 3:
        return float("nan")
    a, b, f = (np.ascontiguousarray(feature_map(x, feature)) for x in (vi, ir, f))
    return float(fmi_window_mean(a, b, f))


def _register(name: str):
    return register_metric(name, higher_is_better=True, reference=_REFERENCE, min_size=3, groups=("fmi",))


@_register("FMI_pixel")
def fmi_pixel(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """FMI on raw pixels: ``fmi(VI, IR, F, 'none', 3)`` (see :func:`feature_mutual_information`)."""
    return feature_mutual_information(fused, ir, vi, feature="none")


@_register("FMI_dct")
def fmi_dct(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """FMI on the whole image's orthonormal 2-D DCT: ``fmi(VI, IR, F, 'dct', 3)``."""
    return feature_mutual_information(fused, ir, vi, feature="dct")


@_register("FMI_edge")
def fmi_edge(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """FMI on Octave's Sobel edge maps: ``fmi(VI, IR, F)`` (the default feature, ``'edge'``).

    What papers that copy ``analysis_Reference.m`` report as "FMI_pixel".
    """
    return feature_mutual_information(fused, ir, vi, feature="edge")


@_register("FMI_gradient")
def fmi_gradient(fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """FMI on the x-derivative (MATLAB ``gradient``): ``fmi(VI, IR, F, 'gradient', 3)``."""
    return feature_mutual_information(fused, ir, vi, feature="gradient")

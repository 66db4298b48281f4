"""Estimating the infrared -> visible transform of a pair.

Infrared and visible images share edges, not intensities, so both images are
compared through their gradient magnitude, rank-equalised (each image's
values replaced by their quantiles, which spreads them over the histogram's
bins). The estimate runs in three steps:

1. **Search** (OpenCV and NumPy): for a grid of scales and rotations around
   the nominal transform (the two cameras see the same field of view,
   :func:`~causalfuse.register.transform.nominal_matrix`), the strongest
   peaks of the phase correlation of the coarse gradient images, within
   ``max_shift``, give candidate shifts; the candidates are ranked by the
   mutual information of the coarse gradient images (where the infrared
   image covers at least ``min_overlap`` of the visible one).
2. **Mattes mutual information** (SimpleITK's registration framework, a
   multi-resolution pyramid and its regular-step gradient-descent
   optimiser): the best five candidates and the nominal transform are
   refined as similarity transforms on the coarse levels; the one whose
   intensities and gradient magnitudes share the most information with the
   visible image's (the sum of the two, in bits) wins and is refined on the
   finest levels as the asked model (translation, similarity or affine;
   affine starts from the similarity result).
3. **Projective** (OpenCV's ECC, an enhanced-correlation optimiser): starts
   from the affine result on the finest level and is kept only if it raises
   the mutual information.

An estimate within ``snap`` visible pixels of the nominal transform is
returned as the nominal transform: an aligned pair comes back unchanged.

The pair is refused (:class:`RegistrationError`) when an image has too little
structure, when the infrared image covers too little of the visible one, or
when the mutual information reached is below ``min_mi``: the message names
the value reached.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .._cores import available_cores
from ..errors import CausalFuseError
from .transform import MODELS, Transform, nominal_matrix

__all__ = ["RegistrationError", "SearchRange", "estimate_transform", "mutual_information_bits", "prepare"]

#: Mutual information (bits, 32 x 32 bins of rank-equalised intensities) below
#: which a registration is refused. It refuses noise and near-blank pairs;
#: it does not separate unrelated scenes: in benchmarks/registration.py,
#: registered val pairs reach about 0.3 to 1.3 bits and unrelated ones 0.19
#: to 0.98.
MIN_MI = 0.12
#: Fraction of the visible image the infrared image must cover.
MIN_OVERLAP = 0.25
#: An estimate that puts no infrared corner farther than this (visible
#: pixels) from where the nominal rig puts it is returned as the nominal rig:
#: a pair that is already aligned (for two images of one size: the identity)
#: comes back unchanged. Mutual information of the two bands does not pin an
#: aligned pair down closer: on 20 aligned synthetic scenes of one size
#: (seeds 13 to 32) ``affine`` landed 0.49 to 0.90 px off, ``similarity``
#: 0.23 to 0.58 px.
SNAP = 1.0
_BINS = 32
_COARSE = 192  # long side (pixels) of the grid the search runs on


class RegistrationError(CausalFuseError):
    """A pair that cannot be registered (too little structure or overlap, or a metric too low)."""


@dataclass(frozen=True)
class SearchRange:
    """Where the search looks, around the nominal transform.

    Attributes:
        scales: smallest and largest scale of the infrared field of view
            relative to the nominal (same field of view as the visible camera).
        max_rotation: largest rotation, in degrees, either way.
        scale_step: ratio between neighbouring scales of the grid.
        rotation_step: degrees between neighbouring rotations of the grid.
        max_shift: largest shift of the image centres, as a fraction of the
            visible image's width and height.
    """

    scales: tuple[float, float] = (0.8, 1.25)
    max_rotation: float = 5.0
    max_shift: float = 0.15
    # Between two grid points the phase correlation of the two bands' edges
    # fades: with steps of 1.06 and 2.5 degrees, 6 of the 36 moved val pairs
    # of benchmarks/registration.py ended more than 10 px off, 2 with these
    # steps (README, registration).
    scale_step: float = 1.03
    rotation_step: float = 1.25

    def grid(self) -> list[tuple[float, float]]:
        lo, hi = sorted(self.scales)
        n_s = max(1, math.ceil(math.log(hi / lo) / math.log(self.scale_step)) + 1)
        scales = np.exp(np.linspace(math.log(lo), math.log(hi), n_s)) if n_s > 1 else np.array([math.sqrt(lo * hi)])
        n_a = max(0, math.ceil(self.max_rotation / self.rotation_step))
        angles = np.linspace(-self.max_rotation, self.max_rotation, 2 * n_a + 1) if n_a else np.array([0.0])
        return [(float(s), float(a)) for s in scales for a in angles]


def _sitk():
    try:
        import SimpleITK as sitk
    except ImportError:
        raise CausalFuseError('registration needs SimpleITK and OpenCV: pip install "causalfuse[register]"') from None
    return sitk


def _cv2():
    from .transform import _cv2 as cv2

    return cv2()


def prepare(image: np.ndarray) -> np.ndarray:
    """Grey float32 in [0, 1] of an image array (uint8, uint16, float; grey or colour)."""
    from ..io import rgb_to_ycbcr, to_float01

    a = to_float01(np.asarray(image))
    if a.ndim == 3:
        a = rgb_to_ycbcr(a[..., :3])[..., 0]
    return np.ascontiguousarray(a, dtype=np.float32)


def _ranks(a: np.ndarray, levels: int = 4096) -> np.ndarray:
    """Each value replaced by its quantile in [0, 1], on ``levels`` equal steps of the value range.

    Values in one step share their mid-rank; with 4096 steps this is the exact
    rank transform for 8-bit images and close to it for others, at the cost of
    a histogram.
    """
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.full(a.shape, 0.5, np.float32)
    idx = np.minimum(((a - lo) * (levels / (hi - lo))).astype(np.int64), levels - 1)
    counts = np.bincount(idx.ravel(), minlength=levels)
    mid = (np.cumsum(counts) - (counts + 1) / 2) / max(1, a.size - 1)
    return mid.astype(np.float32)[idx]


def _gradient(a: np.ndarray, sigma: float) -> np.ndarray:
    cv2 = _cv2()
    b = cv2.GaussianBlur(a, (0, 0), sigma) if sigma > 0 else a
    gx = cv2.Sobel(b, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(b, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


def _structure_problem(a: np.ndarray) -> str | None:
    if float(a.max() - a.min()) < 1.0 / 255:
        return f"it is blank (all values within {float(a.max() - a.min()):.2g} of each other)"
    g = _gradient(a, 1.0)
    edges = float(np.mean(g > 0.05 * float(g.max())))
    if edges < 0.002:
        return f"it has almost no edges ({100 * edges:.2f} % of pixels)"
    return None


def mutual_information_bits(ir: np.ndarray, vi: np.ndarray, transform: Transform) -> tuple[float, float]:
    """Mutual information (bits) of the registered pair over the covered pixels, and the covered fraction.

    Both images are rank-equalised and binned into 32 x 32 levels; the
    infrared image is sampled on the visible grid through ``transform``.
    """
    return _ranked_mi(_ranks(ir), _ranks(vi), transform)


def _ranked_mi(ir_ranks: np.ndarray, vi_ranks: np.ndarray, transform: Transform) -> tuple[float, float]:
    """:func:`mutual_information_bits` of images already rank-equalised."""
    from .transform import warp_to_visible

    warped, covered = warp_to_visible(ir_ranks, transform)
    overlap = float(covered.mean())
    if covered.sum() < 64:
        return 0.0, overlap
    return _histogram_mi(np.where(covered, warped, -1.0), vi_ranks), overlap


class _Frames:
    """The two gradient images as SimpleITK images in the visible pixel frame.

    The infrared image gets the spacing and origin of the nominal transform, so
    the transform to estimate starts near the identity (SimpleITK's convention:
    it maps fixed = visible physical points to moving = infrared physical points).
    """

    def __init__(self, ir: np.ndarray, vi: np.ndarray):
        sitk = _sitk()
        h, w = ir.shape
        H, W = vi.shape
        self.ir_size, self.vi_size = (w, h), (W, H)
        self.nominal = nominal_matrix(self.ir_size, self.vi_size)  # visible px -> infrared px
        self.spacing = 1.0 / self.nominal[0, 0]  # visible pixels per infrared pixel
        self.levels = max(1, int(round(self.spacing)))  # the finest useful shrink of the visible image
        self.vi_img, self.ir_img = vi, ir
        self.vi_ranks, self.ir_ranks = _ranks(vi), _ranks(ir)  # for the mutual information of the intensities
        S = np.linalg.inv(self.nominal)  # infrared pixel p sits at physical position S @ p
        self.fixed, self.moving = self._images(vi, ir, S)
        # the two gradient images as arrays (the visible one on the registration grid)
        self.vi_grad, self.ir_grad = sitk.GetArrayFromImage(self.fixed), sitk.GetArrayFromImage(self.moving)
        self._pyramid: dict[int, tuple] = {}
        self.S = S
        self.centre = ((W - 1) / 2, (H - 1) / 2)
        # The candidates are judged on the registration's own grid (the visible
        # image shrunk to the infrared resolution): a quarter of LLVIP's
        # visible pixels. On the registration benchmark's 84 similarity cases
        # the result stayed within 1 px of the full grid's in 83.
        # The fixed image is that grid: its pixels (vi_grad), spacing and origin serve.
        self.judge_size = (self.fixed.GetWidth(), self.fixed.GetHeight())
        (sx, sy), (ox, oy) = self.fixed.GetSpacing(), self.fixed.GetOrigin()
        self.judge_to_visible = np.array([[sx, 0, ox], [0, sy, oy], [0, 0, 1.0]])
        self.judge_vi_ranks = self.vi_ranks if self.judge_size == (W, H) else _cv2().resize(
            self.vi_ranks, self.judge_size, interpolation=_cv2().INTER_AREA)

    def _images(self, vi: np.ndarray, ir: np.ndarray, S: np.ndarray):
        """(fixed, moving) SimpleITK images of the two rank-equalised gradient magnitudes, in the visible pixel frame.

        The registration never looks finer than the infrared resolution, so
        the visible image is shrunk to it once (block means; SimpleITK's
        pyramid would smooth the full image again for every run), and both
        gradient images are then made the same way: a Gaussian of one
        infrared pixel, Sobel, ranks. (Until 2026-12-03 the visible gradient
        was taken at full resolution and its magnitudes shrunk: with the
        infrared image at half the visible resolution, aligned synthetic
        scenes came out a median 1.33 px off as similarities; made alike,
        0.97 px, as with both images given at the infrared resolution: 1.04 px.)
        """
        sitk = _sitk()
        H, W = vi.shape
        f = self.levels
        wc, hc = (max(8, round(W / f)), max(8, round(H / f))) if f > 1 else (W, H)
        small = _cv2().resize(vi, (wc, hc), interpolation=_cv2().INTER_AREA) if f > 1 else vi
        fixed = sitk.GetImageFromArray(_ranks(_gradient(small, self.spacing * wc / W)))
        sx, sy = W / wc, H / hc
        fixed.SetSpacing((sx, sy))
        fixed.SetOrigin((0.5 * sx - 0.5, 0.5 * sy - 0.5))  # pixel centres stay at visible pixel positions
        moving = sitk.GetImageFromArray(_ranks(_gradient(ir, 1.0)))
        moving.SetSpacing((self.spacing, self.spacing))
        moving.SetOrigin((float(S[0, 2]), float(S[1, 2])))
        return fixed, moving

    def to_matrix(self, tx) -> np.ndarray:
        """Visible px -> infrared px of a SimpleITK transform in this frame."""
        if tx.GetName() == "TranslationTransform":
            a, t = np.eye(2), np.array(tx.GetOffset())
        else:
            a = np.array(tx.GetMatrix()).reshape(2, 2)
            c, tr = np.array(tx.GetCenter()), np.array(tx.GetTranslation())
            t = c + tr - a @ c
        p = np.eye(3)
        p[:2, :2], p[:2, 2] = a, t
        return np.linalg.inv(self.S) @ p

    def physical(self, matrix: np.ndarray) -> np.ndarray:
        """The physical-frame matrix of a visible px -> infrared px matrix."""
        return self.S @ matrix

    def level(self, shrink: int) -> tuple:
        """(fixed, moving) of one level of the registration pyramid, made once per pair.

        Both images smoothed by a Gaussian of sigma ``shrink / 2`` of their own
        pixels, the fixed one then shrunk by ``shrink`` (block means): the levels SimpleITK's
        multi-resolution framework makes with those shrink factors and
        sigmas, which it would otherwise remake for every refinement (about
        60 ms of the 0.17 s each coarse refinement took at 640 x 512).
        """
        if shrink not in self._pyramid:
            sitk = _sitk()
            variance = [(0.5 * shrink) ** 2] * 2
            fixed = sitk.DiscreteGaussian(self.fixed, variance, 32, 0.01, False)
            if shrink > 1:
                # BinShrink (block means, placed at the blocks' centres); Shrink would
                # place one pixel of each block at the block's centre: half a pixel off.
                fixed = sitk.BinShrink(fixed, [shrink, shrink])
            moving = sitk.DiscreteGaussian(self.moving, variance, 32, 0.01, False)
            self._pyramid[shrink] = (fixed, moving)
        return self._pyramid[shrink]


def _method(samples: float, *, learning_rate: float, iterations: int, min_step: float):
    """One level's registration: ``samples`` is the fraction of the fixed image's pixels the metric uses."""
    sitk = _sitk()
    r = sitk.ImageRegistrationMethod()
    r.SetMetricAsMattesMutualInformation(numberOfHistogramBins=_BINS)
    # Points on a regular grid (the same points every run: deterministic).
    r.SetMetricSamplingStrategy(r.REGULAR)
    r.SetMetricSamplingPercentage(min(1.0, samples), 1)
    r.SetInterpolator(sitk.sitkLinear)
    # The step halves whenever the gradient turns back; the level ends at min_step (or the iteration cap).
    r.SetOptimizerAsRegularStepGradientDescent(
        learningRate=learning_rate, minStep=min_step, numberOfIterations=iterations, relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8
    )
    r.SetOptimizerScalesFromPhysicalShift()
    return r


_SAMPLES = 40_000  # metric sample points per pyramid level
_SAMPLES_FINEST = 120_000  # ... and on the finest level, where the accuracy is made


def _search(frames: _Frames, search: SearchRange, *, keep: int, rotate: bool, min_overlap: float) -> list[tuple[float, np.ndarray]]:
    """Candidates (mutual information, visible px -> infrared px), best first.

    For each scale and rotation of the grid, the strongest peaks of the phase
    correlation of the coarse gradient images give candidate shifts; each
    candidate is scored by the mutual information of the coarse gradient
    images where the infrared image covers at least ``min_overlap`` of the
    visible one.
    """
    cv2 = _cv2()
    W, H = frames.vi_size
    q = min(1.0, _COARSE / max(W, H))
    wc, hc = max(8, int(round(W * q))), max(8, int(round(H * q)))
    # Gradients of the images shrunk to the coarse grid: the structure at
    # that scale (shrinking fine gradients would keep only texture).
    fixed = _ranks(_gradient(cv2.resize(frames.vi_img, (wc, hc), interpolation=cv2.INTER_AREA), 1.0)).astype(np.float64)
    window = cv2.createHanningWindow((wc, hc), cv2.CV_64F)
    spectrum = np.conj(np.fft.rfft2(fixed * window))
    fixed_bins = _bins(fixed)
    to_coarse = np.array([[wc / W, 0, 0.5 * wc / W - 0.5], [0, hc / H, 0.5 * hc / H - 0.5], [0, 0, 1.0]])
    from_coarse = np.linalg.inv(to_coarse)
    h, w = frames.ir_img.shape
    r = min(1.0, wc / W * frames.spacing)  # about the coarse grid's resolution
    ws, hs = max(8, round(w * r)), max(8, round(h * r))
    ir_small = _ranks(_gradient(cv2.resize(frames.ir_img, (ws, hs), interpolation=cv2.INTER_AREA), 1.0))
    shrink_ir = np.array([[ws / w, 0, 0.5 * ws / w - 0.5], [0, hs / h, 0.5 * hs / h - 0.5], [0, 0, 1.0]])
    c = np.array(frames.centre)
    grid = search.grid() if rotate else [(1.0, 0.0)]
    # shifts beyond max_shift are not looked at
    dy = np.minimum(np.arange(hc), hc - np.arange(hc))[:, None]
    dx = np.minimum(np.arange(wc), wc - np.arange(wc))[None, :]
    outside = (dx > search.max_shift * wc + 1) | (dy > search.max_shift * hc + 1)
    found = []
    for scale, angle in dict.fromkeys(grid):
        rad = math.radians(angle)
        a = np.array([[math.cos(rad), -math.sin(rad)], [math.sin(rad), math.cos(rad)]]) / scale
        phys = np.eye(3)
        phys[:2, :2], phys[:2, 2] = a, c - a @ c  # about the visible centre
        base = np.linalg.inv(frames.S) @ phys
        moved = cv2.warpPerspective(
            ir_small, shrink_ir @ base @ from_coarse, (wc, hc), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        ).astype(np.float64)
        cross = np.fft.rfft2(moved * window) * spectrum
        surface = np.fft.irfft2(cross / (np.abs(cross) + 1e-12), s=(hc, wc))
        for dx, dy in _correlation_peaks(surface, _PEAKS, outside):
            shifted = phys.copy()
            shifted[:2, 2] += a @ np.array([dx * W / wc, dy * H / hc])
            m = np.linalg.inv(frames.S) @ shifted
            score = cv2.warpPerspective(
                ir_small, shrink_ir @ m @ from_coarse, (wc, hc),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=-1.0,
            )
            covered = score >= 0
            if float(covered.mean()) >= min_overlap:
                found.append((_binned_mi(_bins(score[covered]), fixed_bins[covered]), m))
    found.sort(key=lambda f: -f[0])
    return found[:keep]


_PEAKS = 6  # phase-correlation peaks tried per scale and rotation


def _correlation_peaks(surface: np.ndarray, count: int, outside: np.ndarray) -> list[tuple[int, int]]:
    """The ``count`` strongest shifts (dx, dy) of a phase-correlation surface, 3 x 3 apart at least, not where ``outside``."""
    r = np.where(outside, -np.inf, surface)
    h, w = r.shape
    peaks = []
    for _ in range(count):
        i, j = np.unravel_index(int(np.argmax(r)), r.shape)
        if not np.isfinite(r[i, j]):
            break
        peaks.append((j - w if j > w // 2 else j, i - h if i > h // 2 else i))
        rows = [(i + k) % h for k in (-1, 0, 1)]
        cols = [(j + k) % w for k in (-1, 0, 1)]
        r[np.ix_(rows, cols)] = -np.inf
    return peaks


def _bins(a: np.ndarray) -> np.ndarray:
    """Bin indices (0 to 31) of values in [0, 1]."""
    return np.minimum((np.clip(a, 0, 1) * _BINS).astype(np.int32), _BINS - 1)


def _binned_mi(i: np.ndarray, j: np.ndarray) -> float:
    """Mutual information (bits) of two arrays of bin indices."""
    if i.size < 16:
        return 0.0
    joint = np.bincount(i * _BINS + j, minlength=_BINS * _BINS).reshape(_BINS, _BINS).astype(np.float64)
    joint /= joint.sum()
    pa, pb = joint.sum(1, keepdims=True), joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log2(joint[nz] / (pa @ pb)[nz])).sum())


def _histogram_mi(a: np.ndarray, b: np.ndarray) -> float:
    """Mutual information (bits) of two images of values in [0, 1] where ``a`` >= 0, in 32 x 32 bins."""
    keep = a >= 0
    return _binned_mi(_bins(a[keep]), _bins(b[keep]))


_CANDIDATES = 5  # search candidates refined and compared (with the nominal rig: three rounds on two cores)
_COARSE_LEVELS = [8, 4]  # where they are refined
_FINE_LEVELS = [2, 1]  # where the winner is refined as a similarity
_AFFINE_LEVELS = [2, 1]  # ... and then as an affine transform


def _shared_information(frames: _Frames, tx, min_overlap: float) -> float:
    """How a refined candidate is judged: the mutual information (bits) of the intensities plus that of the gradient magnitudes.

    -1 below ``min_overlap``. Intensities alone pick a wrong candidate where a
    large uniform region (night sky, road) lines up with one of the other
    image; gradients alone where edges repeat. On the registration
    benchmark's pairs 7 to 18 of each val set (not those the choice was
    first seen on), the sum left a candidate more than 3 px worse than the
    best one refined in 5 of 60 cases, intensities alone in 11. (On the
    benchmark's consistency of moved and unmoved pairs the two are within
    the noise of its few cases: README, registration.)
    """
    try:
        t = Transform("affine", frames.to_matrix(tx) @ frames.judge_to_visible, frames.ir_size, frames.judge_size)
        mi, overlap = _ranked_mi(frames.ir_ranks, frames.judge_vi_ranks, t)
        edges, _ = _ranked_mi(frames.ir_grad, frames.vi_grad, t)  # vi_grad is on that grid
    except CausalFuseError:  # degenerate
        return -1.0
    return mi + edges if overlap >= min_overlap else -1.0


def _similarity_from(frames: _Frames, matrix: np.ndarray):
    sitk = _sitk()
    p = frames.physical(matrix)
    a = p[:2, :2]
    scale = math.sqrt(abs(np.linalg.det(a)))
    angle = math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])
    t = sitk.Similarity2DTransform()
    t.SetCenter(frames.centre)
    t.SetScale(scale)
    t.SetAngle(angle)
    c = np.array(frames.centre)
    t.SetTranslation(tuple(float(v) for v in (p[:2, 2] + a @ c - c)))
    return t


def _refine(frames: _Frames, tx, shrinks: list[int], *, learning_rate: float, iterations: int = 100, min_step: float = 0.01,
            threads: int | None = None) -> float:
    """Refine ``tx`` in place on the pyramid levels ``shrinks`` (coarse to fine); the metric value at the end.

    Each level restarts the optimiser at ``learning_rate`` and runs until the
    step falls below ``min_step`` or ``iterations`` are done, with
    :data:`_SAMPLES` metric points (:data:`_SAMPLES_FINEST` on the finest).
    ``threads``: SimpleITK's threads (default: its own).
    """
    value = 0.0
    for shrink in shrinks:
        fixed, moving = frames.level(shrink)
        pixels = fixed.GetWidth() * fixed.GetHeight()
        r = _method((_SAMPLES_FINEST if shrink == 1 else _SAMPLES) / pixels, learning_rate=learning_rate,
                    iterations=iterations, min_step=min_step)
        if threads:
            r.SetNumberOfThreads(threads)
        r.SetInitialTransform(tx, inPlace=True)
        r.Execute(fixed, moving)
        value = float(r.GetMetricValue())
    return value


def estimate_transform(
    ir: np.ndarray,
    vi: np.ndarray,
    model: str = "affine",
    *,
    search: SearchRange = SearchRange(),
    min_mi: float = MIN_MI,
    min_overlap: float = MIN_OVERLAP,
    snap: float = SNAP,
    name: str = "the pair",
) -> Transform:
    """Estimate the transform that maps the visible grid onto the infrared image.

    Args:
        ir, vi: the two images (any size, grey or colour, uint8/uint16/float).
        model: one of ``translation``, ``similarity``, ``affine``, ``projective``.
        search: where the initial search looks (scales and rotations around
            the same field of view).
        min_mi: the registration is refused below this mutual information (bits).
        min_overlap: ... or when the infrared image covers less of the visible one.
        snap: an estimate within this many visible pixels (largest corner
            distance) of the nominal rig (the same field of view, centred;
            the identity for two images of one size) is returned as the
            nominal rig, with the distance in ``info["snapped_from_px"]``;
            0 keeps every estimate as it is.
        name: how messages call the pair.

    Raises:
        RegistrationError: too little structure or overlap, or ``min_mi`` not reached.
    """
    if model not in MODELS:
        raise CausalFuseError(f"unknown transform model {model!r}; choose one of {', '.join(MODELS)}")
    sitk = _sitk()
    ir_g, vi_g = prepare(ir), prepare(vi)
    for what, img in (("infrared", ir_g), ("visible", vi_g)):
        if min(img.shape) < 16:
            raise RegistrationError(f"{name}: the {what} image is {img.shape[1]} x {img.shape[0]}; registration needs at least 16 x 16")
        why = _structure_problem(img)
        if why:
            raise RegistrationError(f"{name}: the {what} image has too little structure to register: {why}")
    frames = _Frames(ir_g, vi_g)
    if model == "translation":
        (_, start), = _search(frames, search, keep=1, rotate=False, min_overlap=min_overlap)
        p = frames.physical(start)
        tx = sitk.TranslationTransform(2, (float(p[0, 2]), float(p[1, 2])))
        _refine(frames, tx, [4, 2, 1], learning_rate=2.0)
        matrix = frames.to_matrix(tx)
    else:
        # Each candidate is refined on the coarse levels; the one whose
        # intensities and edges then share the most information with the
        # visible image's wins (_shared_information).
        starts = [m for _, m in _search(frames, search, keep=_CANDIDATES, rotate=True, min_overlap=min_overlap)]
        starts.append(frames.nominal)  # the nominal rig always competes
        for shrink in _COARSE_LEVELS:
            frames.level(shrink)  # made before the threads share them

        def judged(start: np.ndarray) -> tuple[float, object]:
            tx = _similarity_from(frames, start)
            # The coarse levels only choose: a step of 0.05 (physical pixels) is fine enough.
            _refine(frames, tx, _COARSE_LEVELS, learning_rate=2.0, iterations=40, min_step=0.05, threads=1)
            return _shared_information(frames, tx, min_overlap), tx

        # One candidate per core, each on one thread: on these small levels
        # SimpleITK's own threads gain less than running candidates side by side.
        workers = min(len(starts), available_cores())
        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                judgements = list(pool.map(judged, starts))
        else:
            judgements = [judged(start) for start in starts]
        # the first best in the order of the candidates (whatever the threads)
        best = max(range(len(judgements)), key=lambda i: (judgements[i][0], -i))
        tx = judgements[best][1]
        _refine(frames, tx, _FINE_LEVELS, learning_rate=1.0)
        matrix = frames.to_matrix(tx)
        if model in ("affine", "projective"):
            # Affine from the refined similarity, on the two finest levels, to a
            # step of 0.01. Run to convergence (three levels, a step of 0.002)
            # it undid more affine moves of synthetic scenes (19 of 20 within
            # 2 px against 15 of 20) but was unstable on real pairs: on LLVIP
            # the same pair moved and unmoved then came out 8.8 px apart
            # (median) against 2.5 px, so the extra parameters stay close to
            # the similarity they start from.
            af = sitk.AffineTransform(2)
            af.SetCenter(tx.GetCenter())
            af.SetMatrix(tx.GetMatrix())
            af.SetTranslation(tx.GetTranslation())
            _refine(frames, af, _AFFINE_LEVELS, learning_rate=0.25)
            matrix = frames.to_matrix(af)
    result = Transform(model="affine" if model == "projective" else model, matrix=matrix, ir_size=frames.ir_size, vi_size=frames.vi_size)
    mi, overlap = _ranked_mi(frames.ir_ranks, frames.vi_ranks, result)
    if model == "projective":
        chosen = result.matrix
        proj = _ecc_projective(frames, result.matrix)
        if proj is not None:
            try:
                mi_p, overlap_p = _ranked_mi(frames.ir_ranks, frames.vi_ranks, Transform("projective", proj, frames.ir_size, frames.vi_size))
            except CausalFuseError:  # a degenerate homography
                mi_p = -1.0
            if mi_p > mi:
                chosen, mi, overlap = proj, mi_p, overlap_p
        result = Transform("projective", chosen, frames.ir_size, frames.vi_size)
    info = {"estimated_by": "causalfuse.register", "metric": "Mattes mutual information of gradient magnitudes"}
    nominal = Transform(result.model, frames.nominal, frames.ir_size, frames.vi_size)
    off = result.corner_error(nominal)
    if snap > 0 and off <= snap:  # already aligned, as far as the two bands tell
        result = nominal
        mi, overlap = _ranked_mi(frames.ir_ranks, frames.vi_ranks, result)
        info["snapped_from_px"] = round(off, 4)
    result.mutual_information, result.overlap = mi, overlap
    result.info = info
    if overlap < min_overlap:
        raise RegistrationError(
            f"{name}: the registered infrared image covers only {100 * overlap:.1f} % of the visible image "
            f"(at least {100 * min_overlap:.0f} % needed; mutual information reached {mi:.3f} bits)"
        )
    if mi < min_mi:
        raise RegistrationError(
            f"{name}: registration failed: mutual information reached {mi:.3f} bits, below the {min_mi:.3f} bits "
            "a registered pair reaches (too little shared structure?)"
        )
    return result


def _ecc_projective(frames: _Frames, start: np.ndarray) -> np.ndarray | None:
    """OpenCV's ECC homography from ``start`` on the finest gradient images (None if it does not converge)."""
    cv2 = _cv2()
    # run on the registration grid (the visible grid shrunk to about the infrared resolution)
    template = frames.vi_grad
    down = np.linalg.inv(frames.judge_to_visible)
    warp = (start @ np.linalg.inv(down)).astype(np.float32)  # coarse visible px -> infrared px
    warp /= warp[2, 2]
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-6)
    try:
        _, warp = cv2.findTransformECC(template, frames.ir_grad, warp, cv2.MOTION_HOMOGRAPHY, criteria, None, 5)
    except cv2.error:
        return None
    m = warp.astype(np.float64) @ down
    return m / m[2, 2]

"""Qcb, Qcv (perceptual) and Nabf, MS-SSIM (artefacts) against the original code.

Reference values come from ``../shared/oracle`` (never copied here): every
Qcb/Qcv row of VIFB's table, and the oracle README's small table for Nabf and
MS-SSIM on grey images. The vectorised code is also checked against plain
transcriptions of the MATLAB loops on small odd-sized images (sizes the
reference set does not have), and on identities and constant images.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import signal

from causalfuse.io import load_image
from causalfuse.metrics import artefacts, get_metric, perceptual
from causalfuse.metrics.artefacts import ms_ssim, nabf
from causalfuse.metrics.perceptual import qcb, qcv

# The oracle README's small table (Octave runs of RFN-Nest's evaluation code).
SMALL_TABLE = {
    ("walking", "ADF"): {"Nabf": 0.0848091280, "MS-SSIM": 0.8037426754},
    ("walking", "CNN"): {"Nabf": 0.1607003666, "MS-SSIM": 0.8930055075},
}


@pytest.fixture(autouse=True)
def _fresh_cache():
    perceptual.clear_source_cache()
    yield
    perceptual.clear_source_cache()


def _vifb_value(fn, fused: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> float:
    """VIFB's colour convention: per channel, averaged; a grey infrared image is reused."""
    fused = fused.astype(np.float64)
    ir = ir.astype(np.float64)
    vi = vi.astype(np.float64)
    if fused.ndim == 2:
        return fn(fused, ir, vi)
    return float(np.mean([fn(fused[..., k], ir if ir.ndim == 2 else ir[..., k], vi[..., k]) for k in range(3)]))


def _rows(oracle_dir, metrics):
    path = oracle_dir / "vifb_reference_dev.csv"
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["metric"] in metrics]


# ----------------------------------------------------------- reference values


@pytest.mark.slow  # ~25 s of CPU (504 rows x 3 channels), ~13 s on two idle cores
def test_qcb_qcv_match_every_vifb_reference_row(oracle_dir):
    rows = _rows(oracle_dir, {"Qcb", "Qcv"})
    assert len(rows) == 2 * 21 * 12
    by_image: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_image[r["image"]].append(r)
    fns = {"Qcb": qcb, "Qcv": qcv}
    vifb = oracle_dir / "vifb"

    def score_image(name: str) -> list[tuple[str, str, str, float, float]]:
        ir = load_image(vifb / "ir" / f"{name}.jpg")
        vi = load_image(vifb / "vi" / f"{name}.jpg")
        out = []
        fused_cache: dict[str, np.ndarray] = {}
        for r in by_image[name]:
            method = r["method"]
            if method not in fused_cache:
                fused_cache[method] = load_image(vifb / "fused" / method / f"{name}.jpg")
            value = _vifb_value(fns[r["metric"]], fused_cache[method], ir, vi)
            out.append((name, method, r["metric"], float(r["value"]), value))
        return out

    # Threads: the FFTs and array operations release the GIL.
    with ThreadPoolExecutor(2) as pool:
        results = [x for part in pool.map(score_image, sorted(by_image)) for x in part]
    assert len(results) == len(rows)
    errors = [(abs(v - ref) / abs(ref), name, method, metric, ref, v) for name, method, metric, ref, v in results]
    worst = max(errors)
    bad = [e for e in errors if not e[0] <= 1e-4]
    assert not bad, f"{len(bad)} of {len(errors)} rows off by more than 1e-4 relative, e.g. {sorted(bad)[-3:]}"
    assert worst[0] < 1e-4
    # Stronger: every value rounds to the 5 significant digits stored (the
    # closest row is at 0.996 of a half unit of the last digit).
    unrounded = [
        (name, method, metric, ref, v)
        for name, method, metric, ref, v in results
        if abs(v - ref) > 1.01 * 0.5 * 10 ** (math.floor(math.log10(abs(ref))) - 4)
    ]
    assert not unrounded, f"values that do not round to the stored digits: {unrounded[:3]}"


@pytest.mark.parametrize("image,method", sorted(SMALL_TABLE))
def test_nabf_and_ms_ssim_match_the_oracle_table(oracle_dir, image, method):
    gray = oracle_dir / "vifb" / "gray"
    ir = load_image(gray / f"{image}_IR.png").astype(np.float64)
    vi = load_image(gray / f"{image}_VI.png").astype(np.float64)
    fused = load_image(gray / f"{image}_{method}.png").astype(np.float64)
    expected = SMALL_TABLE[(image, method)]
    assert nabf(fused, ir, vi) == pytest.approx(expected["Nabf"], rel=1e-8)
    assert ms_ssim(fused, ir, vi) == pytest.approx(expected["MS-SSIM"], rel=1e-8)

    from causalfuse.metrics import compute

    got = compute(fused.astype(np.uint8), ir.astype(np.uint8), vi.astype(np.uint8), ["Nabf", "MS-SSIM"], colour="gray")
    assert got == pytest.approx(expected, rel=1e-8)


def test_compute_dispatches_these_metrics_with_the_vifb_convention(oracle_dir):
    from causalfuse.metrics import compute

    vifb = oracle_dir / "vifb"
    ir = load_image(vifb / "ir" / "running.jpg")  # grey infrared, reused per channel
    vi = load_image(vifb / "vi" / "running.jpg")
    fused = load_image(vifb / "fused" / "CNN" / "running.jpg")
    names = ["Qcb", "Qcv", "Nabf", "MS-SSIM"]
    got = compute(fused, ir, vi, names, colour="vifb")
    for name, fn in zip(names, (qcb, qcv, nabf, ms_ssim)):
        assert got[name] == pytest.approx(_vifb_value(fn, fused, ir, vi), rel=1e-12)
    rows = _rows(oracle_dir, {"Qcb", "Qcv"})
    ref = {r["metric"]: float(r["value"]) for r in rows if r["image"] == "running" and r["method"] == "CNN"}
    assert got["Qcb"] == pytest.approx(ref["Qcb"], rel=1e-4)
    assert got["Qcv"] == pytest.approx(ref["Qcv"], rel=1e-4)


def test_registry_records():
    assert get_metric("qcb").higher_is_better and get_metric("Qcb").vifb_name == "Qcb"
    assert not get_metric("QCV").higher_is_better and get_metric("Qcv").vifb_name == "Qcv"
    assert not get_metric("nabf").higher_is_better and get_metric("Nabf").vifb_name is None
    assert get_metric("ms-ssim").higher_is_better and get_metric("MS-SSIM").fn is ms_ssim
    for name in ("Qcb", "Qcv", "Nabf", "MS-SSIM"):
        assert "doi:10." in get_metric(name).reference
        assert get_metric(name).colour == "per_channel"


# ------------------------------------------- plain transcriptions of the loops


def _normalize1_plain(x):
    hi, lo = x.max(), x.min()
    if hi == 0 and lo == 0:
        return x.copy()
    y = (x - lo) / (hi - lo) * 255
    return np.sign(y) * np.floor(np.abs(y) + 0.5)


def _freqspace(m, n):
    f1 = (np.arange(n) - n // 2) * 2.0 / n
    f2 = (np.arange(m) - m // 2) * 2.0 / m
    return np.meshgrid(f1, f2)


def _csf_plain(x, h):
    return np.fft.ifft2(np.fft.ifftshift(np.fft.fftshift(np.fft.fft2(x)) * h))


def _qcb_plain(fused, ir, vi):
    im1, im2, f = (_normalize1_plain(a.astype(float)) for a in (ir, vi, fused))
    m, n = im1.shape
    u, v = _freqspace(m, n)
    r = np.hypot(u * n / 30, v * m / 30)
    sd = np.exp(-((r / 15.3870) ** 2)) - 0.7622 * np.exp(-((r / 1.3456) ** 2))
    x, y = np.meshgrid(np.arange(-15, 16), np.arange(-15, 16))

    def gauss(s):
        return np.exp(-(x * x + y * y) / (2 * s * s)) / (2 * np.pi * s * s)

    def cp(img):
        z = _csf_plain(img, sd)
        c = np.abs(signal.correlate2d(z, gauss(2), mode="same") / signal.correlate2d(z, gauss(4), mode="same") - 1)
        return c**3 / (c**2 + 1e-4)

    c1, c2, cf = cp(im1), cp(im2), cp(f)
    q1 = np.where(c1 < cf, c1 / cf, cf / c1)
    q2 = np.where(c2 < cf, c2 / cf, cf / c2)
    l1 = c1 * c1 / (c1 * c1 + c2 * c2)
    l2 = c2 * c2 / (c1 * c1 + c2 * c2)
    return float(np.mean(l1 * q1 + l2 * q2))


def _blkproc(x, fn, b=16):
    m, n = x.shape
    p = np.zeros((-(-m // b) * b, -(-n // b) * b), dtype=x.dtype)
    p[:m, :n] = x
    return np.array([[fn(p[i : i + b, j : j + b]) for j in range(0, p.shape[1], b)] for i in range(0, p.shape[0], b)])


def _qcv_plain(fused, ir, vi):
    im1, im2, f = (_normalize1_plain(a.astype(float)) for a in (ir, vi, fused))
    sx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def grad(img):
        return np.hypot(signal.correlate2d(img, sx, mode="same"), signal.correlate2d(img, sx.T, mode="same"))

    r1 = _blkproc(grad(im1), lambda b: np.sum(b**5))
    r2 = _blkproc(grad(im2), lambda b: np.sum(b**5))
    m, n = im1.shape
    u, v = _freqspace(m, n)
    r = np.hypot(u * n / 8, v * m / 8)
    theta = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))
    d1 = _blkproc(_csf_plain(im1 - f, theta), lambda b: np.mean(b**2)).real
    d2 = _blkproc(_csf_plain(im2 - f, theta), lambda b: np.mean(b**2)).real
    return float(np.sum(r1 * d1 + r2 * d2) / np.sum(r1 + r2))


def _mef_ssim_plain(seq, f, window):
    """Direct transcription of Ma et al.'s mef_ssim loop (one scale)."""
    s1, s2, s3 = seq.shape
    w = window.shape[0]
    bd = w // 2
    box = np.ones((w, w)) / w**2
    eps = np.finfo(float).eps
    mu = np.stack([signal.correlate2d(seq[..., k], box, mode="valid") for k in range(s3)], -1)
    sq = np.stack([signal.correlate2d(seq[..., k] ** 2, box, mode="valid") for k in range(s3)], -1)
    ed = np.sqrt(np.maximum(w * w * (sq - mu * mu), 0)) + 0.001
    q = np.zeros((s1 - 2 * bd, s2 - 2 * bd))
    for i in range(bd, s1 - bd):
        for j in range(bd, s2 - bd):
            blocks = seq[i - bd : i + bd + 1, j - bd : j + bd + 1, :]
            vecs = blocks.reshape(-1, s3, order="F")
            m = mu[i - bd, j - bd]
            den = sum(np.linalg.norm(vecs[:, k] - m[k]) for k in range(s3))
            tot = vecs.sum(1)
            num = np.linalg.norm(tot - tot.mean())
            rr = (num + eps) / (den + eps)
            rr = 1 - eps if rr > 1 else rr
            p = min(math.tan(math.pi / 2 * rr), 10.0)
            e = ed[i - bd, j - bd]
            wm = (e / w) ** p + eps
            wm = wm / wm.sum()
            ref = sum(wm[k] * (blocks[..., k] - m[k]) / e[k] for k in range(s3))
            nr = np.linalg.norm(ref)
            if nr > 0:
                ref = ref / nr * e.max()
            fb = f[i - bd : i + bd + 1, j - bd : j + bd + 1]
            m1 = np.sum(window * ref)
            m2 = np.sum(window * fb)
            v1 = np.sum(window * (ref - m1) ** 2)
            v2 = np.sum(window * (fb - m2) ** 2)
            c12 = np.sum(window * (ref - m1) * (fb - m2))
            c = (0.03 * 255) ** 2
            q[i - bd, j - bd] = (2 * c12 + c) / (v1 + v2 + c)
    return q.mean()


def _ms_ssim_plain(fused, ir, vi):
    x = np.arange(11) - 5.0
    g = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    g /= g.sum()
    weights = np.array([0.0448, 0.2856, 0.3001])
    weights /= weights.sum()
    seq = np.stack([ir, vi], -1).astype(float)
    f = fused.astype(float)
    scores = []
    for level in range(3):
        if level:
            # imfilter(ones(2)/4, 'symmetric', 'same') sampled at odd rows and columns
            pad = lambda a: np.pad(a, [(0, 1), (0, 1)] + [(0, 0)] * (a.ndim - 2), mode="symmetric")
            box = lambda a: (a[:-1, :-1] + a[1:, :-1] + a[:-1, 1:] + a[1:, 1:]) / 4
            seq = box(pad(seq))[::2, ::2]
            f = box(pad(f))[::2, ::2]
        scores.append(_mef_ssim_plain(seq, f, g))
    return float(np.prod(np.array(scores) ** weights))


def _kumar_plain(fused, ir, vi, white=255):
    """Direct transcription of analysis_nabf on im2double images (x / white)."""
    a, b, f = (x.astype(float) / white for x in (ir, vi, fused))
    vt = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8

    def msum(p):  # MATLAB's sum(sum(p)) on a 3 x 3 block: column sums, then across
        cols = [(p[0, c] + p[1, c]) + p[2, c] for c in range(3)]
        return (cols[0] + cols[1]) + cols[2]

    def sob(x):
        # Mirror extension and a loop, as sobel_fn; the addition order decides
        # ties between edge strengths (e.g. at the borders, where the mirror
        # makes the two sides equal), so it is MATLAB's.
        e = np.pad(x, 1, mode="reflect")
        gv = np.zeros(x.shape)
        gh = np.zeros(x.shape)
        for i in range(x.shape[0]):
            for j in range(x.shape[1]):
                blk = e[i : i + 3, j : j + 3]
                gv[i, j] = msum(blk * vt)
                gh[i, j] = msum(blk * vt.T)
        return gv, gh

    def ang(gv, gh):
        with np.errstate(all="ignore"):
            return np.where((gv == 0) & (gh == 0), 0, np.arctan(gv / gh))

    (va, ha), (vb, hb), (vf, hf) = sob(a), sob(b), sob(f)
    ga, gb, gf = (np.sqrt(h**2 + v**2) for h, v in ((ha, va), (hb, vb), (hf, vf)))

    def qxf(g, an):
        with np.errstate(all="ignore"):
            rel = np.where((g == 0) | (gf == 0), 0, np.where(g > gf, gf / g, g / gf))
        arel = np.abs(np.abs(an - ang(vf, hf)) - np.pi / 2) * 2 / np.pi
        return np.sqrt(0.9999 / (1 + np.exp(-19 * (rel - 0.5))) * 0.9995 / (1 + np.exp(-22 * (arel - 0.5))))

    qa, qb = qxf(ga, ang(va, ha)), qxf(gb, ang(vb, hb))
    wa = np.where(ga >= 2, ga**1.5, 0.001)
    wb = np.where(gb >= 2, gb**1.5, 0.001)
    na = (gf > ga) & (gf > gb)
    return float(np.sum(na * ((1 - qa) * wa + (1 - qb) * wb)) / np.sum(wa + wb))


def _triplet(shape, seed):
    """Smooth-ish random 8-bit sources and a fused mix (integer values, like decoded images)."""
    rng = np.random.default_rng(seed)
    base = rng.random(shape)
    ir = np.round(255 * np.clip(base + 0.3 * rng.random(shape), 0, 1.3) / 1.3)
    vi = np.round(np.clip(signal.convolve2d(rng.random(shape), np.ones((3, 3)) / 9, mode="same") * 300 - 20, 0, 255))
    fused = np.round(0.6 * ir + 0.4 * vi + rng.normal(0, 3, shape)).clip(0, 255)
    return fused, ir, vi


@pytest.mark.parametrize("shape", [(37, 53), (64, 48), (45, 33)])
def test_qcb_qcv_equal_plain_transcriptions_on_odd_sizes(shape):
    fused, ir, vi = _triplet(shape, sum(shape))
    assert qcb(fused, ir, vi) == pytest.approx(_qcb_plain(fused, ir, vi), rel=1e-9)
    assert qcv(fused, ir, vi) == pytest.approx(_qcv_plain(fused, ir, vi), rel=1e-9)


@pytest.mark.parametrize("shape", [(47, 45), (48, 50)])
def test_nabf_and_ms_ssim_equal_plain_transcriptions(shape):
    fused, ir, vi = _triplet(shape, 7 + shape[0])
    assert nabf(fused, ir, vi) == pytest.approx(_kumar_plain(fused, ir, vi), rel=1e-9)
    # On the 0-255 scale the edge-strength weights g^1.5 (g >= 2) come into play.
    assert nabf(fused, ir, vi, data_range=1.0) == pytest.approx(_kumar_plain(fused, ir, vi, white=1), rel=1e-9)
    assert nabf(fused, ir, vi, data_range=1.0) != pytest.approx(nabf(fused, ir, vi), rel=1e-3)
    assert ms_ssim(fused, ir, vi) == pytest.approx(_ms_ssim_plain(fused, ir, vi), rel=1e-9)


def test_source_cache_gives_the_same_values_and_stays_bounded():
    fused, ir, vi = _triplet((40, 44), 3)
    cold = (qcb(fused, ir, vi), qcv(fused, ir, vi))
    warm = (qcb(fused, ir, vi), qcv(fused, ir, vi))
    assert cold == warm
    entries = list(perceptual._CACHE._entries.values())
    assert len(entries) == 4  # two sources x two metrics; fused images are not kept
    assert all(a.base is None for value in entries for a in value)  # own memory, not views of a batch
    other = np.flipud(fused)
    assert qcb(other, ir, vi) == _qcb_cold(other, ir, vi)
    cache = perceptual._SourceCache(max_bytes=3 * 40 * 44 * 8 + 3 * 40 * 44)
    for k in range(5):
        img = np.full((40, 44), float(k))
        cache.put(cache.key("t", img), (img,))
    assert len(cache._entries) == 3 and cache._bytes <= cache._max_bytes
    assert cache.get(cache.key("t", np.full((40, 44), 4.0))) is not None
    assert cache.get(cache.key("t", np.full((40, 44), 0.0))) is None


def _qcb_cold(fused, ir, vi):
    perceptual.clear_source_cache()
    return qcb(fused, ir, vi)


# ----------------------------------------------------------------- identities


def test_fused_equal_to_the_sources():
    _, ir, vi = _triplet((64, 72), 11)
    assert qcb(ir, ir, ir) == pytest.approx(1.0, abs=1e-12)
    assert qcv(ir, ir, ir) == 0.0
    assert nabf(ir, ir, vi) == 0.0  # nothing stronger than the sources: no artefact
    assert nabf(vi, ir, vi) == 0.0
    assert ms_ssim(ir, ir, ir) == pytest.approx(1.0, abs=1e-9)
    assert 0 < qcv(ir, ir, vi)  # the visible image's distortion remains


def test_symmetric_in_the_two_sources():
    fused, ir, vi = _triplet((64, 60), 5)
    for fn in (qcb, qcv, nabf, ms_ssim):
        assert fn(fused, ir, vi) == pytest.approx(fn(fused, vi, ir), rel=1e-12), fn.__name__


def test_qcb_qcv_ignore_the_value_range():
    # normalize1 stretches every image to 0-255 first.
    # An integer image and any increasing affine map of it normalise to the
    # same integers (up to rounding far from the .5 ties).
    fused, ir, vi = _triplet((48, 52), 9)
    for fn in (qcb, qcv):
        expected = fn(fused, ir, vi)
        assert fn(fused * 0.5 + 20, ir, vi) == expected
        assert fn(fused, ir / 255, 3.0 * vi + 1) == expected


def test_nabf_data_range():
    fused, ir, vi = _triplet((40, 40), 2)
    assert nabf(fused / 255, ir / 255, vi / 255, data_range=1.0) == nabf(fused, ir, vi)


def test_known_relations_between_values():
    fused, ir, vi = _triplet((64, 64), 13)
    noisy = np.clip(fused + np.random.default_rng(0).normal(0, 25, fused.shape), 0, 255).round()
    assert qcb(noisy, ir, vi) < qcb(fused, ir, vi)
    assert qcv(noisy, ir, vi) > qcv(fused, ir, vi)
    assert nabf(noisy, ir, vi) > nabf(fused, ir, vi)
    assert ms_ssim(noisy, ir, vi) < ms_ssim(fused, ir, vi)


# ------------------------------------------------------------ constant images


def test_constant_images_give_what_the_original_gives():
    _, ir, vi = _triplet((48, 48), 4)
    grey = np.full(ir.shape, 128.0)
    black = np.zeros(ir.shape)
    # normalize1 turns a non-zero constant image into 0/0 = NaN: Qcb and Qcv are NaN.
    assert math.isnan(qcb(grey, ir, vi)) and math.isnan(qcv(grey, ir, vi))
    assert math.isnan(qcb(ir, grey, vi)) and math.isnan(qcv(ir, grey, vi))
    # An all-zero image is left as it is: its contrast is 0 / 0 (NaN), its CSF output 0.
    assert math.isnan(qcb(black, ir, vi))
    assert qcv(black, ir, vi) == pytest.approx(_qcv_plain(black, ir, vi), rel=1e-9)
    assert math.isnan(qcv(black, black, black))  # no saliency: 0 / 0
    # No edges in the fused image: nothing is an artefact.
    assert nabf(grey, ir, vi) == 0.0
    assert nabf(grey, grey, grey) == 0.0
    # Flat everywhere: every window has zero variance, SSIM's constant terms give 1.
    assert ms_ssim(grey, grey, grey) == pytest.approx(1.0, abs=1e-9)
    assert ms_ssim(black, grey, grey) == pytest.approx(1.0, abs=1e-9)


def test_ms_ssim_too_small_for_three_scales_is_minus_inf():
    fused, ir, vi = _triplet((43, 80), 1)  # 43 / 4 < 11, as the original refuses
    assert ms_ssim(fused, ir, vi) == -math.inf
    fused, ir, vi = _triplet((44, 80), 1)
    assert math.isfinite(ms_ssim(fused, ir, vi))


def test_no_warnings_on_degenerate_input(recwarn):
    black = np.zeros((48, 48))
    grey = np.full((48, 48), 7.0)
    for fn in (qcb, qcv, nabf, ms_ssim):
        fn(black, grey, black)
        fn(grey, black, grey)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_module_exports():
    assert set(perceptual.__all__) == {"clear_source_cache", "qcb", "qcv"}
    assert set(artefacts.__all__) == {"nabf", "ms_ssim"}

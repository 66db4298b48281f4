"""Property-based fault tests: whatever a caller passes, the outcome is a result or a CausalFuseError.

Random shapes, dtypes, channel counts, NaN and inf, constant images and
damaged files go through ``fuse``, ``metrics.compute`` and ``load_image``.
A result must be finite and of the documented shape and range; any other
exception, or a silent non-finite value, fails. The example counts are
bounded so the whole module runs in well under a minute.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install -e '.[test]')")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from causalfuse import CausalFuseError, fuse, metrics  # noqa: E402
from causalfuse.io import load_image  # noqa: E402

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

#: Metrics whose original code gives inf on some inputs (PSNR = 20 log10(255 / sqrt(0))).
ORIGINAL_INF = {"PSNR"}

DTYPES = [np.uint8, np.uint16, np.float32, np.float64, np.int32, np.bool_]


@st.composite
def images(draw, size=None):
    """An array a caller might pass: any of the dtypes, 2-D or with 1-5 channels, maybe constant, maybe NaN/inf."""
    h, w = size if size is not None else (draw(st.integers(1, 24)), draw(st.integers(1, 24)))
    # weighted towards valid images, so that most examples reach the computation
    channels = draw(st.sampled_from([None, None, None, 3, 3, 1, 4, 2, 5]))
    dtype = draw(st.sampled_from(DTYPES + [np.uint8, np.uint8, np.float32]))
    shape = (h, w) if channels is None else (h, w, channels)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["random"] * 5 + ["constant"] * 2 + ["nan", "inf", "out_of_range"]))
    if dtype == np.bool_:
        arr = rng.random(shape) > 0.5
    elif np.issubdtype(dtype, np.integer):
        top = {np.uint8: 255, np.uint16: 65535, np.int32: 1000}[dtype]
        arr = rng.integers(0, top + 1, shape).astype(dtype)
        if kind == "constant":
            arr[...] = rng.integers(0, top + 1)
    else:
        arr = rng.random(shape).astype(dtype)
        if kind == "constant":
            arr[...] = rng.random()
        elif kind == "nan":
            arr.flat[rng.integers(arr.size)] = np.nan
        elif kind == "inf":
            arr.flat[rng.integers(arr.size)] = np.inf
        elif kind == "out_of_range":
            arr = arr * 3 - 1
    return arr


def _check_fused(out: np.ndarray, ir: np.ndarray, vi: np.ndarray) -> None:
    assert out.dtype == np.float32
    assert np.isfinite(out).all(), "a result with NaN or inf is never returned silently"
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.shape[:2] == ir.shape[:2] == vi.shape[:2]
    colour = vi.ndim == 3 and vi.shape[2] in (3, 4)
    assert out.shape == (vi.shape[:2] + (3,) if colour else vi.shape[:2])


@FUZZ
@given(data=st.data())
def test_fuse_gives_a_result_or_a_clear_error(data):
    h, w = data.draw(st.integers(1, 24)), data.draw(st.integers(1, 24))
    same = data.draw(st.integers(0, 9)) > 0
    ir = data.draw(images((h, w)))
    vi = data.draw(images((h, w) if same else None))
    method = data.draw(st.sampled_from(["average", "max-abs", "laplacian-pyramid"]))
    try:
        out = fuse(ir, vi, method=method)
    except CausalFuseError as exc:
        assert str(exc)
        event("refused")
        return
    event("fused")
    _check_fused(out, ir, vi)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuse_with_the_network_gives_a_result_or_a_clear_error(data, small_checkpoint):
    h, w = data.draw(st.integers(1, 20)), data.draw(st.integers(1, 20))
    ir, vi = data.draw(images((h, w))), data.draw(images((h, w)))
    try:
        out = fuse(ir, vi, method="causalfuse", weights=small_checkpoint, device="cpu")
    except CausalFuseError as exc:
        assert str(exc)
        event("refused")
        return
    event("fused")
    _check_fused(out, ir, vi)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    from causalfuse.checkpoint import save_model
    from tests.test_net import small_net

    return save_model(tmp_path_factory.mktemp("fuzz") / "net.safetensors", small_net())


@FUZZ
@given(data=st.data())
def test_metrics_give_finite_numbers_nan_by_rule_or_a_clear_error(data):
    h, w = data.draw(st.integers(1, 50)), data.draw(st.integers(1, 50))
    fused, ir, vi = data.draw(images((h, w))), data.draw(images((h, w))), data.draw(images((h, w)))
    names = data.draw(st.lists(st.sampled_from(metrics.list_metrics()), min_size=1, max_size=4, unique=True))
    if data.draw(st.booleans()):  # often no metric with a minimum size, so small images are scored too
        names = [n for n in names if metrics.get_metric(n).min_size <= 2] or ["MI"]
    try:
        values = metrics.compute(fused, ir, vi, metrics=names)
    except CausalFuseError as exc:
        assert str(exc)
        event("refused")
        return
    event("scored")
    assert set(values) == set(names)
    for name, value in values.items():
        assert isinstance(value, float), name
        # NaN is the original code's answer on constant images for some metrics;
        # inf only for PSNR (a fused image equal to both sources: zero error).
        assert not np.isinf(value) or name in ORIGINAL_INF, (name, value)


@FUZZ
@given(data=st.data())
def test_loading_damaged_or_odd_files_gives_an_image_or_a_clear_error(data, tmp_path_factory):
    mode = data.draw(st.sampled_from(["L", "RGB", "RGBA", "LA", "P", "I;16", "I", "F", "1", "CMYK"]))
    fmt = data.draw(st.sampled_from(["PNG", "TIFF", "BMP", "JPEG"]))
    h, w = data.draw(st.integers(1, 16)), data.draw(st.integers(1, 16))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode if mode not in ("I;16",) else "I")
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    buf = io.BytesIO()
    try:
        im.save(buf, format=fmt)
    except (OSError, ValueError, KeyError):
        return  # PIL cannot write this mode in this format: nothing to read
    raw = bytearray(buf.getvalue())
    damage = data.draw(st.sampled_from(["none", "truncate", "flip", "garbage"]))
    if damage == "truncate":
        raw = raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
    elif damage == "flip":
        for i in rng.integers(0, len(raw), size=8):
            raw[i] ^= 0xFF
    elif damage == "garbage":
        raw = bytearray(rng.integers(0, 256, data.draw(st.integers(0, 64)), dtype=np.uint8).tobytes())
    path = tmp_path_factory.mktemp("img") / f"x.{fmt.lower()}"
    path.write_bytes(bytes(raw))
    try:
        arr = load_image(path)
    except CausalFuseError as exc:
        assert str(path) in str(exc)
        event("refused")
        return
    event("loaded")
    assert arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)
    assert arr.dtype in (np.uint8, np.uint16, np.float32)
    # and what loads, fuses (or is refused clearly: NaN in a float TIFF, out-of-range values)
    try:
        out = fuse(path, path, method="average")
    except CausalFuseError:
        return
    assert np.isfinite(out).all()

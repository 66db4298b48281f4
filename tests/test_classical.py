"""Classical baselines: identities, sizes, ranges, and the behaviour their papers describe."""

from __future__ import annotations

import numpy as np
import pytest

from causalfuse.bench import classical
from causalfuse.errors import CausalFuseError
from causalfuse.models.registry import create_method, get_method, list_methods

METHODS = ["average", "max-abs", "laplacian-pyramid", "dwt", "gff"]


def _textured(shape, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    img = 0.5 + 0.25 * np.sin(x / 3.0) * np.cos(y / 5.0) + 0.1 * rng.standard_normal(shape)
    return np.clip(img, 0, 1).astype(np.float32)


def test_registered_as_classical():
    for name in METHODS:
        assert name in list_methods()
        info = get_method(name)
        assert info.kind == "classical" and info.description and info.reference


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("shape", [(64, 80), (37, 53), (5, 7), (1, 9)])
def test_fusing_an_image_with_itself_returns_it(name, shape):
    img = _textured(shape)
    out = create_method(name)(img, img)
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, img, atol=2e-6)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("shape", [(48, 64), (33, 47)])
def test_output_range_and_shape(name, shape):
    ir, vi = _textured(shape, 1), _textured(shape, 2)
    ir[:5] = 1.0  # saturated rows push detail-selecting rules over the top
    vi[-5:] = 0.0
    out = create_method(name)(ir, vi)
    assert out.shape == shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and np.isfinite(out).all()


def test_pixel_rules():
    ir, vi = _textured((16, 16), 3), _textured((16, 16), 4)
    np.testing.assert_allclose(classical.fuse_average(ir, vi), (ir + vi) / 2, atol=1e-7)
    np.testing.assert_array_equal(classical.fuse_max_abs(ir, vi), np.maximum(ir, vi))


@pytest.mark.parametrize("shape", [(64, 64), (45, 71)])
def test_laplacian_pyramid_reconstructs_exactly(shape):
    img = _textured(shape, 5)
    pyr = classical.laplacian_pyramid(img, 5)
    assert len(pyr) == 6 and pyr[0].shape == shape
    np.testing.assert_allclose(classical.reconstruct_laplacian_pyramid(pyr), img, atol=1e-5)


@pytest.mark.parametrize("name", ["laplacian-pyramid", "dwt", "gff"])
def test_details_come_from_the_textured_source(name):
    # One flat source and one textured source: multiscale rules must keep the
    # texture (max-abs / saliency picks it) instead of halving it like the average.
    vi = _textured((64, 64), 6)
    ir = np.full_like(vi, 0.5)
    out = create_method(name)(ir, vi)
    hp = lambda a: a - classical._box_mean(a, 2)  # noqa: E731
    gain = np.sum(hp(out) * hp(vi)) / np.sum(hp(vi) ** 2)
    assert gain > 0.85, gain
    avg_gain = np.sum(hp(classical.fuse_average(ir, vi)) * hp(vi)) / np.sum(hp(vi) ** 2)
    assert avg_gain == pytest.approx(0.5, abs=0.01)


def test_gff_takes_each_region_from_its_salient_source():
    # Texture on the left of the visible image, a warm textured target on the
    # right of the infrared one: each side should follow its salient source.
    vi = np.full((80, 80), 0.3, np.float32)
    vi[:, :40] = _textured((80, 40), 7)
    ir = np.full((80, 80), 0.2, np.float32)
    ir[20:60, 45:75] = 0.6 + 0.4 * _textured((40, 30), 8)
    out = classical.fuse_gff(ir, vi)
    left, right = (slice(10, 70), slice(5, 30)), (slice(30, 50), slice(52, 68))
    # (the average would halve the texture of each side: ratio 0.5)
    assert np.corrcoef(out[left].ravel(), vi[left].ravel())[0, 1] > 0.95
    assert out[left].std() / vi[left].std() > 0.85
    assert np.corrcoef(out[right].ravel(), ir[right].ravel())[0, 1] > 0.9
    assert out[right].std() / ir[right].std() > 0.85
    assert out[right].mean() > 0.5 * (ir[right].mean() + vi[right].mean()) + 0.05


def test_guided_filter_constant_and_edge_preserving():
    guide = np.zeros((40, 40))
    guide[:, 20:] = 1.0
    np.testing.assert_allclose(classical.guided_filter(guide, np.ones_like(guide), 5, 0.01), 1.0, atol=1e-12)
    # With a small eps the filter reproduces a step that follows the guide.
    np.testing.assert_allclose(classical.guided_filter(guide, guide, 5, 1e-6), guide, atol=1e-3)


def test_bad_input_is_refused():
    with pytest.raises(CausalFuseError, match="sizes differ"):
        classical.fuse_gff(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(CausalFuseError, match="single-channel"):
        classical.fuse_dwt(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))

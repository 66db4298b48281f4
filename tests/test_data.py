"""Pairs on disk, training transforms and the paired dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from causalfuse.data import PairedDataset, find_pairs, pairs_from_roots, resolve_layout
from causalfuse.data.transforms import apply_crop_flip, draw_crop_flip, luminance, pad_to, sample_generator
from causalfuse.errors import CausalFuseError
from causalfuse.io import rgb_to_ycbcr


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _pair_arrays(h: int, w: int, seed: int, colour_ir: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ir = rng.integers(0, 256, (h, w, 3) if colour_ir else (h, w), dtype=np.uint8)
    vi = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return ir, vi


def _make_set(root: Path, ir_name: str, vi_name: str, names=("1", "2", "10"), size=(40, 48), sub: str | None = None) -> Path:
    for i, name in enumerate(names):
        ir, vi = _pair_arrays(*size, seed=i)
        parts_ir = [ir_name] + ([sub] if sub else [])
        parts_vi = [vi_name] + ([sub] if sub else [])
        _write(root.joinpath(*parts_ir, f"{name}.png"), ir)
        _write(root.joinpath(*parts_vi, f"{name}.jpg" if i % 2 else f"{name}.png"), vi)
    return root


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize(
    "ir_name, vi_name",
    [("ir", "vi"), ("infrared", "visible"), ("IR", "VI"), ("Inf", "Vis"), ("Infrared", "Visible")],
)
def test_resolve_layout_known_names(tmp_path, ir_name, vi_name):
    _make_set(tmp_path, ir_name, vi_name)
    ir_dir, vi_dir = resolve_layout(tmp_path)
    assert (ir_dir.name, vi_dir.name) == (ir_name, vi_name)
    assert [p.name for p in find_pairs(ir_dir, vi_dir)] == ["1", "2", "10"]  # natural order


def test_resolve_layout_llvip_train_test(tmp_path):
    _make_set(tmp_path, "infrared", "visible", names=("010001", "010002"), sub="train")
    _make_set(tmp_path, "infrared", "visible", names=("190001",), sub="test")
    ir_dir, vi_dir = resolve_layout(tmp_path)
    assert ir_dir == tmp_path / "infrared" / "train" and vi_dir == tmp_path / "visible" / "train"
    ir_dir, vi_dir = resolve_layout(tmp_path, split="test")
    assert [p.name for p in find_pairs(ir_dir, vi_dir)] == ["190001"]


def test_resolve_layout_unknown(tmp_path):
    (tmp_path / "thermalish").mkdir()
    with pytest.raises(CausalFuseError, match="no infrared/visible folders found"):
        resolve_layout(tmp_path)


def test_pairs_from_several_roots_are_prefixed(tmp_path):
    _make_set(tmp_path / "A", "ir", "vi", names=("1", "2"))
    _make_set(tmp_path / "B", "IR", "VI", names=("1",))
    pairs = pairs_from_roots([tmp_path / "A", tmp_path / "B"])
    assert [p.name for p in pairs] == ["A/1", "A/2", "B/1"]


# ---------------------------------------------------------------- transforms


def test_luminance_is_bt601_y_and_keeps_grey():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 255]]], dtype=np.uint8)
    np.testing.assert_allclose(luminance(rgb)[0], [0.299, 0.587, 0.114, 1.0], atol=1e-6)
    grey = np.array([[0, 128, 255]], dtype=np.uint8)
    np.testing.assert_allclose(luminance(grey), grey / 255.0, atol=1e-7)
    assert luminance(np.zeros((2, 2), np.uint16)).dtype == np.float32


def test_sample_generator_depends_on_seed_epoch_index_only():
    draw = lambda *k: draw_crop_flip(100, 120, 32, sample_generator(*k))  # noqa: E731
    assert draw(0, 0, 5) == draw(0, 0, 5)
    assert len({draw(s, e, i) for s in range(2) for e in range(2) for i in range(3)}) == 12


def test_crop_flip_fits_and_flips_both_ways():
    seen = set()
    for i in range(64):
        aug = draw_crop_flip(40, 50, 16, sample_generator(1, 0, i))
        assert 0 <= aug.top <= 24 and 0 <= aug.left <= 34
        seen.add((aug.hflip, aug.vflip))
    assert seen == {(False, False), (False, True), (True, False), (True, True)}
    assert not any(draw_crop_flip(40, 50, 16, sample_generator(1, 0, i), flips=False).hflip for i in range(16))
    with pytest.raises(CausalFuseError, match="does not fit"):
        draw_crop_flip(10, 50, 16, sample_generator(0, 0, 0))


def test_apply_crop_flip_exact():
    img = np.arange(36).reshape(6, 6)
    from causalfuse.data.transforms import CropFlip

    out = apply_crop_flip(img, CropFlip(top=1, left=2, size=3, hflip=True, vflip=False))
    np.testing.assert_array_equal(out, img[1:4, 2:5][:, ::-1])
    out = apply_crop_flip(img, CropFlip(top=0, left=0, size=2, hflip=True, vflip=True))
    np.testing.assert_array_equal(out, [[7, 6], [1, 0]])


def test_pad_to_reflects_bottom_right():
    img = np.array([[1, 2, 3]], dtype=np.uint8).repeat(2, axis=0)
    out = pad_to(img, 5)
    assert out.shape == (5, 5)
    np.testing.assert_array_equal(out[0], [1, 2, 3, 2, 1])
    np.testing.assert_array_equal(out[:, 0], [1, 1, 1, 1, 1])
    assert pad_to(img, 2) is img
    assert pad_to(np.ones((1, 1, 3)), 4).shape == (4, 4, 3)  # a 1-pixel side is repeated


# ---------------------------------------------------------------- dataset


def test_dataset_same_crop_on_both_images(tmp_path):
    # Visible = infrared, as colour: then the crops must agree pixel for pixel.
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        grey = rng.integers(0, 256, (37, 53), dtype=np.uint8)
        _write(tmp_path / "ir" / f"{name}.png", grey)
        _write(tmp_path / "vi" / f"{name}.png", np.repeat(grey[..., None], 3, axis=2))
    ds = PairedDataset(tmp_path, crop=16, seed=3)
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            assert item["ir"].shape == item["vi"].shape == (1, 16, 16)
            assert item["ir"].dtype == torch.float32
            torch.testing.assert_close(item["ir"], item["vi"], atol=1e-5, rtol=0)


def test_dataset_values_grey_ir_and_visible_y(tmp_path):
    ir, vi = _pair_arrays(20, 24, seed=1, colour_ir=True)
    _write(tmp_path / "ir" / "x.png", ir)
    _write(tmp_path / "vi" / "x.png", vi)
    item = PairedDataset(tmp_path, crop=None)[0]
    assert item["ir"].shape == (1, 20, 24) and item["name"] == "x"
    np.testing.assert_allclose(item["ir"][0].numpy(), rgb_to_ycbcr(ir / 255.0)[..., 0], atol=1e-5)
    np.testing.assert_allclose(item["vi"][0].numpy(), rgb_to_ycbcr(vi / 255.0)[..., 0], atol=1e-5)
    for key in ("ir", "vi"):
        assert 0.0 <= float(item[key].min()) and float(item[key].max()) <= 1.0


def test_dataset_deterministic_and_resumable(tmp_path):
    _make_set(tmp_path, "ir", "vi", size=(60, 70))
    a = PairedDataset(tmp_path, crop=24, seed=7)
    b = PairedDataset(tmp_path, crop=24, seed=7, cache=False)
    a.set_epoch(2)
    b.set_epoch(5)
    # Another order of access, and the (epoch, index) form, give the same samples.
    first = [a[i]["ir"] for i in range(3)]
    again = [b[(2, i)]["ir"] for i in reversed(range(3))][::-1]
    for x, y in zip(first, again):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
    other_epoch = [a[(3, i)]["ir"] for i in range(3)]
    other_seed = [PairedDataset(tmp_path, crop=24, seed=8)[(2, i)]["ir"] for i in range(3)]
    assert any(not torch.equal(x, y) for x, y in zip(first, other_epoch))
    assert any(not torch.equal(x, y) for x, y in zip(first, other_seed))


def test_dataset_works_with_dataloader(tmp_path):
    _make_set(tmp_path, "ir", "vi")
    ds = PairedDataset(tmp_path, crop=32, seed=0)
    ds.preload()
    assert ds.cache_bytes > 0
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, shuffle=False)))
    assert batch["ir"].shape == (3, 1, 32, 32) and batch["name"] == ["1", "2", "10"]


def test_dataset_pads_small_images(tmp_path):
    _make_set(tmp_path, "ir", "vi", names=("s",), size=(10, 12))
    item = PairedDataset(tmp_path, crop=16)[0]
    assert item["ir"].shape == item["vi"].shape == (1, 16, 16)


def test_dataset_explicit_folders(tmp_path):
    _make_set(tmp_path, "thermal_cam", "rgb_cam", names=("p", "q"))
    ds = PairedDataset(folders=[(tmp_path / "thermal_cam", tmp_path / "rgb_cam")], crop=8)
    assert len(ds) == 2 and ds[1]["name"] == "q"


def test_dataset_errors(tmp_path):
    (tmp_path / "empty" / "ir").mkdir(parents=True)
    (tmp_path / "empty" / "vi").mkdir(parents=True)
    with pytest.raises(CausalFuseError, match="no images found"):
        PairedDataset(tmp_path / "empty")
    _make_set(tmp_path / "odd", "ir", "vi", names=("1", "2"))
    _write(tmp_path / "odd" / "ir" / "lonely.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(CausalFuseError, match="only in .*ir: lonely"):
        PairedDataset(tmp_path / "odd")
    assert len(PairedDataset(tmp_path / "odd", skip_unmatched=True)) == 2
    with pytest.raises(CausalFuseError, match="no image pairs"):
        PairedDataset()
    _write(tmp_path / "sizes" / "ir" / "m.png", np.zeros((20, 30), np.uint8))
    _write(tmp_path / "sizes" / "vi" / "m.png", np.zeros((20, 31, 3), np.uint8))
    ds = PairedDataset(tmp_path / "sizes", crop=8)
    with pytest.raises(CausalFuseError, match=r"ir.m\.png is 30 x 20 but .*vi.m\.png is 31 x 20"):
        ds[0]
    with pytest.raises(CausalFuseError, match="crop must be a positive"):
        PairedDataset(tmp_path / "odd", skip_unmatched=True, crop=0)
    with pytest.raises(IndexError):
        PairedDataset(tmp_path / "odd", skip_unmatched=True)[5]


def test_dataset_on_shared_train(train_data):
    ds = PairedDataset([train_data / "MSRS", train_data / "LLVIP"], crop=256, cache=False)
    assert len(ds) == 393
    item = ds[len(ds) - 1]  # an LLVIP pair (1280 x 1024, colour-stored infrared)
    assert item["name"].startswith("LLVIP/") and item["ir"].shape == (1, 256, 256)


def test_gamma_augmentation_is_drawn_per_sample_and_leaves_gamma0_unchanged(tmp_path):
    from causalfuse.data.dataset import PairedDataset
    from causalfuse.data.transforms import draw_gamma, sample_generator

    root = tmp_path / "set"
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(1, 255, (20, 24), dtype=np.uint8)).save(root / "ir" / f"{i}.png")
        Image.fromarray(rng.integers(1, 255, (20, 24, 3), dtype=np.uint8)).save(root / "vi" / f"{i}.png")
    plain = PairedDataset(root, crop=8, seed=3)
    aug = PairedDataset(root, crop=8, seed=3, gamma=1.0)
    a, b = plain[(2, 1)], aug[(2, 1)]
    # The same crop, then y ** gamma with the exponents drawn after the crop from the sample's generator.
    g = sample_generator(3, 2, 1)
    g.integers(0, 13), g.integers(0, 17), g.random(), g.random()
    g_ir, g_vi = draw_gamma(g, 1.0)
    assert g_ir != g_vi and all(np.exp(-1) <= x <= np.exp(1) for x in (g_ir, g_vi))
    torch.testing.assert_close(b["ir"], a["ir"] ** g_ir, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b["vi"], a["vi"] ** g_vi, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(aug[(2, 1)]["vi"], b["vi"])  # a function of (seed, epoch, index)
    with pytest.raises(CausalFuseError, match="gamma augmentation strength must be >= 0"):
        PairedDataset(root, crop=8, gamma=-0.5)

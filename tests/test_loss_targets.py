"""benchmarks/loss_targets.py: the loss targets scored as images, and its command."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from causalfuse.losses import intensity_target

from .conftest import benchmark_module

targets = benchmark_module("loss_targets")


@pytest.mark.parametrize("name", ["max", "mean", "detail-sum"])
def test_target_method_is_the_loss_target(name):
    rng = np.random.default_rng(0)
    ir, vi = rng.random((2, 40, 50), dtype=np.float32)
    expected = intensity_target(torch.from_numpy(ir)[None, None], torch.from_numpy(vi)[None, None], name, detail_sigma=3.0)
    np.testing.assert_array_equal(targets.target_method(name, 3.0)(ir, vi), expected[0, 0].numpy())


def _write_set(root, name, n):
    rng = np.random.default_rng(1)
    for sub in ("ir", "vi"):
        (root / name / sub).mkdir(parents=True)
    for i in range(n):
        base = rng.integers(40, 200, (64, 72), dtype=np.uint8)
        Image.fromarray(base).save(root / name / "ir" / f"{i:02d}.png")
        Image.fromarray(np.roll(base, 3, axis=1) // 2 + 30).save(root / name / "vi" / f"{i:02d}.png")


def test_command_prints_one_row_per_set_and_target_with_its_count(tmp_path, capsys):
    _write_set(tmp_path, "A", 3)
    _write_set(tmp_path, "B", 1)
    assert targets.main(["--val", str(tmp_path), "--max-images", "2", "--sigmas", "2", "6"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| A") or line.startswith("| B")]
    names = [r.split(" | ")[1] for r in rows]
    assert names == ["max", "mean", "detail-sum (sigma 2)", "detail-sum (sigma 6)", "laplacian-pyramid"] * 2
    assert [r.split(" | ")[2] for r in rows] == ["2"] * 5 + ["1"] * 5  # how many images each mean is made of
    for row in rows:
        values = [float(v) for v in row.strip(" |").split(" | ")[3:]]
        assert len(values) == 5 and all(np.isfinite(values))


def test_command_names_a_missing_folder(tmp_path, capsys):
    assert targets.main(["--val", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_detail_max_keeps_the_stronger_detail_at_each_pixel():
    """Where only one source has detail the rule keeps it whole; the base is the sources' mean brightness."""
    rng = np.random.default_rng(2)
    flat = np.full((60, 60), 0.4, np.float32)
    textured = (0.5 + 0.1 * rng.standard_normal((60, 60))).astype(np.float32)
    out = targets.detail_max(8.0)(textured, flat)
    from causalfuse.losses import gaussian_blur

    t = torch.from_numpy(textured)[None, None]
    detail = (t - gaussian_blur(t, 8.0))[0, 0].numpy()
    base = 0.5 * (gaussian_blur(t, 8.0)[0, 0].numpy() + 0.4)
    np.testing.assert_allclose(out, np.clip(base + detail, 0, 1), atol=1e-6)
    np.testing.assert_allclose(targets.detail_max(8.0)(flat, textured), out, atol=1e-6)  # either source


def test_methods_are_scored_beside_the_targets_and_plotted(tmp_path, capsys):
    _write_set(tmp_path / "val", "A", 2)
    figure = tmp_path / "out" / "reach.png"
    argv = ["--val", str(tmp_path / "val"), "--sigmas", "2", "6", "--detail-max", "6", "--method", "average", "--plot", str(figure)]
    assert targets.main(argv) == 0
    names = [line.split(" | ")[1] for line in capsys.readouterr().out.splitlines() if line.startswith("| A")]
    assert names[-3:] == ["detail-max (sigma 6; not a loss target)", "laplacian-pyramid", "average"]
    from PIL import Image as PILImage

    with PILImage.open(figure) as im:
        assert im.size[0] > im.size[1] > 100  # one row of four panels
    assert not list(figure.parent.glob("*.tmp.png"))

"""benchmarks/registration_optimum.py: converging from the truth, the metric's value, the tables."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from .conftest import benchmark_module

pytest.importorskip("SimpleITK")
pytest.importorskip("cv2")

optimum = benchmark_module("registration_optimum")


def _unimodal_half_resolution():
    """A moved pair whose infrared image is the visible luminance, at half the visible crop's resolution."""
    from causalfuse.register.estimate import prepare
    from causalfuse.register.synthetic import misalign
    from causalfuse.synthetic import synthetic_pair

    _, vi = synthetic_pair(480, 640, seed=3)
    grey = np.rint(prepare(vi) * 255).astype(np.uint8)
    return misalign(grey, vi, np.random.default_rng(5), crop=0.7, cam_width=224)


def _frames(cam, vic):
    from causalfuse.register import estimate as est

    return est._Frames(est.prepare(cam), est.prepare(vic))


def test_converging_from_the_truth_stays_there_when_the_bands_match():
    """One band against itself: the optimum is the truth (to a visible pixel: the infrared camera is half as fine)."""
    from causalfuse.register.synthetic import corner_error

    cam, vic, truth = _unimodal_half_resolution()
    matrix, value = optimum.converge(_frames(cam, vic), truth)
    assert corner_error(truth, matrix, cam.shape) < 1.0
    assert value < 0  # SimpleITK's Mattes metric is minus the mutual information


def test_the_metric_is_best_at_the_truth_when_the_bands_match():
    cam, vic, truth = _unimodal_half_resolution()
    frames = _frames(cam, vic)

    def value(matrix):
        return optimum.metric(frames, optimum.affine_at(frames, matrix))

    off = truth.copy()
    off[0, 2] += 2.0  # two infrared pixels
    assert value(truth) < value(off) - 0.01


def test_main_writes_the_cases_and_the_summary(tmp_path, capsys):
    out = tmp_path / "out"
    assert optimum.main(["-o", str(out), "--synthetic", "1", "--size", "480", "640", "--sets", ""]) == 0
    with (out / "cases.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["unmoved", "moved"]
    for r in rows:
        for key in ("estimate_px", "from_truth_px", "from_estimate_px"):
            assert 0 <= float(r[key]) < 10  # synthetic scenes register within a few pixels
    summary = (out / "summary.md").read_text()
    assert "| synthetic | 2 |" in summary and "of 2" in summary
    assert summary in capsys.readouterr().out


def test_a_missing_val_set_is_named(tmp_path):
    with pytest.raises(SystemExit, match="nowhere/data/val/LLVIP: no such val set"):
        optimum.main(["-o", str(tmp_path), "--shared", str(tmp_path / "nowhere"), "--synthetic", "0", "--sets", "LLVIP"])

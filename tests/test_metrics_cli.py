"""``causalfuse eval`` and the folder scorer, end to end and on bad input."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from causalfuse.cli import main
from causalfuse.errors import CausalFuseError
from causalfuse.io import load_image, write_image
from causalfuse.metrics.folder import ScoreRow, find_triplets, score_folder, summarise

from .conftest import shared_path

IMAGES = ["walking", "manWalking", "peopleshadow"]  # small ones; manWalking has a 1-channel infrared image
METHODS = ["ADF", "CNN"]


@pytest.fixture
def vifb_subset(tmp_path) -> Path:
    """A few VIFB triplets, linked (not copied) into the layout ``causalfuse eval`` reads."""
    root = shared_path("oracle", "vifb")
    for sub in ["ir", "vi"] + [f"fused/{m}" for m in METHODS]:
        (tmp_path / sub).mkdir(parents=True)
        for name in IMAGES:
            (tmp_path / sub / f"{name}.jpg").symlink_to(root / sub / f"{name}.jpg")
    return tmp_path


def _reference(names: set[str]) -> dict[tuple[str, str, str], float]:
    path = shared_path("oracle", "vifb_reference_dev.csv")
    with open(path, newline="") as fh:
        return {(r["image"], r["method"], r["metric"]): float(r["value"]) for r in csv.DictReader(fh) if r["metric"] in names}


def test_eval_end_to_end(vifb_subset, tmp_path, capsys):
    out, md = tmp_path / "res" / "results.csv", tmp_path / "summary.md"
    d = vifb_subset
    argv = ["eval", "--ir", str(d / "ir"), "--vi", str(d / "vi"), "--fused", f"ADF={d / 'fused/ADF'}",
            "--fused", str(d / "fused/CNN"), "--metrics", "MI,VIF,Qabf,SSIM", "-o", str(out), "--markdown", str(md),
            "--jobs", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    rows = list(csv.DictReader(open(out, newline="")))
    assert len(rows) == len(IMAGES) * len(METHODS) * 4
    assert {r["method"] for r in rows} == set(METHODS)
    assert [r["metric"] for r in rows[:4]] == ["MI", "VIF", "Qabf", "SSIM"]
    ref = _reference({"VIFF_gray"})
    for r in rows:
        if r["metric"] == "VIF":  # grey mode: VIF is the reference's VIFF_gray
            assert float(r["value"]) == pytest.approx(ref[(r["image"], r["method"], "VIFF_gray")], rel=1e-4)
    printed = capsys.readouterr().out
    assert "| method | MI ↑ | VIF ↑ | Qabf ↑ | SSIM ↑ |" in printed and "| CNN |" in printed
    assert md.read_text().count("| ADF |") == 1
    assert not list(out.parent.glob(".*tmp*"))  # written atomically, no leftovers


def test_score_folder_vifb_mode_matches_reference(vifb_subset):
    d = vifb_subset
    rows = score_folder(d / "ir", d / "vi", {m: d / "fused" / m for m in METHODS}, ["Qabf", "SSIM", "MI", "EN"], colour="vifb", jobs=1)
    ref = _reference({"Qabf", "Ssim", "Mutinf", "Entropy"})
    vifb = {"Qabf": "Qabf", "SSIM": "Ssim", "MI": "Mutinf", "EN": "Entropy"}
    assert len(rows) == len(IMAGES) * len(METHODS) * 4
    for r in rows:
        assert r.value == pytest.approx(ref[(r.image, r.method, vifb[r.metric])], rel=1e-4)
    summary = summarise(rows)
    assert len(summary) == 8 and all(s.n == len(IMAGES) and s.comparable for s in summary)


def test_summary_skips_nan():
    rows = [ScoreRow("a", "m", "CC", 1.0), ScoreRow("b", "m", "CC", float("nan")), ScoreRow("c", "m", "CC", 3.0)]
    ((method, metric, mean, std, n, nan, missing, comparable),) = summarise(rows)
    assert (method, metric, mean, std, n, nan, missing, comparable) == ("m", "CC", 2.0, 1.0, 2, 1, 0, True)


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture
def tiny(tmp_path) -> Path:
    # 48 x 46: the default metrics need at least 41 x 41 (VIF), "all" 44 x 44 (MS-SSIM)
    rng = np.random.default_rng(0)
    for name in ["a", "b"]:
        for sub in ["ir", "vi", "fused"]:
            _write(tmp_path / sub / f"{name}.png", rng.integers(0, 256, (48, 46), dtype=np.uint8))
    return tmp_path


def _eval(root: Path, *extra: str) -> list[str]:
    return ["eval", "--ir", str(root / "ir"), "--vi", str(root / "vi"), "--fused", str(root / "fused"),
            "-o", str(root / "out.csv"), "--no-progress", "--jobs", "1", *extra]  # fmt: skip


def test_missing_sources_are_listed(tiny, capsys):
    _write(tiny / "fused" / "ghost.png", np.zeros((48, 46), np.uint8))
    _write(tiny / "fused" / "phantom.png", np.zeros((48, 46), np.uint8))
    (tiny / "vi" / "b.png").unlink()
    assert main(_eval(tiny)) == 2
    err = capsys.readouterr().err
    assert "no infrared image" in err and "ghost, phantom" in err
    assert "no visible image" in err and "b, ghost, phantom" in err
    assert "Traceback" not in err and not (tiny / "out.csv").exists()


def test_an_unwritable_output_fails_before_the_scoring(tiny, capsys, monkeypatch):
    from causalfuse.metrics import folder

    def scored(*args, **kwargs):
        raise AssertionError("the images were scored before the output was checked")

    monkeypatch.setattr(folder, "score_triplets", scored)
    (tiny / "blocker").write_text("a file, not a folder")
    args = _eval(tiny)
    args[args.index("-o") + 1] = str(tiny / "blocker" / "out.csv")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "out.csv: cannot write here" in err and "blocker is a file, not a folder" in err and "Traceback" not in err


def test_size_mismatch_names_the_file(tiny, capsys):
    _write(tiny / "fused" / "b.png", np.zeros((48, 45), np.uint8))
    assert main(_eval(tiny)) == 2
    err = capsys.readouterr().err
    assert "b.png" in err and "sizes differ" in err


def test_unreadable_file_names_the_file(tiny, capsys):
    (tiny / "ir" / "a.png").write_bytes(b"not a png at all")
    assert main(_eval(tiny, "--jobs", "2")) == 2
    err = capsys.readouterr().err
    assert "a.png" in err and "cannot be read" in err


def test_unknown_metric_lists_available(tiny, capsys):
    assert main(_eval(tiny, "--metrics", "MI,Foo")) == 2
    err = capsys.readouterr().err
    assert "unknown metric 'Foo'" in err and "available:" in err and "Qabf" in err


def test_all_metrics_and_gray_16bit(tiny):
    eight = {r.metric: r.value for r in score_folder(tiny / "ir", tiny / "vi", tiny / "fused", "all", jobs=1) if r.image == "a"}
    # 16-bit files are scaled to 0-255, not truncated: an x257 copy scores as the 8-bit file.
    for sub in ["ir", "vi", "fused"]:
        img = np.asarray(Image.open(tiny / sub / "a.png")).astype(np.uint16) * 257
        write_image(tiny / sub / "a.png", img, bits=16)
    assert load_image(tiny / "ir" / "a.png").dtype == np.uint16
    assert main(_eval(tiny, "--metrics", "all")) == 0
    rows = list(csv.DictReader(open(tiny / "out.csv", newline="")))
    assert {r["image"] for r in rows} == {"a", "b"}
    sixteen = {r["metric"]: float(r["value"]) for r in rows if r["image"] == "a"}
    assert set(sixteen) == set(eight)
    assert sixteen == pytest.approx(eight, rel=1e-9, nan_ok=True)


def test_find_triplets_refuses_an_empty_folder(tiny):
    (tiny / "empty").mkdir()
    with pytest.raises(CausalFuseError, match="no fused images"):
        find_triplets(tiny / "ir", tiny / "vi", tiny / "empty")


def test_eval_counts_a_missing_and_a_black_fused_image(tmp_path, capsys):
    # Method B lacks c and its b is all black (CC undefined: NaN); A has all three.
    rng = np.random.default_rng(5)
    for name in ["a", "b", "c"]:
        for sub in ["ir", "vi", "fused/A"]:
            _write(tmp_path / sub / f"{name}.png", rng.integers(0, 256, (48, 46), dtype=np.uint8))
    _write(tmp_path / "fused/B/a.png", np.asarray(Image.open(tmp_path / "fused/A/a.png")))
    _write(tmp_path / "fused/B/b.png", np.zeros((48, 46), np.uint8))
    md = tmp_path / "summary.md"
    argv = ["eval", "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "--fused", f"A={tmp_path / 'fused/A'}",
            "--fused", f"B={tmp_path / 'fused/B'}", "--metrics", "MI,CC", "-o", str(tmp_path / "out.csv"),
            "--markdown", str(md), "--jobs", "1", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    value = {(r["method"], r["image"], r["metric"]): float(r["value"]) for r in csv.DictReader(open(tmp_path / "out.csv"))}
    assert len(value) == 3 * 2 + 2 * 2  # no row for B's missing c
    assert value[("B", "b", "MI")] == 0.0 and math.isnan(value[("B", "b", "CC")])

    rows = [ScoreRow(image, method, metric, v) for (method, image, metric), v in value.items()]
    means = {(s.method, s.metric): s for s in summarise(rows, ["a", "b", "c"])}
    assert means[("B", "CC")] == ("B", "CC", value[("B", "a", "CC")], 0.0, 1, 1, 1, False)
    assert means[("B", "MI")][2:] == (value[("B", "a", "MI")] / 2, value[("B", "a", "MI")] / 2, 2, 0, 1, False)
    assert means[("A", "CC")].n == 3 and means[("A", "CC")].comparable

    a_mi = np.mean([value[("A", i, "MI")] for i in "abc"])
    printed = capsys.readouterr().out
    text = md.read_text()
    for out in (printed, text):
        assert "| method | MI ↑ | CC ↑ | images |" in out
        assert f"| A | {a_mi:.4f} ± " in out and out.count(" †") == 2
        b_mi = f"{value[('B', 'a', 'MI')] / 2:.4f} ± {value[('B', 'a', 'MI')] / 2:.4f} (n=2) †"
        b_cc = f"{value[('B', 'a', 'CC')]:.4f} ± 0.0000 (n=1) †"
        assert f"| B | {b_mi} | {b_cc} | 2 of 3 |" in out
        assert "over the 3 image pairs" in out
        assert "B: 1 of 3 fused images missing (c)." in out
        assert "B CC: NaN in 1 (b)" in out and "one NaN makes the mean NaN" in out

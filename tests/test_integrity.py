"""Faults a user's files meet: damaged checkpoints, outputs that are inputs, outputs that cannot be written.

Each test states what must happen to the user's data: refused with a message
naming the file and the problem, before any work, and nothing lost.
"""

from __future__ import annotations

import importlib
import json
import os
import stat
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

import causalfuse.io as io_mod
from causalfuse import CausalFuseError
from causalfuse.checkpoint import load_model, save_model
from causalfuse.cli import main
from causalfuse.dictionary.io import load_dictionaries, save_dictionaries
from causalfuse.fuse import PRODUCER_FILE, fuse, run_tiled
from causalfuse.integrity import CHECKSUM_KEY, file_sha256, tensors_sha256
from causalfuse.models.methods import bundled_weights
from causalfuse.train.state import load_state, save_state
from tests.test_fuse import grey, make_folders, rgb, save
from tests.test_net import small_net


@pytest.fixture
def ckpt(tmp_path):
    return save_model(tmp_path / "net.safetensors", small_net())


def _data_offset(path) -> int:
    """Where the tensor bytes of a safetensors file start (after its JSON header)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
    return 8 + n


def _flip_bytes(path, count=200, seed=0) -> None:
    raw = bytearray(path.read_bytes())
    start = _data_offset(path)
    rng = np.random.default_rng(seed)
    for i in rng.choice(np.arange(start, len(raw)), size=count, replace=False):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def _rewrite(path, edit_tensors=None, edit_meta=None) -> None:
    """Rewrite a safetensors file with edited tensors or metadata (as a tool other than causalfuse would)."""
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if edit_tensors:
        edit_tensors(tensors)
    if edit_meta:
        edit_meta(meta)
    save_file(tensors, str(path), metadata=meta)


# ----------------------------------------------------------------------------- checksums


def test_tensor_checksum_is_order_free_and_sees_every_byte():
    a = {"x": torch.arange(6, dtype=torch.float32).reshape(2, 3), "y": torch.zeros(2, dtype=torch.bfloat16)}
    b = {"y": a["y"].clone(), "x": a["x"].clone()}
    assert tensors_sha256(a) == tensors_sha256(b)
    assert tensors_sha256({"x": a["x"].numpy()}) == tensors_sha256({"x": a["x"]})
    b["x"][1, 2] = float(np.nextafter(np.float32(5), np.float32(6)))  # one bit
    assert tensors_sha256(a) != tensors_sha256(b)
    assert tensors_sha256({"x": a["x"].reshape(3, 2)}) != tensors_sha256({"x": a["x"]}), "the shape is part of it"


def test_flipped_bytes_in_a_checkpoint_are_refused(ckpt):
    load_model(ckpt)  # intact: loads
    _flip_bytes(ckpt)
    with pytest.raises(CausalFuseError, match=r"net\.safetensors: the tensors do not match the checksum"):
        load_model(ckpt)


def test_nan_in_a_dictionary_buffer_is_refused_naming_the_tensor(tmp_path):
    net = small_net()
    with torch.no_grad():
        net.baffm.ir.dictionary[0, 0] = float("nan")
    path = save_model(tmp_path / "nan.safetensors", net)  # the checksum is of the NaN: only the finite check can tell
    with pytest.raises(CausalFuseError, match=r"nan\.safetensors: tensor 'baffm\.ir\.dictionary' holds NaN"):
        load_model(path)



def test_fuse_with_damaged_weights_exits_with_the_reason(tmp_path, ckpt, capsys):
    a, b = save(tmp_path / "a.png", grey(12, 14)), save(tmp_path / "b.png", grey(12, 14, 2))
    _flip_bytes(ckpt)
    args = ["fuse", "--ir", str(a), "--vi", str(b), "-o", str(tmp_path / "f.png"), "--weights", str(ckpt), "--device", "cpu"]
    assert main(args) == 2
    assert "net.safetensors: the tensors do not match the checksum" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


def test_checkpoints_without_a_checksum_still_load_but_must_be_finite(ckpt):
    _rewrite(ckpt, edit_meta=lambda m: m.pop(CHECKSUM_KEY))
    assert load_model(ckpt) is not None  # written before checksums were stored

    def poison(t):
        t["reconstruction.conv.weight"] = torch.full_like(t["reconstruction.conv.weight"], float("inf"))

    _rewrite(ckpt, edit_tensors=poison)
    with pytest.raises(CausalFuseError, match=r"tensor 'reconstruction\.conv\.weight' holds NaN or infinite"):
        load_model(ckpt)


def test_bundled_files_carry_a_checksum_that_holds():
    for name in ("causalfuse", "causalfuse-nobaffm"):
        path = bundled_weights(name)
        with safe_open(str(path), "pt") as f:
            stored = f.metadata()[CHECKSUM_KEY]
            assert stored == tensors_sha256({k: f.get_tensor(k) for k in f.keys()})
    ir, vi = load_dictionaries(bundled_weights("dictionary"))
    assert ir.prototypes.shape[0] == vi.prototypes.shape[0]


def test_damaged_training_state_and_dictionary_are_refused(tmp_path):
    net = small_net()
    opt = torch.optim.Adam(net.parameters())
    state = save_state(tmp_path / "last.safetensors", net=net, optimizer=opt, step=3, elapsed=1.0, config={"a": 1})
    assert load_state(state).step == 3
    _flip_bytes(state, count=50)
    with pytest.raises(CausalFuseError, match=r"last\.safetensors: the tensors do not match the checksum"):
        load_state(state)

    ir, vi = load_dictionaries(bundled_weights("dictionary"))
    dict_path = save_dictionaries(tmp_path / "dict.safetensors", ir, vi)
    _flip_bytes(dict_path, count=50)
    with pytest.raises(CausalFuseError, match=r"dict\.safetensors: the tensors do not match the checksum"):
        load_dictionaries(dict_path)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_saved_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        net = small_net()
        paths = [
            save_model(tmp_path / "m.safetensors", net),
            save_state(tmp_path / "s.safetensors", net=net, optimizer=torch.optim.Adam(net.parameters()), step=0, elapsed=0.0, config={}),
            save_dictionaries(tmp_path / "d.safetensors", *load_dictionaries(bundled_weights("dictionary"))),
            io_mod.write_image(tmp_path / "i.png", np.zeros((4, 4), np.float32)),
        ]
    finally:
        os.umask(old)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


# ----------------------------------------------------------------------------- inputs are never outputs


def test_single_pair_output_equal_to_an_input_is_refused(tmp_path, capsys):
    ir, vi = save(tmp_path / "a.png", grey(12, 14)), save(tmp_path / "b.png", grey(12, 14, 2))
    before = ir.read_bytes(), vi.read_bytes()
    for target in (ir, tmp_path / "." / "b.png"):
        assert main(["fuse", "--ir", str(ir), "--vi", str(vi), "-o", str(target), "--method", "average"]) == 2
        assert "would overwrite the input" in capsys.readouterr().err
    link = tmp_path / "link.png"
    link.symlink_to(ir)
    assert main(["fuse", "--ir", str(ir), "--vi", str(vi), "-o", str(link), "--method", "average"]) == 2
    assert f"would overwrite the input {ir}" in capsys.readouterr().err
    assert (ir.read_bytes(), vi.read_bytes()) == before


def test_output_folder_equal_to_an_input_folder_is_refused(tmp_path, capsys):
    ir_dir, vi_dir = make_folders(tmp_path, ["a", "b"])
    # the visible images are .jpg: with --ext .jpg they would be "finished outputs", and replaced with --overwrite
    before = {p.name: p.read_bytes() for p in vi_dir.iterdir()}
    for extra in ([], ["--overwrite"]):
        args = ["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "-o", str(vi_dir), "--ext", ".jpg", "--method", "average", "-q"]
        assert main(args + extra) == 2
        assert f"the output folder is the input folder --vi {vi_dir}" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in vi_dir.iterdir()} == before


def test_another_producer_is_refused_unless_overwrite(tmp_path, ckpt, capsys):
    ir_dir, vi_dir = make_folders(tmp_path, ["a", "b"])
    out = tmp_path / "out"
    base = ["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "-o", str(out), "-q"]
    assert main(base + ["--method", "average"]) == 0
    record = json.loads((out / PRODUCER_FILE).read_text())
    assert record == {"bits": 8, "method": "average", "overwriting": False, "precision": "fp32", "weights_sha256": None}
    first = (out / "a.png").read_bytes()

    assert main(base + ["--method", "max-abs"]) == 2
    assert "holds outputs of average, 8-bit, but this run is max-abs, 8-bit" in capsys.readouterr().err
    assert (out / "a.png").read_bytes() == first

    # same method, other weights (identified by content, not by path)
    assert main(base + ["--method", "causalfuse", "--weights", str(ckpt), "--device", "cpu", "--overwrite"]) == 0
    assert json.loads((out / PRODUCER_FILE).read_text())["weights_sha256"] == file_sha256(ckpt)
    save_model(ckpt, small_net(seed=5))  # a new checkpoint at the same path
    assert main(base + ["--method", "causalfuse", "--weights", str(ckpt), "--device", "cpu"]) == 2
    assert "with weights sha256" in capsys.readouterr().err
    assert main(base + ["--method", "causalfuse", "--weights", str(ckpt), "--device", "cpu", "--overwrite"]) == 0
    assert (out / "a.png").read_bytes() != first


def test_outputs_with_no_record_are_not_taken_for_this_runs(tmp_path, capsys):
    ir_dir, vi_dir = make_folders(tmp_path, ["a", "b"])
    out = tmp_path / "out"
    out.mkdir()
    save(out / "a.png", grey(12, 14, 9))  # made by something else
    args = ["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "-o", str(out), "--method", "average", "-q"]
    assert main(args) == 2
    assert "already holds 1 of these outputs (a.png, ...) with no record" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0


def test_an_interrupted_overwrite_must_be_finished_with_overwrite(tmp_path, capsys, monkeypatch):
    fuse_mod = importlib.import_module("causalfuse.fuse")

    ir_dir, vi_dir = make_folders(tmp_path, ["a", "b", "c"])
    out = tmp_path / "out"
    args = ["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "-o", str(out), "--method", "average", "-q"]
    assert main(args) == 0
    real_write, written = fuse_mod.write_image, []

    def write_then_die(path, image, bits=8):
        if written:
            raise KeyboardInterrupt
        written.append(path)
        return real_write(path, image, bits=bits)

    monkeypatch.setattr(fuse_mod, "write_image", write_then_die)
    assert main(args + ["--overwrite"]) == 130  # interrupted after one image
    monkeypatch.undo()
    capsys.readouterr()
    assert main(args) == 2
    assert "an --overwrite run into this folder was interrupted" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert main(args) == 0
    assert "0 fused, 3 already there" in capsys.readouterr().out


# ----------------------------------------------------------------------------- fail before the work


def _no_fusion(monkeypatch):
    fuse_mod = importlib.import_module("causalfuse.fuse")

    def refuse(*args, **kwargs):
        raise AssertionError("a method was created: the work started before the output was checked")

    monkeypatch.setattr(fuse_mod, "create_method", refuse)


def test_unwritable_outputs_fail_before_any_fusion(tmp_path, capsys, monkeypatch):
    ir_dir, vi_dir = make_folders(tmp_path, ["a", "b"])
    _no_fusion(monkeypatch)
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    cases = [
        (["-o", str(blocker / "out"), "--keep-going"], "file.txt is a file, not a folder"),
        (["-o", str(tmp_path / "o1"), "--ext", ".xyz"], "unknown image suffix '.xyz'"),
        (["-o", str(tmp_path / "o2"), "--ext", ".jpg", "--bits", "16"], "16-bit output needs a .png or .tif file"),
    ]
    for extra, message in cases:
        assert main(["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "--method", "average", "-q", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    # single pair
    a, b = ir_dir / "a.png", ir_dir / "b.png"
    assert main(["fuse", "--ir", str(a), "--vi", str(b), "-o", str(tmp_path / "f.jpg"), "--bits", "16"]) == 2
    assert "16-bit output needs" in capsys.readouterr().err


def test_read_only_folder_fails_before_any_fusion(tmp_path, capsys, monkeypatch):
    """A folder refusing new files (read-only mount, permissions; root ignores chmod, so the refusal is injected)."""
    ir_dir, vi_dir = make_folders(tmp_path, ["a", "b"])
    out = tmp_path / "out"
    out.mkdir()
    _no_fusion(monkeypatch)

    def refused(*args, dir=None, **kwargs):
        if str(dir).startswith(str(out)):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    real = io_mod.tempfile.mkstemp
    monkeypatch.setattr(io_mod.tempfile, "mkstemp", refused)
    assert main(["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "-o", str(out), "--method", "average", "--keep-going", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'fused.png'}: cannot write here ({out}: Permission denied)" in err
    assert list(out.iterdir()) == []


def test_nan_inputs_are_refused_naming_the_input(tmp_path):
    bad = np.full((8, 8), 0.5, np.float32)
    bad[2, 3] = np.nan
    with pytest.raises(CausalFuseError, match=r"the infrared array: the image contains 1 NaN or infinite values"):
        fuse(bad, np.zeros((8, 8), np.float32), method="average")
    path = tmp_path / "nan.tif"
    Image.fromarray(np.where(np.isnan(bad), np.inf, bad).astype(np.float32), mode="F").save(path)
    with pytest.raises(CausalFuseError, match=r"nan\.tif: the image contains 1 NaN or infinite values"):
        fuse(np.zeros((8, 8), np.float32), path, method="average")


def test_a_method_returning_nan_is_an_error_not_a_black_image():
    with pytest.raises(CausalFuseError, match="returned 64 NaN or infinite values"):
        fuse(grey(8, 8), grey(8, 8), method=lambda ir, vi: np.full_like(ir, np.nan))


def test_alpha_is_dropped_alike_for_arrays_and_files(tmp_path):
    vi = rgb(10, 12)
    rgba = np.concatenate([vi, np.full((10, 12, 1), 7, np.uint8)], axis=-1)
    save(tmp_path / "vi.png", rgba)
    expected = fuse(grey(10, 12), vi, method="average")
    np.testing.assert_array_equal(fuse(grey(10, 12), rgba, method="average"), expected)
    np.testing.assert_array_equal(fuse(grey(10, 12), tmp_path / "vi.png", method="average"), expected)
    # and the metrics score an RGBA image as its RGB
    from causalfuse import metrics

    fused = np.rint(expected * 255).astype(np.uint8)
    fused_rgba = np.concatenate([fused, np.full((10, 12, 1), 200, np.uint8)], axis=-1)
    ir = grey(10, 12)
    assert metrics.compute(fused_rgba, ir, rgba, metrics=["MI", "CC"]) == metrics.compute(fused, ir, vi, metrics=["MI", "CC"])


def test_large_images_show_progress_over_their_tiles(capsys):
    ir = torch.rand(1, 1, 40, 50)
    out = run_tiled(lambda a, b: a + b, ir, ir, tile=10, overlap=2, progress=True)
    torch.testing.assert_close(out, 2 * ir)
    assert "tiles of 50 x 40" in capsys.readouterr().err
    run_tiled(lambda a, b: a + b, ir, ir, tile=10, overlap=2, progress=False)
    assert capsys.readouterr().err == ""


def test_bench_train_and_dictionary_outputs_are_checked_before_the_work(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("not a folder")
    ir_dir, vi_dir = make_folders(tmp_path, ["a", "b"])
    data = tmp_path  # ir/ + vi/
    cases = [
        (["bench", "--methods", "average", "--data", f"set={data}", "--no-scenes", "--no-progress", "-o", str(blocker / "out")], "out"),
        (["train", "--data", str(data), "--no-baffm", "--steps", "1", "-o", str(blocker / "run")], "run"),
        (["dictionary", "build", "--data", str(data), "-o", str(blocker / "d.safetensors")], "d.safetensors"),
    ]
    for args, name in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert f"{blocker / name}: cannot write here (" in err and "file.txt is a file, not a folder" in err, err
        assert "Traceback" not in err


def test_an_os_error_during_the_work_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    a, b = save(tmp_path / "a.png", grey(12, 14)), save(tmp_path / "b.png", grey(12, 14, 2))

    def disk_full(path, image, bits=8):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(importlib.import_module("causalfuse.io"), "write_image", disk_full)
    assert main(["fuse", "--ir", str(a), "--vi", str(b), "-o", str(tmp_path / "f.png"), "--method", "average"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"causalfuse fuse: error: {tmp_path / 'f.png'}: No space left on device"

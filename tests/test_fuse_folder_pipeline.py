"""Folder runs read ahead and write behind on threads: the same files, errors and resumption as one pair at a time."""

from __future__ import annotations

import sys
import threading

import pytest

from causalfuse import CausalFuseError, create_method
from causalfuse.checkpoint import save_model
from causalfuse.fuse import PRODUCER_FILE, fuse, fuse_folder
from causalfuse.io import write_image
from tests.test_fuse import grey, rgb, save
from tests.test_net import small_net

fuse_module = sys.modules["causalfuse.fuse"]


def folders(tmp_path, names, sizes=None):
    ir_dir, vi_dir = tmp_path / "ir", tmp_path / "vi"
    ir_dir.mkdir(), vi_dir.mkdir()
    for i, n in enumerate(names):
        h, w = sizes[i] if sizes else (12, 14)
        save(ir_dir / f"{n}.png", grey(h, w, i))
        save(vi_dir / f"{n}.jpg", rgb(h, w, i))
    return ir_dir, vi_dir


def leftovers(out):
    """Files in ``out`` that are neither an output nor the producer record (temporary files of a write)."""
    return sorted(
        p.name for p in out.iterdir() if p.name != PRODUCER_FILE and (p.name.startswith(".") or not p.name.endswith(".png"))
    )


def pipeline_threads():
    """The folder pipeline's reading and writing threads still alive (the LRR loops' worker pool is kept by design)."""
    return [t.name for t in threading.enumerate() if t.name in ("causalfuse-read-ahead", "causalfuse-writer")]


def test_threaded_folder_run_writes_the_bytes_of_fusing_each_pair(tmp_path):
    ckpt = save_model(tmp_path / "net.safetensors", small_net())
    names = ["a", "b", "c", "d"]
    ir_dir, vi_dir = folders(tmp_path, names, sizes=[(12, 14), (20, 9), (7, 30), (16, 16)])
    out = tmp_path / "out"
    result = fuse_folder(ir_dir, vi_dir, out, "causalfuse", ckpt, "cpu", progress=False)
    assert result.written == [out / f"{n}.png" for n in names], "in the order of the pairs"
    assert result.images_per_second == pytest.approx(len(names) / result.seconds)
    net = create_method("causalfuse", weights=ckpt, device="cpu")
    for n in names:
        alone = write_image(tmp_path / f"alone-{n}.png", fuse(ir_dir / f"{n}.png", vi_dir / f"{n}.jpg", net))
        assert (out / f"{n}.png").read_bytes() == alone.read_bytes(), n
    assert pipeline_threads() == []


def test_keep_going_reports_a_bad_read_and_a_bad_write_under_their_names(tmp_path):
    ir_dir, vi_dir = folders(tmp_path, ["a", "b", "c", "d"])
    (ir_dir / "b.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    (out / "c.png").mkdir(parents=True)  # the write of c fails, on the writer thread
    result = fuse_folder(ir_dir, vi_dir, out, "average", overwrite=True, keep_going=True, progress=False)
    assert result.written == [out / "a.png", out / "d.png"]
    assert [name for name, _ in result.failed] == ["b", "c"]
    assert "b.png: cannot be read" in result.failed[0][1] and "c.png: is a directory" in result.failed[1][1]
    assert leftovers(out) == []
    assert fuse_module._read_producer(out)["overwriting"], "c.png is not replaced: the folder still holds an old one"


def test_without_keep_going_a_bad_read_stops_the_run_after_the_pairs_before_it(tmp_path):
    ir_dir, vi_dir = folders(tmp_path, ["a", "b", "c", "d"])
    (ir_dir / "b.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    with pytest.raises(CausalFuseError, match=r"b.png: cannot be read"):
        fuse_folder(ir_dir, vi_dir, out, "average", progress=False)
    assert sorted(p.name for p in out.iterdir()) == [PRODUCER_FILE, "a.png"], "nothing half-written, nothing after b"
    assert pipeline_threads() == []


def test_without_keep_going_a_bad_write_stops_the_run_and_drops_what_was_fused_after_it(tmp_path):
    ir_dir, vi_dir = folders(tmp_path, ["a", "b", "c", "d", "e"])
    out = tmp_path / "out"
    (out / "c.png").mkdir(parents=True)
    with pytest.raises(CausalFuseError, match=r"c.png: is a directory"):
        fuse_folder(ir_dir, vi_dir, out, "average", overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [PRODUCER_FILE, "a.png", "b.png", "c.png"]
    assert leftovers(out) == [] and (out / "c.png").is_dir()
    assert pipeline_threads() == []


def test_ctrl_c_writes_what_was_fused_and_leaves_no_partial_file(tmp_path, monkeypatch):
    ir_dir, vi_dir = folders(tmp_path, ["a", "b", "c", "d", "e"])
    out = tmp_path / "out"
    real_call, calls = fuse_module._call, []

    def interrupted_at_the_third(fn, ir_y, vi_y, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_call(fn, ir_y, vi_y, **kw)

    monkeypatch.setattr(fuse_module, "_call", interrupted_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        fuse_folder(ir_dir, vi_dir, out, "average", progress=False)
    assert sorted(p.name for p in out.iterdir()) == [PRODUCER_FILE, "a.png", "b.png"]
    assert pipeline_threads() == [], "the read-ahead and writer threads have ended"
    monkeypatch.setattr(fuse_module, "_call", real_call)
    stamp = (out / "a.png").stat().st_mtime_ns
    result = fuse_folder(ir_dir, vi_dir, out, "average", progress=False)
    assert result.skipped == [out / "a.png", out / "b.png"], "the next run resumes"
    assert result.written == [out / f"{n}.png" for n in "cde"]
    assert (out / "a.png").stat().st_mtime_ns == stamp

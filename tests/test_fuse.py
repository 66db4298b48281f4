"""Fusing pairs and folders from Python and the command line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from causalfuse import CausalFuseError
from causalfuse.checkpoint import save_model
from causalfuse.cli import main
from causalfuse.fuse import PRODUCER_FILE, fuse, fuse_folder, luminance_pair
from causalfuse.io import load_image, rgb_to_ycbcr, ycbcr_to_rgb
from tests.test_net import small_net


@pytest.fixture
def ckpt(tmp_path):
    return save_model(tmp_path / "net.safetensors", small_net())


def rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def grey(h, w, seed=1):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def save(path, arr):
    Image.fromarray(arr).save(path)
    return path


def test_colour_visible_keeps_its_chroma(ckpt, device):
    ir, vi = grey(20, 27), rgb(20, 27)
    out = fuse(ir, vi, method="causalfuse", weights=ckpt, device=device)
    assert out.shape == (20, 27, 3) and out.dtype == np.float32
    # Cb and Cr of the result are those of the visible image (up to clipping to RGB).
    ycc_out, ycc_vi = rgb_to_ycbcr(out), rgb_to_ycbcr(vi / 255.0)
    inside = (ycbcr_to_rgb(np.concatenate([ycc_out[..., :1], ycc_vi[..., 1:]], -1)) > 0.01).all(-1)
    inside &= (ycbcr_to_rgb(np.concatenate([ycc_out[..., :1], ycc_vi[..., 1:]], -1)) < 0.99).all(-1)
    assert inside.sum() > 50
    np.testing.assert_allclose(ycc_out[inside][:, 1:], ycc_vi[inside][:, 1:], atol=2e-3)


def test_grey_stays_grey_and_matches_the_luminance_path(ckpt, device):
    ir, vi = grey(16, 16, 1), grey(16, 16, 2)
    out = fuse(ir, vi, method="causalfuse", weights=ckpt, device=device)
    assert out.shape == (16, 16)


def test_three_channel_infrared_is_made_grey():
    ir3 = np.stack([grey(8, 9)] * 3, -1)
    ir_y, vi_y, cbcr = luminance_pair(ir3, grey(8, 9, 5))
    np.testing.assert_allclose(ir_y, grey(8, 9) / 255.0, atol=1e-5)
    assert cbcr is None


def test_16_bit_input_is_scaled_not_truncated(tmp_path):
    a = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    path = tmp_path / "ir16.png"
    Image.fromarray(a).save(path)
    ir_y, _, _ = luminance_pair(path, np.zeros((64, 64), np.uint8))
    np.testing.assert_allclose(ir_y, a / 65535.0, atol=1e-6)
    assert ir_y.max() > 0.9


def test_sizes_must_match(tmp_path):
    a, b = save(tmp_path / "a.png", grey(10, 12)), save(tmp_path / "b.png", grey(10, 13))
    with pytest.raises(CausalFuseError, match=r"a.png is 12 x 10 but .*b.png is 13 x 10"):
        fuse(a, b, method="average")


def test_not_an_image_and_truncated_files(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("hello")
    good = save(tmp_path / "g.png", grey(10, 10))
    with pytest.raises(CausalFuseError, match="notes.png: cannot be read as an image"):
        fuse(bad, good, method="average")
    trunc = tmp_path / "t.png"
    trunc.write_bytes(good.read_bytes()[:60])
    with pytest.raises(CausalFuseError, match="t.png: cannot be read"):
        fuse(trunc, good, method="average")


def make_folders(tmp_path, names, extra_ir=(), extra_vi=()):
    ir_dir, vi_dir = tmp_path / "ir", tmp_path / "vi"
    ir_dir.mkdir(), vi_dir.mkdir()
    for i, n in enumerate(names):
        save(ir_dir / f"{n}.png", grey(12, 14, i))
        save(vi_dir / f"{n}.jpg", rgb(12, 14, i))
    for n in extra_ir:
        save(ir_dir / f"{n}.png", grey(12, 14))
    for n in extra_vi:
        save(vi_dir / f"{n}.png", grey(12, 14))
    return ir_dir, vi_dir


def test_folder_cli_resumes_and_overwrites(tmp_path, ckpt, capsys, device):
    ir_dir, vi_dir = make_folders(tmp_path, ["a", "b", "c"])
    out = tmp_path / "out"
    args = ["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "-o", str(out), "--weights", str(ckpt), "--device", str(device), "-q"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir()) == [PRODUCER_FILE, "a.png", "b.png", "c.png"]
    (out / "b.png").unlink()
    stamp = (out / "a.png").stat().st_mtime_ns
    assert main(args) == 0
    assert "1 fused, 2 already there" in capsys.readouterr().out
    assert (out / "a.png").stat().st_mtime_ns == stamp
    assert main(args + ["--overwrite"]) == 0
    assert "3 fused" in capsys.readouterr().out


def test_unmatched_stems_are_listed_or_skipped(tmp_path, capsys):
    ir_dir, vi_dir = make_folders(tmp_path, ["a", "b"], extra_ir=["only_ir"], extra_vi=["only_vi"])
    out = tmp_path / "out"
    args = ["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "-o", str(out), "--method", "average", "-q"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "only_ir" in err and "only_vi" in err and "--skip-unmatched" in err
    assert main(args + ["--skip-unmatched"]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png"]


def test_empty_folder(tmp_path, capsys):
    (tmp_path / "ir").mkdir(), (tmp_path / "vi").mkdir()
    assert main(["fuse", "--ir", str(tmp_path / "ir"), "--vi", str(tmp_path / "vi"), "-o", str(tmp_path / "o"), "--method", "average"]) == 2
    assert "no images found" in capsys.readouterr().err


def test_output_that_is_a_directory(tmp_path, capsys):
    a, b = save(tmp_path / "a.png", grey(10, 10)), save(tmp_path / "b.png", grey(10, 10))
    (tmp_path / "d").mkdir()
    assert main(["fuse", "--ir", str(a), "--vi", str(b), "-o", str(tmp_path / "d"), "--method", "average"]) == 2
    assert "is a directory" in capsys.readouterr().err


def test_bad_pair_in_a_folder_leaves_no_partial_output(tmp_path, capsys):
    ir_dir, vi_dir = make_folders(tmp_path, ["a", "b"])
    (ir_dir / "b.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    assert main(["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "-o", str(out), "--method", "average", "-q"]) == 2
    assert "b.png" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [PRODUCER_FILE, "a.png"], "nothing half-written may be left"


def test_corrupted_or_mismatched_checkpoint_from_the_cli(tmp_path, capsys):
    a, b = save(tmp_path / "a.png", grey(10, 10)), save(tmp_path / "b.png", grey(10, 10))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    assert main(["fuse", "--ir", str(a), "--vi", str(b), "-o", str(tmp_path / "f.png"), "--weights", str(bad)]) == 2
    assert "bad.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "f.png").exists()


def test_unknown_method_lists_the_known_ones(tmp_path, capsys):
    a = save(tmp_path / "a.png", grey(10, 10))
    assert main(["fuse", "--ir", str(a), "--vi", str(a), "-o", str(tmp_path / "f.png"), "--method", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown fusion method 'nope'" in err and "lrrnet" in err and "causalfuse" in err


def test_lrrnet_cli_reproduces_the_official_result(lrrnet_weights, val_data, tmp_path, device):
    from tests.conftest import shared_path

    ref = np.load(shared_path("specs", "lrrnet_reference", "tno21_8.npz"))
    out = tmp_path / "fused.png"
    code = main([
        "fuse", "--ir", str(val_data / "TNO21" / "ir" / "8.png"), "--vi", str(val_data / "TNO21" / "vi" / "8.png"),
        "-o", str(out), "--method", "lrrnet", "--weights", str(lrrnet_weights), "--device", str(device),
    ])
    assert code == 0
    got = load_image(out).astype(int)
    assert got.shape == ref["fused_uint8"].shape
    assert np.abs(got - ref["fused_uint8"].astype(int)).max() <= 1


def test_lrrnet_without_weights_says_what_to_pass():
    with pytest.raises(CausalFuseError, match="--weights"):
        fuse(grey(8, 8), grey(8, 8), method="lrrnet")


def test_fusing_does_not_import_the_metrics_or_plotting_stack():
    """`causalfuse fuse` starts without Numba, SciPy, matplotlib or scikit-learn (start-up time)."""
    import subprocess
    import sys

    code = (
        "import sys, causalfuse, causalfuse.cli, causalfuse.fuse_cli\n"
        "from causalfuse.models.registry import create_method, get_method\n"
        "get_method('causalfuse'); create_method('average')\n"
        "heavy = ('numba', 'scipy', 'matplotlib', 'sklearn', 'pywt', 'causalfuse.metrics')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"imported on the fuse path: {out}"


def test_the_package_names_its_api_without_importing_it_and_fuse_stays_the_function():
    """``import causalfuse.metrics`` does not import torch; ``causalfuse.fuse`` is the function, however it is reached."""
    import subprocess
    import sys

    code = (
        "import sys, causalfuse.metrics\n"
        "print('torch' in sys.modules)\n"
        "import causalfuse.fuse, causalfuse\n"
        "from causalfuse.fuse import fuse\n"
        "print(causalfuse.fuse is fuse, causalfuse.load_model.__module__, sorted(set(causalfuse.__all__) - set(dir(causalfuse))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == ["False", "True causalfuse.checkpoint []"]


def test_the_fuse_command_loads_no_stack_it_does_not_use(tmp_path):
    """`causalfuse fuse` on a small pair, in a fresh process, imports no metrics, plotting, registration, ONNX or compiler stack.

    The whole command runs (bundled weights, a pair below the size that
    compiles), so every import on its way counts; modules that ``import torch``
    loads by itself are not held against it.
    """
    import subprocess
    import sys

    for name, seed in (("ir", 1), ("vi", 2)):
        save(tmp_path / f"{name}.png", grey(24, 30, seed))
    argv = ["fuse", "-q", "--ir", str(tmp_path / "ir.png"), "--vi", str(tmp_path / "vi.png"), "-o", str(tmp_path / "f.png")]
    heavy = ("numba", "scipy", "matplotlib", "sklearn", "pywt", "SimpleITK", "cv2", "onnx", "onnxruntime", "torchvision", "sympy")
    code = (
        "import sys, torch\n"
        "already = set(sys.modules)\n"
        "from causalfuse.cli import main\n"
        f"assert main({argv!r}) == 0\n"
        f"heavy = {heavy!r}\n"
        "added = set(sys.modules) - already\n"
        "print(','.join(sorted(m for m in added if m.split('.')[0] in heavy\n"
        "                      or m.startswith(('torch._dynamo', 'torch._inductor', 'causalfuse.metrics', 'causalfuse.bench.report')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert (tmp_path / "f.png").is_file()
    loaded = out.splitlines()[-1]  # the command's own line comes before it
    assert loaded == "", f"imported by `causalfuse fuse`: {loaded}"


def test_training_asks_pytorch_for_huge_pages_unless_told_otherwise():
    """`causalfuse train` sets THP_MEM_ALLOC_ENABLE=1 before torch loads (torch reads it once), never over the user's value; `fuse` does not."""
    import os
    import subprocess
    import sys

    code = (
        "import os, resource, sys\n"
        "from causalfuse.cli import _huge_pages\n"
        "_huge_pages('fuse')\n"
        "after_fuse = os.environ.get('THP_MEM_ALLOC_ENABLE', 'unset')\n"
        "_huge_pages('train')\n"
        "import torch\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "torch.empty(64, 1024, 1024).fill_(1.0)\n"  # 256 MB: 65,536 pages of 4 kB
        "faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "print(after_fuse, os.environ.get('THP_MEM_ALLOC_ENABLE'), faults)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    after_fuse, chosen, faults = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout.split()
    assert (after_fuse, chosen) == ("unset", "1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**env, "THP_MEM_ALLOC_ENABLE": "0"}).stdout
    assert out.split()[:2] == ["0", "0"]  # the user's choice kept
    setting = "/sys/kernel/mm/transparent_hugepage/enabled"
    if os.path.exists(setting) and "[madvise]" in open(setting).read():  # huge pages only where asked for: the flag decides
        assert int(faults) < 30_000, f"{faults} page faults for 256 MB with the flag: huge pages were not used"
        assert int(out.split()[2]) > 60_000, "4 kB pages without it"


def test_kernels_are_compiled_only_on_a_gpu_and_for_jobs_large_enough_to_pay(ckpt, monkeypatch):
    import torch

    from causalfuse.models import methods
    from causalfuse.models.lrr import LRREncoder

    fn = methods.causalfuse_method(weights=ckpt, device="cpu")
    encoders = [m for m in fn.net.modules() if isinstance(m, LRREncoder)]
    assert len(encoders) == 2 and not any(e.compile for e in encoders), "on the CPU the chunked eager stages are faster"
    fn.plan(10 * 640 * 480)
    assert not any(e.compile for e in encoders)
    fn.device = torch.device("cuda")  # the policy alone; nothing runs
    fn.plan(640 * 480)
    assert not any(e.compile for e in encoders), "one 640 x 480 pair on a GPU: eager is sooner"
    fn.plan(10 * 640 * 480)
    assert all(e.compile for e in encoders)
    fn.device = torch.device("cpu")

    created = []
    real = methods.NetworkMethod.plan
    monkeypatch.setattr(methods.NetworkMethod, "plan", lambda self, pixels: (created.append(pixels), real(self, pixels)))
    fuse(grey(20, 30), grey(20, 30), method="causalfuse", weights=ckpt, device="cpu")
    assert created == [600]


# -- bf16 -------------------------------------------------------------------------------------------
def test_bf16_is_within_its_stated_tolerance_of_fp32(device):
    from causalfuse.fuse import BF16_TOLERANCE
    from causalfuse.synthetic import synthetic_pair

    ir, vi = synthetic_pair(72, 96, seed=3)
    eight_bit = {p: np.rint(fuse(ir, vi, device=device, precision=p) * 255) for p in ("fp32", "bf16")}
    diff = np.abs(eight_bit["bf16"] - eight_bit["fp32"])
    assert diff.max() <= BF16_TOLERANCE
    assert diff.mean() > 0, "bf16 gave fp32's image: it did not run in bf16"


def test_bf16_is_refused_where_it_does_not_apply(tmp_path, capsys):
    with pytest.raises(CausalFuseError, match=r"average has no bf16 mode \(it is not a network\)"):
        fuse(grey(8, 8), grey(8, 8), method="average", precision="bf16")
    with pytest.raises(CausalFuseError, match="lrrnet has no bf16 mode .*min-max normalisation.*applies to causalfuse, causalfuse-nobaffm"):
        fuse(grey(8, 8), grey(8, 8), method="lrrnet", precision="bf16")
    with pytest.raises(CausalFuseError, match="bf16 runs with the pytorch backend only"):
        fuse(grey(8, 8), grey(8, 8), device="cpu", backend="onnxruntime", precision="bf16")
    with pytest.raises(CausalFuseError, match="unknown precision 'fp16': choose fp32 or bf16"):
        fuse(grey(8, 8), grey(8, 8), device="cpu", precision="fp16")
    a = save(tmp_path / "a.png", grey(10, 10))
    for extra in (["--method", "average"], ["--backend", "onnxruntime"]):
        assert main(["fuse", "--ir", str(a), "--vi", str(a), "-o", str(tmp_path / "f.png"), "--precision", "bf16", *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "bf16" in err, err
    assert not (tmp_path / "f.png").exists()


def test_folder_records_its_precision(tmp_path, ckpt, capsys):
    import json

    ir_dir, vi_dir = make_folders(tmp_path, ["a", "b"])
    out = tmp_path / "out"
    args = ["fuse", "--ir", str(ir_dir), "--vi", str(vi_dir), "-o", str(out), "--weights", str(ckpt), "--device", "cpu", "-q"]
    assert main(args + ["--precision", "bf16"]) == 0
    assert json.loads((out / PRODUCER_FILE).read_text())["precision"] == "bf16"
    (out / "b.png").unlink()
    assert main(args) == 2, "fp32 images must not be mixed into a bf16 folder"
    assert "bf16" in capsys.readouterr().err
    # A folder recorded before there was a choice was made in fp32, and resumes so.
    record = json.loads((out / PRODUCER_FILE).read_text())
    del record["precision"]
    (out / PRODUCER_FILE).write_text(json.dumps(record))
    assert main(args) == 0
    assert "1 fused, 1 already there" in capsys.readouterr().out

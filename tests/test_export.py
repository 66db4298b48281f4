"""ONNX export and the onnxruntime backend: equal to PyTorch, provenance, refusals.

Tolerances: the networks' [0, 1] outputs (``causalfuse``, ``causalfuse-nobaffm``)
agree with PyTorch's within RAW_TOLERANCE = 2e-5 and their 8-bit images within
one grey level. ``lrrnet``'s official post-processing truncates to uint8, so
there a raw difference of a few 1e-7 can move a pixel across a level: its
images agree within one grey level (1/255 in [0, 1]).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from causalfuse import CausalFuseError
from causalfuse.cli import main
from causalfuse.fuse import create_backend_method, fuse
from causalfuse.integrity import file_sha256
from causalfuse.models.methods import bundled_weights

from .conftest import shared_path

RAW_TOLERANCE = 2e-5
NETWORKS = ("causalfuse", "causalfuse-nobaffm", "lrrnet")
EXTRA = 'pip install "causalfuse[onnx]"'


def grey(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def colour(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def levels(x):
    return np.rint(np.clip(x, 0, 1) * 255).astype(int)


def weights_for(method):
    return shared_path("weights", "lrrnet", "lrrnet_official.model") if method == "lrrnet" else None


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Export each network once: method -> its ONNX file (lrrnet only with the reference data)."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from causalfuse.export import export_onnx

    folder = tmp_path_factory.mktemp("onnx")
    cache = {}

    def get(method):
        if method not in cache:
            path = folder / f"{method}.onnx"
            export_onnx(method, weights_for(method), path)
            cache[method] = path
        return cache[method]

    return get


def both_backends(method, onnx, tile=None):
    """The PyTorch method and the ONNX Runtime one, optionally with a smaller tile (to exercise the tiling)."""
    weights = weights_for(method)
    fns = [create_backend_method(method, weights, "cpu"), create_backend_method(method, weights, "cpu", "onnxruntime", onnx)]
    for fn in fns:
        if tile is not None:
            fn.tile, fn.overlap = tile, 16
    return fns


def assert_same_image(a, b, method):
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    assert np.abs(levels(a) - levels(b)).max() <= 1
    raw = np.abs(a - b).max()
    assert raw <= (1 / 255 + 1e-6 if method == "lrrnet" else RAW_TOLERANCE), raw


# ---------------------------------------------------------------------------
# the exported graph
# ---------------------------------------------------------------------------
def test_export_records_what_it_was_made_from(exported):
    import onnx

    import causalfuse
    from causalfuse.export import FORMAT, OPSET

    path = exported("causalfuse-nobaffm")
    model = onnx.load(str(path))
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["causalfuse.format"] == FORMAT
    assert meta["causalfuse.method"] == "causalfuse-nobaffm"
    assert meta["causalfuse.weights_sha256"] == file_sha256(bundled_weights("causalfuse-nobaffm"))
    assert meta["causalfuse.version"] == causalfuse.__version__
    assert meta["causalfuse.opset"] == str(OPSET) == str(model.opset_import[0].version)
    assert float(meta["causalfuse.check_max_abs_diff"]) <= RAW_TOLERANCE
    # batch, height and width are dynamic
    for value in (*model.graph.input, *model.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_param or d.dim_value for d in dims] == ["batch", 1, "height", "width"]


@pytest.mark.parametrize("method", ["causalfuse", "causalfuse-nobaffm"])
def test_graph_equals_eager_pytorch_on_other_sizes_and_batches(exported, method):
    """The graph is traced at 64 x 80; run at other sizes (and a batch of 2) it still gives PyTorch's output."""
    import onnxruntime as ort

    net = create_backend_method(method, None, "cpu").net
    session = ort.InferenceSession(str(exported(method)), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(7)
    for shape in [(2, 1, 2, 2), (1, 1, 23, 101), (2, 1, 50, 31)]:
        ir, vi = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
        with torch.inference_mode():
            ref = net(ir, vi).numpy()
        got = session.run(["fused"], {"infrared": ir.numpy(), "visible": vi.numpy()})[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=0, atol=RAW_TOLERANCE)


@pytest.mark.parametrize("method", NETWORKS)
def test_onnxruntime_backend_equals_pytorch_on_a_synthetic_pair(exported, method):
    ir, vi = grey(40, 57, 1), colour(40, 57, 2)
    a = fuse(ir, vi, method=method, weights=weights_for(method), device="cpu")
    b = fuse(ir, vi, method=method, weights=weights_for(method), device="cpu", backend="onnxruntime", onnx=exported(method))
    assert a.shape == (40, 57, 3)
    assert_same_image(a, b, method)


def test_onnxruntime_backend_tiles_as_pytorch_does(exported):
    """Tiles of several sizes (edge tiles included) through the same runner give the same image."""
    torch_fn, ort_fn = both_backends("causalfuse", exported("causalfuse"), tile=24)
    ir, vi = grey(41, 59, 3), grey(41, 59, 4)
    assert_same_image(fuse(ir, vi, method=torch_fn), fuse(ir, vi, method=ort_fn), "causalfuse")


@pytest.mark.parametrize("method", ["causalfuse", "lrrnet"])
def test_onnxruntime_backend_equals_pytorch_on_the_val_images(exported, val_data, method):
    """The first pair of each val set (RoadScene and LLVIP in colour), its centre 112 x 144 (run time)."""
    from causalfuse.io import load_image

    torch_fn, ort_fn = both_backends(method, exported(method))
    for name in ("TNO21", "RoadScene50", "LLVIP"):
        stem = sorted(p.name for p in (val_data / name / "ir").iterdir())[0]
        ir, vi = load_image(val_data / name / "ir" / stem), load_image(val_data / name / "vi" / stem)
        y, x = (ir.shape[0] - 112) // 2, (ir.shape[1] - 144) // 2
        ir, vi = ir[y : y + 112, x : x + 144], vi[y : y + 112, x : x + 144]
        assert_same_image(fuse(ir, vi, method=torch_fn), fuse(ir, vi, method=ort_fn), method)


def test_cli_export_then_fuse_with_the_file(tmp_path, exported, capsys):
    from PIL import Image

    onnx = tmp_path / "model.onnx"
    assert main(["export", "--method", "causalfuse", "--format", "onnx", "-o", str(onnx)]) == 0
    out = capsys.readouterr().out
    assert "exported causalfuse" in out and "opset" in out
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"], "no temporary file is left"
    ir, vi = tmp_path / "ir.png", tmp_path / "vi.png"
    Image.fromarray(grey(30, 41, 5)).save(ir)
    Image.fromarray(grey(30, 41, 6)).save(vi)
    for backend, fused in (("pytorch", "a.png"), ("onnxruntime", "b.png")):
        extra = ["--onnx", str(onnx)] if backend == "onnxruntime" else []
        args = ["fuse", "--ir", str(ir), "--vi", str(vi), "-o", str(tmp_path / fused), "--device", "cpu", "--backend", backend]
        assert main(args + extra + ["-q"]) == 0
    a, b = (np.asarray(Image.open(tmp_path / f), dtype=int) for f in ("a.png", "b.png"))
    assert np.abs(a - b).max() <= 1


def test_without_a_file_the_export_is_made_once_into_the_cache(tmp_path, monkeypatch, exported):
    from causalfuse import export

    import shutil

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    made = []

    def export_onnx(method, weights, path):  # as export_onnx would write it, without exporting again
        made.append(method)
        path.parent.mkdir(parents=True)
        shutil.copyfile(exported(method), path)

    monkeypatch.setattr(export, "export_onnx", export_onnx)
    ir, vi = grey(12, 14, 1), grey(12, 14, 2)
    first = fuse(ir, vi, method="causalfuse-nobaffm", device="cpu", backend="onnxruntime")
    second = fuse(ir, vi, method="causalfuse-nobaffm", device="cpu", backend="onnxruntime")
    assert len(made) == 1 and np.array_equal(first, second)
    (cached,) = (tmp_path / "causalfuse" / "onnx").iterdir()
    assert cached.name.startswith("causalfuse-nobaffm-" + file_sha256(bundled_weights("causalfuse-nobaffm"))[:16])


def test_a_folder_fused_with_onnxruntime_records_the_exports_weights(tmp_path, exported):
    import json

    from PIL import Image

    from causalfuse.fuse import PRODUCER_FILE, fuse_folder

    for sub in ("ir", "vi"):
        (tmp_path / sub).mkdir()
        Image.fromarray(grey(10, 12, len(sub))).save(tmp_path / sub / "a.png")
    res = fuse_folder(tmp_path / "ir", tmp_path / "vi", tmp_path / "out", "causalfuse", device="cpu", progress=False,
                      backend="onnxruntime", onnx=exported("causalfuse"))
    assert len(res.written) == 1
    record = json.loads((tmp_path / "out" / PRODUCER_FILE).read_text())
    assert record["weights_sha256"] == file_sha256(bundled_weights("causalfuse"))


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
def test_without_onnxruntime_the_message_names_the_extra(tmp_path, monkeypatch, capsys):
    from PIL import Image

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with pytest.raises(CausalFuseError, match=r"--backend onnxruntime needs onnxruntime.*" + EXTRA.replace("[", r"\[").replace("]", r"\]")):
        fuse(grey(8, 8, 1), grey(8, 8, 2), device="cpu", backend="onnxruntime")
    a = tmp_path / "a.png"
    Image.fromarray(grey(8, 8, 1)).save(a)
    assert main(["fuse", "--ir", str(a), "--vi", str(a), "-o", str(tmp_path / "f.png"), "--backend", "onnxruntime"]) == 2
    err = capsys.readouterr().err
    assert EXTRA in err and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert main(["export", "-o", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert EXTRA in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_an_export_of_another_configuration_is_refused(exported, tmp_path):
    nobaffm = exported("causalfuse-nobaffm")
    with pytest.raises(CausalFuseError, match=r"causalfuse-nobaffm.onnx: exported from causalfuse-nobaffm with weights sha256 \w+\.\.\., "
                                              r"but this run asks for causalfuse with weights sha256"):
        fuse(grey(8, 8, 1), grey(8, 8, 2), method="causalfuse", device="cpu", backend="onnxruntime", onnx=nobaffm)
    # the same method from other weights
    other = bundled_weights("causalfuse")
    with pytest.raises(CausalFuseError, match=r"asks for causalfuse-nobaffm with weights sha256 " + file_sha256(other)[:12]):
        fuse(grey(8, 8, 1), grey(8, 8, 2), method="causalfuse-nobaffm", weights=other, device="cpu", backend="onnxruntime", onnx=nobaffm)


def test_onnx_files_that_are_not_causalfuse_exports_are_refused(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, None, None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, None, None])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    foreign = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(foreign))
    with pytest.raises(CausalFuseError, match="other.onnx: not an ONNX file exported by causalfuse"):
        fuse(grey(8, 8, 1), grey(8, 8, 2), device="cpu", backend="onnxruntime", onnx=foreign)
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    with pytest.raises(CausalFuseError, match="notes.onnx: not a readable ONNX model"):
        fuse(grey(8, 8, 1), grey(8, 8, 2), device="cpu", backend="onnxruntime", onnx=text)
    with pytest.raises(CausalFuseError, match="missing.onnx: no such ONNX file"):
        fuse(grey(8, 8, 1), grey(8, 8, 2), device="cpu", backend="onnxruntime", onnx=tmp_path / "missing.onnx")


def test_flags_that_do_not_go_together(tmp_path, capsys):
    with pytest.raises(CausalFuseError, match="runs with the onnxruntime backend"):
        fuse(grey(8, 8, 1), grey(8, 8, 2), device="cpu", onnx=tmp_path / "m.onnx")
    with pytest.raises(CausalFuseError, match=r"is for the networks \(causalfuse, causalfuse-nobaffm, lrrnet\); 'gff' is not one"):
        fuse(grey(8, 8, 1), grey(8, 8, 2), method="gff", backend="onnxruntime")
    with pytest.raises(CausalFuseError, match="unknown backend 'tensorrt'"):
        fuse(grey(8, 8, 1), grey(8, 8, 2), backend="tensorrt")
    assert main(["export", "--method", "lrrnet", "-o", str(tmp_path / "m.onnx")]) == 2
    assert "--weights" in capsys.readouterr().err


@pytest.mark.parametrize("backend", ["pytorch", "onnxruntime"])
def test_cuda_without_a_gpu_is_one_line(tmp_path, capsys, request, backend):
    from PIL import Image

    if backend == "pytorch" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    extra = []
    if backend == "onnxruntime":
        onnxruntime = pytest.importorskip("onnxruntime")
        if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            pytest.skip("this ONNX Runtime has CUDA")
        extra = ["--backend", "onnxruntime", "--onnx", str(request.getfixturevalue("exported")("causalfuse"))]
    a = tmp_path / "a.png"
    Image.fromarray(grey(8, 8, 1)).save(a)
    assert main(["fuse", "--ir", str(a), "--vi", str(a), "-o", str(tmp_path / "f.png"), "--device", "cuda", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'cuda' was asked for" in err and "--device cpu" in err


def test_an_export_that_differs_from_pytorch_is_not_written(tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from causalfuse import export

    monkeypatch.setattr(export, "CHECK_TOLERANCE", -1.0)  # every graph now "differs"
    with pytest.raises(CausalFuseError, match="m.onnx: the exported graph differs from PyTorch"):
        export.export_onnx("causalfuse-nobaffm", None, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == [], "neither the file nor a temporary one is left"

"""Confounder dictionaries: backbones, PCA + K-Means++, the file format, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import save_file

from causalfuse.cli import main
from causalfuse.data.paired import Pair
from causalfuse.dictionary import ConfounderDictionary, load_dictionaries, save_dictionaries
from causalfuse.dictionary.backbones import FeatureExtractor, get_backbone, image_to_tensor
from causalfuse.dictionary.build import build_dictionaries, count_distinct, file_list_hash, fit_dictionary
from causalfuse.dictionary.io import METADATA_KEY
from causalfuse.errors import CausalFuseError


def _tiny_backbone() -> FeatureExtractor:
    torch.manual_seed(0)
    trunk = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 5, stride=4), torch.nn.ReLU())
    return FeatureExtractor(trunk, name="tiny-test", feature_dim=12, input_size=32)


def _pairs(root: Path, n: int, size=(24, 32)) -> list[Pair]:
    """Synthetic pairs of a few distinct 'scenes' (smooth gradients of varied direction)."""
    (root / "ir").mkdir(parents=True, exist_ok=True)
    (root / "vi").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]] / max(size)
    pairs = []
    for i in range(n):
        rng = np.random.default_rng(i)
        a, b = np.cos(i * 0.9), np.sin(i * 0.9)
        base = (0.5 + 0.5 * np.sin(6 * (a * xx + b * yy) + i)) * 255
        ir = np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8)
        vi = np.stack([np.roll(ir, i, axis=1), 255 - ir, ir // 2 + 40], axis=-1).astype(np.uint8)
        Image.fromarray(ir).save(root / "ir" / f"{i}.png")
        Image.fromarray(vi).save(root / "vi" / f"{i}.png")
        pairs.append(Pair(str(i), root / "ir" / f"{i}.png", root / "vi" / f"{i}.png"))
    return pairs


def _blobs(sizes=(5, 3, 4), dim=20, seed=0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, (len(sizes), dim))
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return centres[labels] + rng.normal(0, 0.1, (len(labels), dim)), labels


# ---------------------------------------------------------------- backbones


def test_efficientnet_lite0_features_shape_and_batch_independence():
    backbone = get_backbone("efficientnet-lite0", "cpu")
    assert backbone.feature_dim == 1280 and backbone.input_size == 224
    x = torch.rand(1, 3, 40, 56)
    x = torch.cat([x, x[:, :1].expand(-1, 3, -1, -1)])
    feats = backbone(x)
    assert feats.shape == (2, 1280) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and float(feats.abs().sum()) > 0
    # Grey input is replicated to three channels; a batch of one gives the same vector.
    torch.testing.assert_close(backbone(x[1:, :1]), feats[1:], atol=1e-4, rtol=1e-4)


def test_image_to_tensor_grey_ir_and_colour_vi():
    rgb = np.random.default_rng(0).random((10, 12, 3)).astype(np.float32)
    t = image_to_tensor(rgb, grey=True)
    assert t.shape == (3, 10, 12)
    torch.testing.assert_close(t[0], t[2])
    np.testing.assert_allclose(t[0].numpy(), 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2], atol=1e-6)
    np.testing.assert_array_equal(image_to_tensor(rgb, grey=False)[1].numpy(), rgb[..., 1])
    assert image_to_tensor(rgb[..., 0], grey=False, size=16).shape == (3, 16, 16)


def test_unknown_and_missing_backbones(tmp_path, monkeypatch):
    with pytest.raises(CausalFuseError, match="unknown backbone 'vgg'"):
        get_backbone("vgg")
    # No torchvision, or torchvision without local weights: never a download, a clear message.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("CAUSALFUSE_RESNET50_WEIGHTS", raising=False)
    with pytest.raises(CausalFuseError, match="resnet extra"):
        get_backbone("resnet50")


# ---------------------------------------------------------------- PCA + K-Means++


def test_fit_dictionary_recovers_clusters():
    feats, labels = _blobs()
    d = fit_dictionary(feats, modality="vi", n_clusters=3, dim=4, seed=0, n_init=4)
    assert d.prototypes.shape == (3, 4) and d.pca_components.shape == (4, 20) and d.pca_mean.shape == (20,)
    np.testing.assert_array_equal(d.counts, [5, 4, 3])  # largest first
    np.testing.assert_allclose(d.frequencies, [5 / 12, 4 / 12, 3 / 12], rtol=1e-6)
    assigned = d.assign(feats)
    # Each true blob maps to one cluster, and that cluster's prototype is the blob's mean reduced feature.
    for k in range(3):
        assert len(set(assigned[labels == k])) == 1
        cluster = assigned[labels == k][0]
        np.testing.assert_allclose(d.prototypes[cluster], d.project(feats[labels == k]).mean(0), atol=1e-4)
    np.testing.assert_allclose(d.pca_components @ d.pca_components.T, np.eye(4), atol=1e-5)
    assert d.provenance["cluster_sizes"] == [5, 4, 3] and d.provenance["n_images"] == 12
    assert d.assign(feats[0]).shape == (1,)


def test_fit_dictionary_caps_dim_and_refuses_too_few():
    feats, _ = _blobs(sizes=(3, 3))
    d = fit_dictionary(feats, modality="ir", n_clusters=2, dim=128, seed=0)
    assert d.dim == 6 and d.provenance["dim_requested"] == 128
    with pytest.raises(CausalFuseError, match="6 ir images cannot make 7 clusters"):
        fit_dictionary(feats, modality="ir", n_clusters=7)
    same = np.repeat(feats[:2], 3, axis=0)
    with pytest.raises(CausalFuseError, match="fewer than 3 distinct scenes"):
        fit_dictionary(same, modality="ir", n_clusters=3, dim=2)
    with pytest.raises(CausalFuseError, match="project|expects backbone features of length 20"):
        d.project(np.zeros((1, 7)))


def test_fit_dictionary_refuses_near_duplicate_scenes():
    feats, _ = _blobs(sizes=(3, 3))
    # Four copies of two images, each copy moved by far less than the tolerance: two scenes, not eight.
    rng = np.random.default_rng(1)
    near = np.repeat(feats[:2], 4, axis=0) + rng.normal(0, 1e-9, (8, feats.shape[1]))
    with pytest.raises(CausalFuseError, match=r"fewer than 3 distinct scenes \(2 distinct feature vectors\)"):
        fit_dictionary(near, modality="vi", n_clusters=3, dim=4)
    assert count_distinct(near, tol=1e-6) == 2 and count_distinct(near, tol=0.0) == 8


def test_fit_dictionary_refuses_coinciding_prototypes(monkeypatch):
    """Whatever K-Means returns (here: a duplicate point split over two clusters), equal prototypes are refused."""
    import sklearn.cluster

    class SplitDuplicates:
        def __init__(self, n_clusters, **kwargs):
            self.inertia_ = 0.0

        def fit_predict(self, x):
            return np.array([0, 1, 2, 2])

    feats, _ = _blobs(sizes=(1, 1, 1))
    points = np.concatenate([feats[:1], feats])  # A, A, B, C: three distinct vectors
    monkeypatch.setattr(sklearn.cluster, "KMeans", SplitDuplicates)
    with pytest.raises(CausalFuseError, match="only 2 distinct prototypes"):
        fit_dictionary(points, modality="ir", n_clusters=3, dim=3)


def test_build_is_deterministic_and_round_trips(tmp_path):
    pairs = _pairs(tmp_path / "data", 8)
    kwargs = dict(n_clusters=3, dim=5, backbone=_tiny_backbone(), seed=1, n_init=3, batch_size=3, progress=False)
    ir, vi = build_dictionaries(pairs, **kwargs)
    a = save_dictionaries(tmp_path / "a.safetensors", ir, vi)
    b = save_dictionaries(tmp_path / "b.safetensors", *build_dictionaries(pairs, **{**kwargs, "backbone": _tiny_backbone()}))
    assert a.read_bytes() == b.read_bytes()
    ir2, vi2 = load_dictionaries(a)
    for old, new in ((ir, ir2), (vi, vi2)):
        assert new.modality == old.modality
        for name in ("prototypes", "frequencies", "counts", "pca_mean", "pca_components"):
            np.testing.assert_array_equal(getattr(new, name), getattr(old, name))
        assert new.provenance == json.loads(json.dumps(old.provenance))
    p = ir2.provenance
    assert p["backbone"] == "tiny-test" and p["n_clusters"] == 3 and p["dim"] == 5 and p["seed"] == 1
    assert p["n_images"] == 8 and sum(p["cluster_sizes"]) == 8 and p["file_list_sha256"] == file_list_hash(pairs)
    assert p["created_by"].startswith("causalfuse ") and p["modality"] == "ir" and vi2.provenance["modality"] == "vi"
    assert ir2.counts.dtype == np.int64 and ir2.prototypes.dtype == np.float32
    # Another seed gives another file (the provenance at least).
    c = save_dictionaries(tmp_path / "c.safetensors", *build_dictionaries(pairs, **{**kwargs, "backbone": _tiny_backbone(), "seed": 2}))
    assert c.read_bytes() != a.read_bytes()
    with pytest.raises(CausalFuseError, match="8 image pairs cannot make 9 clusters"):
        build_dictionaries(pairs, **{**kwargs, "n_clusters": 9})


def test_check_matches():
    feats, _ = _blobs()
    d = fit_dictionary(feats, modality="vi", n_clusters=3, dim=4, provenance={"file_list_sha256": "ab" * 32})
    d.check_matches(n_clusters=3, dim=4, file_list_sha256="ab" * 32)
    with pytest.raises(CausalFuseError, match=r"ckpt \(vi\) does not match: N = 3 prototypes, expected 25; d = 4, expected 128"):
        d.check_matches(n_clusters=25, dim=128, source="ckpt")
    with pytest.raises(CausalFuseError, match="built on other images"):
        d.check_matches(file_list_sha256="cd" * 32)


# ---------------------------------------------------------------- bad files


def _dicts() -> tuple[ConfounderDictionary, ConfounderDictionary]:
    feats, _ = _blobs()
    return (fit_dictionary(feats, modality="ir", n_clusters=3, dim=4), fit_dictionary(feats + 1, modality="vi", n_clusters=3, dim=4))


def test_bad_dictionary_files(tmp_path):
    with pytest.raises(CausalFuseError, match="no such dictionary file"):
        load_dictionaries(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00\x01 definitely not safetensors")
    with pytest.raises(CausalFuseError, match="not a readable safetensors file"):
        load_dictionaries(junk)
    other = tmp_path / "weights.safetensors"
    save_file({"conv.weight": np.zeros((2, 2), np.float32)}, str(other))
    with pytest.raises(CausalFuseError, match="not a causalfuse dictionary file"):
        load_dictionaries(other)
    ir, vi = _dicts()
    good = save_dictionaries(tmp_path / "good.safetensors", ir, vi)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(CausalFuseError, match="not a readable safetensors file"):
        load_dictionaries(truncated)
    future = tmp_path / "future.safetensors"
    save_file({"ir.prototypes": ir.prototypes}, str(future), metadata={METADATA_KEY: json.dumps({"format": 99})})
    with pytest.raises(CausalFuseError, match="format 99 is not the supported format 1"):
        load_dictionaries(future)
    partial = tmp_path / "partial.safetensors"
    save_file({"ir.prototypes": ir.prototypes}, str(partial), metadata={METADATA_KEY: json.dumps({"format": 1})})
    with pytest.raises(CausalFuseError, match="lacks the tensors ir.frequencies"):
        load_dictionaries(partial)
    wrong = tmp_path / "wrong.safetensors"
    tensors = {f"{m}.{n}": getattr(d, n) for d in (ir, vi) for m in [d.modality] for n in ("prototypes", "frequencies", "counts", "pca_mean", "pca_components")}
    tensors["vi.counts"] = np.zeros(7, np.int64)
    save_file(tensors, str(wrong), metadata={METADATA_KEY: json.dumps({"format": 1})})
    with pytest.raises(CausalFuseError, match=r"wrong.safetensors: .*\(vi\): counts must be \(3,\), got \(7,\)"):
        load_dictionaries(wrong)
    with pytest.raises(CausalFuseError, match="the ir argument must be the ir ConfounderDictionary"):
        save_dictionaries(tmp_path / "swapped.safetensors", vi, ir)
    assert not (tmp_path / "swapped.safetensors").exists()


# ---------------------------------------------------------------- CLI


def test_cli_build_and_show(tmp_path, capsys, monkeypatch):
    # The tiny backbone keeps this fast; EfficientNet-Lite0 itself is tested above.
    import causalfuse.dictionary.build as build_module

    monkeypatch.setattr(build_module, "get_backbone", lambda name, device: _tiny_backbone())
    _pairs(tmp_path / "data", 6, size=(16, 20))
    out = tmp_path / "d.safetensors"
    args = ["dictionary", "build", "--data", str(tmp_path / "data"), "-N", "2", "-d", "3", "--n-init", "2",
            "--device", "cpu", "--no-progress", "-o", str(out)]
    assert main(args) == 0
    ir, vi = load_dictionaries(out)
    assert ir.n_clusters == 2 and vi.dim == 3 and ir.provenance["backbone"] == "tiny-test"
    assert ir.provenance["data_roots"] == [str((tmp_path / "data").resolve())]
    capsys.readouterr()
    assert main(args) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["dictionary", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "infrared: N = 2, d = 3" in shown and "visible: N = 2" in shown and "tiny-test" in shown
    assert main(["dictionary", "show", str(tmp_path / "nope.safetensors")]) == 2
    assert "no such dictionary file" in capsys.readouterr().err
    assert main(["dictionary", "build", "--ir", str(tmp_path / "data" / "ir"), "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "--ir and --vi go together" in capsys.readouterr().err


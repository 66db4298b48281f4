"""Scene-bias report: assignment to prototypes, rare/absent clusters, per-cluster statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from causalfuse.bench import scenes
from causalfuse.bench.report import write_report
from causalfuse.bench.runner import BenchConfig, parse_method_spec, read_csv, resolve_datasets, run_bench
from causalfuse.dictionary.io import ConfounderDictionary, save_dictionaries
from causalfuse.errors import CausalFuseError


class MeanColour(torch.nn.Module):
    """A stand-in backbone: the mean of each colour channel (D = 3)."""

    input_size = 16

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=(2, 3))


def fake_dictionary(path, counts=(90, 8, 2, 0)):
    # Prototypes in a PCA space equal to the (centred) mean-colour space.
    centres = np.array([[0.1, 0.1, 0.1], [0.9, 0.9, 0.9], [0.9, 0.1, 0.1], [0.1, 0.1, 0.9]])[: len(counts)]
    mean = np.full(3, 0.5)
    counts = np.asarray(counts)
    d = dict(
        prototypes=centres - mean,
        frequencies=counts / counts.sum(),
        counts=counts,
        pca_mean=mean,
        pca_components=np.eye(3),
        provenance={"backbone": "mean-colour"},
    )
    save_dictionaries(path, ConfounderDictionary(modality="ir", **d), ConfounderDictionary(modality="vi", **d))
    return path


def make_scene_dataset(root, colours):
    (root / "ir").mkdir(parents=True)
    (root / "vi").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, rgb in colours.items():
        vi = np.clip(np.array(rgb)[None, None] * 255 + rng.normal(0, 5, (20, 24, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(vi).save(root / "vi" / f"{name}.png")
        Image.fromarray(vi.mean(axis=2).astype(np.uint8)).save(root / "ir" / f"{name}.png")
    return root


def test_cluster_status():
    assert scenes.cluster_status(np.array([90, 8, 2, 0])) == ["common", "rare", "rare", "absent"]
    # 1/(2N) with N = 4 is 12.5 %: 12 of 100 is rare, 13 is not
    assert scenes.cluster_status(np.array([12, 13, 37, 38])) == ["rare", "common", "common", "common"]


def test_assign_scenes_nearest_prototype(tmp_path):
    dict_path = fake_dictionary(tmp_path / "dict.safetensors")
    data = make_scene_dataset(tmp_path / "d", {"dark": (0.1, 0.1, 0.12), "bright": (0.85, 0.9, 0.9), "red": (0.8, 0.2, 0.1)})
    datasets = resolve_datasets({"d": data})
    scenes.assign_scenes(datasets, dict_path, tmp_path, backbone=MeanColour(), progress=False)
    rows = {r["image"]: r for r in read_csv(tmp_path / "scenes.csv", scenes.SCENE_FIELDS)}
    assert {k: int(r["cluster"]) for k, r in rows.items()} == {"dark": 0, "bright": 1, "red": 2}
    assert float(rows["dark"]["distance"]) < 0.1
    clusters = read_csv(tmp_path / "scene_clusters.csv", scenes.CLUSTER_FIELDS)
    assert [(c["cluster"], c["train_count"], c["status"]) for c in clusters] == [
        ("0", "90", "common"), ("1", "8", "rare"), ("2", "2", "rare"), ("3", "0", "absent")
    ]
    assert float(clusters[0]["train_frequency"]) == pytest.approx(0.9)
    # already assigned images are not embedded again
    class Exploding(MeanColour):
        def forward(self, images):
            raise AssertionError("should not run")

    scenes.assign_scenes(datasets, dict_path, tmp_path, backbone=Exploding(), progress=False)


def test_scene_bias_statistics():
    scene_rows = [{"dataset": "d", "image": f"i{k}", "cluster": str(c), "distance": "0"} for k, c in enumerate([0, 0, 1, 1, 2])]
    cluster_rows = [
        {"cluster": "0", "train_count": "90", "train_frequency": "0.9", "status": "common"},
        {"cluster": "1", "train_count": "8", "train_frequency": "0.08", "status": "rare"},
        {"cluster": "2", "train_count": "2", "train_frequency": "0.02", "status": "rare"},
    ]
    # method A drops on rare scenes; method B is even. "err" is lower-is-better.
    a = [1.0, 1.0, 0.5, 0.7, 0.2]
    b = [0.8, 0.8, 0.8, 0.8, 0.8]
    results = []
    for k in range(5):
        results.append({"dataset": "d", "image": f"i{k}", "method": "A", "metric": "Q", "value": str(a[k])})
        results.append({"dataset": "d", "image": f"i{k}", "method": "B", "metric": "Q", "value": str(b[k])})
        results.append({"dataset": "d", "image": f"i{k}", "method": "A", "metric": "err", "value": str(1 - a[k])})
        results.append({"dataset": "d", "image": f"i{k}", "method": "B", "metric": "err", "value": "nan"})
    bias = scenes.scene_bias(results, scene_rows, cluster_rows, methods=["A", "B"], metrics=["Q", "err"],
                             higher_is_better={"Q": True, "err": False})
    sa, sb = bias.get("A", "Q"), bias.get("B", "Q")
    assert sa.per_cluster == {0: (1.0, 2), 1: (pytest.approx(0.6), 2), 2: (0.2, 1)}
    # best/worst only over clusters with >= 2 test images
    assert sa.best == (0, 1.0) and sa.worst[0] == 1 and sa.spread == pytest.approx(0.4)
    assert sa.rare_mean == pytest.approx((0.5 + 0.7 + 0.2) / 3) and sa.common_mean == 1.0 and sa.rare_images == 3
    assert sa.gap == pytest.approx(sa.rare_mean - 1.0)
    assert sb.spread == pytest.approx(0.0) and sb.gap == pytest.approx(0.0)
    # relative to the mean of all methods per image, A loses and B gains on rare scenes
    assert sa.relative_gap < 0 < sb.relative_gap
    assert sa.relative_gap == pytest.approx(-sb.relative_gap)
    # A does better than the field where training scenes are frequent: positive trend; B the opposite
    assert sa.frequency_trend > 0.5 and sb.frequency_trend < -0.5
    se = bias.get("A", "err")  # lower is better: best is the smallest error
    assert se.best == (0, 0.0) and se.worst[0] == 1
    assert math.isnan(se.frequency_trend)  # B has no finite err values, so A's relative score is constant
    assert math.isnan(bias.get("B", "err").rare_mean)
    assert [c["test_images"] for c in bias.clusters] == [2, 2, 1]


def test_scene_section_in_report(tmp_path):
    dict_path = fake_dictionary(tmp_path / "dict.safetensors")
    data = make_scene_dataset(tmp_path / "d", {"dark1": (0.1, 0.1, 0.1), "dark2": (0.15, 0.1, 0.1), "bright": (0.9, 0.9, 0.9)})
    cfg = BenchConfig(methods=[parse_method_spec("average"), parse_method_spec("max-abs")], datasets={"d": str(data)}, metrics=["MI", "SSIM"])
    out = tmp_path / "out"
    run_bench(cfg, out, progress=False, report=False, log=lambda m: None)
    scenes.assign_scenes(resolve_datasets(cfg.datasets), dict_path, out, backbone=MeanColour(), progress=False)
    page = write_report(out).read_text()
    assert "Scene bias" in page and "scene-stats" in page and "z0" in page
    assert (out / "report" / "scenes.png").is_file()
    assert "## Scene bias" in (out / "tables.md").read_text()


def test_dictionary_for_run(tmp_path, monkeypatch):
    assert scenes.dictionary_for_run(None, True, print) is None
    with pytest.raises(CausalFuseError, match="no such file"):
        scenes.dictionary_for_run(str(tmp_path / "none.safetensors"), False, print)
    monkeypatch.setattr(scenes, "default_dictionary", lambda: None)
    with pytest.raises(CausalFuseError, match="pass --dictionary FILE.*or --no-scenes"):
        scenes.dictionary_for_run(None, False, print)

"""The bench's on-demand ablations: dictionaries built and models trained with a given budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from causalfuse.bench.ablation import AblationPlan, prepare_ablations
from causalfuse.checkpoint import read_metadata
from causalfuse.dictionary.io import load_dictionaries
from causalfuse.errors import CausalFuseError


def _data(root: Path, n: int = 6, size: int = 40) -> Path:
    (root / "ir").mkdir(parents=True, exist_ok=True)
    (root / "vi").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        ir = rng.integers(0, 256, (size, size), dtype=np.uint8)
        vi = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(ir).save(root / "ir" / f"{i}.png")
        Image.fromarray(vi).save(root / "vi" / f"{i}.png")
    return root


def _plan(tmp_path: Path, weights: Path, **kw) -> AblationPlan:
    base = dict(kinds=["dict-size", "baffm"], train_data=[str(_data(tmp_path / "train"))], lrrnet_weights=str(weights),
                steps=2, workdir=str(tmp_path / "abl"), dict_sizes=(2, 3), baffm_size=3, dim=2, crop=32, batch=2,
                head_only_steps=1, threads=1, device="cpu", progress=False)
    base.update(kw)
    return AblationPlan(**base)


def test_builds_trains_and_reuses(tmp_path, lrrnet_weights):
    logs: list[str] = []
    plan = _plan(tmp_path, lrrnet_weights)
    specs = prepare_ablations(plan, logs.append)
    labels = [s.split("=", 1)[0] for s in specs]
    assert labels == ["N2", "N3", "N3-noBAFFM"]
    for n in (2, 3):
        ir, vi = load_dictionaries(tmp_path / "abl" / f"dict_n{n}.safetensors")
        assert ir.n_clusters == vi.n_clusters == n
    for name, n, baffm in (("baffm_n2", 2, True), ("baffm_n3", 3, True), ("nobaffm_n3", 3, False)):
        meta = read_metadata(tmp_path / "abl" / "runs" / name / "model.safetensors")
        assert meta["info"]["budget"]["steps"] == 2
        assert meta["config"]["dict_size"] == n and meta["config"]["use_baffm"] is baffm
    # A second call trains nothing and builds nothing.
    logs.clear()
    assert prepare_ablations(plan, logs.append) == specs
    assert all("reusing" in line for line in logs), logs


def test_bad_plans_are_refused(tmp_path, lrrnet_weights):
    with pytest.raises(CausalFuseError, match="unknown ablation lr"):
        prepare_ablations(_plan(tmp_path, lrrnet_weights, kinds=["lr"]), print)
    with pytest.raises(CausalFuseError, match="no such file"):
        prepare_ablations(_plan(tmp_path, tmp_path / "missing.model"), print)
    with pytest.raises(CausalFuseError, match="train-steps"):
        prepare_ablations(_plan(tmp_path, lrrnet_weights, steps=0), print)


def test_dictionary_of_another_size_is_refused(tmp_path, lrrnet_weights):
    plan = _plan(tmp_path, lrrnet_weights, kinds=["dict-size"], dict_sizes=(2,))
    prepare_ablations(plan, print)
    abl = tmp_path / "abl"
    (abl / "dict_n2.safetensors").rename(abl / "dict_n3.safetensors")
    with pytest.raises(CausalFuseError, match="N=2 prototypes, expected 3"):
        prepare_ablations(_plan(tmp_path / "b", lrrnet_weights, kinds=["dict-size"], dict_sizes=(3,), workdir=str(abl)), print)

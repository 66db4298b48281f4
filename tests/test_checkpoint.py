"""Safetensors checkpoints: round trip, provenance, refusals."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from causalfuse import CausalFuseError
from causalfuse.checkpoint import load_model, read_metadata, save_model
from tests.test_net import pair, small_net


def test_round_trip_keeps_weights_dictionaries_and_config(tmp_path):
    net = small_net().eval()
    net.dictionary_provenance = {"vi": {"n_images": 3}}
    path = save_model(tmp_path / "m.safetensors", net, info={"steps": 7})
    loaded = load_model(path)
    ir, vi = pair(9, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ir, vi), net(ir, vi), atol=0, rtol=0)
    torch.testing.assert_close(loaded.baffm.vi.dictionary, net.baffm.vi.dictionary, atol=0, rtol=0)
    meta = read_metadata(path)
    assert meta["config"]["dict_size"] == net.config.dict_size
    assert meta["dictionary"] == {"vi": {"n_images": 3}}
    assert meta["info"] == {"steps": 7}
    assert not list(tmp_path.glob("*.tmp*")), "no temporary file may be left behind"


def test_loading_never_unpickles(tmp_path):
    path = save_model(tmp_path / "m.safetensors", small_net())
    assert path.read_bytes()[8:9] == b"{", "a safetensors file starts with its JSON header"


def test_use_baffm_override_runs_the_ablation(tmp_path):
    path = save_model(tmp_path / "m.safetensors", small_net())
    assert load_model(path, use_baffm=False).config.use_baffm is False


def test_corrupted_checkpoint_is_refused(tmp_path):
    path = save_model(tmp_path / "m.safetensors", small_net())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CausalFuseError, match="m.safetensors.*(corrupted|cannot be read)"):
        load_model(path)
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CausalFuseError, match="g.safetensors"):
        load_model(garbage)


def test_checkpoint_whose_dictionary_does_not_fit_its_config_is_refused(tmp_path):
    path = save_model(tmp_path / "m.safetensors", small_net())
    tensors = load_file(str(path))
    meta = {k: v for k, v in __import__("safetensors").safe_open(str(path), "pt").metadata().items()}
    cfg = json.loads(meta["config"])
    cfg["dict_size"] = 7
    meta["config"] = json.dumps(cfg)
    save_file(tensors, str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(CausalFuseError, match=r"shape mismatch.*dictionary"):
        load_model(tmp_path / "bad.safetensors")


def test_foreign_safetensors_file_is_refused(tmp_path):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CausalFuseError, match="not a causalfuse model checkpoint"):
        load_model(tmp_path / "other.safetensors")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CausalFuseError, match="no such checkpoint"):
        load_model(tmp_path / "nope.safetensors")

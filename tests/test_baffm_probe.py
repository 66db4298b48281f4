"""benchmarks/baffm_probe.py: its view of the back-door term, its interventions and its command."""

from __future__ import annotations

import copy
import csv

import numpy as np
import pytest
import torch
from PIL import Image

from causalfuse.checkpoint import save_model
from causalfuse.errors import CausalFuseError

from .conftest import benchmark_module
from .test_net import pair, small_net

probe = benchmark_module("baffm_probe")


@pytest.mark.parametrize("normalise", [True, False])
def test_branch_terms_add_up_to_the_branch_output(normalise):
    net = small_net(normalise_expectation=normalise).eval()
    x = torch.randn(1, 256, 5, 7)
    with torch.no_grad():
        wh, weights, g = probe.branch_terms(net.baffm.ir, x)
        torch.testing.assert_close(wh + g, net.baffm.ir(x), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights.sum(1), torch.ones(1, 5, 7))


def test_removed_is_the_network_without_baffm_and_the_patch_is_undone():
    net = small_net().eval()
    plain = copy.deepcopy(net)
    for branch in (plain.baffm.ir, plain.baffm.vi):
        branch.use_backdoor = False
    ir, vi = pair(12, 9)
    with torch.no_grad():
        before = net(ir, vi)
        with probe.backdoor_replaced(net, probe.removed_term):
            removed = net(ir, vi)
        after = net(ir, vi)
        torch.testing.assert_close(removed, plain(ir, vi), rtol=0, atol=1e-6)
    assert (removed - before).abs().max() > 1e-4  # the back-door term mattered here
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_constant_term_changes_nothing_when_g_is_constant_by_construction():
    net = small_net().eval()
    with torch.no_grad():  # every prototype the same: g is W_g z whatever the attention
        for branch in (net.baffm.ir, net.baffm.vi):
            branch.dictionary.copy_(branch.dictionary[:1].expand_as(branch.dictionary))
    ir, vi = pair(10, 11)
    with torch.no_grad():
        z_ir, z_vi = net.forward_features(ir, vi)
        base = net.forward_head(z_ir, z_vi)
        means = {m: probe.branch_terms(getattr(net.baffm, m), z)[2].mean((0, 2, 3)) for m, z in zip(("ir", "vi"), (z_ir, z_vi))}
        for term in (probe.constant_term(means), probe.uniform_term, probe.shuffled_values_term):
            with probe.backdoor_replaced(net, term):
                torch.testing.assert_close(net.forward_head(z_ir, z_vi), base, rtol=0, atol=1e-6)
        with probe.backdoor_replaced(net, probe.removed_term):
            assert (net.forward_head(z_ir, z_vi) - base).abs().max() > 1e-4


def test_attention_statistics_of_uniform_and_one_hot_attention():
    n = 25
    stats, mean = probe.attention_stats(torch.full((1, n, 4, 6), 1.0 / n))
    assert stats["entropy_pixel"] == pytest.approx(1.0, abs=1e-6)
    assert stats["entropy_of_mean"] == pytest.approx(1.0, abs=1e-6)
    assert stats["prototypes_over_1pct"] == n and stats["tv_pixel_to_image"] == pytest.approx(0.0, abs=1e-12)
    one_hot = torch.zeros(1, n, 2, 2)
    one_hot[0, 3, 0] = 1.0  # top row: prototype 3; bottom row: prototype 7
    one_hot[0, 7, 1] = 1.0
    stats, mean = probe.attention_stats(one_hot)
    assert stats["entropy_pixel"] == pytest.approx(0.0, abs=1e-9)
    assert stats["prototypes_over_1pct"] == 2 and stats["tv_pixel_to_image"] == pytest.approx(0.5)
    np.testing.assert_allclose(mean[[3, 7]], [0.5, 0.5])


def test_derangement_moves_every_prototype():
    perm = probe.derangement(25)
    assert sorted(perm.tolist()) == list(range(25)) and not bool((perm == torch.arange(25)).any())


def test_command_writes_tables_and_names_a_missing_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(probe, "METRICS", ("SSIM",))  # the cheapest of the four: this checks the plumbing
    rng = np.random.default_rng(0)
    for name in ("a",):
        for modality in ("ir", "vi"):
            folder = tmp_path / "val" / "Tiny" / modality
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (44, 48), dtype=np.uint8)).save(folder / f"{name}.png")
    ckpt = save_model(tmp_path / "net.safetensors", small_net())
    plain = save_model(tmp_path / "plain.safetensors", small_net(use_baffm=False))
    out = tmp_path / "out"
    args = ["-o", str(out), "--val", str(tmp_path / "val"), "--no-progress", "--model", f"net={ckpt}", "--model", f"ref={plain}"]
    assert probe.main(args) == 0
    with open(out / "probe.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    got = {(r["model"], r["image"], r["variant"], r["quantity"]) for r in rows}
    assert ("net", "a", "set-mean", "abs_change_grey") in got and ("ref", "a", "baseline", "SSIM") in got
    assert ("ref", "a", "removed", "abs_change_grey") not in got  # no interventions on a network without BAFFM
    assert "## Interventions on g" in (out / "probe.md").read_text()

    assert probe.main(["-o", str(out), "--val", str(tmp_path / "val"), "--model", f"x={tmp_path / 'gone.safetensors'}"]) == 2
    assert "gone.safetensors: no such checkpoint file" in capsys.readouterr().err
    with pytest.raises(CausalFuseError, match="expected NAME=PATH"):
        probe.parse_model("no-name")

"""benchmarks/peer_nets.py: the published networks timed beside causalfuse have the published models' layers."""

from __future__ import annotations

import pytest
import torch

from .conftest import benchmark_module

peer_nets = benchmark_module("peer_nets")


@pytest.mark.parametrize("name, params", [("ifcnn", 83_587), ("densefuse", 74_193)])
def test_parameter_counts_are_the_published_models(name, params):
    """The counts ../shared/PEERS.md lists for the authors' models."""
    net, _ = peer_nets.build(name)
    assert sum(p.numel() for p in net.parameters()) == params


@pytest.mark.parametrize("name, out_channels", [("ifcnn", 3), ("densefuse", 1)])
def test_a_pair_of_any_size_gives_an_image_of_that_size(name, out_channels):
    net, channels = peer_nets.build(name)
    ir, vi = torch.rand(1, channels, 13, 21), torch.rand(1, channels, 13, 21)
    with torch.inference_mode():
        out = net(ir, vi)
    assert out.shape == (1, out_channels, 13, 21) and torch.isfinite(out).all()


def test_fusion_rules_maximum_and_sum():
    """IFCNN takes the elementwise maximum of the two feature maps, DenseFuse their sum: swapping the sources changes nothing."""
    for name in ("ifcnn", "densefuse"):
        net, channels = peer_nets.build(name)
        a, b = torch.rand(1, channels, 9, 11), torch.rand(1, channels, 9, 11)
        with torch.inference_mode():
            torch.testing.assert_close(net(a, b), net(b, a), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="unknown network"):
        peer_nets.build("seafusion")

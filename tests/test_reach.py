"""benchmarks/reach.py: a network's gradient stays within its receptive radius."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import benchmark_module
from .test_net import small_net

reach = benchmark_module("reach")


@pytest.mark.parametrize("kernel", [3, 7])
def test_the_gradient_stays_within_the_receptive_radius(kernel):
    net = small_net(reconstruction_kernel=kernel).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(1)
    ir, vi = rng.random((40, 44)), rng.random((40, 44))
    mass = reach.gradient_by_radius(net, ir, vi, [(20, 21), (18, 25)], window=15)
    r = net.receptive_radius
    assert mass.shape == (2, 16)
    assert (mass[:, : r + 1].sum(axis=1) > 0).all()  # both sources reach the output
    assert mass[:, r + 1 :].sum() == 0  # nothing beyond the theoretical radius
    assert (mass[:, r] > 0).all()  # ... and its edge is reached
    radii = reach.reach(mass)
    for source in ("infrared", "visible"):
        assert radii[source] == sorted(radii[source]) and radii[source][-1] <= r


def test_unknown_model_name_is_one_line(tmp_path, capsys):
    assert reach.main(["--val", str(tmp_path), "--model", "nonesuch"]) == 2
    assert "--model nonesuch: give NAME=FILE" in capsys.readouterr().err

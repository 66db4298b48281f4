"""Folder scoring's process pool: workers that do not inherit the caller's state, and the caller's own metrics."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from causalfuse.errors import CausalFuseError
from causalfuse.metrics import _registry, register_metric
from causalfuse.metrics.folder import find_triplets, score_triplets

_HELD = threading.Lock()


def held_lock_metric(fused, ir, vi):
    """Waits for a lock of this module: in a worker forked from a caller that holds it, it never comes."""
    if not _HELD.acquire(timeout=20):
        return -1.0
    _HELD.release()
    return float(os.getppid())


def mean_difference(fused, ir, vi):
    """A caller's own metric, defined at the top level of an importable module."""
    return float(np.mean(fused) - np.mean(ir))


@pytest.fixture
def triplets(tmp_path):
    rng = np.random.default_rng(1)
    for name in ["a", "b", "c"]:
        for sub in ["ir", "vi", "fused"]:
            (tmp_path / sub).mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (20, 24), dtype=np.uint8)).save(tmp_path / sub / f"{name}.png")
    return find_triplets(tmp_path / "ir", tmp_path / "vi", tmp_path / "fused")


@pytest.fixture
def own_registry(monkeypatch):
    monkeypatch.setattr(_registry, "_METRICS", dict(_registry._METRICS))


def test_workers_are_not_forked_from_the_caller(triplets, own_registry):
    register_metric("HeldLock", higher_is_better=True, reference="test", groups=("test",))(held_lock_metric)
    with _HELD:  # as one of the caller's threads may hold a lock when the pool starts
        rows = score_triplets(triplets, "HeldLock", jobs=2, progress=False)
    assert len(rows) == 3
    assert all(r.value > 0 for r in rows), "a worker waited for a lock its parent held when it forked"
    assert all(int(r.value) != os.getpid() for r in rows), "the workers were forked from the caller"


def test_the_callers_own_metric_is_scored_in_the_workers_as_in_process(triplets, own_registry):
    register_metric("MeanDiff", higher_is_better=True, reference="test", groups=("test",))(mean_difference)
    pooled = score_triplets(triplets, "MI,MeanDiff", jobs=2, progress=False)
    assert pooled == score_triplets(triplets, "MI,MeanDiff", jobs=1, progress=False)
    assert [r.metric for r in pooled[:2]] == ["MI", "MeanDiff"] and len(pooled) == 6


def test_a_metric_the_workers_cannot_import_is_refused_by_name(triplets, own_registry):
    @register_metric("Local", higher_is_better=True, reference="test", groups=("test",))
    def local(fused, ir, vi):
        return 0.0

    with pytest.raises(CausalFuseError, match=r"metric 'Local' cannot be sent to the scoring processes.*jobs=1"):
        score_triplets(triplets, "Local", jobs=2, progress=False)
    assert len(score_triplets(triplets, "Local", jobs=1, progress=False)) == 3


def test_a_main_script_read_from_stdin_is_refused(triplets, monkeypatch):
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "__spec__", None, raising=False)
    monkeypatch.setattr(main, "__file__", "<stdin>", raising=False)
    with pytest.raises(CausalFuseError, match=r"calling script as a file .* not '<stdin>'; score with jobs=1"):
        score_triplets(triplets, "MI", jobs=2, progress=False)

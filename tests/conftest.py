"""Shared fixtures.

Reference data (LRRNet weights, MATLAB metric values, image pairs) is never
copied into the repository: tests read it from ``../shared`` beside the
checkout (or from ``$CAUSALFUSE_SHARED``) and skip, saying why, where it is
absent.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CAUSALFUSE_SHARED", REPO.parent / "shared")).resolve()

# torch.compile costs seconds per new shape; tests run the eager kernels
# (the same arithmetic) unless a test turns compilation on itself.
os.environ.setdefault("CAUSALFUSE_COMPILE", "0")

# Two cores here; tests must not fight each other for them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


#: The device the device-independent tests run on: ``CAUSALFUSE_TEST_DEVICE=cuda``
#: runs the tests that take the ``device`` fixture on a GPU (benchmarks/gpu_check.sh)
#: and leaves the others (file formats, command lines, metrics on NumPy arrays)
#: out; by default every test runs on the CPU.
TEST_DEVICE = os.environ.get("CAUSALFUSE_TEST_DEVICE", "cpu").strip().lower() or "cpu"


def pytest_configure(config: pytest.Config) -> None:
    # One clear line, before any test, rather than an error in every test that takes the fixture.
    if TEST_DEVICE != "cpu" and not TEST_DEVICE.startswith("cuda"):
        raise pytest.UsageError(f"CAUSALFUSE_TEST_DEVICE={TEST_DEVICE!r}: choose cpu or cuda")
    if TEST_DEVICE.startswith("cuda") and not torch.cuda.is_available():
        raise pytest.UsageError(f"CAUSALFUSE_TEST_DEVICE={TEST_DEVICE} but CUDA is not available here (torch {torch.__version__})")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # On a GPU only the tests that take the device fixture say anything new: the others are left out.
    if TEST_DEVICE == "cpu":
        return
    keep = [item for item in items if "device" in getattr(item, "fixturenames", ())]
    left_out = [item for item in items if "device" not in getattr(item, "fixturenames", ())]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        items[:] = keep


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device of the device-independent tests (``CAUSALFUSE_TEST_DEVICE``, default ``cpu``)."""
    return torch.device(TEST_DEVICE)


def benchmark_module(script: str) -> ModuleType:
    """A script of ``benchmarks/`` imported as a module (once per session), e.g. ``"lrr_plain"``."""
    name = f"causalfuse_bench_{script}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{script}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def shared_path(*parts: str) -> Path:
    """Path below the shared folder, or skip the test naming what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not available: {path} (set CAUSALFUSE_SHARED to the shared folder)")
    return path


@pytest.fixture
def lrrnet_weights() -> Path:
    return shared_path("weights", "lrrnet", "lrrnet_official.model")


@pytest.fixture
def val_data() -> Path:
    return shared_path("data", "val")


@pytest.fixture
def train_data() -> Path:
    return shared_path("data", "train")


@pytest.fixture
def oracle_dir() -> Path:
    return shared_path("oracle")


def more_metrics_reference(columns) -> dict[str, dict[tuple[str, str], float]]:
    """``oracle/more_metrics/reference.csv`` as {metric: {(image, method): value}} for the given metric columns."""
    import csv
    from collections import defaultdict

    path = shared_path("oracle", "more_metrics", "reference.csv")
    table: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            if row["metric"] in columns:
                table[row["metric"]][(row["image"], row["method"])] = float(row["value"])
    return table


def textured_triplet(shape=(41, 37), seed=0):
    """Textured 8-bit sources and a fused mix, as float arrays of integer values (decoded images)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    base = ndimage.gaussian_filter(rng.random(shape) * 255, 2) * 3 - 200
    ir = np.clip(np.round(base + rng.normal(0, 10, shape)), 0, 255)
    vi = np.clip(np.round(255 - base + rng.normal(0, 20, shape)), 0, 255)
    fused = np.clip(np.round(0.5 * ir + 0.5 * vi + rng.normal(0, 5, shape)), 0, 255)
    return fused, ir, vi

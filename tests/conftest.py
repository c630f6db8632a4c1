"""Fixtures shared by every test layer: where the offline datasets are, and a scratch data dir."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from tiny_models import train_small_model

from serving.constants import Flavor

REPO_ROOT = Path(__file__).resolve().parents[1]
# The repository carries the MNIST test set (tests/data/README.md), so a clone needs nothing beside it.
TEST_DATA = REPO_ROOT / "tests" / "data"
TRAIN_IMAGES = 3000  # of the mnist-t10k training part: enough for >= 90 % with the small models


@pytest.fixture(scope="session")
def data_root() -> Path:
    """A data root with one folder per dataset (`mnist/` holds the official t10k IDX files)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def t10k_dir(data_root: Path) -> Path:
    """A --data-dir holding the two official MNIST t10k IDX files (the mnist-t10k protocol)."""
    return data_root / "mnist"


@pytest.fixture(scope="session")
def t10k(t10k_dir: Path):
    from training.datasets import load_dataset

    return load_dataset("mnist-t10k", t10k_dir)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, t10k) -> Callable[[Flavor], Path]:
    """flavor -> an OUT folder holding that flavor's small model (trained once per session, on first use:
    the serving tests and the page's browser test share them)."""
    built: dict[Flavor, Path] = {}
    x = t10k.x_train[:TRAIN_IMAGES].reshape(TRAIN_IMAGES, 784).astype(np.float32) / 255.0
    y = t10k.y_train[:TRAIN_IMAGES]

    def get(flavor: Flavor) -> Path:
        if flavor not in built:
            out = tmp_path_factory.mktemp(f"small-{flavor.value}")
            train_small_model(flavor, x, y, out)
            built[flavor] = out
        return built[flavor]

    return get


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What a champion gate (infra/gate_provider.py) sends to the Pulumi log as warnings."""
    from infra import gate_provider

    sent: list[str] = []
    monkeypatch.setattr(gate_provider, "warn", sent.append)
    return sent


def pytest_configure(config: pytest.Config) -> None:
    """Keep the user's cache out of the suite: datasets and staged files go to a fresh folder per run."""
    import tempfile

    from platformdirs import user_cache_dir

    # The venvs of older runtimes (bench/runtime_venv.py) take minutes to build: they stay in the real cache.
    os.environ.setdefault(
        "MNIST_PLATFORM_RUNTIME_VENVS", str(Path(user_cache_dir("mnist-platform")) / "runtime-venvs")
    )
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mnist-platform-test-cache-")

"""Fixtures shared by every test layer: where the offline datasets are, and a scratch data dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The repository carries the MNIST test set (tests/data/README.md), so a clone needs nothing beside it.
TEST_DATA = REPO_ROOT / "tests" / "data"


@pytest.fixture(scope="session")
def data_root() -> Path:
    """A data root with one folder per dataset (`mnist/` holds the official t10k IDX files)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def t10k_dir(data_root: Path) -> Path:
    """A --data-dir holding the two official MNIST t10k IDX files (the mnist-t10k protocol)."""
    return data_root / "mnist"


def pytest_configure(config: pytest.Config) -> None:
    """Keep the user's cache out of the suite: datasets and staged files go to a fresh folder per run."""
    import tempfile

    from platformdirs import user_cache_dir

    # The venvs of older runtimes (bench/runtime_venv.py) take minutes to build: they stay in the real cache.
    os.environ.setdefault(
        "MNIST_PLATFORM_RUNTIME_VENVS", str(Path(user_cache_dir("mnist-platform")) / "runtime-venvs")
    )
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mnist-platform-test-cache-")

"""Fixtures shared by every test layer: where the offline datasets are, and a scratch data dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data holds the MNIST test set for offline runs (CI puts shared/ beside the clone).
SHARED_DATA = Path(os.environ.get("MNIST_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline dataset folder; the suite cannot prove training or serving without it."""
    if not (SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(
            f"offline datasets not found at {SHARED_DATA}: "
            "set MNIST_SHARED_DATA or put shared/ beside the repo"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def t10k_dir(shared_data: Path) -> Path:
    """A --data-dir holding the two official MNIST t10k IDX files (the mnist-t10k protocol)."""
    return shared_data / "mnist"


def pytest_configure(config: pytest.Config) -> None:
    """Keep the user's cache out of the suite: datasets and staged files go to a fresh folder per run."""
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="mnist-platform-test-cache-")

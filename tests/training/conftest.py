"""Fixtures of the training tests: small real splits cut from the offline MNIST test set."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.datasets import Split, load_dataset


@pytest.fixture(scope="session")
def t10k_split(t10k_dir: Path) -> Split:
    return load_dataset("mnist-t10k", t10k_dir)


@pytest.fixture(scope="session")
def small_split(t10k_split: Split) -> Split:
    """300 training and 100 test images: enough to train a model that is clearly better than chance."""
    return t10k_split.head(300, 100)

"""Held-out test digits to send to an endpoint: the evaluation part of the mnist-t10k protocol, which no
model of this project trains on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serving.constants import PIXELS


def sample_digits(count: int, data_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` held-out MNIST test digits: float32 [count, 784] in [0, 1] and their labels.

    Raises `training.datasets.DatasetError` when the MNIST test files are not in `data_dir` (or the cache).
    """
    from training.datasets import DatasetName, load_dataset

    split = load_dataset(DatasetName.MNIST_T10K, data_dir)
    if not 1 <= count <= split.n_test:
        raise ValueError(f"--sample must be between 1 and {split.n_test}; got {count}")
    images = split.x_test[:count].reshape(count, PIXELS).astype(np.float32) / 255.0
    return images, split.y_test[:count].astype(np.int64)

"""Tiny real models for tests that need something to serve but not a trainer: seconds, not minutes."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np


def train_tiny_xgboost(out: Path, data_dir: Path, images: int = 2000, rounds: int = 5) -> Path:
    """An OUT folder as `mnistctl train --framework xgboost` lays it out (`model.tar.gz` holding
    `xgboost-model`), a `multi:softprob` booster trained on the first `images` mnist-t10k digits."""
    import xgboost

    from training.datasets import DatasetName, load_dataset

    split = load_dataset(DatasetName.MNIST_T10K, data_dir)
    x = split.x_train[:images].reshape(images, -1).astype(np.float32) / 255.0
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 10, "max_depth": 4, "nthread": 1},
        xgboost.DMatrix(x, label=split.y_train[:images]),
        num_boost_round=rounds,
    )
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "xgboost-model.ubj"
    booster.save_model(str(saved))
    with tarfile.open(out / "model.tar.gz", "w:gz") as tar:
        tar.add(saved, arcname="xgboost-model")
    saved.unlink()
    return out

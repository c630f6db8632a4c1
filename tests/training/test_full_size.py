"""Full-size data offline: Debian's Fashion-MNIST (60,000 + 10,000 images) read, verified and trained on.

Runs where the `dataset-fashion-mnist` package is installed (`.ci/run` installs it); skipped, saying
so, everywhere else. Each trainer sees a few hundred of the images (its dry run): seconds, not minutes.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from training import datasets
from training.datasets import DatasetName, load_dataset, system_dataset_dir
from training.run import train_model

FASHION = system_dataset_dir(DatasetName.FASHION_MNIST)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        FASHION is None,
        reason="Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist "
        f"(puts it under {datasets.SYSTEM_DATASET_DIRS[DatasetName.FASHION_MNIST]})",
    ),
]


def test_debian_files_are_recompressed_yet_verified_by_content() -> None:
    assert FASHION is not None
    source = datasets.SOURCES[DatasetName.FASHION_MNIST]
    for remote in source.files:
        raw = (FASHION / remote.name).read_bytes()
        # Not the publisher's .gz (that is why the md5 check alone rejected them), the same content.
        assert hashlib.md5(raw, usedforsecurity=False).hexdigest() != remote.md5
        assert hashlib.sha256(gzip.decompress(raw)).hexdigest() == remote.content_sha256


def test_full_fashion_mnist_loads_without_a_data_dir() -> None:
    split = load_dataset("fashion-mnist")

    assert (split.n_train, split.n_test) == (60_000, 10_000)
    assert np.bincount(split.y_train).tolist() == [6_000] * 10
    assert np.bincount(split.y_test).tolist() == [1_000] * 10


@pytest.mark.parametrize("framework", ["xgboost", "tensorflow", "pytorch"])
def test_each_trainer_learns_from_a_few_hundred_fashion_images(framework: str, tmp_path: Path) -> None:
    metrics = train_model(framework, "fashion-mnist", None, tmp_path, {}, dry_run=True, threads=2)

    assert (metrics["dataset"], metrics["n_train"], metrics["n_test"]) == ("fashion-mnist", 512, 256)
    assert metrics["accuracy"] > 0.4  # ten classes: chance is 0.1
    if framework != "xgboost":
        assert metrics["hyperparameters"]["flip"] is True  # the dataset's preset, under the dry run

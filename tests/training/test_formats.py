"""The formats the platforms' trainers read: SageMaker CSV channels and the TF trainer's npz files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from training.datasets import Split
from training.formats import (
    read_csv_channel,
    read_npz_split,
    write_npz,
    write_sagemaker_csv,
)


def _digest(paths: list[Path]) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()


def test_csv_channels_are_label_first_without_header_and_pixels_in_unit_range(
    small_split: Split, tmp_path: Path
) -> None:
    files = write_sagemaker_csv(small_split, tmp_path)

    assert files == {
        "train": [tmp_path / "train" / "train.csv"],
        "validation": [tmp_path / "validation" / "validation.csv"],
    }
    lines = files["train"][0].read_text().splitlines()
    assert len(lines) == small_split.n_train
    first = lines[0].split(",")
    assert len(first) == 1 + 784
    assert first[0] == str(small_split.y_train[0])  # label first, no header line
    values = np.array(first[1:], dtype=np.float64)
    assert values.min() >= 0.0 and values.max() <= 1.0
    np.testing.assert_allclose(values * 255, small_split.x_train[0].ravel(), atol=1e-4)


def test_csv_bytes_are_identical_on_every_run(small_split: Split, tmp_path: Path) -> None:
    first = write_sagemaker_csv(small_split, tmp_path / "a", shards=3)
    second = write_sagemaker_csv(small_split, tmp_path / "b", shards=3)
    for channel in ("train", "validation"):
        assert _digest(first[channel]) == _digest(second[channel])


def test_csv_pixels_parse_to_the_float32_a_client_sends(small_split: Split, tmp_path: Path) -> None:
    # Tree splits compare float32 values: the training CSV must parse to exactly what k/255 gives.
    files = write_sagemaker_csv(small_split, tmp_path)
    features, labels = read_csv_channel(files["validation"][0].parent)
    expected = (small_split.x_test.reshape(-1, 784) / 255.0).astype(np.float32)
    np.testing.assert_array_equal(features, expected)
    np.testing.assert_array_equal(labels, small_split.y_test.astype(np.float32))


def test_sharded_train_channel_holds_every_row_exactly_once_in_order(
    small_split: Split, tmp_path: Path
) -> None:
    files = write_sagemaker_csv(small_split, tmp_path, shards=4)

    assert [p.name for p in files["train"]] == [f"train-{i:03d}-of-004.csv" for i in range(4)]
    assert len(files["validation"]) == 1
    _, labels = read_csv_channel(tmp_path / "train")
    np.testing.assert_array_equal(labels, small_split.y_train.astype(np.float32))


def test_rewriting_with_fewer_shards_leaves_no_stale_files(small_split: Split, tmp_path: Path) -> None:
    write_sagemaker_csv(small_split, tmp_path, shards=4)
    write_sagemaker_csv(small_split, tmp_path, shards=1)
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["train.csv"]


def test_zero_shards_is_refused(small_split: Split, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shards"):
        write_sagemaker_csv(small_split, tmp_path, shards=0)


def test_npz_round_trip_keeps_the_split_and_its_bytes_are_reproducible(
    small_split: Split, tmp_path: Path
) -> None:
    first = write_npz(small_split, tmp_path / "a")
    second = write_npz(small_split, tmp_path / "b")
    loaded = read_npz_split(tmp_path / "a")

    assert first["train"].read_bytes() == second["train"].read_bytes()
    assert first["test"].read_bytes() == second["test"].read_bytes()
    np.testing.assert_array_equal(loaded.x_train, small_split.x_train)
    np.testing.assert_array_equal(loaded.y_test, small_split.y_test)
    assert loaded.x_train.dtype == np.uint8

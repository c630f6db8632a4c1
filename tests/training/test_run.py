"""train_model, the entry point of `mnistctl train`: argument checks that fail before any training."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from training.datasets import DatasetNotFoundError
from training.hyperparameters import parse_assignments
from training.run import hyperparameters_for, train_model


def test_unknown_framework_lists_the_allowed_ones(t10k_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="choose one of xgboost, tensorflow, pytorch"):
        train_model("sklearn", "mnist-t10k", t10k_dir, tmp_path)


def test_unknown_override_is_refused_before_the_data_is_read(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="allowed are epochs, batch_size, learning_rate"):
        train_model("pytorch", "mnist-t10k", tmp_path / "nowhere", tmp_path, {"epoch": "3"})


def test_missing_data_raises_the_typed_error_the_cli_prints(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"t10k-images-idx3-ubyte\.gz not found in"):
        train_model("xgboost", "mnist-t10k", tmp_path, tmp_path / "out")


def test_user_overrides_win_over_dry_run_settings() -> None:
    hp = hyperparameters_for("xgboost", {"num_round": "5"}, dry_run=True)
    assert (hp.num_round, hp.max_depth) == (5, 3)  # num_round from the user, max_depth from the dry run


def test_boolean_overrides_accept_true_and_false() -> None:
    assert hyperparameters_for("pytorch", {"augment": "false"}, dry_run=False).augment is False
    with pytest.raises(ValueError, match="augment='maybe' is not a valid bool"):
        hyperparameters_for("pytorch", {"augment": "maybe"}, dry_run=False)


def test_set_options_parse_to_a_dict_and_reject_missing_equals() -> None:
    assert parse_assignments(["eta=0.1", "max_depth = 8"]) == {"eta": "0.1", "max_depth": "8"}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_assignments(["eta"])


def test_fashion_mnist_preset_flips_clothes_but_digits_are_never_flipped() -> None:
    for framework in ("tensorflow", "pytorch"):
        clothes = hyperparameters_for(framework, {}, dry_run=False, dataset="fashion-mnist")
        digits = hyperparameters_for(framework, {}, dry_run=False, dataset="mnist-t10k")
        assert (clothes.flip, clothes.label_smoothing) == (True, 0.1)
        assert digits.flip is False
        assert digits == hyperparameters_for(framework, {}, dry_run=False)  # digits: the trainer's defaults


def test_long_preset_widens_the_cnn_and_trains_longer_than_standard() -> None:
    standard = hyperparameters_for("pytorch", {}, dry_run=False, dataset="fashion-mnist")
    long = hyperparameters_for("pytorch", {}, dry_run=False, dataset="fashion-mnist", preset="long")
    assert long.width > standard.width and long.epochs > standard.epochs
    assert long.flip is True  # the dataset's standard settings stay under the preset


def test_tensorflows_long_preset_on_clothes_trains_the_standard_network_longer() -> None:
    # TensorFlow's step is 1.5x PyTorch's here: the wider network would not fit 900 s (docs/training.md).
    standard = hyperparameters_for("tensorflow", {}, dry_run=False, dataset="fashion-mnist")
    long = hyperparameters_for("tensorflow", {}, dry_run=False, dataset="fashion-mnist", preset="long")
    assert long.epochs > standard.epochs
    assert dataclasses.replace(long, epochs=standard.epochs) == standard
    digits = hyperparameters_for("tensorflow", {}, dry_run=False, dataset="mnist-t10k", preset="long")
    assert digits.width == 32  # elsewhere both CNNs share `long`


def test_user_overrides_and_dry_run_win_over_the_preset() -> None:
    overrides = {"flip": "false"}
    hp = hyperparameters_for("pytorch", overrides, dry_run=True, dataset="fashion-mnist", preset="long")
    assert hp.flip is False  # the user
    assert hp.epochs == 3  # the dry run
    assert hp.width == 24  # the preset


def test_unknown_preset_lists_the_allowed_ones(t10k_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown preset 'huge': choose one of standard, long"):
        train_model("pytorch", "mnist-t10k", t10k_dir, tmp_path, preset="huge")

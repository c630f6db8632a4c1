"""train_model, the entry point of `mnistctl train`: argument checks that fail before any training."""

from __future__ import annotations

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

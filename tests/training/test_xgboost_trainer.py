"""XGBoost trained as SageMaker's built-in algorithm: hyperparameters as strings, model.tar.gz artifact."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from training import xgboost_trainer
from training.datasets import Split
from training.formats import write_sagemaker_csv
from training.run import hyperparameters_for, train_model
from training.xgboost_trainer import MODEL_MEMBER, Hyperparameters, load_model


@pytest.fixture(scope="module")
def trained(small_split: Split, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A dry-run model trained from CSV channels, the way a SageMaker TrainingJob trains it."""
    channels = tmp_path_factory.mktemp("channels")
    write_sagemaker_csv(small_split, channels)
    out = tmp_path_factory.mktemp("xgboost")
    hp = Hyperparameters.from_strings(xgboost_trainer.DRY_RUN_HYPERPARAMETERS)
    metrics = xgboost_trainer.train_and_evaluate(channels, out, hp, nthread=1)
    return out, metrics


def test_hyperparameters_are_the_builtin_algorithm_names_as_strings() -> None:
    hp = Hyperparameters().as_sagemaker()

    assert all(isinstance(v, str) for v in hp.values())
    assert hp["objective"] == "multi:softprob" and hp["num_class"] == "10"
    assert {
        "num_round",
        "max_depth",
        "eta",
        "subsample",
        "min_child_weight",
        "eval_metric",
        "tree_method",
    } <= set(hp)
    assert Hyperparameters.from_strings(hp) == Hyperparameters()


def test_string_overrides_are_parsed_to_their_types() -> None:
    hp = Hyperparameters.from_strings({"num_round": "7", "eta": "0.05", "tree_method": "approx"})
    assert (hp.num_round, hp.eta, hp.tree_method) == (7, 0.05, "approx")


def test_unknown_hyperparameter_is_refused_with_the_allowed_names() -> None:
    with pytest.raises(
        ValueError, match=r"unknown hyperparameter\(s\) learning_rate: allowed are num_round, "
    ):
        hyperparameters_for("xgboost", {"learning_rate": "0.1"}, dry_run=False)


def test_malformed_value_is_refused_naming_the_hyperparameter() -> None:
    with pytest.raises(ValueError, match="max_depth='deep' is not a valid int"):
        Hyperparameters.from_strings({"max_depth": "deep"})


def test_artifact_is_a_tarball_holding_only_xgboost_model(trained: tuple[Path, dict]) -> None:
    out, _ = trained
    with tarfile.open(out / "model.tar.gz", "r:gz") as tar:
        assert tar.getnames() == [MODEL_MEMBER]
        data = tar.extractfile(MODEL_MEMBER).read()  # type: ignore[union-attr]
    assert data[:1] == b"{"  # UBJSON, as XGBoost 3.0.5 writes it
    assert json.loads((out / "hyperparameters.json").read_text())["num_round"] == 3


def test_model_reloads_from_the_tarball_and_predicts_ten_probabilities(
    trained: tuple[Path, dict], small_split: Split
) -> None:
    out, metrics = trained
    booster = load_model(out / "model.tar.gz")
    features = small_split.x_test.reshape(-1, 784).astype(np.float32) / 255

    probabilities = booster.predict(xgb.DMatrix(features))

    assert probabilities.shape == (small_split.n_test, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == small_split.y_test))
    assert accuracy == pytest.approx(metrics["accuracy"])
    assert accuracy > 0.5  # far above chance (0.1) even after three rounds on 300 images


def test_saved_model_has_the_scalar_base_score_that_xgboost_1_7_needs(trained: tuple[Path, dict]) -> None:
    booster = load_model(trained[0] / "model.tar.gz")
    base_score = json.loads(booster.save_config())["learner"]["learner_model_param"]["base_score"]
    # One number, not a per-class vector ("[...]", as XGBoost >= 3.1 writes, which 1.7 mispredicts).
    assert isinstance(base_score, str) and not base_score.lstrip().startswith("[")
    assert re.fullmatch(r"-?\d+(\.\d*)?([eE][-+]?\d+)?", base_score.strip()), base_score
    assert 0.0 <= float(base_score) <= 1.0  # a probability for multi:softprob


def test_same_data_and_hyperparameters_give_the_same_artifact_bytes(
    trained: tuple[Path, dict], small_split: Split, tmp_path: Path
) -> None:
    channels = tmp_path / "channels"
    write_sagemaker_csv(small_split, channels)
    hp = Hyperparameters.from_strings(xgboost_trainer.DRY_RUN_HYPERPARAMETERS)
    xgboost_trainer.train_and_evaluate(channels, tmp_path / "again", hp, nthread=1)
    assert (tmp_path / "again" / "model.tar.gz").read_bytes() == (trained[0] / "model.tar.gz").read_bytes()


def test_dry_run_from_the_dataset_writes_the_artifact_and_metrics(t10k_dir: Path, tmp_path: Path) -> None:
    reports: list[tuple[int, int, str]] = []

    metrics = train_model(
        "xgboost", "mnist-t10k", t10k_dir, tmp_path, {}, dry_run=True, progress=lambda *a: reports.append(a)
    )

    assert (tmp_path / "model.tar.gz").is_file()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == metrics
    for key in ("accuracy", "n_train", "n_test", "train_seconds", "framework", "dataset", "hyperparameters"):
        assert key in written
    assert (written["framework"], written["dataset"], written["n_train"]) == ("xgboost", "mnist-t10k", 512)
    assert reports[-1][0] == reports[-1][1] == 3  # one report per boosting round, ending at the total


def test_main_trains_from_existing_csv_channels(small_split: Split, tmp_path: Path) -> None:
    write_sagemaker_csv(small_split, tmp_path / "channels")
    metrics = xgboost_trainer.main(
        [
            "--channels",
            str(tmp_path / "channels"),
            "--out",
            str(tmp_path / "out"),
            "--dry-run",
            "--nthread",
            "1",
        ]
    )
    assert metrics["n_train"] == small_split.n_train
    assert (tmp_path / "out" / "model.tar.gz").is_file() and (tmp_path / "out" / "metrics.json").is_file()

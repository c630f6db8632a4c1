"""XGBoost with the semantics of SageMaker's built-in XGBoost algorithm.

Same input (``train/`` and ``validation/`` channels of label-first, headerless CSV), same
hyperparameter names and string values, same artifact (``model.tar.gz`` holding ``xgboost-model``),
so a model trained here and one trained by a SageMaker TrainingJob are interchangeable.

The artifact is UBJSON as XGBoost 3.0.5 writes it: its ``base_score`` is a scalar, which is what lets
SageMaker's 1.7-1 image load it and predict the same probabilities as 3.x (see docs/training.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb
from xgboost.callback import TrainingCallback

from training.artifacts import read_tar_member, write_tar_gz
from training.formats import TRAIN_CHANNEL, VALIDATION_CHANNEL, read_csv_channel
from training.hyperparameters import (
    METRICS_FILE,
    ProgressCallback,
    as_strings,
    parse_assignments,
    save_hyperparameters,
    with_overrides,
)

MODEL_ARCHIVE = "model.tar.gz"
MODEL_MEMBER = "xgboost-model"  # the name SageMaker's XGBoost containers write and serve
DRY_RUN_HYPERPARAMETERS = {"num_round": "3", "max_depth": "3"}
DRY_RUN_IMAGES = (512, 256)


@dataclass(frozen=True)
class Hyperparameters:
    """Named exactly as the built-in algorithm takes them; ``as_sagemaker()`` gives the strings it expects."""

    # Tuned on mnist-t10k (see bench/results/train.json): 96.5 % there, ~36 CPU-seconds of training.
    num_round: int = 150
    max_depth: int = 6
    eta: float = 0.2
    gamma: float = 0.0
    min_child_weight: float = 1.0
    subsample: float = 0.8
    colsample_bytree: float = 0.4
    max_bin: int = 32  # pixels take at most 256 values; 32 bins cost no accuracy here and much time
    tree_method: str = "hist"
    objective: str = "multi:softprob"  # probabilities, not only a class, for every client
    num_class: int = 10
    # Comma-separated, as the built-in algorithm takes it. merror on the validation channel is what the
    # champion gate reads on SageMaker (accuracy = 1 - validation:merror, the same as metrics.json here).
    eval_metric: str = "merror,mlogloss"
    seed: int = 0

    def as_sagemaker(self) -> dict[str, str]:
        """The ``hyper_parameters`` map of an ``aws.sagemaker.TrainingJob`` (all values strings)."""
        return as_strings(self)

    @property
    def eval_metrics(self) -> list[str]:
        """`eval_metric` as the list XGBoost takes (the container splits the string the same way)."""
        return [name.strip() for name in self.eval_metric.split(",") if name.strip()]

    @classmethod
    def from_strings(cls, values: Mapping[str, str]) -> Hyperparameters:
        """Parse a map of strings (``as_sagemaker()`` output or user overrides) on top of the defaults."""
        return with_overrides(cls(), values)

    def booster_params(self, nthread: int | None = None) -> dict[str, Any]:
        """The params of ``xgb.train``: every hyperparameter but ``num_round``, as the container does."""
        params: dict[str, Any] = dataclasses.asdict(self)
        params.pop("num_round")
        params["eval_metric"] = self.eval_metrics
        if nthread is not None:
            params["nthread"] = nthread
        return params


class _ReportProgress(TrainingCallback):
    def __init__(self, progress: ProgressCallback, total: int) -> None:
        super().__init__()
        self.progress = progress
        self.total = total

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        scores = evals_log.get("validation", {})
        last = {name: values[-1] for name, values in scores.items() if values}
        message = " ".join(
            f"{name} {float(np.asarray(value).ravel()[0]):.4f}" for name, value in last.items()
        )
        self.progress(epoch + 1, self.total, f"round {epoch + 1}/{self.total} {message}".rstrip())
        return False  # never stop early


def read_channels(channels: Path) -> tuple[xgb.DMatrix, xgb.DMatrix]:
    """The ``train`` and ``validation`` channels of a folder, as DMatrix."""
    x_train, y_train = read_csv_channel(Path(channels) / TRAIN_CHANNEL)
    x_valid, y_valid = read_csv_channel(Path(channels) / VALIDATION_CHANNEL)
    return xgb.DMatrix(x_train, label=y_train), xgb.DMatrix(x_valid, label=y_valid)


def train(
    dtrain: xgb.DMatrix,
    dvalid: xgb.DMatrix,
    hp: Hyperparameters,
    nthread: int | None = None,
    progress: ProgressCallback | None = None,
    callbacks: Sequence[TrainingCallback] = (),
) -> xgb.Booster:
    """``callbacks`` hear every boosting round's validation metrics (training/tuning.py prunes with them)."""
    reporting = [_ReportProgress(progress, hp.num_round)] if progress else []
    return xgb.train(
        hp.booster_params(nthread),
        dtrain,
        num_boost_round=hp.num_round,
        evals=[(dvalid, "validation")],
        verbose_eval=False,
        callbacks=[*reporting, *callbacks] or None,
    )


def predict_proba(booster: xgb.Booster, features: np.ndarray) -> np.ndarray:
    """Probabilities float32 [N, 10] for features float32 [N, 784] in [0, 1]."""
    return np.asarray(booster.predict(xgb.DMatrix(features)), dtype=np.float32)


def evaluate(booster: xgb.Booster, data: xgb.DMatrix) -> float:
    """Accuracy of the most probable class against the DMatrix labels."""
    probabilities = booster.predict(data)
    return float(np.mean(np.argmax(probabilities, axis=1) == data.get_label().astype(int)))


def save_model(booster: xgb.Booster, out_dir: Path) -> Path:
    """Write ``out_dir/model.tar.gz`` holding only ``xgboost-model`` (UBJSON); same bytes every time."""
    # save_raw("ubj") is byte for byte what booster.save_model("xgboost-model") writes in XGBoost 3.0.5,
    # without the warning it prints for a file name that has no extension.
    model_bytes = bytes(booster.save_raw(raw_format="ubj"))
    path = Path(out_dir) / MODEL_ARCHIVE
    write_tar_gz(path, {MODEL_MEMBER: model_bytes})
    return path


def load_model(archive: Path) -> xgb.Booster:
    """The booster inside a SageMaker-style ``model.tar.gz`` (ours, or one a TrainingJob wrote)."""
    data = read_tar_member(Path(archive), MODEL_MEMBER)
    booster = xgb.Booster()
    # From bytes: a path without extension would make XGBoost guess the format from the name.
    booster.load_model(bytearray(data))
    return booster


def train_and_evaluate(
    channels: Path,
    out_dir: Path,
    hp: Hyperparameters,
    *,
    dry_run: bool = False,
    nthread: int | None = None,
    progress: ProgressCallback | None = None,
    callbacks: Sequence[TrainingCallback] = (),
) -> dict[str, Any]:
    """Train on ``channels/train``, evaluate on ``channels/validation``; write the artifact."""
    dtrain, dvalid = read_channels(channels)
    if dry_run:
        n_train, n_test = DRY_RUN_IMAGES
        dtrain = dtrain.slice(np.arange(min(n_train, dtrain.num_row())))
        dvalid = dvalid.slice(np.arange(min(n_test, dvalid.num_row())))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    booster = train(dtrain, dvalid, hp, nthread=nthread, progress=progress, callbacks=callbacks)
    train_seconds = time.perf_counter() - started
    artifact = save_model(booster, out_dir)
    save_hyperparameters(hp, out_dir)
    return {
        "accuracy": evaluate(booster, dvalid),
        "n_train": int(dtrain.num_row()),
        "n_test": int(dvalid.num_row()),
        "train_seconds": round(train_seconds, 3),
        "artifact": str(artifact),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train XGBoost as SageMaker's built-in algorithm does.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--channels", type=Path, help="folder with train/ and validation/ CSV channels")
    source.add_argument(
        "--dataset", default="mnist-t10k", help="dataset name, converted to CSV channels first"
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="where the dataset is read from / cached")
    parser.add_argument("--out", type=Path, required=True, help="where model.tar.gz and metrics.json go")
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a hyperparameter")
    parser.add_argument("--nthread", type=int, default=None)
    parser.add_argument("--dry-run", action="store_true", help="a few hundred images and rounds: seconds")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    overrides = parse_assignments(args.set)
    if args.channels is None:
        from training.run import train_model

        return train_model(
            "xgboost", args.dataset, args.data_dir, args.out, overrides, args.dry_run, threads=args.nthread
        )
    hp = Hyperparameters()
    if args.dry_run:
        hp = with_overrides(hp, DRY_RUN_HYPERPARAMETERS)
    hp = with_overrides(hp, overrides)
    metrics = train_and_evaluate(args.channels, args.out, hp, dry_run=args.dry_run, nthread=args.nthread)
    metrics |= {
        "framework": "xgboost",
        "dataset": str(args.channels),
        "hyperparameters": dataclasses.asdict(hp),
    }
    (Path(args.out) / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))
    return metrics


if __name__ == "__main__":
    main()

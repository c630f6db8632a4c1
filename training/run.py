"""One entry point for `mnistctl train` and the local stack: dataset in, artifact and metrics.json out.

Each framework goes through the input format its cloud trainer reads (CSV channels for XGBoost, npz for
TensorFlow), so a model trained here is trained exactly as the platform would train it.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import platform
import shutil
import tempfile
from collections.abc import Callable, Mapping
from enum import Enum
from pathlib import Path
from types import ModuleType
from typing import Any

from training.datasets import DatasetName, load_dataset
from training.formats import write_npz, write_sagemaker_csv
from training.hyperparameters import METRICS_FILE, ProgressCallback, with_overrides
from training.presets import Preset, parse_preset, preset_overrides
from training.slots import Slot, SlotQueue


class Framework(str, Enum):  # noqa: UP042  (str, Enum) keeps the package importable on Python 3.10
    XGBOOST = "xgboost"
    TENSORFLOW = "tensorflow"
    PYTORCH = "pytorch"

    def __str__(self) -> str:
        return self.value


_MODULES = {
    Framework.XGBOOST: "training.xgboost_trainer",
    Framework.TENSORFLOW: "training.tf_trainer",
    Framework.PYTORCH: "training.torch_trainer",
}
# The artifact inside OUT, as docs/architecture.md lays it out.
ARTIFACTS = {
    Framework.XGBOOST: "model.tar.gz",
    Framework.TENSORFLOW: "model",
    Framework.PYTORCH: "model.onnx",
}


# The order queued trainings take the machine's slots in (training/slots.py): fastest first, so its endpoint
# answers while the others train (and the mean wait for an endpoint is the shortest). Measured on 2 cores,
# whole `mnistctl train` runs: mnist-t10k xgboost 12.9 s, pytorch 16.8 s, tensorflow 25.2 s
# (bench/results/train-2.json); full Fashion-MNIST xgboost 80 s, pytorch 122-131 s, tensorflow 214-226 s
# (bench/results/train-fashion-mnist-standard-2.json); bench/results/up-*.json measures them again.
TRAINING_ORDER = (Framework.XGBOOST, Framework.PYTORCH, Framework.TENSORFLOW)


def training_priority(framework: Framework | str) -> int:
    """The place of `framework`'s training in the slot queue (0 goes first)."""
    return TRAINING_ORDER.index(parse_framework(framework))


def parse_framework(framework: Framework | str) -> Framework:
    try:
        return Framework(framework)
    except ValueError:
        allowed = ", ".join(f.value for f in Framework)
        raise ValueError(f"unknown framework {framework!r}: choose one of {allowed}") from None


def trainer_module(framework: Framework | str) -> ModuleType:
    """The trainer module, imported on demand: an install with one framework's extra lacks the others."""
    return importlib.import_module(_MODULES[parse_framework(framework)])


def hyperparameters_for(
    framework: Framework | str,
    overrides: Mapping[str, str] | None,
    dry_run: bool,
    dataset: DatasetName | str | None = None,
    preset: Preset | str = Preset.STANDARD,
) -> Any:
    """The trainer's defaults, then the dataset's preset (``training.presets``), then the dry-run settings
    if asked, then the user's overrides (strings)."""
    framework = parse_framework(framework)
    module = trainer_module(framework)
    hp = module.Hyperparameters()
    if dataset is not None:
        hp = with_overrides(hp, preset_overrides(framework.value, dataset, preset))
    if dry_run:
        hp = with_overrides(hp, module.DRY_RUN_HYPERPARAMETERS)
    return with_overrides(hp, overrides or {})


def train_model(
    framework: Framework | str,
    dataset: DatasetName | str,
    data_dir: Path | None,
    out: Path,
    overrides: Mapping[str, str] | None = None,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    *,
    threads: int | None = None,
    preset: Preset | str = Preset.STANDARD,
    slots: SlotQueue | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``framework`` on ``dataset``; write artifact, hyperparameters.json, metrics.json to ``out``.

    The hyperparameters are the trainer's defaults with the dataset's ``preset`` applied
    (``training.presets``), then the dry-run settings, then ``overrides``. Raises ``ValueError`` for an
    unknown framework, dataset, preset or hyperparameter name (the message lists the allowed ones) and
    ``training.datasets.DatasetError`` when the data cannot be loaded.

    With ``slots``, the training queues for one of the machine's training slots (training/slots.py, in
    the order of ``TRAINING_ORDER``) and trains with the slot's share of the cores unless ``threads`` says
    otherwise; ``on_wait`` hears what it waits for.
    """
    framework = parse_framework(framework)
    if slots is None:
        return _train(framework, dataset, data_dir, out, overrides, dry_run, progress, threads, preset, None)
    with slots.ticket(training_priority(framework), f"{framework.value} training") as ticket:
        return _train(
            framework,
            dataset,
            data_dir,
            out,
            overrides,
            dry_run,
            progress,
            threads,
            preset,
            lambda: ticket.wait(on_wait),
        )


def _train(
    framework: Framework,
    dataset: DatasetName | str,
    data_dir: Path | None,
    out: Path,
    overrides: Mapping[str, str] | None,
    dry_run: bool,
    progress: ProgressCallback | None,
    threads: int | None,
    preset: Preset | str,
    take_slot: Callable[[], Slot] | None,
) -> dict[str, Any]:
    # The slot first: importing a framework (TensorFlow: seconds of CPU) beside the training that holds
    # the slot slows that training more than the import saves (bench/results/up-mnist-t10k.json).
    slot = take_slot() if take_slot is not None else None
    module = trainer_module(framework)
    try:
        dataset = DatasetName(dataset)
    except ValueError:
        allowed = ", ".join(d.value for d in DatasetName)
        raise ValueError(f"unknown dataset {dataset!r}: choose one of {allowed}") from None
    preset = parse_preset(preset)
    # before loading data: a typo fails at once
    hp = hyperparameters_for(framework, overrides, dry_run, dataset, preset)
    if slot is not None and threads is None:
        threads = slot.threads
    split = load_dataset(dataset, data_dir)
    if dry_run:
        split = split.head(*module.DRY_RUN_IMAGES)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mnist-train-") as scratch:
        if framework is Framework.XGBOOST:
            write_sagemaker_csv(split, Path(scratch))
            metrics = module.train_and_evaluate(Path(scratch), out, hp, nthread=threads, progress=progress)
        elif framework is Framework.TENSORFLOW:
            model_dir = out / ARTIFACTS[framework]
            if model_dir.exists():
                shutil.rmtree(model_dir)  # a SavedModel written over an older one could keep stale files
            write_npz(split, Path(scratch))
            metrics = module.train_and_evaluate(scratch, model_dir, hp, threads=threads, progress=progress)
        else:
            metrics = module.train_and_evaluate(split, out, hp, threads=threads, progress=progress)
    metrics.update(
        framework=framework.value,
        dataset=str(dataset),
        preset=preset.value,
        artifact=ARTIFACTS[framework],
        dry_run=dry_run,
        hyperparameters=dataclasses.asdict(hp),
        versions=library_versions(framework),
    )
    if slot is not None:
        metrics["slot"] = {
            "count": slot.count,
            "threads": threads,
            "waited_seconds": round(slot.waited_seconds, 2),
            "taken_at": round(slot.taken_at, 3),
        }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def library_versions(framework: Framework | str) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    framework = parse_framework(framework)
    if framework is Framework.XGBOOST:
        import xgboost

        versions["xgboost"] = xgboost.__version__
    elif framework is Framework.TENSORFLOW:
        import keras
        import tensorflow

        versions |= {"tensorflow": tensorflow.__version__, "keras": keras.__version__}
    else:
        import onnx
        import torch

        versions |= {"torch": torch.__version__, "onnx": onnx.__version__}
    return versions

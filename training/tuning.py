"""Hyperparameter tuning on this machine (local and ibm stacks, `mnistctl train --tune`): Optuna.

The search is the stack's `tuning` config for one model (infra/settings.py `ModelTuning`, passed here as
its JSON form): ranges and choices of the trainer's hyperparameters, a budget of `maxTrials` trials of
which `parallelTrials` run at once, an objective and a strategy. Every trial trains with the trainer the
stacks use, on the training set minus a validation split carved from it (VALIDATION_FRACTION, drawn
with a fixed seed), and is judged on that validation split only: the test set, which the champion gate
judges the challenger on, is never seen by the search. Trials report their metric as they go (XGBoost
every boosting round, the CNNs every epoch) and the pruner stops the unpromising ones early.

`out/` ends as any training's output (the artifact, hyperparameters.json, metrics.json written last) so
that the stacks hand it to the gate unchanged: the artifact is the best trial's, and metrics.json's
`accuracy` is that model's accuracy on the test set, measured as it is served (serving.models), while
`tuning` holds the search: trials run, pruned and failed, the best trial, its hyperparameters and
validation objective, and the spread of the objective over the finished trials. Every trial's own
output stays in `out/trials/<number>/`.

Strategies as SageMaker names them: Bayesian = Optuna's TPE sampler, Random = its random sampler, Grid =
every combination of the choices (in a random order, at most maxTrials of them), Hyperband = TPE with
Optuna's Hyperband pruner; the others prune with the median rule. Scales: Logarithmic samples log-uniformly,
ReverseLogarithmic samples 1 - x log-uniformly (dense near 1), Auto and Linear uniformly.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from training.datasets import DatasetName, Split, load_dataset
from training.formats import write_npz, write_sagemaker_csv
from training.hyperparameters import (
    HYPERPARAMETERS_FILE,
    METRICS_FILE,
    ProgressCallback,
    with_overrides,
)
from training.presets import Preset, parse_preset
from training.run import (
    ARTIFACTS,
    Framework,
    hyperparameters_for,
    library_versions,
    parse_framework,
    trainer_module,
    training_priority,
)
from training.slots import SlotQueue

TRIALS_FOLDER = "trials"
# A sixth of the training set: 10,000 of MNIST's and Fashion-MNIST's 60,000 images, the test set's size.
VALIDATION_FRACTION = 1 / 6
VALIDATION_SEED = 0
# The median pruner stops a trial whose metric is worse than the median of earlier trials at the same
# step; it waits for this many finished trials and this share of a trial's steps before judging.
PRUNER_STARTUP_TRIALS = 3
PRUNER_WARMUP_SHARE = 0.2
# How a served model is asked (serving.models): the flavor each framework is served with locally.
SERVED_FLAVOR = {Framework.XGBOOST: "sagemaker", Framework.TENSORFLOW: "vertex", Framework.PYTORCH: "watsonx"}

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclasses.dataclass(frozen=True)
class Search:
    """One model's search, as the stack's `tuning` config gives it (its JSON form, camelCase keys)."""

    max_trials: int
    parallel_trials: int
    metric: str
    goal: str  # Minimize or Maximize
    ranges: Mapping[str, Any]  # name -> {"min", "max", "scale"} or [choices]
    strategy: str = "Bayesian"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Search:
        objective = config.get("objective") or {}
        if not isinstance(objective, Mapping) or not objective.get("metric") or not objective.get("goal"):
            raise ValueError(f"a search needs an objective {{metric, goal}}, got {objective!r}")
        return cls(
            max_trials=int(config["maxTrials"]),
            parallel_trials=int(config.get("parallelTrials") or 1),
            metric=str(objective["metric"]),
            goal=str(objective["goal"]),
            ranges=dict(config["ranges"]),
            strategy=str(config.get("strategy") or "Bayesian"),
        )

    @property
    def direction(self) -> optuna.study.StudyDirection:
        minimize = self.goal == "Minimize"
        return optuna.study.StudyDirection.MINIMIZE if minimize else optuna.study.StudyDirection.MAXIMIZE

    def better(self, a: float, b: float) -> bool:
        return a < b if self.direction is optuna.study.StudyDirection.MINIMIZE else a > b


def carve_validation(
    split: Split,
    fraction: float = VALIDATION_FRACTION,
    seed: int = VALIDATION_SEED,
    fit_images: int | None = None,
) -> Split:
    """The training set cut in two: a Split whose `train` part the trials fit and whose `test` part is the
    validation split they are judged on (a fixed random draw of `fraction` of the training images). With
    `fit_images`, the trials fit only that many of the rest (a cheaper, lower-fidelity search)."""
    n = split.n_train
    n_validation = max(1, round(n * fraction))
    order = np.random.default_rng(seed).permutation(n)
    rest = order[n_validation:] if fit_images is None else order[n_validation : n_validation + fit_images]
    validation, fit = np.sort(order[:n_validation]), np.sort(rest)
    return Split(split.x_train[fit], split.y_train[fit], split.x_train[validation], split.y_train[validation])


def suggest(trial: optuna.Trial, ranges: Mapping[str, Any], kinds: Mapping[str, type]) -> dict[str, str]:
    """The trial's hyperparameters, drawn from `ranges`, as the strings the trainers take."""
    chosen: dict[str, Any] = {}
    for name, searched in ranges.items():
        if isinstance(searched, list):
            chosen[name] = trial.suggest_categorical(name, searched)
            continue
        low, high, scale = float(searched["min"]), float(searched["max"]), searched.get("scale", "Auto")
        if kinds[name] is int:
            chosen[name] = trial.suggest_int(name, int(low), int(high), log=scale == "Logarithmic")
        elif scale == "ReverseLogarithmic":
            # dense near the top of [low, high): 1 - x drawn log-uniformly, as SageMaker describes it
            gap = trial.suggest_float(f"1-{name}", 1 - high, 1 - low, log=True)
            chosen[name] = 1 - gap
        else:
            chosen[name] = trial.suggest_float(name, low, high, log=scale == "Logarithmic")
    return {
        name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in chosen.items()
    }


def _sampler(search: Search, seed: int) -> optuna.samplers.BaseSampler:
    if search.strategy == "Random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.strategy == "Grid":
        grid = {name: list(choices) for name, choices in search.ranges.items()}
        return optuna.samplers.GridSampler(grid, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(search: Search, steps: int) -> optuna.pruners.BasePruner:
    if search.strategy == "Hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, steps))
    return optuna.pruners.MedianPruner(
        n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=max(1, int(steps * PRUNER_WARMUP_SHARE))
    )


class _XGBoostReporter:
    """Every boosting round's validation metric to the trial; the trial pruned when Optuna says so."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        from xgboost.callback import TrainingCallback

        name = metric.removeprefix("validation:")
        reporter = self

        class Callback(TrainingCallback):
            def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
                values = evals_log.get("validation", {}).get(name)
                if values:
                    reporter.last = float(np.asarray(values[-1]).ravel()[0])
                    trial.report(reporter.last, epoch + 1)
                    if trial.should_prune():
                        raise optuna.TrialPruned(f"round {epoch + 1}: {metric} {reporter.last:.4f}")
                return False

        self.last: float | None = None
        self.callback = Callback()


class _EpochReporter:
    """Every epoch's validation accuracy to the trial (the CNNs); the trial pruned when Optuna says so."""

    def __init__(self, trial: optuna.Trial, score: Callable[[Any], float]) -> None:
        self.trial, self.score = trial, score
        self.last: float | None = None

    def __call__(self, epoch: int, model: Any) -> None:
        self.last = self.score(model)
        self.trial.report(self.last, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {epoch}: accuracy {self.last:.4f}")


def _validation_scorer(framework: Framework, validation: Split) -> Callable[[Any], float]:
    module = trainer_module(framework)
    if framework is Framework.PYTORCH:
        import torch

        from training.torch_trainer import WithSoftmax, to_tensor

        images, labels = to_tensor(validation.x_test), torch.from_numpy(validation.y_test.astype(np.int64))
        return lambda net: module.evaluate(WithSoftmax(net).eval(), images, labels)
    return lambda model: module.evaluate(model, validation.x_test, validation.y_test)


def _trial_steps(framework: Framework, hp: Any) -> int:
    return int(hp.num_round if framework is Framework.XGBOOST else hp.epochs)


def tune_model(
    framework: Framework | str,
    dataset: DatasetName | str,
    data_dir: Path | None,
    out: Path,
    search_config: Mapping[str, Any],
    overrides: Mapping[str, str] | None = None,
    dry_run: bool = False,
    progress: ProgressCallback | None = None,
    *,
    threads: int | None = None,
    preset: Preset | str = Preset.STANDARD,
    seed: int = 0,
    fit_images: int | None = None,
    log: Callable[[str], None] = print,
    slots: SlotQueue | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Search `search_config` for `framework` on `dataset`; write the best trial's artifact and metrics.json
    (with `tuning`) to `out`, every trial's output to `out/trials/<number>/`. Returns metrics.json's content.

    The trials start from the hyperparameters `mnistctl train` would use (defaults, the dataset's preset,
    the dry-run settings, `overrides`) and draw the searched ones on top. With `slots`, the whole search
    holds one of the machine's training slots (training/slots.py) and its trials share the slot's threads."""
    framework = parse_framework(framework)
    if slots is not None:
        with slots.ticket(training_priority(framework), f"{framework.value} tuning") as ticket:
            trainer_module(framework)  # the slow import, done while waiting
            slot = ticket.wait(on_wait)
            return tune_model(
                framework,
                dataset,
                data_dir,
                out,
                search_config,
                overrides,
                dry_run,
                progress,
                threads=threads or slot.threads,
                preset=preset,
                seed=seed,
                fit_images=fit_images,
                log=log,
            )
    module = trainer_module(framework)
    search = Search.from_config(search_config)
    preset = parse_preset(preset)
    dataset = DatasetName(dataset)
    base = hyperparameters_for(framework, overrides, dry_run, dataset, preset)
    kinds = {f.name: type(getattr(base, f.name)) for f in dataclasses.fields(base)}
    unknown = sorted(set(search.ranges) - set(kinds))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {', '.join(unknown)} in the search: allowed are {', '.join(kinds)}"
        )
    split = load_dataset(dataset, data_dir)
    if dry_run:
        split = split.head(*module.DRY_RUN_IMAGES)
    tuning_split = carve_validation(split, fit_images=fit_images)
    out = Path(out)
    trials_dir = out / TRIALS_FOLDER
    trials_dir.mkdir(parents=True, exist_ok=True)
    per_trial_threads = max(1, (threads or 0) // search.parallel_trials) if threads else None
    steps = _trial_steps(framework, base)
    study = optuna.create_study(
        direction=search.direction, sampler=_sampler(search, seed), pruner=_pruner(search, steps)
    )
    lock = threading.Lock()
    finished = [0]
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="mnist-tune-") as scratch:
        channels = Path(scratch)
        # The trials' input, written once: what the trainer reads (CSV channels, npz) with the validation
        # split in the place of the test set.
        if framework is Framework.XGBOOST:
            write_sagemaker_csv(tuning_split, channels)
        elif framework is Framework.TENSORFLOW:
            write_npz(tuning_split, channels)
        score = _validation_scorer(framework, tuning_split) if framework is not Framework.XGBOOST else None

        def objective(trial: optuna.Trial) -> float:
            drawn = suggest(trial, search.ranges, kinds)
            hp = with_overrides(base, drawn)
            trial.set_user_attr("hyperparameters", drawn)
            trial_out = trials_dir / f"{trial.number:03d}"
            if trial_out.exists():
                shutil.rmtree(trial_out)
            trial_out.mkdir(parents=True)
            trial_started = time.perf_counter()
            try:
                value = _run_trial(
                    framework,
                    module,
                    hp,
                    channels,
                    tuning_split,
                    trial_out,
                    trial,
                    search,
                    score,
                    per_trial_threads,
                )
            except optuna.TrialPruned as pruned:
                _write_trial(trial_out, trial.number, drawn, "pruned", None, trial_started, str(pruned))
                raise
            _write_trial(trial_out, trial.number, drawn, "complete", value, trial_started)
            return value

        def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            with lock:
                finished[0] += 1
                value = (
                    "pruned"
                    if trial.state is optuna.trial.TrialState.PRUNED
                    else f"{search.metric} {trial.value}"
                )
                best = _best_or_none(study)
                best_text = f"; best so far trial {best.number}: {best.value:.4f}" if best else ""
                log(f"tuning {framework.value}: trial {trial.number} {value}{best_text}")
                if progress:
                    progress(finished[0], search.max_trials, f"trial {finished[0]}/{search.max_trials}")

        study.optimize(
            objective,
            n_trials=search.max_trials,
            n_jobs=search.parallel_trials,
            callbacks=[after_trial],
            catch=(),
        )
    tuning_seconds = time.perf_counter() - started
    best = _best_or_none(study)
    if best is None:
        raise RuntimeError(
            f"tuning {framework.value}: none of the {len(study.trials)} trials finished (every one was "
            "pruned or failed); widen the ranges or raise maxTrials"
        )
    return _crown(
        framework, out, study, best, search, split, tuning_split, tuning_seconds, dataset, preset, dry_run
    )


def _run_trial(
    framework: Framework,
    module: Any,
    hp: Any,
    channels: Path,
    tuning_split: Split,
    trial_out: Path,
    trial: optuna.Trial,
    search: Search,
    score: Callable[[Any], float] | None,
    threads: int | None,
) -> float:
    if framework is Framework.XGBOOST:
        reporter = _XGBoostReporter(trial, search.metric)
        module.train_and_evaluate(channels, trial_out, hp, nthread=threads, callbacks=[reporter.callback])
        if reporter.last is None:
            raise RuntimeError(f"xgboost reported no {search.metric}: its eval_metric must include it")
        return reporter.last
    assert score is not None
    epochs = _EpochReporter(trial, score)
    if framework is Framework.TENSORFLOW:
        metrics = module.train_and_evaluate(
            channels, trial_out / ARTIFACTS[framework], hp, threads=threads, on_epoch=epochs
        )
    else:
        metrics = module.train_and_evaluate(tuning_split, trial_out, hp, threads=threads, on_epoch=epochs)
    return float(metrics["accuracy"])  # the exported model's, on the validation split


def _write_trial(
    trial_out: Path,
    number: int,
    drawn: Mapping[str, str],
    state: str,
    value: float | None,
    trial_started: float,
    note: str = "",
) -> None:
    record = {
        "trial": number,
        "state": state,
        "objective": value,
        "hyperparameters": dict(drawn),
        "seconds": round(time.perf_counter() - trial_started, 3),
        **({"note": note} if note else {}),
    }
    (trial_out / "trial.json").write_text(json.dumps(record, indent=2) + "\n")


def _best_or_none(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no trial finished yet
        return None


def test_accuracy(framework: Framework, artifact_dir: Path, split: Split) -> float:
    """The accuracy on the test set of the model in `artifact_dir`, asked as its server asks it."""
    from serving.models import model_for

    served = model_for(SERVED_FLAVOR[framework], artifact_dir, name=framework.value)
    served.load()
    images = split.x_test.reshape(len(split.x_test), -1).astype(np.float32) / 255.0
    predicted = np.concatenate(
        [served.predict(images[i : i + 1000]).argmax(axis=1) for i in range(0, len(images), 1000)]
    )
    return float(np.mean(predicted == split.y_test))


def _crown(
    framework: Framework,
    out: Path,
    study: optuna.Study,
    best: optuna.trial.FrozenTrial,
    search: Search,
    split: Split,
    tuning_split: Split,
    tuning_seconds: float,
    dataset: DatasetName,
    preset: Preset,
    dry_run: bool,
) -> dict[str, Any]:
    """The best trial's artifact becomes `out`'s, scored once on the test set; metrics.json written last."""
    best_dir = out / TRIALS_FOLDER / f"{best.number:03d}"
    artifact = ARTIFACTS[framework]
    target = out / artifact
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    (shutil.copytree if (best_dir / artifact).is_dir() else shutil.copy2)(best_dir / artifact, target)
    shutil.copy2(best_dir / HYPERPARAMETERS_FILE, out / HYPERPARAMETERS_FILE)
    if framework is Framework.PYTORCH and (best_dir / "model.tar.gz").exists():
        shutil.copy2(best_dir / "model.tar.gz", out / "model.tar.gz")
    hyperparameters = json.loads((out / HYPERPARAMETERS_FILE).read_text())
    states = [t.state for t in study.trials]
    values = [
        float(t.value)
        for t in study.trials
        if t.state is optuna.trial.TrialState.COMPLETE and t.value is not None
    ]
    tuning = {
        "trials": len(study.trials),
        "completed": states.count(optuna.trial.TrialState.COMPLETE),
        "pruned": states.count(optuna.trial.TrialState.PRUNED),
        "failed": states.count(optuna.trial.TrialState.FAIL),
        "max_trials": search.max_trials,
        "parallel_trials": search.parallel_trials,
        "strategy": search.strategy,
        "objective": {"metric": search.metric, "goal": search.goal},
        "best_trial": best.number,
        "best_objective": float(best.value) if best.value is not None else None,
        "best_hyperparameters": dict(best.user_attrs.get("hyperparameters", {})),
        "spread": {
            "min": min(values),
            "median": statistics.median(values),
            "max": max(values),
        },
        "validation": {"n_fit": tuning_split.n_train, "n_validation": tuning_split.n_test},
        "seconds": round(tuning_seconds, 3),
    }
    accuracy = test_accuracy(framework, out, split)
    metrics = {
        "accuracy": accuracy,
        "n_train": tuning_split.n_train,
        "n_test": split.n_test,
        "train_seconds": round(tuning_seconds, 3),
        "framework": framework.value,
        "dataset": str(dataset),
        "preset": preset.value,
        "artifact": artifact,
        "dry_run": dry_run,
        "hyperparameters": hyperparameters,
        "versions": {**library_versions(framework), "optuna": optuna.__version__},
        "tuning": tuning,
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics

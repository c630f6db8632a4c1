"""Tuning on the local stack, end to end: the program under mocks, its providers executed for real
(tests/harness.py ProviderEngine), real Optuna trials of the real trainer (dry-run size on mnist-t10k),
the best trial handed to the real champion gate, a real server, real teardown.

(1) `tuning: {xgboost: {maxTrials: 4, ...}}` runs 4 trials, reports them in `models.xgboost.tuning` and
serves the best one (the gate promotes it: no champion yet); a second `up` with no change tunes nothing.
(2) A search whose best trial is worse than the champion: the challenger is held, the endpoint untouched;
destroy leaves nothing, the trials included.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import ProviderEngine, StackRun, run_stack

from infra.local import platform as local
from infra.local.support import port_open, wait_gone
from infra.settings import Framework
from mnistctl.client import client_for
from mnistctl.smoke import held_out_digits
from training.xgboost_trainer import DRY_RUN_IMAGES, load_model, predict_proba

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENDPOINT = "mnist-xgboost-endpoint"
TRAINING = "mnist-xgboost-training"
GATE = "mnist-xgboost-gate"
SEARCH = {
    "maxTrials": 4,
    "parallelTrials": 2,
    "objective": "validation:merror",
    "ranges": {"num_round": {"min": 2, "max": 10}, "max_depth": [2, 3, 4]},
}
# Dry-run training measured 0.79 accuracy with these (tests/local/test_local_gate_e2e.py); one-round stumps
# 0.36: a search that may only draw stumps cannot beat that champion.
CHAMPION = {"num_round": 12, "max_depth": 4}
STUMPS_ONLY = {"maxTrials": 2, "ranges": {"num_round": [1], "max_depth": [1]}}


@pytest.fixture(autouse=True)
def training_code_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = {model: local.training_code_hash(model) for model in Framework}
    monkeypatch.setattr(local, "training_code_hash", hashes.__getitem__)


@pytest.fixture
def engine() -> Iterator[ProviderEngine]:
    engine = ProviderEngine()
    yield engine
    engine.destroy()


def up(engine: ProviderEngine, config: dict[str, Any]) -> tuple[StackRun, list[tuple[str, str]]]:
    before = len(engine.steps)
    run = run_stack("local", config, new_resource=engine)
    engine.finish()
    return run, engine.steps[before:]


def _config(root: Path, t10k_dir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "dryRun": True,
        "minAccuracy": 0.3,
        **extra,
    }


def test_the_local_stack_tunes_reports_the_trials_and_serves_the_best(
    engine: ProviderEngine, tmp_path: Path, t10k_dir: Path
):
    root = tmp_path / "local-root"
    config = _config(root, t10k_dir, tuning={"xgboost": SEARCH})
    first, _ = up(engine, config)

    tuning = first.outputs["models"]["xgboost"]["tuning"]
    out = Path(engine.live[TRAINING].state["out_dir"])
    trials = [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*/trial.json"))]
    assert tuning["trials"] == len(trials) == 4
    assert tuning["completed"] + tuning["pruned"] == 4 and tuning["failed"] == 0
    finished = [t["objective"] for t in trials if t["state"] == "complete"]
    assert tuning["objective"] == {"metric": "validation:merror", "goal": "Minimize"}
    assert tuning["best_objective"] == min(finished) == tuning["spread"]["min"]
    assert tuning["spread"]["max"] == max(finished)
    assert tuning["spread"]["min"] <= tuning["spread"]["median"] <= tuning["spread"]["max"]
    best = trials[int(tuning["best_trial"])]  # numbers cross the engine's wire as floats
    assert tuning["best_hyperparameters"] == best["hyperparameters"]
    assert 2 <= int(best["hyperparameters"]["num_round"]) <= 10
    assert best["hyperparameters"]["max_depth"] in {"2", "3", "4"}
    # Judged on a validation split carved from the training images; the test images stay the gate's.
    n_train, n_test = DRY_RUN_IMAGES
    assert tuning["validation"]["n_fit"] + tuning["validation"]["n_validation"] == n_train
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_test"] == n_test

    # The best trial's artifact is the challenger; the gate promoted it and the endpoint serves it.
    model = first.outputs["models"]["xgboost"]
    assert model["challenger"]["decision"] == "promoted"
    served_dir = Path(engine.live[ENDPOINT].state["model_dir"])
    best_artifact = out / "trials" / f"{int(tuning['best_trial']):03d}" / "model.tar.gz"
    assert (served_dir / "model.tar.gz").read_bytes() == best_artifact.read_bytes()
    assert not (served_dir / "trials").exists()  # the champion's copy is the best trial alone
    images, _ = held_out_digits(8, "mnist-t10k", t10k_dir)
    answers = client_for(first.outputs["endpoints"]["xgboost"]).predict(images)
    np.testing.assert_allclose(answers, predict_proba(load_model(best_artifact), images), atol=1e-5)
    assert model["metrics"]["tuning"]["best_trial"] == tuning["best_trial"]  # the champion says it was tuned

    # A second up with no change: nothing is tuned again, nothing changes.
    trial_times = {p: p.stat().st_mtime_ns for p in (out / "trials").rglob("*")}
    second, steps = up(engine, config)
    assert {step for step in steps if step[0] != "same"} == set()
    assert second.outputs["models"]["xgboost"]["tuning"] == tuning
    assert {p: p.stat().st_mtime_ns for p in (out / "trials").rglob("*")} == trial_times


def test_a_tuned_challenger_worse_than_the_champion_is_held_and_destroy_leaves_nothing(
    engine: ProviderEngine, tmp_path: Path, t10k_dir: Path
):
    root = tmp_path / "local-root"
    config = _config(root, t10k_dir, hyperparameters={"xgboost": CHAMPION})
    first, _ = up(engine, config)
    champion = first.outputs["models"]["xgboost"]["champion"]
    state = engine.live[ENDPOINT].state
    pid, port, model_dir = int(state["pid"]), int(state["port"]), state["model_dir"]

    config["tuning"] = {"xgboost": STUMPS_ONLY}
    second, steps = up(engine, config)
    assert ("replace", TRAINING) in steps and ("replace", ENDPOINT) not in steps
    model = second.outputs["models"]["xgboost"]
    assert model["tuning"]["trials"] == 2
    held = model["challenger"]
    assert held["decision"] == "held" and held["accuracy"] < champion["accuracy"]
    assert model["champion"] == champion
    state = engine.live[ENDPOINT].state
    assert (int(state["pid"]), int(state["port"]), state["model_dir"]) == (pid, port, model_dir)

    trials = Path(engine.live[TRAINING].state["out_dir"]) / "trials"
    assert len(list(trials.glob("*/model.tar.gz"))) == 2
    engine.destroy()
    assert wait_gone(pid, 5) and not port_open(port)
    assert not trials.exists()
    assert not root.exists(), sorted(p.name for p in root.rglob("*"))

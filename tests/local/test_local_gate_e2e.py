"""The champion gate on the local stack, end to end: the program under mocks, its providers executed for
real (tests/harness.py ProviderEngine), real training, a real server, real answers, real teardown.

Five rounds of `pulumi up` on one xgboost model (dry-run training on mnist-t10k, seconds each):
good -> served; worse -> retrained but the endpoint untouched; better -> promoted and served;
worse with forcePromotion -> served; destroy -> nothing left, the champion's copy included.
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
from training.xgboost_trainer import load_model, predict_proba

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENDPOINT = "mnist-xgboost-endpoint"
TRAINING = "mnist-xgboost-training"
GATE = "mnist-xgboost-gate"
# Dry-run training (512 images, scored on 256 held-out ones): measured 0.73 / 0.36 / 0.79 accuracy.
GOOD = {"num_round": 3, "max_depth": 3}
WORSE = {"num_round": 1, "max_depth": 1}
BETTER = {"num_round": 12, "max_depth": 4}
FLOOR = 0.3  # under all three: the champion, not the floor, holds the worse one back


@pytest.fixture(autouse=True)
def training_code_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash the training code once: an edit made meanwhile would rightly retrain, but rounds are counted."""
    hashes = {model: local.training_code_hash(model) for model in Framework}
    monkeypatch.setattr(local, "training_code_hash", hashes.__getitem__)


@pytest.fixture
def engine() -> Iterator[ProviderEngine]:
    engine = ProviderEngine()
    yield engine
    engine.destroy()


def up(engine: ProviderEngine, config: dict[str, Any]) -> tuple[StackRun, list[tuple[str, str]]]:
    """`pulumi up`: the run and the steps it took on each resource."""
    before = len(engine.steps)
    run = run_stack("local", config, new_resource=engine)
    engine.finish()
    return run, engine.steps[before:]


def changed(steps: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return {step for step in steps if step[0] != "same"}


def served(engine: ProviderEngine) -> tuple[int, int, str]:
    state = engine.live[ENDPOINT].state
    return int(state["pid"]), int(state["port"]), str(state["model_dir"])


def expected_answers(model_dir: str, images: np.ndarray) -> np.ndarray:
    """What the artifact in `model_dir` predicts, computed here without the server."""
    return predict_proba(load_model(Path(model_dir) / "model.tar.gz"), images)


def test_only_a_challenger_that_passes_the_gate_reaches_the_endpoint(
    engine: ProviderEngine, tmp_path: Path, t10k_dir: Path, warnings: list[str]
):
    root = tmp_path / "local-root"
    config: dict[str, Any] = {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "dryRun": True,
        "minAccuracy": FLOOR,
        "hyperparameters": {"xgboost": GOOD},
    }
    images, _ = held_out_digits(8, "mnist-t10k", t10k_dir)

    # (1) First up: the challenger passes the floor, is copied under champions/ and served from there.
    first, _ = up(engine, config)
    model = first.outputs["models"]["xgboost"]
    champion = model["champion"]
    assert model["challenger"]["decision"] == "promoted"
    assert champion["accuracy"] >= FLOOR and champion["trained"]
    assert Path(champion["artifact"]).is_relative_to(root / "champions" / "xgboost")
    pid, port, model_dir = served(engine)
    assert Path(model_dir) == Path(champion["artifact"]).parent
    client = client_for(first.outputs["endpoints"]["xgboost"])
    answers = client.predict(images)
    np.testing.assert_allclose(answers, expected_answers(model_dir, images), atol=1e-5)

    # (2) Worse hyperparameters: a new training job, but the endpoint keeps its process, port and answers.
    config["hyperparameters"] = {"xgboost": WORSE}
    second, steps = up(engine, config)
    assert changed(steps) == {("replace", TRAINING), ("delete", TRAINING), ("update", GATE)}
    assert served(engine) == (pid, port, model_dir)
    np.testing.assert_array_equal(client.predict(images), answers)
    model = second.outputs["models"]["xgboost"]
    assert model["champion"] == champion and model["artifact"] == champion["artifact"]
    held = model["challenger"]
    assert held["decision"] == "held" and held["accuracy"] < champion["accuracy"]
    assert (
        f"challenger accuracy {held['accuracy']:.4f} < champion accuracy {champion['accuracy']:.4f}"
        in (held["reason"])
    )
    assert "forcePromotion" in held["reason"]
    assert any("held back" in w for w in warnings)
    assert Path(champion["artifact"]).is_file()  # its training job's folder is gone; the copy is not

    # (3) Better hyperparameters: promoted, and the endpoint now answers with the new artifact.
    config["hyperparameters"] = {"xgboost": BETTER}
    third, steps = up(engine, config)
    assert {("replace", TRAINING), ("update", GATE), ("replace", ENDPOINT)} <= changed(steps)
    model = third.outputs["models"]["xgboost"]
    assert model["challenger"]["decision"] == "promoted"
    assert model["champion"]["accuracy"] >= champion["accuracy"]
    assert model["champion"]["source"] != champion["source"]
    _, _, new_dir = served(engine)
    assert Path(new_dir) == Path(model["champion"]["artifact"]).parent != Path(model_dir)
    better = client_for(third.outputs["endpoints"]["xgboost"]).predict(images)
    np.testing.assert_allclose(better, expected_answers(new_dir, images), atol=1e-5)
    assert not np.allclose(better, answers, atol=1e-3)

    # (4) forcePromotion serves even a worse model, and says so.
    config["hyperparameters"] = {"xgboost": WORSE}
    config["forcePromotion"] = True
    fourth, steps = up(engine, config)
    assert ("replace", ENDPOINT) in changed(steps)
    model = fourth.outputs["models"]["xgboost"]
    assert model["challenger"]["decision"] == "forced"
    assert model["champion"]["accuracy"] < third.outputs["models"]["xgboost"]["champion"]["accuracy"]
    _, _, forced_dir = served(engine)
    forced = client_for(fourth.outputs["endpoints"]["xgboost"]).predict(images)
    np.testing.assert_allclose(forced, expected_answers(forced_dir, images), atol=1e-5)

    # (5) Destroy: no process, no port, no folder; the champion copies go with the gate.
    pid, port, _ = served(engine)
    copies = [Path(fourth.outputs["models"]["xgboost"]["champion"]["artifact"]).parent]
    engine.destroy()
    assert wait_gone(pid, 5) and not port_open(port)
    assert not any(copy.exists() for copy in copies)
    assert not root.exists(), sorted(p.name for p in root.rglob("*"))


def test_a_first_challenger_under_the_floor_fails_before_any_endpoint_exists(
    engine: ProviderEngine, tmp_path: Path, t10k_dir: Path
):
    root = tmp_path / "local-root"
    config = {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "dryRun": True,
        "minAccuracy": 0.9,
        "hyperparameters": {"xgboost": WORSE},
    }
    with pytest.raises(Exception, match="No endpoint is created for xgboost") as error:
        up(engine, config)
    assert "< floor minAccuracy 0.9000" in str(error.value)
    assert ENDPOINT not in engine.live and GATE not in engine.live
    assert not (root / "champions").exists() or not any((root / "champions").rglob("*.gz"))
    metrics = json.loads((Path(engine.live[TRAINING].state["out_dir"]) / "metrics.json").read_text())
    assert metrics["accuracy"] < 0.9
    engine.destroy()
    assert not root.exists()

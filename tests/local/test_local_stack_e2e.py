"""The local stack end to end: its program under mocks, its dynamic providers executed for real.

`ProviderEngine` (tests/harness.py) plays the Pulumi engine: it creates, diffs, replaces and deletes
each dynamic resource the program declares, so `run_stack(..., new_resource=engine)` is `pulumi up`
and `engine.destroy()` is `pulumi destroy`. Real training on mnist-t10k, real servers, real
predictions through the real clients, real teardown.
"""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from harness import ProviderEngine, StackRun, run_stack
from PIL import Image, ImageDraw

from infra.local import platform as local
from infra.local.support import LocalProviderError, port_open, process_cmdline, wait_gone
from infra.settings import Framework
from mnistctl.client import client_for
from mnistctl.smoke import held_out_digits, smoke

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENDPOINT = "pulumi-python:dynamic/local:Endpoint"
TRAINING_JOB = "pulumi-python:dynamic/local:TrainingJob"
UI = "pulumi-python:dynamic/local:Ui"
MODELS = ("xgboost", "tensorflow", "pytorch")


@pytest.fixture(autouse=True)
def training_code_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash the training code once per test: an edit made meanwhile (a developer at work) would
    rightly retrain on the next `up`, but these tests count the steps of that `up`."""
    hashes = {model: local.training_code_hash(model) for model in Framework}
    monkeypatch.setattr(local, "training_code_hash", hashes.__getitem__)


@pytest.fixture
def engine() -> Iterator[ProviderEngine]:
    """The stand-in engine; whatever a test leaves running is destroyed afterwards."""
    engine = ProviderEngine()
    yield engine
    engine.destroy()


def up(engine: ProviderEngine, config: dict[str, Any]) -> StackRun:
    run = run_stack("local", config, new_resource=engine)
    engine.finish()
    return run


def servers(engine: ProviderEngine) -> list[tuple[int, int]]:
    """(pid, port) of every server the stack runs: the endpoints and the ui page."""
    return [
        (int(r.state["pid"]), int(r.state["port"])) for r in engine.live.values() if r.typ in (ENDPOINT, UI)
    ]


def assert_nothing_left(root: Path, processes: list[tuple[int, int]]) -> None:
    for pid, port in processes:
        assert wait_gone(pid, 5), f"server {pid} is still running"
        assert not port_open(port), f"port {port} is still open"
    assert not root.exists(), f"{root} still exists: {sorted(p.name for p in root.rglob('*'))}"


def test_local_stack_trains_serves_answers_and_destroy_leaves_nothing(
    engine: ProviderEngine, tmp_path: Path, t10k_dir: Path
):
    root = tmp_path / "local-root"
    config = {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "dryRun": True,
        "localTrainingSlots": 1,
    }
    started = time.monotonic()
    run = up(engine, config)
    print(f"\nup (dry-run training and serving of {len(MODELS)} models): {time.monotonic() - started:.1f}s")

    # One training slot: the trainings took it one at a time, fastest first (training/slots.py), each with
    # every core of this process.
    slots = {model: run.outputs["models"][model]["metrics"]["slot"] for model in MODELS}
    assert sorted(MODELS, key=lambda model: slots[model]["taken_at"]) == ["xgboost", "pytorch", "tensorflow"]
    for first, then in (("xgboost", "pytorch"), ("pytorch", "tensorflow")):
        train_seconds = run.outputs["models"][first]["metrics"]["train_seconds"]
        assert slots[then]["taken_at"] >= slots[first]["taken_at"] + train_seconds, slots
    assert {slot["threads"] for slot in slots.values()} == {len(os.sched_getaffinity(0))}

    outputs = run.outputs
    assert set(outputs["endpoints"]) == set(MODELS)
    for model, entry in outputs["models"].items():
        assert Path(entry["artifact"]).exists() and Path(entry["artifact"]).is_relative_to(root), model
        # Dry-run training (512 images, 2 epochs) reaches ~0.7 on its 256 held-out digits; chance is 0.1.
        assert entry["metrics"]["accuracy"] >= 0.5, (model, entry["metrics"])
    assert Path(outputs["bucket"]).is_relative_to(root)

    # The wire path of every flavor, through the official clients, with the stack's outputs as they are.
    images, _ = held_out_digits(3, "mnist-t10k", t10k_dir)
    for model, entry in outputs["endpoints"].items():
        probabilities = client_for(entry).predict(images)
        assert probabilities.shape == (3, 10), model
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    result = smoke(outputs, count=50, data_dir=t10k_dir, label="local")
    accuracy = {r.model: r.accuracy for r in result.results}
    assert all(a is not None and a >= 0.5 for a in accuracy.values()), (accuracy, result.results)

    # The ui page (config ui, on by default) scores a picture on every endpoint of the stack.
    picture = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(picture).line([(140, 40), (140, 240)], fill=255, width=22)
    body = io.BytesIO()
    picture.save(body, format="PNG")
    page = requests.post(
        f"{outputs['ui']}/api/predict",
        data=body.getvalue(),
        headers={"Content-Type": "image/png"},
        timeout=60,
    ).json()
    assert sorted(r["model"] for r in page["results"]) == sorted(MODELS)
    assert all(r["error"] is None and len(r["probabilities"]) == 10 for r in page["results"]), page["results"]

    # A server killed behind the stack's back: the next `pulumi up` replaces that endpoint, only it. The
    # new server takes the killed one's port (free again), so its URL and the ui page do not change.
    xgboost = engine.live["mnist-xgboost-endpoint"]
    killed_pid = int(xgboost.state["pid"])
    os.killpg(killed_pid, signal.SIGKILL)
    assert wait_gone(killed_pid, 10)
    steps_before = len(engine.steps)
    again = up(engine, config)
    steps = engine.steps[steps_before:]
    # (the old one is deleted after its replacement exists, as the engine does: already gone, a no-op)
    assert sorted(s for s in steps if s[0] != "same") == [
        ("delete", "mnist-xgboost-endpoint"),
        ("replace", "mnist-xgboost-endpoint"),
    ]
    assert again.outputs["endpoints"] == outputs["endpoints"] and again.outputs["ui"] == outputs["ui"]
    # The replacement serves the same artifact: the same answers as before the kill.
    replaced = smoke(again.outputs, count=50, data_dir=t10k_dir).for_model("xgboost")
    assert replaced.accuracy == accuracy["xgboost"]

    running = servers(engine)
    started = time.monotonic()
    engine.destroy()
    print(f"destroy: {time.monotonic() - started:.1f}s")
    assert_nothing_left(root, running)
    assert all(process_cmdline(pid) is None for pid, _ in running)


def test_small_real_training_answers_correctly_and_new_hyperparameters_retrain_and_redeploy(
    engine: ProviderEngine, tmp_path: Path, t10k_dir: Path
):
    root = tmp_path / "local-root"
    config: dict[str, Any] = {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "hyperparameters": {"xgboost": {"num_round": 10, "max_depth": 4}},
        "minAccuracy": 0.8,  # 10 small rounds are not MNIST's 0.95; the gate is tested on its own
    }
    started = time.monotonic()
    first = up(engine, config)
    print(f"\nup (xgboost, 8,000 digits, 10 rounds): {time.monotonic() - started:.1f}s")
    result = smoke(first.outputs, count=10, data_dir=t10k_dir)
    assert result.for_model("xgboost").correct >= 8, result.results
    assert first.outputs["models"]["xgboost"]["metrics"]["accuracy"] >= 0.85
    old_job = Path(engine.live["mnist-xgboost-training"].state["out_dir"])

    # New hyperparameters: a new training job, then a new endpoint serving its artifact; data unchanged.
    config["hyperparameters"] = {"xgboost": {"num_round": 12, "max_depth": 4}}
    steps_before = len(engine.steps)
    second = up(engine, config)
    changed = [s for s in engine.steps[steps_before:] if s[0] != "same"]
    assert ("replace", "mnist-xgboost-training") in changed and (
        "replace",
        "mnist-xgboost-endpoint",
    ) in changed
    assert ("delete", "mnist-xgboost-training") in changed  # the old job, after its replacement exists
    assert all(name != "mnist-data" for _, name in changed)
    assert not old_job.exists()
    assert second.outputs["models"]["xgboost"]["challenger"]["decision"] == "promoted"
    assert second.outputs["endpoints"]["xgboost"]["url"] != first.outputs["endpoints"]["xgboost"]["url"]
    assert smoke(second.outputs, count=10, data_dir=t10k_dir).for_model("xgboost").correct >= 8

    running = servers(engine)
    engine.destroy()
    assert_nothing_left(root, running)


def test_a_failing_trainer_fails_the_update_and_leaves_only_its_log(
    engine: ProviderEngine, tmp_path: Path, t10k_dir: Path
):
    root = tmp_path / "local-root"
    config = {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "dryRun": True,
        "hyperparameters": {"xgboost": {"num_rounds_typo": 3}},
    }
    with pytest.raises(LocalProviderError, match="num_rounds_typo") as error:
        up(engine, config)
    assert "training xgboost failed" in str(error.value)
    assert [name for name in engine.live] == ["mnist-data"]  # no job, no endpoint
    assert not list((root / "models").glob("*"))
    assert list((root / "logs").glob("train-xgboost-*.log"))
    engine.destroy()
    assert not root.exists()

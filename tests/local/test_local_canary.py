"""Canary rollouts on the local stack, end to end (docs/gate.md "Rollout"): the program under mocks, its
providers executed for real (tests/harness.py ProviderEngine), real training, real servers behind the real
traffic-splitting front (serving/front.py), real requests sent by a user thread throughout.

Four `pulumi up` of one xgboost model with `rollout` set (dry-run training on mnist-t10k):
good -> served through the front; better, but its server answers 5xx (a fault) -> rolled back on the
error rate; a worse one forced past the gate -> rolled back on live accuracy; better, healthy -> promoted.
Throughout, the front's URL stays the same and no request the old model took fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from faults import new_servers_fail_predictions, stop_stack_processes
from harness import ProviderEngine, StackRun, run_stack

from infra.local import endpoint as local_endpoint
from infra.local import platform as local
from infra.local.support import port_open, process_cmdline, wait_gone
from infra.settings import Framework
from mnistctl.client import csv_payload, sagemaker_reply_scores
from mnistctl.smoke import held_out_digits
from serving.front import BACKEND_HEADER, CANARY, STABLE

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENDPOINT = "mnist-xgboost-endpoint"
FRONT = "mnist-xgboost-front"
# Dry-run training (512 images, scored on 256 held-out ones): 0.73 / 0.36 / 0.79 accuracy
# (tests/local/test_local_gate_e2e.py).
GOOD = {"num_round": 3, "max_depth": 3}
WORSE = {"num_round": 1, "max_depth": 1}
BETTER = {"num_round": 12, "max_depth": 4}
ROLLOUT = {"canaryPercent": 30, "bakeMinutes": 0.05, "maxErrorRate": 0.05, "minLiveAccuracy": 0.55}


@pytest.fixture(autouse=True)
def code_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = {model: local.training_code_hash(model) for model in Framework}
    monkeypatch.setattr(local, "training_code_hash", hashes.__getitem__)
    # Others may edit serving/ or mnistctl/ while this runs: that would rightly restart the servers.
    serving = local.serving_code_hash()
    monkeypatch.setattr(local, "serving_code_hash", lambda: serving)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ProviderEngine]:
    engine = ProviderEngine()
    yield engine
    try:
        engine.destroy()
    finally:
        stop_stack_processes(tmp_path)


class User(threading.Thread):
    """Sends one digit at a time to the endpoint's URL until stopped; keeps every answer's status and the
    server the front says answered it."""

    def __init__(self, url: str, name: str, images: np.ndarray) -> None:
        super().__init__(daemon=True)
        self.url = f"{url}/endpoints/{name}/invocations"
        self.images = images
        self.answers: list[tuple[int, str, int]] = []  # (status, stable|canary, predicted digit or -1)
        self.stopped = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        index = 0
        while not self.stopped.is_set():
            image = self.images[index % len(self.images) : index % len(self.images) + 1]
            reply = session.post(
                self.url,
                data=csv_payload(image),
                headers={"Content-Type": "text/csv", "Accept": "application/json"},
                timeout=30,
            )
            digit = -1
            if reply.status_code == 200:
                digit = int(
                    np.argmax(sagemaker_reply_scores(reply.content, reply.headers["Content-Type"])[0])
                )
            self.answers.append((reply.status_code, reply.headers.get(BACKEND_HEADER, ""), digit))
            index += 1
            time.sleep(0.02)

    def stop(self) -> list[tuple[int, str, int]]:
        self.stopped.set()
        self.join(30)
        return self.answers


def up_with_users(
    engine: ProviderEngine, config: dict[str, Any], url: str, images: np.ndarray
) -> tuple[StackRun | None, BaseException | None, list[tuple[int, str, int]]]:
    """`pulumi up` while a user sends requests to `url`: the run (or the error it failed with), answers."""
    user = User(url, "mnist-xgboost", images)
    user.start()
    try:
        run = run_stack("local", config, new_resource=engine)
        engine.finish()
        return run, None, user.stop()
    except Exception as error:  # noqa: BLE001 (the failed up is what some rounds expect)
        return None, error, user.stop()


def test_a_canary_that_fails_is_rolled_back_and_the_old_model_serves_every_request_throughout(
    engine: ProviderEngine, tmp_path: Path, t10k_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    root = tmp_path / "local-root"
    config: dict[str, Any] = {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "dryRun": True,
        "minAccuracy": 0.3,
        "ui": False,
        "rollout": ROLLOUT,
        "hyperparameters": {"xgboost": GOOD},
    }
    images, _ = held_out_digits(50, "mnist-t10k", t10k_dir)

    # (1) First up: nothing serves yet, so the first model takes every request through the front at once.
    first = run_stack("local", config, new_resource=engine)
    engine.finish()
    url = first.outputs["endpoints"]["xgboost"]["url"]
    assert url == engine.live[FRONT].state["url"] != engine.live[ENDPOINT].state["url"]
    old = dict(engine.live[ENDPOINT].state)

    # (2) A better model whose server answers 5xx: the canary takes its share, fails, is rolled back.
    real_command = local_endpoint.server_command
    new_servers_fail_predictions(monkeypatch)
    config["hyperparameters"] = {"xgboost": BETTER}
    run, error, answers = up_with_users(engine, config, url, images)
    assert run is None and error is not None
    message = str(error)
    assert "rolled back: error rate" in message and "> maxErrorRate 0.050" in message, message
    assert "injected fault" in message  # the server's own words, from the probes
    assert "The old model" in message and "kept serving throughout" in message
    on_canary = [a for a in answers if a[1] == CANARY]
    on_stable = [a for a in answers if a[1] == STABLE]
    assert on_canary and all(status == 500 for status, _, _ in on_canary)  # users did reach the canary
    assert on_stable and all(status == 200 for status, _, _ in on_stable)  # and the old model never failed
    assert engine.live[ENDPOINT].state["pid"] == old["pid"]  # the old endpoint stays, in the state
    after = requests.post(
        f"{url}/endpoints/mnist-xgboost/invocations",
        data=csv_payload(images[:5]),
        headers={"Content-Type": "text/csv", "Accept": "application/json"},
        timeout=30,
    )
    assert after.status_code == 200 and after.headers[BACKEND_HEADER] == STABLE
    serving = [cmd for cmd in map(process_cmdline, _servers(root)) if cmd]
    assert len(serving) == 1 and old["model_dir"] in serving[0]  # the failing server was stopped

    # (3) A worse model forced past the gate, healthy but wrong: rolled back on its live accuracy.
    monkeypatch.setattr(local_endpoint, "server_command", real_command)
    config["hyperparameters"] = {"xgboost": WORSE}
    config["forcePromotion"] = True
    run, error, answers = up_with_users(engine, config, url, images)
    assert run is None and error is not None
    assert "rolled back: live accuracy" in str(error) and "< minLiveAccuracy 0.550" in str(error), str(error)
    assert [a for a in answers if a[1] == CANARY], "no user request reached the canary"
    assert all(status == 200 for status, _, _ in answers)  # a wrong digit is still a 200
    assert engine.live[ENDPOINT].state["pid"] == old["pid"]
    # Two promotions whose updates did not take: the copy the old server runs on is still there.
    assert Path(old["model_dir"]).is_dir()

    # (4) A better, healthy model: promoted to 100 %; the front's URL is unchanged; the old server is gone.
    config["hyperparameters"] = {"xgboost": BETTER}
    config["forcePromotion"] = False
    run, error, answers = up_with_users(engine, config, url, images)
    assert error is None and run is not None, error
    assert run.outputs["endpoints"]["xgboost"]["url"] == url
    assert all(status == 200 for status, _, _ in answers)
    new = engine.live[ENDPOINT].state
    assert new["pid"] != old["pid"] and wait_gone(int(old["pid"]), 10) and not port_open(int(old["port"]))
    final = requests.post(
        f"{url}/endpoints/mnist-xgboost/invocations",
        data=csv_payload(images[:1]),
        headers={"Content-Type": "text/csv", "Accept": "application/json"},
        timeout=30,
    )
    assert final.status_code == 200 and final.headers[BACKEND_HEADER] == STABLE
    stats = requests.get(f"{url}/-/front", timeout=5).json()
    assert stats["routes"] == {"stable": new["url"], "canary": None, "percent": 0}


def _servers(root: Path) -> list[int]:
    from faults import stack_processes

    return [pid for pid, cmd in stack_processes(root).items() if "serve" in cmd]

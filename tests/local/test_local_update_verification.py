"""An endpoint update on the local stack is verified by what the new server says it serves.

The server's health route names the model it loaded (serving/identity.py); the endpoint's create
compares it with the champion's folder and fails `pulumi up` with the server's answer when they differ.
The endpoint it was replacing is then kept, serving, and removed only once an update passes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from faults import stack_processes, stop_stack_processes
from harness import ProviderEngine, StackRun, run_stack

from infra.local import endpoint as local_endpoint
from infra.local import platform as local
from infra.local.support import LOOPBACK, port_open, wait_gone
from infra.settings import Framework
from mnistctl.client import client_for
from mnistctl.smoke import held_out_digits
from serving.identity import model_identity

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENDPOINT = "mnist-xgboost-endpoint"
GOOD = {"num_round": 3, "max_depth": 3}  # dry run: 0.73 accuracy (tests/local/test_local_gate_e2e.py)
BETTER = {"num_round": 12, "max_depth": 4}  # 0.79


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


def up(engine: ProviderEngine, config: dict[str, Any]) -> StackRun:
    run = run_stack("local", config, new_resource=engine)
    engine.finish()
    return run


def test_an_update_whose_server_serves_another_model_fails_and_the_old_server_keeps_serving(
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
        "hyperparameters": {"xgboost": GOOD},
    }
    images, _ = held_out_digits(8, "mnist-t10k", t10k_dir)
    first = up(engine, config)
    old = dict(engine.live[ENDPOINT].state)
    old_dir = Path(old["model_dir"])
    ping = client_for(first.outputs["endpoints"]["xgboost"])
    old_answers = ping.predict(images)
    # The health route names what is served: the champion folder's content hash.
    health = requests.get(f"http://{LOOPBACK}:{old['port']}/ping", timeout=5).json()
    assert health["model_sha256"] == model_identity(old_dir) == old["artifact_hash"]

    # The fault: the new server starts on the old champion's folder (a server that loaded something else
    # than what the update meant it to).
    real_command = local_endpoint.server_command

    def serves_the_old_folder(props: dict[str, Any], port: int) -> list[str]:
        return real_command({**props, "model_dir": str(old_dir)}, port)

    monkeypatch.setattr(local_endpoint, "server_command", serves_the_old_folder)
    config["hyperparameters"] = {"xgboost": BETTER}
    with pytest.raises(Exception, match="does not serve the new model") as error:
        run_stack("local", config, new_resource=engine)
    message = str(error.value)
    new_dir = Path(engine.live["mnist-xgboost-gate"].state["champion_artifact"]).parent
    assert f"reports model sha256 {model_identity(old_dir)}" in message
    assert f"{new_dir}, has sha256 {model_identity(new_dir)}" in message
    # The old endpoint is kept, in the state and serving as before; the failed server is not left running.
    assert engine.live[ENDPOINT].state["pid"] == old["pid"]
    np.testing.assert_array_equal(ping.predict(images), old_answers)
    servers = [cmd for cmd in stack_processes(root).values() if "serve" in cmd]
    assert len(servers) == 1, servers
    assert old_dir.is_dir()  # the copy the old server was loaded from is still there

    # Without the fault, the next up replaces it: the new server serves the new champion, the old one goes.
    monkeypatch.setattr(local_endpoint, "server_command", real_command)
    third = up(engine, config)
    new = engine.live[ENDPOINT].state
    assert Path(new["model_dir"]) == new_dir and new["pid"] != old["pid"]
    assert wait_gone(int(old["pid"]), 10) and not port_open(int(old["port"]))
    health = requests.get(f"{new['url']}/ping", timeout=5).json()
    assert health["model_sha256"] == model_identity(new_dir)
    assert not np.allclose(client_for(third.outputs["endpoints"]["xgboost"]).predict(images), old_answers)

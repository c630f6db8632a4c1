"""The local stack's ui provider against real processes: create serves the page of the stack's endpoints,
a dead server shows up in diff, delete stops it and closes its port."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import requests
from faults import stack_processes, stop_stack_processes

from infra.local import ui as local_ui
from infra.local.support import RECORDS_FOLDER, LocalProviderError, port_taken
from infra.local.ui import LocalUiProvider, ui_running

ENDPOINTS = {
    "xgboost": {
        "flavor": "sagemaker",
        "name": "mnist-xgboost",
        "url": "http://127.0.0.1:9",
        "region": "local",
    }
}


@pytest.mark.slow
def test_ui_serves_the_stacks_endpoints_until_deleted(tmp_path: Path):
    provider = LocalUiProvider()
    props = {"endpoints": ENDPOINTS, "dataset": "kmnist", "root": str(tmp_path), "stack": "local"}
    created = provider.create(props)
    state = created.outs
    try:
        page = requests.get(f"{state['url']}/api/stack", timeout=5).json()
        assert page["stack"] == "local"
        assert [e["model"] for e in page["endpoints"]] == ["xgboost"]
        assert page["labels"][0] == "お"
        assert provider.diff(created.id, state, props).changes is False
        moved = {**ENDPOINTS, "xgboost": {**ENDPOINTS["xgboost"], "url": "http://127.0.0.1:10"}}
        assert provider.diff(created.id, state, {**props, "endpoints": moved}).replaces == ["endpoints"]
    finally:
        provider.delete(created.id, state)
    assert not ui_running(state)
    assert not port_taken(int(state["port"]))
    provider.delete(created.id, state)  # already gone is fine


@pytest.mark.slow
def test_a_killed_ui_is_started_again_by_the_next_up(tmp_path: Path):
    provider = LocalUiProvider()
    props = {"endpoints": ENDPOINTS, "dataset": "mnist", "root": str(tmp_path), "stack": "local"}
    created = provider.create(props)
    os.killpg(int(created.outs["pid"]), signal.SIGKILL)
    os.waitpid(int(created.outs["pid"]), 0)
    assert provider.diff(created.id, created.outs, props).replaces == ["pid"]
    assert provider.read(created.id, created.outs).id is None
    provider.delete(created.id, created.outs)


@pytest.mark.slow
def test_a_ui_that_never_becomes_ready_fails_and_leaves_no_process_and_no_files_but_its_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(local_ui, "STARTUP_TIMEOUT_SECONDS", 0.3)
    props = {"endpoints": ENDPOINTS, "dataset": "mnist", "root": str(tmp_path), "stack": "local"}
    running = []
    try:
        with pytest.raises(
            LocalProviderError, match=r"the ui did not start on port .*did not answer /api/stack"
        ):
            LocalUiProvider().create(props)
        running = stack_processes(tmp_path)
    finally:
        stop_stack_processes(tmp_path)  # should the create leave it, this test does not
    assert not running
    assert not list((tmp_path / RECORDS_FOLDER).glob("*.json"))
    assert not list((tmp_path / "ui").glob("*.json"))  # the outputs file it was started on
    assert list((tmp_path / "logs").glob("ui-*.log"))  # what the error cites

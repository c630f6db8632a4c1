"""The local endpoint provider against real `mnistctl serve` processes: start, faults, stop.

Each test that starts a server registers it in `endpoints`, whose teardown stops it.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from infra.local import endpoint as local_endpoint
from infra.local import servers as local_servers
from infra.local.endpoint import LocalEndpointProvider, server_running
from infra.local.support import (
    RECORDS_FOLDER,
    LocalProviderError,
    port_open,
    process_cmdline,
    process_start,
    wait_gone,
    write_record,
)
from infra.local.support import free_port as any_free_port

pytestmark = pytest.mark.slow

Props = Callable[..., dict[str, Any]]


def start(
    provider: LocalEndpointProvider, props: dict[str, Any], endpoints: list
) -> tuple[str, dict[str, Any]]:
    result = provider.create(props)
    state = {**props, **(result.outs or {})}
    endpoints.append((result.id, state))
    return result.id, state


def test_create_returns_a_running_server_that_answers_and_delete_stops_it(
    endpoint_props: Props, endpoints: list
):
    provider = LocalEndpointProvider()
    id_, state = start(provider, endpoint_props(), endpoints)

    assert requests.get(f"{state['url']}/ping", timeout=5).status_code == 200
    cmdline = process_cmdline(state["pid"])
    assert cmdline is not None and "serve" in cmdline
    assert os.getpgid(state["pid"]) == state["pid"]  # its own session and process group
    assert Path(state["log_path"]).is_file() and Path(state["log_path"]).is_relative_to(Path(state["root"]))

    provider.delete(id_, state)
    assert process_cmdline(state["pid"]) is None
    assert not port_open(state["port"])


def test_a_port_already_taken_fails_create_naming_the_port_and_what_to_do(endpoint_props: Props):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(LocalProviderError) as error:
            LocalEndpointProvider().create(endpoint_props(port=port))
    message = str(error.value)
    assert f"port {port}" in message and "already in use" in message
    assert "pulumi config set ports" in message


def test_a_server_killed_behind_the_stacks_back_is_replaced_on_the_next_up(
    endpoint_props: Props, endpoints: list
):
    provider = LocalEndpointProvider()
    id_, state = start(provider, endpoint_props(), endpoints)
    assert not provider.diff(id_, state, endpoint_props()).changes

    os.killpg(state["pid"], signal.SIGKILL)
    assert wait_gone(state["pid"], 10)

    diff = provider.diff(id_, state, endpoint_props())
    assert diff.changes and diff.replaces == ["pid"]
    read = provider.read(id_, state)
    assert not read.id  # refresh drops it from the state
    provider.delete(id_, state)  # already gone: success

    _, again = start(provider, endpoint_props(), endpoints)  # what the replacement does
    assert server_running(again)


def test_a_stopped_server_that_ignores_sigterm_is_killed(
    endpoint_props: Props, endpoints: list, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(local_endpoint, "STOP_TIMEOUT_SECONDS", 1.0)
    provider = LocalEndpointProvider()
    id_, state = start(provider, endpoint_props(), endpoints)
    os.kill(state["pid"], signal.SIGSTOP)  # a stopped process does not act on SIGTERM
    provider.delete(id_, state)
    assert process_cmdline(state["pid"]) is None
    assert not port_open(state["port"])


def test_delete_of_a_server_already_gone_succeeds_and_spares_a_stranger_with_its_pid(endpoint_props: Props):
    provider = LocalEndpointProvider()
    # A live process that is not our server, leading its own process group (as our servers do), whose
    # pid and start time the state records as if the server had been replaced by it.
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        state = {
            **endpoint_props(),
            "pid": stranger.pid,
            "port": any_free_port(),
            "started": process_start(stranger.pid),
            "url": "http://x",
        }
        provider.delete("gone", state)
        provider.delete("never", {**endpoint_props(), "pid": 2**22 + 17, "port": 1})
        time.sleep(0.2)  # a signal, had one been sent, has landed by now
        assert stranger.poll() is None, "delete killed a process that was not its server"
    finally:
        stranger.kill()
        stranger.wait()


@pytest.mark.parametrize(
    ("change", "replaced"),
    [
        ({"artifact_hash": "hash-2"}, ["artifact_hash"]),
        ({"model_dir": "/elsewhere"}, ["model_dir"]),
        ({"flavor": "vertex"}, ["flavor"]),
        ({"requested_port": 8099}, ["requested_port"]),
        (
            {"artifact_hash": "04da6b54-80e4-46f7-96ec-b56ff0331ba9"},
            ["artifact_hash"],
        ),  # unknown in a preview
    ],
)
def test_a_new_artifact_or_contract_replaces_the_endpoint(
    change: dict, replaced: list[str], endpoint_props: Props
):
    olds = {**endpoint_props(), "pid": 1, "port": 1}
    diff = LocalEndpointProvider().diff("id", olds, {**endpoint_props(), **change})
    assert diff.changes and diff.replaces == replaced


def test_a_fixed_port_is_freed_before_its_replacement_starts(endpoint_props: Props):
    olds = {**endpoint_props(port=8099), "pid": 1, "port": 8099}
    diff = LocalEndpointProvider().diff("id", olds, endpoint_props(port=8099, artifact_hash="hash-2"))
    assert diff.delete_before_replace is True
    free = LocalEndpointProvider().diff(
        "id", {**endpoint_props(), "pid": 1}, endpoint_props(artifact_hash="x")
    )
    assert free.delete_before_replace is False


def test_ports_arriving_as_floats_are_the_same_ports(endpoint_props: Props, endpoints: list):
    # Under the engine (and mocks) numbers cross the wire as floats: 8080 -> 8080.0.
    provider = LocalEndpointProvider()
    id_, state = start(provider, endpoint_props(), endpoints)
    as_floats = {k: float(v) if isinstance(v, int) else v for k, v in state.items()}
    assert not provider.diff(id_, as_floats, endpoint_props()).changes


def test_a_port_taken_between_the_check_and_the_servers_start_gives_the_same_advice(
    endpoint_props: Props, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(local_endpoint, "port_taken", lambda port: False)  # someone binds it just after
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(
            LocalProviderError, match=f"port {port} for the xgboost endpoint is already in use"
        ):
            LocalEndpointProvider().create(endpoint_props(port=port))


def test_a_free_port_snatched_before_the_server_binds_it_is_retried_with_another(
    endpoint_props: Props, endpoints: list, monkeypatch: pytest.MonkeyPatch
):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        snatched = squatter.getsockname()[1]
        ports = iter([snatched, any_free_port()])
        monkeypatch.setattr(local_endpoint, "free_port", lambda: next(ports))
        _, state = start(LocalEndpointProvider(), endpoint_props(), endpoints)
    assert state["port"] != snatched and server_running(state)


def test_an_endpoint_that_never_becomes_ready_fails_naming_it_and_leaves_no_process(
    endpoint_props: Props, monkeypatch: pytest.MonkeyPatch
):
    # Loading the model takes longer than this: the server is started, then never answers in time.
    monkeypatch.setattr(local_endpoint, "STARTUP_TIMEOUT_SECONDS", 0.5)
    started: list[subprocess.Popen] = []
    start_detached = local_servers.start_detached

    def recorded(*args: Any, **kwargs: Any) -> subprocess.Popen:
        started.append(start_detached(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(local_servers, "start_detached", recorded)
    props = endpoint_props()
    try:
        with pytest.raises(LocalProviderError) as error:
            LocalEndpointProvider().create(props)
        left = [process.pid for process in started if process.poll() is None]
    finally:
        for process in started:  # should the create leave it, this test does not
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    message = str(error.value)
    assert "the server of endpoint mnist-xgboost did not answer /ping" in message and "stopped" in message
    assert len(started) == 1 and not left  # stopped before the error was raised, not left to the next `up`
    root = Path(props["root"])
    assert not list((root / RECORDS_FOLDER).glob("*.json"))  # nothing for the next `up` to adopt


def test_a_server_left_by_an_interrupted_create_that_never_answers_is_stopped_not_adopted(
    endpoint_props: Props,
):
    props = endpoint_props()
    port = any_free_port()
    spec = dataclasses.replace(local_endpoint._spec(props, "mnist-xgboost-left"), startup_timeout=1.0)
    # A process whose command line is the recorded server's (serve, its model, name and port) and
    # which never answers /ping: a server hung while loading when `pulumi up` died.
    hung = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; time.sleep(60)",
            "serve",
            props["model_dir"],
            props["name"],
            str(port),
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while "serve" not in (process_cmdline(hung.pid) or []) and time.monotonic() < deadline:
            time.sleep(0.05)  # until the child has exec'd (before that its command line is pytest's)
        write_record(spec.record, {"pid": hung.pid, "started": process_start(hung.pid), "port": port})
        adopted, previous_port = local_servers.found_server(spec)
        assert adopted is None  # not adopted: the create starts a new server
        assert previous_port == port  # on the same port, once it is free
        assert hung.wait(timeout=15) is not None  # stopped, not left beside the new one
        assert not spec.record.exists()
    finally:
        if hung.poll() is None:
            hung.kill()
            hung.wait()

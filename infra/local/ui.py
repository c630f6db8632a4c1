"""The local stack's draw-a-digit page: a detached `mnistctl ui` process on a loopback port.

Like the endpoints (endpoint.py): create writes the stack's endpoints to `<localRoot>/ui/outputs.json`,
starts the server in a session of its own (it outlives `pulumi up`), logs to `<localRoot>/logs/` and
returns once the page answers; delete stops it. New endpoints or a dead server replace it.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.dynamic import changed_keys, file_tail, log, state_of
from infra.local.support import (
    LocalProviderError,
    answers,
    free_port,
    is_our_process,
    reap,
    served_state,
    start_detached,
    stop_process_group,
    wait_port_closed,
)
from mnistctl.cli import ui_command

STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
PORT_CLOSE_TIMEOUT_SECONDS = 10.0
# What answers once the page can serve: the stack the page was started for.
UI_READY_ROUTE = "/api/stack"
_REPLACE_KEYS = ("endpoints", "dataset", "root", "stack")


@dataclass
class LocalUiArgs:
    """Inputs of a LocalUi."""

    endpoints: pulumi.Input[dict[str, Any]]
    """The stack's `endpoints` output: what the page sends each drawing to."""
    dataset: pulumi.Input[str]
    """The stack's dataset (kmnist pages show its characters)."""
    root: pulumi.Input[str]
    """The stack's localRoot: the outputs file and the log go there."""
    stack: pulumi.Input[str]
    """The stack's name, shown on the page."""


class LocalUiProvider(ResourceProvider):
    """One `mnistctl ui` process; the pid, its start time and the port identify it."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        ui_id = f"ui-{secrets.token_hex(4)}"
        return CreateResult(id_=ui_id, outs={**state_of(props), **_start(props, ui_id, free_port())})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        if not replaces and not ui_running(olds):
            replaces = ["pid"]  # the recorded server is gone: start it again
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not ui_running(props):
            return ReadResult(None, {})
        return ReadResult(id_, state_of(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        pid, port = int(props.get("pid") or 0), int(props.get("port") or 0)
        if not pid or not is_our_process(props, "ui"):
            log(f"ui: server {pid or '?'} is already gone")
            return
        log(f"stopping the ui (pid {pid}, port {port})")
        stop_process_group(pid, STOP_TIMEOUT_SECONDS)
        if port and not wait_port_closed(port, PORT_CLOSE_TIMEOUT_SECONDS):
            raise LocalProviderError(
                f"port {port} still accepts connections after the ui (pid {pid}) stopped; "
                f"`ss -ltnp 'sport = :{port}'` shows what listens there."
            )


def ui_running(state: dict[str, Any]) -> bool:
    """Whether the recorded server is ours and serves the page."""
    return is_our_process(state, "ui") and answers(int(state.get("port") or 0), UI_READY_ROUTE)


def _start(props: dict[str, Any], ui_id: str, port: int) -> dict[str, Any]:
    root = Path(props["root"])
    outputs_path = root / "ui" / "outputs.json"
    outputs_path.parent.mkdir(parents=True, exist_ok=True)
    outputs = {"endpoints": props["endpoints"], "dataset": props["dataset"], "stack": props["stack"]}
    outputs_path.write_text(json.dumps(outputs))
    log_path = root / "logs" / f"{ui_id}.log"
    log(f"starting the ui on port {port}; log: {log_path}")
    process = start_detached(ui_command(outputs_path, port), log_path, root, "the ui")
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not answers(port, UI_READY_ROUTE):
        returncode = process.poll()
        if returncode is not None or time.monotonic() > deadline:
            if returncode is None:
                stop_process_group(process.pid, STOP_TIMEOUT_SECONDS)
            reap(process.pid)
            raise LocalProviderError(
                f"the ui did not start on port {port} (exit code {process.poll()}). Its last lines:\n"
                f"{file_tail(log_path)}\nFull log: {log_path}."
            )
        time.sleep(0.25)
    state = served_state(process.pid, port, log_path)
    log(f"ui ready at {state['url']} (pid {process.pid})")
    return state


class LocalUi(pulumi.dynamic.Resource, module="local", name="Ui"):
    """The draw-a-digit page of the stack's endpoints (`mnistctl ui`)."""

    pid: pulumi.Output[int]
    port: pulumi.Output[int]
    url: pulumi.Output[str]
    started: pulumi.Output[str]
    log_path: pulumi.Output[str]

    def __init__(self, name: str, args: LocalUiArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "endpoints": args.endpoints,
            "dataset": args.dataset,
            "root": args.root,
            "stack": args.stack,
            "pid": None,
            "port": None,
            "url": None,
            "started": None,
            "log_path": None,
        }
        super().__init__(LocalUiProvider(), name, props, opts)

"""The local stack's draw-a-digit page: a detached `mnistctl ui` process on a loopback port.

Like the endpoints (endpoint.py, servers.py): create writes the stack's endpoints to
`<localRoot>/ui/<id>.json`, starts the server in a session of its own (it outlives `pulumi up`), records
it in `<localRoot>/run/<id>.json`, logs to `<localRoot>/logs/<id>.log` and returns once the page answers;
the id carries the resource's identity, so a create interrupted before its result reached the state is
adopted by the next one. Delete stops it. New endpoints, new ui code or a dead server replace it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, log, state_of
from infra.local.servers import ServerSpec, found_server, start_server
from infra.local.support import (
    LocalProviderError,
    answers,
    forget_record,
    free_port,
    is_our_process,
    port_taken,
    record_path,
    remove_tree,
    stop_process_group,
    wait_port_closed,
)
from mnistctl.cli import ui_command

STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
PORT_CLOSE_TIMEOUT_SECONDS = 10.0
# What answers once the page can serve: the stack the page was started for.
UI_READY_ROUTE = "/api/stack"
# What a new value of replaces the page's server; also what its identity is made of.
_REPLACE_KEYS = ("endpoints", "dataset", "root", "stack", "code_hash")


@dataclass
class LocalUiArgs:
    """Inputs of a LocalUi."""

    endpoints: pulumi.Input[dict[str, Any]]
    """The stack's `endpoints` output: what the page sends each drawing to."""
    dataset: pulumi.Input[str]
    """The stack's dataset (kmnist pages show its characters)."""
    root: pulumi.Input[str]
    """The stack's localRoot: the outputs file, the record and the log go there."""
    stack: pulumi.Input[str]
    """The stack's name, shown on the page."""
    code_hash: pulumi.Input[str] = ""
    """Hash of the code the page's server runs (platform.ui_code_hash): new code, new server."""


class LocalUiProvider(ResourceProvider):
    """One `mnistctl ui` process; the pid, its start time and the port identify it."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        ui_id = f"ui-{identity(props, _REPLACE_KEYS)}"
        root = Path(props["root"])
        outputs_path = root / "ui" / f"{ui_id}.json"
        spec = ServerSpec(
            what="the ui",
            marker="ui",
            identifying=(str(outputs_path),),
            command=lambda port: ui_command(outputs_path, port),
            ready_route=UI_READY_ROUTE,
            record=record_path(root, ui_id),
            log_path=root / "logs" / f"{ui_id}.log",
            cwd=root,
            env=None,
            startup_timeout=STARTUP_TIMEOUT_SECONDS,
            stop_timeout=STOP_TIMEOUT_SECONDS,
        )
        adopted, previous_port = found_server(spec)
        if adopted is None:
            outputs_path.parent.mkdir(parents=True, exist_ok=True)
            outputs = {"endpoints": props["endpoints"], "dataset": props["dataset"], "stack": props["stack"]}
            outputs_path.write_text(json.dumps(outputs))
            port = previous_port if previous_port and not port_taken(previous_port) else free_port()
            log(f"starting the ui on port {port}; log: {spec.log_path}")
            try:
                adopted = start_server(spec, port)
            except Exception as error:
                remove_tree(outputs_path)  # a failed create leaves nothing behind but its log
                raise LocalProviderError(f"the ui did not start on port {port}: {error}") from error
            log(f"ui ready at {adopted['url']} (pid {adopted['pid']})")
        return CreateResult(id_=ui_id, outs={**state_of(props), **adopted})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        if not replaces and not ui_running(olds):
            replaces = ["pid"]  # the recorded server is gone: start it again
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not ui_running(props):
            return ReadResult(None, {})  # refresh drops it; the next `pulumi up` starts a new one
        return ReadResult(id_, state_of(props))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        pid, port = int(props.get("pid") or 0), int(props.get("port") or 0)
        forget_record(record_path(Path(props["root"]), id_), pid)
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
            "code_hash": args.code_hash,
            IDENTITY_SEED: identity_seed("local:Ui", name),
            "pid": None,
            "port": None,
            "url": None,
            "started": None,
            "log_path": None,
        }
        super().__init__(LocalUiProvider(), name, props, opts)

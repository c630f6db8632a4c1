"""The local stack's traffic-splitting front (serving/front.py): a detached process on a loopback port.

Declared per model only when `rollout` is set (docs/gate.md "Rollout"); the stack's endpoint URL is then
the front's, which stays the same across model updates. It forwards to the model servers its routes
file names, `<localRoot>/run/<id>.routes.json`; the endpoints write that file (endpoint.py, rollout.py):
a new endpoint starts as the canary beside the old one and becomes `stable`, or is rolled back.

Like the endpoints and the ui (servers.py): the id carries the identity, the process is recorded in
`<localRoot>/run/<id>.json` the moment it starts (an interrupted create is adopted by the next one),
its log is `<localRoot>/logs/<id>.log`, delete stops it and removes its routes file, a front that died
behind the stack's back shows in `diff` and `read`, and new front code replaces it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, log, state_of
from infra.local.servers import PortTakenError, ServerSpec, found_server, start_server
from infra.local.support import (
    LocalProviderError,
    answers,
    forget_record,
    free_port,
    is_our_process,
    port_taken,
    record_path,
    stop_process_group,
    wait_port_closed,
)
from serving.front import STATS_ROUTE, front_command

STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
PORT_CLOSE_TIMEOUT_SECONDS = 10.0
MARKER = "serving.front"  # the module on its command line: how a recorded pid is recognised as ours
_REPLACE_KEYS = ("name", "root", "requested_port", "code_hash")


@dataclass
class LocalFrontArgs:
    """Inputs of a LocalFront."""

    name: pulumi.Input[str]
    """The endpoint's name (the front's log and record are named after it)."""
    root: pulumi.Input[str]
    """The stack's localRoot: the routes file, record and log go under it."""
    code_hash: pulumi.Input[str]
    """Hash of the serving code (the front is part of it): new code, new front."""
    requested_port: pulumi.Input[int] = 0
    """The model's fixed loopback port (`ports`), or 0 for a free one."""


def routes_path(root: Path | str, front_id: str) -> Path:
    return record_path(Path(root), front_id).with_suffix(".routes.json")


class LocalFrontProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        front_id = f"{props['name']}-front-{identity(props, _REPLACE_KEYS)}"
        routes = routes_path(props["root"], front_id)
        spec = _spec(props, front_id, routes)
        adopted, previous_port = found_server(spec)
        state = adopted
        if state is None:
            requested = int(props.get("requested_port") or 0)
            port = requested or (
                previous_port if previous_port and not port_taken(previous_port) else free_port()
            )
            if port_taken(port):
                raise LocalProviderError(
                    f"port {port} for the front of endpoint {props['name']} is already in use by another "
                    "process; stop it (`ss -ltnp 'sport = :{port}'` shows it) or choose another port in "
                    "`pulumi config set ports ...`."
                )
            log(f"starting the front of endpoint {props['name']} on port {port}; log: {spec.log_path}")
            try:
                state = start_server(spec, port)
            except PortTakenError as error:
                raise LocalProviderError(f"{error}; run `pulumi up` again") from None
        return CreateResult(id_=front_id, outs={**state_of(props), **state, "routes": str(routes)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        if not replaces and not front_running(olds):
            replaces = ["pid"]  # the recorded front is gone: start it again
        fixed_port = bool(news.get("requested_port") or olds.get("requested_port"))
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=fixed_port)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not front_running(props):
            return ReadResult(None, {})
        return ReadResult(id_, state_of(props))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        pid, port = int(props.get("pid") or 0), int(props.get("port") or 0)
        forget_record(record_path(Path(props["root"]), id_), pid)
        if pid and is_our_process(props, MARKER):
            log(f"stopping the front of endpoint {props.get('name')} (pid {pid}, port {port})")
            stop_process_group(pid, STOP_TIMEOUT_SECONDS)
            if port and not wait_port_closed(port, PORT_CLOSE_TIMEOUT_SECONDS):
                raise LocalProviderError(
                    f"port {port} still accepts connections after the front (pid {pid}) stopped"
                )
        if not record_path(Path(props["root"]), id_).exists():
            # No newer front of this identity (a replacement of a dead one) follows the routes: remove them.
            Path(str(props.get("routes") or routes_path(props["root"], id_))).unlink(missing_ok=True)


def front_running(state: dict[str, Any]) -> bool:
    return is_our_process(state, MARKER) and answers(int(state.get("port") or 0), STATS_ROUTE)


def _spec(props: dict[str, Any], front_id: str, routes: Path) -> ServerSpec:
    root = Path(props["root"])
    return ServerSpec(
        what=f"the front of endpoint {props['name']}",
        marker=MARKER,
        identifying=(str(routes),),
        command=lambda port: front_command(routes, port),
        ready_route=STATS_ROUTE,
        record=record_path(root, front_id),
        log_path=root / "logs" / f"{front_id}.log",
        cwd=root,
        env=dict(os.environ),
        startup_timeout=STARTUP_TIMEOUT_SECONDS,
        stop_timeout=STOP_TIMEOUT_SECONDS,
    )


class LocalFront(pulumi.dynamic.Resource, module="local", name="Front"):
    """One loopback port in front of a model's servers: the endpoint URL when `rollout` is set."""

    pid: pulumi.Output[int]
    port: pulumi.Output[int]
    url: pulumi.Output[str]
    routes: pulumi.Output[str]
    log_path: pulumi.Output[str]

    def __init__(self, name: str, args: LocalFrontArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "name": args.name,
            "root": args.root,
            "code_hash": args.code_hash,
            "requested_port": args.requested_port,
            IDENTITY_SEED: identity_seed("local:Front", name),
            "pid": None,
            "port": None,
            "url": None,
            "started": None,
            "routes": None,
            "log_path": None,
        }
        super().__init__(LocalFrontProvider(), name, props, opts)

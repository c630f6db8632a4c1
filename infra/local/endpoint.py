"""The local stack's endpoint: a detached `mnistctl serve` process on a loopback port.

Create starts the server in a session of its own (it outlives `pulumi up`), writes its output to
`<localRoot>/logs/<id>.log` and returns once the health route answers. Delete stops the process, if
it is still ours, and waits until the port is closed. A server that died or was killed behind the
stack's back shows up in `diff` (and `refresh`), so the next `pulumi up` starts it again.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider
from tenacity import retry, retry_if_exception_type, stop_after_attempt

from infra.dynamic import changed_keys, file_tail, log, state_of
from infra.local.support import (
    LocalProviderError,
    answers,
    free_port,
    is_our_process,
    port_taken,
    reap,
    served_state,
    start_detached,
    stop_process_group,
    wait_port_closed,
)
from mnistctl.cli import serve_command
from serving.constants import (
    PING_ROUTE,
    SAGEMAKER_DEPLOYED_INFERENCE_OUTPUT,
    SAGEMAKER_INFERENCE_OUTPUT_ENV,
    Flavor,
)

STARTUP_TIMEOUT_SECONDS = 180.0  # loading TensorFlow on a busy two-core machine takes a while
STOP_TIMEOUT_SECONDS = 10.0
PORT_CLOSE_TIMEOUT_SECONDS = 10.0
_REPLACE_KEYS = ("flavor", "name", "model_dir", "artifact_hash", "requested_port", "root", "environment")


def serving_environment(flavor: str) -> dict[str, str]:
    """What the cloud sets in the flavor's serving container, so that the local server answers alike:
    the aws stack's SageMaker model runs with SAGEMAKER_INFERENCE_OUTPUT=probabilities."""
    if flavor == Flavor.SAGEMAKER.value:
        return {SAGEMAKER_INFERENCE_OUTPUT_ENV: SAGEMAKER_DEPLOYED_INFERENCE_OUTPUT}
    return {}


@dataclass
class LocalEndpointArgs:
    """Inputs of a LocalEndpoint."""

    model: pulumi.Input[str]
    """The framework whose model is served (xgboost, tensorflow, pytorch)."""
    flavor: pulumi.Input[str]
    """Wire contract: sagemaker, vertex or watsonx."""
    name: pulumi.Input[str]
    """Endpoint name in the URL path (`/endpoints/{name}/invocations` etc.)."""
    model_dir: pulumi.Input[str]
    """The training job's artifact folder (`mnistctl serve --model`)."""
    artifact_hash: pulumi.Input[str]
    """The artifact's hash: a new artifact replaces the endpoint."""
    root: pulumi.Input[str]
    """The stack's localRoot; the server's log goes to <root>/logs/."""
    requested_port: pulumi.Input[int] = 0
    """A fixed loopback port, or 0 for a free one."""


class PortTakenError(LocalProviderError):
    """The server could not bind its port (taken between our check and its start)."""


class LocalEndpointProvider(ResourceProvider):
    """One server process per endpoint; the pid, its start time and the port identify it."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        endpoint_id = f"{props['name']}-{secrets.token_hex(4)}"
        requested = int(props.get("requested_port") or 0)
        if not requested:
            started = _start_on_a_free_port(props, endpoint_id)
        elif port_taken(requested):
            raise port_taken_error(requested, str(props["model"]))
        else:
            try:
                started = _start(props, endpoint_id, requested)
            except PortTakenError:
                raise port_taken_error(requested, str(props["model"])) from None
        return CreateResult(id_=endpoint_id, outs={**state_of(props), **started})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        if not replaces and not server_running(olds):
            replaces = ["pid"]  # the recorded server is gone: start it again
        # A fixed port can only be held by one server at a time: stop the old one first.
        fixed_port = bool(news.get("requested_port") or olds.get("requested_port"))
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=fixed_port)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not server_running(props):
            return ReadResult(None, {})  # refresh drops it; the next `pulumi up` starts a new one
        return ReadResult(id_, state_of(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        pid, port = int(props.get("pid") or 0), int(props.get("port") or 0)
        if not pid or not is_our_server(props):
            log(f"endpoint {props.get('name')}: server {pid or '?'} is already gone")
            return
        log(f"stopping endpoint {props.get('name')} (pid {pid}, port {port})")
        stop_process_group(pid, STOP_TIMEOUT_SECONDS)
        if port and not wait_port_closed(port, PORT_CLOSE_TIMEOUT_SECONDS):
            raise LocalProviderError(
                f"port {port} still accepts connections {PORT_CLOSE_TIMEOUT_SECONDS:.0f}s after the server "
                f"(pid {pid}) stopped; something else listens there: `ss -ltnp 'sport = :{port}'` shows it."
            )


def server_command(props: dict[str, Any], port: int) -> list[str]:
    return serve_command(str(props["flavor"]), str(props["model_dir"]), port, str(props["name"]))


def is_our_server(state: dict[str, Any]) -> bool:
    """Whether the recorded pid is still the server we started (not a later process with that pid)."""
    return is_our_process(state, "serve")


def server_running(state: dict[str, Any]) -> bool:
    """Whether the recorded server process is ours and answers its health route."""
    return is_our_server(state) and answers(int(state.get("port") or 0), PING_ROUTE)


def port_taken_error(port: int, model: str) -> LocalProviderError:
    return LocalProviderError(
        f"port {port} for the {model} endpoint is already in use by another process. "
        f"Stop that process (`ss -ltnp 'sport = :{port}'` or `lsof -i :{port}` shows it), "
        f"or choose another port: `pulumi config set ports '{{\"{model}\": <port>}}'` "
        "(without a port for this model a free one is picked)."
    )


@retry(retry=retry_if_exception_type(PortTakenError), stop=stop_after_attempt(3), reraise=True)
def _start_on_a_free_port(props: dict[str, Any], endpoint_id: str) -> dict[str, Any]:
    # A free port can be taken by someone else between free_port() and the server's bind: try another.
    return _start(props, endpoint_id, free_port())


def _start(props: dict[str, Any], endpoint_id: str, port: int) -> dict[str, Any]:
    root = Path(props["root"])
    log_path = root / "logs" / f"{endpoint_id}.log"
    log(f"starting endpoint {props['name']} ({props['flavor']}) on port {port}; log: {log_path}")
    environment = {**os.environ, **(props.get("environment") or {})}
    process = start_detached(server_command(props, port), log_path, root, "the server", environment)
    try:
        _wait_ready(process, port, log_path, str(props["name"]))
    except BaseException:
        if process.poll() is None:
            stop_process_group(process.pid, STOP_TIMEOUT_SECONDS)
        process.wait()
        raise
    state = served_state(process.pid, port, log_path)
    log(f"endpoint {props['name']} ready at {state['url']} (pid {process.pid})")
    return state


def _wait_ready(process: subprocess.Popen, port: int, log_path: Path, name: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        returncode = process.poll()
        if returncode is not None:
            reap(process.pid)
            output = file_tail(log_path)
            if "address already in use" in output.lower():
                raise PortTakenError(f"port {port} was taken before the server of {name} could bind it")
            raise LocalProviderError(
                f"the server of endpoint {name} exited with code {returncode} before it was ready. "
                f"Its last lines:\n{output}\nFull log: {log_path}."
            )
        if answers(port, PING_ROUTE):
            return
        time.sleep(0.25)
    raise LocalProviderError(
        f"the server of endpoint {name} did not answer {PING_ROUTE} on port {port} within "
        f"{STARTUP_TIMEOUT_SECONDS:.0f}s. Its last lines:\n{file_tail(log_path)}\nFull log: {log_path}."
    )


class LocalEndpoint(pulumi.dynamic.Resource, module="local", name="Endpoint"):
    """A local server speaking one platform's wire contract."""

    pid: pulumi.Output[int]
    port: pulumi.Output[int]
    url: pulumi.Output[str]
    started: pulumi.Output[str]
    log_path: pulumi.Output[str]

    def __init__(
        self, name: str, args: LocalEndpointArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "model": args.model,
            "flavor": args.flavor,
            "name": args.name,
            "model_dir": args.model_dir,
            "artifact_hash": args.artifact_hash,
            "root": args.root,
            "requested_port": args.requested_port,
            "environment": pulumi.Output.from_input(args.flavor).apply(serving_environment),
            "pid": None,
            "port": None,
            "url": None,
            "started": None,
            "log_path": None,
        }
        super().__init__(LocalEndpointProvider(), name, props, opts)

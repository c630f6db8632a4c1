"""The local stack's endpoint: a detached `mnistctl serve` process on a loopback port.

Create starts the server in a session of its own (it outlives `pulumi up`), writes its output to
`<localRoot>/logs/<id>.log` and returns once the health route answers. Its id is the endpoint's name and
identity (infra/dynamic.py): the record of the server it starts, `<localRoot>/run/<id>.json`, lets a create
interrupted before its result reached the state be adopted by the next one (servers.py), and a replacement
(new inputs, new identity) never adopts what it replaces. Delete stops the process, if it is still ours,
and waits until the port is closed. A server that died or was killed behind the stack's back shows up in
`diff` and `read` (so `pulumi refresh` drops it), and the next `pulumi up` starts it again; new serving
code (`code_hash`, the checkout's serving/ and mnistctl/ sources) replaces it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import requests
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult
from tenacity import retry, retry_if_exception_type, stop_after_attempt

from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, log, state_of
from infra.local.rollout import PROBE_DIGITS, probe_for, run_canary
from infra.local.servers import PortTakenError, ServerSpec, found_server, start_server
from infra.local.support import (
    LOOPBACK,
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
from mnistctl.cli import serve_command
from mnistctl.smoke import held_out_digits
from serving.constants import (
    PING_ROUTE,
    SAGEMAKER_DEPLOYED_INFERENCE_OUTPUT,
    SAGEMAKER_INFERENCE_OUTPUT_ENV,
    Flavor,
)
from serving.front import Routes
from serving.identity import model_identity

STARTUP_TIMEOUT_SECONDS = 180.0  # loading TensorFlow on a busy two-core machine takes a while
STOP_TIMEOUT_SECONDS = 10.0
PORT_CLOSE_TIMEOUT_SECONDS = 10.0
# What a new value of replaces the server; also what its identity is made of (a replacement is a new one).
_REPLACE_KEYS = (
    "flavor",
    "name",
    "model_dir",
    "artifact_hash",
    "requested_port",
    "root",
    "environment",
    "code_hash",
)
# The front the endpoint sits behind when `rollout` is set (front.py), and how it rolls out: taken over in
# place, never a reason to restart the server.
_FRONT_KEYS = ("front_url", "front_routes", "rollout")
_SERVER_KEYS = ("pid", "port", "url", "started", "log_path")


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
    """The stack's localRoot; the server's log goes to <root>/logs/, its record to <root>/run/."""
    code_hash: pulumi.Input[str]
    """Hash of the serving code the server runs (platform.serving_code_hash): new code, new server."""
    requested_port: pulumi.Input[int] = 0
    """A fixed loopback port, or 0 for a free one."""
    front_url: pulumi.Input[str] = ""
    """The front (front.py) the endpoint sits behind when `rollout` is set; "" for none."""
    front_routes: pulumi.Input[str] = ""
    """The front's routes file, which the endpoint writes; "" for none."""
    rollout: Mapping[str, Any] | None = None
    """`rollout` (RolloutSettings as a dict): a new server is a canary behind the front first."""
    probe_dataset: pulumi.Input[str] = ""
    """The dataset whose held-out digits probe a canary's live accuracy."""
    probe_data_dir: pulumi.Input[str] = ""
    """Where those digits are read from (the stack's data folder)."""


class LocalEndpointProvider(ResourceProvider):
    """One server process per endpoint; the pid, its start time and the port identify it."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        endpoint_id = f"{props['name']}-{identity(props, _REPLACE_KEYS)}"
        spec = _spec(props, endpoint_id)
        adopted, previous_port = found_server(spec)
        if adopted is not None:
            _verified(props, adopted, spec)
            _take_over_front(props, adopted, spec)
            return CreateResult(id_=endpoint_id, outs={**state_of(props), **adopted})
        requested = int(props.get("requested_port") or 0)
        if not requested:
            started = _start_on_a_free_port(spec, previous_port)
        elif port_taken(requested):
            raise port_taken_error(requested, str(props["model"]))
        else:
            log(f"starting {spec.what} on port {requested}; log: {spec.log_path}")
            try:
                started = start_server(spec, requested)
            except PortTakenError:
                raise port_taken_error(requested, str(props["model"])) from None
        _verified(props, started, spec)
        _take_over_front(props, started, spec)
        log(f"endpoint {props['name']} ready at {started['url']} (pid {started['pid']})")
        return CreateResult(id_=endpoint_id, outs={**state_of(props), **started})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        if not replaces and not server_running(olds):
            replaces = ["pid"]  # the recorded server is gone: start it again
        # A fixed port can only be held by one server at a time: stop the old one first.
        fixed_port = bool(news.get("requested_port") or olds.get("requested_port"))
        # A new front (or a new rollout) is taken over in place: the server stays.
        changes = bool(replaces) or bool(changed_keys(olds, news, _FRONT_KEYS))
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=fixed_port)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        server = {key: olds.get(key) for key in _SERVER_KEYS}
        if news.get("front_routes"):
            Routes(stable=str(olds["url"])).write(Path(str(news["front_routes"])))
        return UpdateResult(outs={**state_of(news), **server})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not server_running(props):
            return ReadResult(None, {})  # refresh drops it; the next `pulumi up` starts a new one
        return ReadResult(id_, state_of(props))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        pid, port = int(props.get("pid") or 0), int(props.get("port") or 0)
        # The record goes with its server; a newer server of the same identity (a replacement started
        # after this one died) keeps its own.
        forget_record(record_path(Path(props["root"]), id_), pid)
        routes = Path(str(props.get("front_routes") or ""))
        if props.get("front_routes") and Routes.read(routes).stable == props.get("url"):
            Routes().write(routes)  # the front answers 503 instead of forwarding to a stopped server
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


def serving_problem(port: int, model_dir: Path) -> str | None:
    """Why the server on `port` is not serving the model in `model_dir`, in its own words, or None.

    The server's health route names the model it loaded (serving/identity.py); the expected identity is
    the folder's content now, so a server started on another folder, or on a copy changed since, fails."""
    expected = model_identity(model_dir)
    try:
        answer = requests.get(f"http://{LOOPBACK}:{port}{PING_ROUTE}", timeout=5)
        served = answer.json().get("model_sha256") if answer.status_code == 200 else None
    except (requests.RequestException, ValueError, AttributeError) as error:
        return f"its health route {PING_ROUTE} gave no readable answer ({error})"
    if answer.status_code != 200:
        return f"its health route {PING_ROUTE} answered {answer.status_code}: {answer.text[:300]}"
    if served != expected:
        return (
            f"it reports model sha256 {served or '(none)'} on {PING_ROUTE}, but the model to serve, "
            f"{model_dir}, has sha256 {expected}"
        )
    return None


def _take_over_front(props: dict[str, Any], state: dict[str, Any], spec: ServerSpec) -> None:
    """Behind a front (`rollout` set): bake the new server as a canary beside the one the front routes to
    now (rollout.py), or, with nothing serving yet, route everything to it. A rolled-back canary stops the
    new server and fails the create: Pulumi keeps the endpoint it was replacing, which kept serving."""
    if not props.get("front_routes"):
        return
    routes, new_url = Path(str(props["front_routes"])), str(state["url"])
    stable = Routes.read(routes).stable
    rollout = props.get("rollout") or None
    if not rollout or not stable or stable == new_url or not _answers(stable):
        Routes(stable=new_url).write(routes)
        return
    data_dir = props.get("probe_data_dir") or None
    images, labels = held_out_digits(
        PROBE_DIGITS, props.get("probe_dataset"), Path(data_dir) if data_dir else None
    )
    verdict = run_canary(
        routes=routes,
        front_url=str(props["front_url"]),
        stable_url=stable,
        canary_url=new_url,
        rollout=rollout,
        probe=probe_for(str(props["front_url"]), str(props["flavor"]), str(props["name"])),
        images=images,
        labels=labels,
        what=f"endpoint {props['name']}",
    )
    if verdict.passed:
        log(f"endpoint {props['name']}: {verdict.reason}")
        return
    stop_process_group(int(state["pid"]), STOP_TIMEOUT_SECONDS)
    forget_record(spec.record, int(state["pid"]))
    raise LocalProviderError(
        f"endpoint {props['name']}: {verdict.reason}. The old model ({stable}) kept serving throughout and "
        f"takes every request again; the new server was stopped (its log: {state.get('log_path')}). "
        "The next `pulumi up` tries the canary again: retrain (mnist-platform:hyperparameters) or loosen "
        "mnist-platform:rollout to change the outcome."
    )


def _answers(url: str) -> bool:
    try:
        return requests.get(url + PING_ROUTE, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _verified(props: dict[str, Any], state: dict[str, Any], spec: ServerSpec) -> None:
    """Fail the create, leaving nothing running, unless the server says it serves the new model: Pulumi
    then keeps the endpoint it was replacing, which goes on serving (docs/gate.md "What is verified")."""
    problem = serving_problem(int(state["port"]), Path(str(props["model_dir"])))
    if problem is None:
        return
    stop_process_group(int(state["pid"]), STOP_TIMEOUT_SECONDS)
    forget_record(spec.record, int(state["pid"]))
    raise LocalProviderError(
        f"endpoint {props['name']}: the new server (pid {state['pid']}, port {state['port']}) does not serve "
        f"the new model: {problem}. It was stopped; the endpoint it was to replace keeps serving. "
        f"Its log: {state.get('log_path')}."
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


def _spec(props: dict[str, Any], endpoint_id: str) -> ServerSpec:
    root = Path(props["root"])
    return ServerSpec(
        what=f"the server of endpoint {props['name']}",
        marker="serve",
        identifying=(str(props["model_dir"]), str(props["name"])),
        command=lambda port: server_command(props, port),
        ready_route=PING_ROUTE,
        record=record_path(root, endpoint_id),
        log_path=root / "logs" / f"{endpoint_id}.log",
        cwd=root,
        env={**os.environ, **(props.get("environment") or {})},
        startup_timeout=STARTUP_TIMEOUT_SECONDS,
        stop_timeout=STOP_TIMEOUT_SECONDS,
    )


@retry(retry=retry_if_exception_type(PortTakenError), stop=stop_after_attempt(3), reraise=True)
def _start_on_a_free_port(spec: ServerSpec, previous_port: int) -> dict[str, Any]:
    # The port an earlier server of this identity had, when it is free: what points at its URL (the ui)
    # still works. Otherwise a free one, which someone else can take before the server binds it: then
    # another.
    port = previous_port if previous_port and not port_taken(previous_port) else free_port()
    log(f"starting {spec.what} on port {port}; log: {spec.log_path}")
    return start_server(spec, port)


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
            "code_hash": args.code_hash,
            "requested_port": args.requested_port,
            "front_url": args.front_url,
            "front_routes": args.front_routes,
            "rollout": dict(args.rollout) if args.rollout else None,
            "probe_dataset": args.probe_dataset,
            "probe_data_dir": args.probe_data_dir,
            IDENTITY_SEED: identity_seed("local:Endpoint", name),
            "environment": pulumi.Output.from_input(args.flavor).apply(serving_environment),
            "pid": None,
            "port": None,
            "url": None,
            "started": None,
            "log_path": None,
        }
        super().__init__(LocalEndpointProvider(), name, props, opts)

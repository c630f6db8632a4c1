"""Run a stack's Pulumi program under `pulumi.runtime.set_mocks` and look at what it declared.

    run = run_stack("local", {"dataset": "mnist-t10k"})
    job = run.one("pulumi-python:dynamic/local:TrainingJob")
    assert run.depends_on(job, run.one("pulumi-python:dynamic/local:Dataset"))
    run.outputs["endpoints"]

How it works:
- Config is what the Pulumi CLI would pass: the project defaults of `Pulumi.yaml`, then the stack's
  `Pulumi.<stack>.yaml`, then the overrides; every value as the string `pulumi config get` prints
  (lists, maps and booleans as JSON). Keys without a namespace get `mnist-platform:`.
- Each run happens in a fresh `contextvars.Context`: the Pulumi SDK keeps its settings, config and
  root stack resource in context variables, so a new context is a new program run (no state leaks
  from one run to the next in the same process) and `set_mocks` creates a new root `Stack`.
- A recording monitor wraps the SDK's `MockMonitor`: it keeps each registration's parent,
  dependencies and property dependencies (the mock's `new_resource` does not see them) and the
  outputs each component registers.
- `new_resource` decides what a resource's outputs are. The default returns the inputs (numbers as
  the SDK delivers them); pass `outputs=` to add plausible values for computed outputs, or
  `new_resource=` to take over completely (the e2e test runs the real dynamic providers).
- Stack outputs are the values given to `pulumi.export`, resolved once the program has finished.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import json
import runpy
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import dill
import pulumi
import yaml
from pulumi.dynamic import ResourceProvider
from pulumi.runtime import rpc
from pulumi.runtime.config import set_all_config
from pulumi.runtime.mocks import MockCallArgs, MockMonitor, MockResourceArgs, Mocks
from pulumi.runtime.settings import SETTINGS, _get_rpc_manager, get_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PROGRAM = PROJECT_ROOT / "infra" / "__main__.py"
DYNAMIC_PREFIX = "pulumi-python:dynamic"
PROVIDER_KEY = "__provider"


def _project() -> dict[str, Any]:
    return yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())


PROJECT: str = _project()["name"]


@dataclass
class Resource:
    """One registered resource, as the engine would have seen it."""

    typ: str
    name: str
    urn: str
    id: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    custom: bool
    parent: str | None = None
    dependencies: set[str] = field(default_factory=set)
    property_dependencies: dict[str, set[str]] = field(default_factory=dict)

    @property
    def is_dynamic(self) -> bool:
        return self.typ.startswith(DYNAMIC_PREFIX)

    @property
    def props(self) -> dict[str, Any]:
        """The inputs without the serialized provider."""
        return {k: v for k, v in self.inputs.items() if k != PROVIDER_KEY}

    def provider(self) -> ResourceProvider:
        """The dynamic provider, unpickled exactly as `python -m pulumi.dynamic` would."""
        return unwrap_provider(self.inputs)


@dataclass
class StackRun:
    """What one program run declared and exported."""

    stack: str
    resources: list[Resource]
    outputs: dict[str, Any]
    component_outputs: dict[str, dict[str, Any]]

    def of_type(self, typ: str) -> list[Resource]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name_contains: str = "") -> Resource:
        found = [r for r in self.of_type(typ) if name_contains in r.name]
        if len(found) != 1:
            names = [r.name for r in found]
            raise AssertionError(f"expected one {typ} named *{name_contains}*, found {names}")
        return found[0]

    def named(self, name: str) -> Resource:
        for resource in self.resources:
            if resource.name == name:
                return resource
        raise AssertionError(f"no resource named {name}; have {[r.name for r in self.resources]}")

    def by_urn(self, urn: str) -> Resource:
        for resource in self.resources:
            if resource.urn == urn:
                return resource
        raise AssertionError(f"no resource with urn {urn}")

    def depends_on(self, dependent: Resource, dependency: Resource) -> bool:
        """Whether `dependent` directly depends on `dependency` (through an input or depends_on)."""
        return dependency.urn in dependent.dependencies

    def children_of(self, parent: Resource) -> list[Resource]:
        return [r for r in self.resources if r.parent == parent.urn]


NewResource = Callable[[MockResourceArgs], tuple[str | None, dict[str, Any]]]
OutputsFor = Callable[[MockResourceArgs], Mapping[str, Any]]


def default_new_resource(outputs: OutputsFor | None = None) -> NewResource:
    """Outputs = inputs, plus whatever `outputs(args)` adds (plausible computed values)."""

    def new_resource(args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        state = dict(args.inputs)
        if outputs is not None:
            state.update(outputs(args))
        return f"{args.name}-id", state

    return new_resource


class RecordingMocks(Mocks):
    def __init__(self, new_resource: NewResource, call: Callable[[MockCallArgs], Any] | None = None) -> None:
        self._new_resource = new_resource
        self._call = call

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        try:
            return self._new_resource(args)
        except Exception as error:
            # The run fails with it, as `pulumi up` would; the SDK's copies of it in the outputs of
            # that run are never awaited (see _quiet_about_failed_resources).
            error.__dict__[_FAILED_RESOURCE_MARK] = True
            raise

    def call(self, args: MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        if self._call is None:
            raise NotImplementedError(f"no mock for the call {args.token}: pass call= to run_stack")
        return self._call(args)


class RecordingMonitor(MockMonitor):
    """The SDK's mock monitor, keeping what `Mocks.new_resource` does not see."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.lock = threading.Lock()
        self.registered: list[Resource] = []
        self.component_outputs: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        inputs = rpc.deserialize_properties(request.object)
        registration = self.resources[response.urn]
        resource = Resource(
            typ=request.type,
            name=request.name,
            urn=response.urn,
            id=registration.id or None,
            inputs=inputs,
            outputs=dict(registration.state),
            custom=bool(request.custom),
            parent=request.parent or None,
            dependencies=set(request.dependencies),
            property_dependencies={k: set(v.urns) for k, v in request.propertyDependencies.items()},
        )
        with self.lock:
            self.registered.append(resource)
        return response

    def RegisterResourceOutputs(self, request):
        outputs = rpc.deserialize_properties(request.outputs)
        with self.lock:
            self.component_outputs[request.urn] = outputs
        return super().RegisterResourceOutputs(request)


def stack_config(stack: str, overrides: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The config the CLI would pass for `stack`: project defaults, stack file, overrides; as strings."""
    config: dict[str, Any] = {}
    for key, schema in (_project().get("config") or {}).items():
        if isinstance(schema, dict) and "default" in schema:
            config[_qualified(key)] = schema["default"]
    stack_file = PROJECT_ROOT / f"Pulumi.{stack}.yaml"
    if stack_file.exists():
        for key, value in ((yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}).items():
            config[_qualified(key)] = value
    for key, value in (overrides or {}).items():
        if value is None:
            config.pop(_qualified(key), None)
        else:
            config[_qualified(key)] = value
    return {key: _as_config_string(value) for key, value in config.items()}


def _qualified(key: str) -> str:
    return key if ":" in key else f"{PROJECT}:{key}"


def _as_config_string(value: Any) -> str:
    # `pulumi config` hands strings over as they are and everything else as JSON.
    return value if isinstance(value, str) else json.dumps(value)


def run_stack(
    stack: str,
    config_overrides: Mapping[str, Any] | None = None,
    *,
    outputs: OutputsFor | None = None,
    new_resource: NewResource | None = None,
    call: Callable[[MockCallArgs], Any] | None = None,
    program: Path | Callable[[], None] = PROGRAM,
    preview: bool = False,
) -> StackRun:
    """Run the program for `stack` under mocks and return what it declared and exported.

    `preview=True` runs it as `pulumi preview` does (`pulumi.runtime.is_dry_run()` is true).
    Raises what the program raised (a settings `ValueError`, a failing `new_resource`, ...).
    """
    mocks = RecordingMocks(new_resource or default_new_resource(outputs), call)
    config = stack_config(stack, config_overrides)
    return contextvars.Context().run(_run, stack, config, mocks, program, preview)


def _run(
    stack: str,
    config: dict[str, str],
    mocks: RecordingMocks,
    program: Path | Callable[[], None],
    preview: bool,
) -> StackRun:
    try:
        return _run_on_loop(stack, config, mocks, program, preview)
    except BaseException:
        _drain_failed_run()
        raise


_FAILED_RESOURCE_MARK = "_mnist_platform_failed_mock_resource"


def _quiet_about_failed_resources(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio reports every future whose exception nobody retrieved when it is garbage collected. After
    a run that fails on purpose (a crashing trainer), the SDK's futures for that run's outputs carry the
    resource's error and are never awaited; reported at interpreter exit, they would bury pytest's summary.
    Only those are dropped; every other report goes to asyncio's default handler."""
    error = context.get("exception")
    if error is not None and error.__dict__.get(_FAILED_RESOURCE_MARK):
        return
    loop.default_exception_handler(context)


def _drain_failed_run(timeout: float = 300) -> None:
    """When a run fails, the SDK raises at the first failed RPC while the others (resources waiting on
    the one that failed, creates still running in threads) go on and record their errors in the SDK's
    process-wide RPC manager and output queue. Let them settle, then clear both, so the next run in this
    process starts clean."""
    # The SDK's own loop (created if another test left this thread without one, as servers run in
    # threads of the test do), so the clean-up never fails on its own.
    loop = _ensure_event_loop()
    loop.set_exception_handler(_quiet_about_failed_resources)
    manager = _get_rpc_manager()
    pending = list(manager.rpcs)
    if pending:
        _sync_await(asyncio.wait([asyncio.ensure_future(rpc, loop=loop) for rpc in pending], timeout=timeout))
    manager.clear()
    # The outputs of that run's resources (some failed with its error) are queued process-wide too;
    # `wait_for_rpcs` of the next run would await them and raise the old error.
    settings = cast(Any, SETTINGS)  # `lock` and `outputs` are set in its __init__, untyped
    with settings.lock:
        settings.outputs.clear()


def _run_on_loop(
    stack: str,
    config: dict[str, str],
    mocks: RecordingMocks,
    program: Path | Callable[[], None],
    preview: bool,
) -> StackRun:
    # A test before this one may have left the thread without an event loop (`asyncio.run` does); the
    # SDK registers the stack resource on the current loop, so make sure there is one.
    _ensure_event_loop()
    set_all_config(config, [])
    monitor = RecordingMonitor(mocks)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    root = get_root_resource()
    assert root is not None, "set_mocks did not create a root stack resource"

    def main() -> None:
        if isinstance(program, Path):
            runpy.run_path(str(program), run_name="__main__")
        else:
            program()

    _sync_await(run_pulumi_func(main))
    exported = getattr(root, "outputs", {})
    resolved = _sync_await(pulumi.Output.from_input(exported).future()) if exported else {}
    return StackRun(
        stack=stack,
        resources=list(monitor.registered),
        outputs=dict(resolved or {}),
        component_outputs=dict(monitor.component_outputs),
    )


class EngineInterrupted(BaseException):
    """Raised (by a test's fault injector) inside a provider's create to stand for `pulumi up` being killed
    there (Ctrl-C, a lost laptop lid, CI's timeout): the service may have accepted the create, but its
    result never reaches the state. A BaseException, so that no provider's `except Exception` cleans up
    after it, as nothing would after a SIGKILL."""


@dataclass
class LiveResource:
    """A dynamic resource that exists for real: its provider, id and state (what the engine would store)."""

    typ: str
    name: str
    id: str
    provider: ResourceProvider
    state: dict[str, Any]


class ProviderEngine:
    """The engine's steps for dynamic resources, run for real: pass `engine` as `new_resource`.

    A stand-in for what `pulumi up` does with each dynamic resource the program declares:
    - not in the state yet: `create`;
    - in the state: `diff` against the recorded state, then nothing, `update`, or a replacement
      (delete first when the diff says `delete_before_replace`; otherwise create the new one and
      delete the old one after the run, as the engine does);
    - in the state but no longer declared: deleted by `finish()`.
    Resources that are not dynamic get `fallback` (outputs = inputs by default). State persists
    across runs, so a second `run_stack(..., new_resource=engine)` followed by `engine.finish()` is the
    next `pulumi up`; `destroy()` deletes everything in reverse creation order (`pulumi destroy`).
    """

    def __init__(self, fallback: NewResource | None = None) -> None:
        self.fallback = fallback or default_new_resource()
        self.lock = threading.Lock()
        self.live: dict[str, LiveResource] = {}  # by resource name, in creation order
        self.steps: list[tuple[str, str]] = []  # (step, resource name): create, update, replace, same, delete
        self._declared: set[str] = set()
        self._replaced: list[LiveResource] = []

    def __call__(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if not args.typ.startswith(DYNAMIC_PREFIX):
            return self.fallback(args)
        provider = unwrap_provider(args.inputs)
        news = provider_props(args.inputs)
        with self.lock:
            self._declared.add(args.name)
            prior = self.live.get(args.name)
        if prior is None:
            return self._create(args, provider, news, "create")
        diff = provider.diff(prior.id, prior.state, news)
        if diff.replaces:
            if diff.delete_before_replace:
                self._delete(prior)
                return self._create(args, provider, news, "replace")
            with self.lock:
                self._replaced.append(prior)
            try:
                return self._create(args, provider, news, "replace")
            except BaseException:
                # A create-before-delete replacement that failed keeps the old resource, serving and in
                # the state, as Pulumi does: the next update must not delete it.
                with self.lock:
                    self._replaced.remove(prior)
                raise
        if diff.changes:
            result = provider.update(prior.id, prior.state, news)
            prior.state = {**news, **(result.outs or {})}
            self._record("update", args.name)
        else:
            self._record("same", args.name)
        return prior.id, prior.state

    def _create(
        self, args: MockResourceArgs, provider: ResourceProvider, news: dict[str, Any], step: str
    ) -> tuple[str, dict[str, Any]]:
        try:
            result = provider.create(news)
        except EngineInterrupted:
            # What `pulumi up` leaves when it dies inside a create: a pending create, nothing in the state.
            self._record("interrupted", args.name)
            raise
        live = LiveResource(args.typ, args.name, result.id, provider, {**news, **(result.outs or {})})
        with self.lock:
            self.live.pop(args.name, None)
            self.live[args.name] = live  # re-inserted: creation order is deletion order reversed
        self._record(step, args.name)
        return live.id, live.state

    def _delete(self, live: LiveResource) -> None:
        live.provider.delete(live.id, live.state)
        with self.lock:
            if self.live.get(live.name) is live:
                del self.live[live.name]
        self._record("delete", live.name)

    def _record(self, step: str, name: str) -> None:
        with self.lock:
            self.steps.append((step, name))

    def finish(self) -> None:
        """End of an update: delete replaced resources and those the program no longer declares."""
        for old in reversed(self._replaced):
            self._delete(old)
        self._replaced.clear()
        for live in reversed([r for r in self.live.values() if r.name not in self._declared]):
            self._delete(live)
        self._declared.clear()

    def refresh(self) -> list[str]:
        """`pulumi refresh`: read each resource; those whose provider says they are gone leave the state,
        the others' state becomes what `read` reports (so the next `up` diffs against the truth)."""
        gone = []
        for live in list(self.live.values()):
            result = live.provider.read(live.id, live.state)
            if not result.id:
                gone.append(live.name)
                with self.lock:
                    del self.live[live.name]
            elif result.outs is not None:
                live.state = dict(result.outs)
        return gone

    def destroy(self) -> None:
        """`pulumi destroy`: all in reverse creation order; every delete is tried, the first error raised."""
        errors: list[BaseException] = []
        for live in reversed([*self._replaced, *self.live.values()]):
            try:
                self._delete(live)
            except Exception as error:  # noqa: BLE001 (keep deleting the others; re-raised below)
                errors.append(error)
        self._replaced.clear()
        if errors:
            raise errors[0]


def unwrap_provider(inputs: Mapping[str, Any]) -> ResourceProvider:
    """The dynamic provider from a dynamic resource's inputs (a secret envelope around base64 dill)."""
    serialized = rpc.unwrap_rpc_secret(inputs[PROVIDER_KEY])
    return dill.loads(base64.b64decode(serialized))


def provider_props(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """A dynamic resource's inputs as its provider receives them: unknown-free, secrets unwrapped."""
    return {k: rpc.unwrap_rpc_secret(v) for k, v in inputs.items()}


# -- champion gates (infra/gate_provider.py) -------------------------------------------------------


def gate_round(
    provider: ResourceProvider, state: dict[str, Any] | None, news: dict[str, Any]
) -> dict[str, Any]:
    """One `pulumi up` of a gate as the engine runs it (create, or diff then update; never a replacement:
    the tests keep the gate where it is); the state it leaves."""
    if state is None:
        return {**news, **(provider.create(news).outs or {})}
    diff = provider.diff("gate", state, news)
    assert not diff.replaces, diff.replaces
    if not diff.changes:
        return state
    return {**news, **(provider.update("gate", state, news).outs or {})}


def promoted_gate_outputs(
    inputs: Mapping[str, Any], champion_artifact: str, accuracy: float, metrics: Mapping[str, Any]
) -> dict[str, Any]:
    """A gate's outputs after its first round, for mocks: the challenger promoted and its artifact copied
    to `champion_artifact`."""
    champion = {
        "source": inputs["challenger_id"],
        "artifact": champion_artifact,
        "accuracy": accuracy,
        "metrics": dict(metrics),
    }
    challenger = {**champion, "artifact": inputs["challenger_artifact"], "decision": "promoted"}
    return {"champion": champion, "champion_artifact": champion_artifact, "challenger": challenger}


def provider_inputs(resource: Resource) -> dict[str, Any]:
    """A dynamic resource's inputs as its provider receives them, without the provider itself."""
    return {k: v for k, v in provider_props(resource.inputs).items() if k != PROVIDER_KEY}


def replaced_by_diff(before: StackRun, after: StackRun, types: tuple[str, ...]) -> list[str]:
    """The dynamic resources of `types` whose provider's own diff replaces them from `before` to `after`."""
    replaced = []
    for typ in types:
        new = after.one(typ)
        if (
            unwrap_provider(new.inputs)
            .diff("id", provider_inputs(before.one(typ)), provider_inputs(new))
            .replaces
        ):
            replaced.append(new.name)
    return replaced

"""The Vertex AI stack after an interrupted `pulumi up` and after changes behind its back, its dynamic
providers executed for real against the loopback fakes (the harness of test_gcp_stack_e2e.py: Google's
own clients, the IAM bindings the stack declares), training with the trainer's `--dry-run`.

(a) `pulumi up` killed right after a create landed at Google and before its result reached the state
    (a pending create), or killed while the custom job trains: the next `up` ends with exactly one copy
    of each thing at Google, held in the state, nothing trained or built twice, and smoke passes.
(b) The deployment and the model deleted behind the stack's back: `pulumi refresh` drops them, the next
    `up` makes them again and nothing else moves; a deployment changed in the console (machines,
    replicas, traffic) is seen by refresh and replaced by the next `up`.
(c) A deployment that never becomes ready: the error names it and nothing is left deployed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from gcp_fakes import CloudBuildFake, GcsFake, VertexFake
from gcp_fakes import clients as fake_clients
from gcp_fakes.clients import job_client
from gcp_mocks import BUCKET_NAME
from google.cloud import aiplatform_v1
from harness import EngineInterrupted, ProviderEngine
from pulumi.runtime.mocks import MockResourceArgs
from test_gcp_providers import BUCKET, IMAGE, deployment_props, image_props, job_props, model_props
from test_gcp_stack_e2e import (  # noqa: F401 (autouse fixtures: smoke's token, IAM retries in seconds)
    StackUnderFakes,
    permissions_stay_denied_for_seconds,
    smoke_sends_a_token,
)

from infra import gate_provider
from infra.dynamic import IDENTITY_SEED, IDENTITY_TAG, identity
from infra.gcp import custom_job, deployment, iam_wait, image_build, model, platform
from infra.gcp.custom_job import VertexCustomJobProvider, custom_job_body
from infra.gcp.deployment import VertexDeploymentProvider
from infra.gcp.image_build import CloudBuildImageProvider
from infra.gcp.image_context import TRAIN_COMMAND
from infra.gcp.model import VertexModelProvider
from infra.gcp.names import resource_id
from mnistctl.smoke import smoke

# The stack tests run the whole program (a dry-run TF job, a TF server): tens of seconds each.

# Creates in the order `pulumi up` reaches them, with the module whose CreateResult carries each result.
CREATES: tuple[tuple[str, ModuleType], ...] = (
    ("mnist-iam-propagation", iam_wait),
    ("mnist-image", image_build),
    ("mnist-training", custom_job),
    ("mnist-gate", gate_provider),
    ("mnist-model", model),
    ("mnist-deployment", deployment),
)


# What Pulumi.gcp.yaml declares for serving (servingMachineType, servingMinReplicas, servingMaxReplicas).
DECLARED_SERVING = {
    "machineSpec": {"machineType": "n1-standard-2"},
    "minReplicaCount": 1,
    "maxReplicaCount": 2,
}


@pytest.fixture(autouse=True)
def dry_run_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """The custom job runs the TF trainer on a few hundred digits for one epoch: seconds, not a minute."""
    monkeypatch.setattr(platform, "TRAIN_COMMAND", (*TRAIN_COMMAND, "--dry-run"))


@pytest.fixture
def stack(
    vertex_fake: VertexFake, cloudbuild_fake: CloudBuildFake, gcs_fake: GcsFake
) -> Iterator[StackUnderFakes]:
    stack = StackUnderFakes(ProviderEngine(), vertex_fake, cloudbuild_fake, gcs_fake)
    yield stack
    stack.engine.destroy()  # `pulumi destroy`: the fakes then stop what is left (and assert so)


@pytest.fixture
def config(t10k_dir: Path) -> dict[str, Any]:
    return {"dataset": "mnist-t10k", "dataDir": str(t10k_dir), "minAccuracy": 0.0}


class UpInterrupted(Exception):
    """The failed run of a `pulumi up` that died inside a create. (EngineInterrupted is a BaseException so
    that no provider cleans up after it; the Pulumi SDK's event loop must see an Exception to end the run.)"""


class KilledEngine:
    """The engine of a `pulumi up` that dies inside a create: it records a pending create (the harness's
    EngineInterrupted), and the run ends with an ordinary Exception."""

    def __init__(self, engine: ProviderEngine) -> None:
        self.engine = engine

    def __call__(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        try:
            return self.engine(args)
        except EngineInterrupted as interruption:
            raise UpInterrupted(str(interruption)) from interruption


def up_interrupted(stack: StackUnderFakes, config: dict[str, Any]) -> str:
    """A `pulumi up` a fault injector kills inside a create; the name of the resource left pending."""
    engine = stack.engine
    steps_before = len(engine.steps)
    stack.engine = KilledEngine(engine)  # type: ignore[assignment]
    try:
        with pytest.raises(UpInterrupted):
            stack.up(config)
    finally:
        stack.engine = engine
    (pending,) = [name for step, name in engine.steps[steps_before:] if step == "interrupted"]
    assert pending not in engine.live  # a pending create: at Google, not in the state
    return pending


def killed_before_the_result_is_recorded(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> None:
    """The next create of `module`'s provider does all its work at Google, then `pulumi up` dies before
    the result is returned to the engine (CreateResult is what carries it there)."""
    real = module.CreateResult

    def dies(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(module, "CreateResult", real)
        raise EngineInterrupted(f"killed inside {module.__name__}'s create")

    monkeypatch.setattr(module, "CreateResult", dies)


def killed_while_the_job_trains(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next custom job's create submits the job, then `pulumi up` is killed outright while it waits
    for the job (SIGKILL, a CI runner gone): no clean-up runs, the job trains on at Vertex."""
    real_wait, real_cancel = custom_job.wait_until_done, custom_job.cancel_quietly

    def dies(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(custom_job, "wait_until_done", real_wait)
        raise EngineInterrupted("killed while the custom job trains")

    def no_clean_up(*args: object) -> None:
        monkeypatch.setattr(custom_job, "cancel_quietly", real_cancel)

    monkeypatch.setattr(custom_job, "wait_until_done", dies)
    monkeypatch.setattr(custom_job, "cancel_quietly", no_clean_up)


def assert_one_of_each_held_in_the_state(
    engine: ProviderEngine, vertex: VertexFake, build: CloudBuildFake, gcs: GcsFake
) -> None:
    assert len(build.builds) == 1, f"images built: {list(build.builds)}"
    assert list(build.tags()) == [engine.live["mnist-image"].id]
    assert [vertex.job_name(j) for j in vertex.jobs] == [engine.live["mnist-training"].id]
    assert [m["name"] for m in vertex.models.values()] == [engine.live["mnist-model"].id]
    (endpoint,) = vertex.endpoints.values()
    assert list(endpoint.deployed) == [engine.live["mnist-deployment"].state["deployed_model_id"]]
    champions = gcs.root / BUCKET_NAME / "champions" / "tensorflow"
    assert [p.name for p in champions.iterdir()] == [engine.live["mnist-training"].state["job_id"]]


def assert_serves(outputs: dict[str, Any], t10k_dir: Path) -> None:
    result = smoke(outputs, count=50, data_dir=t10k_dir, label="gcp")
    assert result.ok, [r.error for r in result.results]
    assert result.for_model("tensorflow").correct > 15  # a dry-run model, far above chance (5 of 50)


@pytest.mark.e2e
@pytest.mark.slow
def test_an_up_killed_after_each_create_landed_ends_with_exactly_one_copy_of_everything(
    stack: StackUnderFakes,
    config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    t10k_dir: Path,
) -> None:
    """Each `up` dies right after one more create finished at Google (image pushed, job succeeded,
    champion copied, model uploaded, model deployed), and one dies while the job trains; the next `up`
    finds what the last one left: the running job is waited for, the rest adopted."""
    engine = stack.engine
    for resource, module in CREATES:
        if module is custom_job:
            killed_while_the_job_trains(monkeypatch)
            assert up_interrupted(stack, config) == resource
            (job,) = stack.vertex.jobs.values()
            assert job.state not in ("JOB_STATE_SUCCEEDED", "JOB_STATE_CANCELLED")  # still training
        killed_before_the_result_is_recorded(monkeypatch, module)
        assert up_interrupted(stack, config) == resource

    outputs = stack.up(config).outputs

    assert all(name in engine.live for name, _ in CREATES)
    assert_one_of_each_held_in_the_state(engine, stack.vertex, stack.build, stack.gcs)
    assert len(stack.build.requests_to("POST", r"/builds$")) == 1  # adopted, not built again
    assert len(stack.vertex.requests_to("POST", r"/customJobs$")) == 1  # adopted, not trained again
    assert len(stack.vertex.requests_to("POST", r"/models:upload$")) == 1
    assert len(stack.vertex.requests_to("POST", r":deployModel$")) == 1
    assert_serves(outputs, t10k_dir)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_deployment_and_model_deleted_or_changed_behind_the_stacks_back_are_made_again_by_refresh_and_up(
    stack: StackUnderFakes,
    config: dict[str, Any],
    t10k_dir: Path,
) -> None:
    engine, vertex = stack.engine, stack.vertex
    stack.up(config)
    deployed_id = engine.live["mnist-deployment"].state["deployed_model_id"]
    endpoint_name = engine.live["mnist-deployment"].state["endpoint_name"]
    # Someone cleans up in the console: the model undeployed, then deleted.
    endpoints = fake_clients.endpoint_client(vertex)
    endpoints.undeploy_model(endpoint=endpoint_name, deployed_model_id=deployed_id).result(timeout=60)
    fake_clients.model_client(vertex).delete_model(name=engine.live["mnist-model"].id).result(timeout=60)

    assert sorted(engine.refresh()) == ["mnist-deployment", "mnist-model"]
    steps_before = len(engine.steps)
    outputs = stack.up(config).outputs

    moved = [step for step in engine.steps[steps_before:] if step[0] != "same"]
    assert moved == [("create", "mnist-model"), ("create", "mnist-deployment")]
    assert_one_of_each_held_in_the_state(engine, vertex, stack.build, stack.gcs)
    assert_serves(outputs, t10k_dir)

    # Then someone scales the deployment to bigger machines in the console: refresh sees it, the next
    # `up` deploys what the stack declares and undeploys the changed one.
    (endpoint,) = vertex.endpoints.values()
    (changed,) = endpoint.deployed.values()
    changed.resource["dedicatedResources"] = {
        "machineSpec": {"machineType": "n1-standard-16"},
        "minReplicaCount": 3,
        "maxReplicaCount": 5,
    }
    assert engine.refresh() == []
    state = engine.live["mnist-deployment"].state
    assert (state["instance_type"], state["min_replicas"], state["max_replicas"]) == ("n1-standard-16", 3, 5)
    steps_before = len(engine.steps)
    outputs = stack.up(config).outputs

    moved = [step for step in engine.steps[steps_before:] if step[0] != "same"]
    assert moved == [("replace", "mnist-deployment"), ("delete", "mnist-deployment")]
    (again,) = endpoint.deployed.values()
    assert again.id != changed.id
    assert again.resource["dedicatedResources"] == DECLARED_SERVING  # Pulumi.gcp.yaml's machines again
    assert engine.live["mnist-deployment"].state["deployed_model_id"] == again.id
    assert_serves(outputs, t10k_dir)


@pytest.mark.e2e
@pytest.mark.slow
def test_a_deployment_that_never_becomes_ready_is_named_and_nothing_is_left_deployed(
    stack: StackUnderFakes,
    config: dict[str, Any],
    t10k_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The deploy does not finish in time: the provider cancels it, and since Vertex's cancel is only
    "best effort" (here the deploy finishes all the same), undeploys what it made. The error names the
    model and the endpoint; nothing is left deployed or running, and the next `up` deploys it."""
    engine, vertex = stack.engine, stack.vertex
    monkeypatch.setattr(deployment, "DEPLOY_WAIT_SECONDS", 1.0)
    vertex.honour_cancel = False

    with pytest.raises(Exception, match=r"deploying .*/models/\d+ to .*/endpoints/\d+ did not finish"):
        stack.up(config)
    vertex.settle()  # whatever the cancelled deploy was going to do, it has done

    (endpoint,) = vertex.endpoints.values()
    assert len(vertex.requests_to("POST", r":deployModel$")) == 1
    assert endpoint.deployed == {} and endpoint.traffic == {}
    assert vertex.running_processes() == []  # the model server it started is stopped
    assert "mnist-deployment" not in engine.live

    monkeypatch.setattr(deployment, "DEPLOY_WAIT_SECONDS", 3600.0)
    steps_before = len(engine.steps)
    outputs = stack.up(config).outputs
    assert [step for step in engine.steps[steps_before:] if step[0] != "same"] == [
        ("create", "mnist-deployment")
    ]
    assert_serves(outputs, t10k_dir)


# -- the same behaviours at one provider, with stand-ins for the trainer and the model server (seconds) --


def test_a_job_still_training_when_up_was_killed_is_waited_for_not_submitted_again(
    vertex_fake: VertexFake, gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = VertexCustomJobProvider()
    props = {**job_props(vertex_fake, gcs_fake), IDENTITY_SEED: "seed-of-mnist-training"}
    killed_while_the_job_trains(monkeypatch)
    with pytest.raises(EngineInterrupted):
        provider.create(props)
    (left,) = vertex_fake.jobs.values()

    created = provider.create(props)

    outs = created.outs or {}
    assert created.id == left.resource["name"]
    assert outs["state"] == "JOB_STATE_SUCCEEDED" and outs["metrics"]["accuracy"] == 0.987
    assert len(vertex_fake.requests_to("POST", r"/customJobs$")) == 1


def test_a_failed_job_of_the_same_identity_is_left_for_inspection_and_a_new_one_trained(
    vertex_fake: VertexFake, gcs_fake: GcsFake
) -> None:
    props = {**job_props(vertex_fake, gcs_fake), IDENTITY_SEED: "seed-of-mnist-training"}
    # What an interrupted create left, which then failed (a preempted machine, a quota): same identity.
    failing = custom_job_body({**props, "command": [sys.executable, "-c", "raise SystemExit(3)"]})
    failing["labels"][IDENTITY_TAG] = identity(props, custom_job._REPLACE_KEYS)
    failed = job_client(vertex_fake).create_custom_job(
        parent=vertex_fake.parent, custom_job=aiplatform_v1.CustomJob(failing)
    )
    assert vertex_fake.wait_for_job(resource_id(failed.name)) == "JOB_STATE_FAILED"

    created = VertexCustomJobProvider().create(props)

    assert created.id != failed.name and (created.outs or {})["state"] == "JOB_STATE_SUCCEEDED"
    assert sorted(j.state for j in vertex_fake.jobs.values()) == ["JOB_STATE_FAILED", "JOB_STATE_SUCCEEDED"]


def test_a_build_still_running_when_up_was_killed_is_waited_for_not_submitted_again(
    cloudbuild_fake: CloudBuildFake, gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloudbuild_fake.build_seconds = 2.0
    provider = CloudBuildImageProvider()
    props = {**image_props(cloudbuild_fake, gcs_fake), IDENTITY_SEED: "seed-of-mnist-image"}
    real_wait = image_build.wait_for

    def dies(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(image_build, "wait_for", real_wait)
        raise EngineInterrupted("killed while the image builds")

    monkeypatch.setattr(image_build, "wait_for", dies)
    with pytest.raises(EngineInterrupted):
        provider.create(props)
    (left,) = cloudbuild_fake.builds.values()
    assert left.status in ("QUEUED", "WORKING")

    created = provider.create(props)

    outs = created.outs or {}
    assert outs["build_id"] == left.id
    assert cloudbuild_fake.tags() == {IMAGE: outs["digest"]}
    assert len(cloudbuild_fake.requests_to("POST", r"/builds$")) == 1


def test_a_deployment_whose_traffic_was_moved_in_the_console_is_read_as_such_and_replaced(
    vertex_fake: VertexFake, gcs_fake: GcsFake
) -> None:
    gcs_fake.put(f"gs://{BUCKET}/jobs/1/model/saved_model.pb", b"one")
    endpoint_id = "1234567890"
    vertex_fake.add_endpoint(endpoint_id)
    uploaded = VertexModelProvider().create(model_props(vertex_fake, f"gs://{BUCKET}/jobs/1/model"))
    provider = VertexDeploymentProvider()
    props = deployment_props(vertex_fake, endpoint_id, uploaded.id)
    created = provider.create(props)
    state = {**props, **(created.outs or {})}
    assert (provider.read(created.id, state).outs or {})["traffic_percent"] == 100
    assert not provider.diff(created.id, state, props).replaces

    vertex_fake.endpoints[endpoint_id].traffic = {}  # someone sent the endpoint's traffic elsewhere
    read = provider.read(created.id, state)

    assert read.id == created.id and (read.outs or {})["traffic_percent"] == 0
    assert provider.diff(created.id, dict(read.outs or {}), props).replaces == ["traffic_percent"]
    provider.delete(created.id, state)
    VertexModelProvider().delete(uploaded.id, uploaded.outs or {})


def test_a_custom_job_deleted_behind_the_stacks_back_is_read_as_gone(
    vertex_fake: VertexFake, gcs_fake: GcsFake
) -> None:
    provider = VertexCustomJobProvider()
    created = provider.create({**job_props(vertex_fake, gcs_fake), IDENTITY_SEED: "seed-of-mnist-training"})
    state = created.outs or {}
    read = provider.read(created.id, state)
    assert read.id == created.id and (read.outs or {})["state"] == "JOB_STATE_SUCCEEDED"

    job_client(vertex_fake).delete_custom_job(name=created.id).result(timeout=60)  # in the console

    assert provider.read(created.id, state).id is None


def test_a_deploy_still_running_when_up_was_killed_is_waited_for_and_adopted_not_deployed_twice(
    vertex_fake: VertexFake, gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    gcs_fake.put(f"gs://{BUCKET}/jobs/1/model/saved_model.pb", b"one")
    endpoint_id = "1234567890"
    vertex_fake.add_endpoint(endpoint_id)
    slow = {**model_props(vertex_fake, f"gs://{BUCKET}/jobs/1/model"), "env": {"STAND_IN_START_SECONDS": "2"}}
    uploaded = VertexModelProvider().create(slow)
    provider = VertexDeploymentProvider()
    props = {
        **deployment_props(vertex_fake, endpoint_id, uploaded.id),
        IDENTITY_SEED: "seed-of-mnist-deployment",
    }
    monkeypatch.setattr(deployment, "IN_FLIGHT_POLL_SECONDS", 0.2)
    real_wait, real_abandon = deployment.wait_for, deployment._abandon

    def dies(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(deployment, "wait_for", real_wait)
        raise EngineInterrupted("killed while the model deploys")

    def no_clean_up(*args: object) -> None:  # SIGKILL: the provider's own clean-up never runs
        monkeypatch.setattr(deployment, "_abandon", real_abandon)

    monkeypatch.setattr(deployment, "wait_for", dies)
    monkeypatch.setattr(deployment, "_abandon", no_clean_up)
    with pytest.raises(EngineInterrupted):
        provider.create(props)
    assert not vertex_fake.endpoints[endpoint_id].deployed  # still deploying

    created = provider.create(props)

    (deployed,) = vertex_fake.endpoints[endpoint_id].deployed
    assert (created.outs or {})["deployed_model_id"] == deployed
    assert len(vertex_fake.requests_to("POST", r":deployModel$")) == 1
    provider.delete(created.id, {**props, **(created.outs or {})})
    VertexModelProvider().delete(uploaded.id, uploaded.outs or {})


def test_a_job_whose_create_is_interrupted_by_ctrl_c_is_cancelled_not_left_billing(
    vertex_fake: VertexFake, gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    vertex_fake.queue_seconds = 30.0  # the job waits for machines when Ctrl-C comes
    real_wait = custom_job.wait_until_done

    def ctrl_c(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(custom_job, "wait_until_done", real_wait)
        raise KeyboardInterrupt

    monkeypatch.setattr(custom_job, "wait_until_done", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        VertexCustomJobProvider().create({**job_props(vertex_fake, gcs_fake), IDENTITY_SEED: "seed"})

    (job,) = vertex_fake.jobs.values()
    assert vertex_fake.wait_for_job(job.id, timeout=30) == "JOB_STATE_CANCELLED"

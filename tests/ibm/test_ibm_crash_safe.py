"""The watsonx.ai stack after an interrupted `pulumi up` and after changes behind its back, with its
dynamic providers executed for real against the loopback fakes of IBM Cloud.

(a) `pulumi up` killed right after a create landed at IBM and before its result reached the state (a
    pending create): the next `up` ends with exactly one copy in the account, held in the state, and
    the endpoint answers.
(b) A billed resource deleted behind the stack's back: `pulumi refresh` drops it, the next `up` makes it
    again and nothing else moves.
(c) A deployment that never becomes ready: the error names it and no deployment is left billing.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fakes import IbmCloudFake
from fakes import clients as ibm
from harness import EngineInterrupted, ProviderEngine, run_stack
from pulumi.runtime.mocks import MockResourceArgs
from test_ibm_stack_e2e import stack_config, up

from infra import gate_provider
from infra.ibm import bucket, connection, deployment, model, resource_instance, space, training_job
from mnistctl.smoke import smoke

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "wait_exponential", lambda **_: lambda _state: 0.01)


class UpInterrupted(Exception):
    """The failed run of a `pulumi up` that died inside a create. (EngineInterrupted is a BaseException so
    that no provider cleans up after it; the Pulumi SDK's event loop must see an Exception to end the run.)"""


def up_interrupted(engine: ProviderEngine, config: dict[str, Any]) -> None:
    """A `pulumi up` that a fault injector kills inside a create; the engine records a pending create."""

    def new_resource(args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        try:
            return engine(args)
        except EngineInterrupted as interruption:
            raise UpInterrupted(str(interruption)) from interruption

    with pytest.raises(UpInterrupted):
        run_stack("ibm", config, new_resource=new_resource)


def killed_before_the_result_is_recorded(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> None:
    """The next create of `module`'s provider does all its work at IBM, then `pulumi up` dies before the
    result is returned to the engine (CreateResult is what carries it there)."""
    real = module.CreateResult

    def dies(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(module, "CreateResult", real)
        raise EngineInterrupted(f"killed inside {module.__name__}'s create")

    monkeypatch.setattr(module, "CreateResult", dies)


def assert_one_of_each(fake: IbmCloudFake) -> None:
    state = fake.state
    names = sorted(i["name"] for i in state.instances.values() if i["state"] == "active")
    assert names == ["mnist-platform-ibm-cos", "mnist-platform-ibm-runtime"]
    assert len(state.buckets) == 2  # the stack's bucket and the one its space made
    assert len(state.spaces) == 1
    assert len(state.models) == 1
    assert len(state.deployments) == 1
    (stack_bucket,) = [
        b for name, b in state.buckets.items() if "-donotdelete-" not in name
    ]  # not the space's
    trained = {key.split("/")[1] for key in stack_bucket.objects if key.startswith("models/")}
    assert len(trained) == 1, trained  # one training run uploaded, not one per attempt


def assert_serves(outputs: dict, fake: IbmCloudFake, t10k_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBMCLOUD_API_KEY", fake.api_key)
    result = smoke(outputs, count=50, data_dir=t10k_dir, label="ibm")
    assert result.ok, [r.error for r in result.results]
    assert result.for_model("pytorch").correct > 15  # a dry-run model, far above chance (5 of 50)


@pytest.mark.parametrize(
    "module",
    [resource_instance, bucket, space, training_job, gate_provider, model, deployment],
    ids=["instance", "bucket", "space", "training", "gate", "model", "deployment"],
)
def test_an_up_killed_after_a_create_landed_ends_with_exactly_one_copy_after_the_next_up(
    engine: ProviderEngine,
    ibm_cloud_fake: IbmCloudFake,
    tmp_path: Path,
    t10k_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    module: ModuleType,
):
    config = stack_config(ibm_cloud_fake, tmp_path / "work", t10k_dir, dryRun=True)
    killed_before_the_result_is_recorded(monkeypatch, module)
    up_interrupted(engine, config)
    (resource,) = [name for step, name in engine.steps if step == "interrupted"]
    assert resource not in engine.live  # a pending create: at IBM, not in the state

    outputs = up(engine, config).outputs

    assert resource in engine.live
    assert ("create", resource) in engine.steps[engine.steps.index(("interrupted", resource)) + 1 :]
    assert_one_of_each(ibm_cloud_fake)
    assert_serves(outputs, ibm_cloud_fake, t10k_dir, monkeypatch)


def test_an_up_killed_while_the_deployment_initializes_adopts_it_instead_of_deploying_twice(
    engine: ProviderEngine,
    ibm_cloud_fake: IbmCloudFake,
    tmp_path: Path,
    t10k_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    config = stack_config(ibm_cloud_fake, tmp_path / "work", t10k_dir, dryRun=True)
    real_wait = connection.Connection.wait

    def dies_while_deploying(
        self: connection.Connection, what: str, *args: object, **kwargs: object
    ) -> object:
        if what.startswith("online deployment"):
            monkeypatch.setattr(connection.Connection, "wait", real_wait)
            raise EngineInterrupted("killed while the deployment initializes")
        return real_wait(self, what, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(connection.Connection, "wait", dies_while_deploying)
    up_interrupted(engine, config)
    (left,) = ibm_cloud_fake.state.deployments  # deployed at IBM; the create never returned

    outputs = up(engine, config).outputs

    assert list(ibm_cloud_fake.state.deployments) == [left]
    assert outputs["endpoints"]["pytorch"]["name"] == left
    assert len(ibm_cloud_fake.requests_to("wml", "POST", r"^/ml/v4/deployments$")) == 1
    assert_serves(outputs, ibm_cloud_fake, t10k_dir, monkeypatch)


def test_a_deployment_and_model_deleted_behind_the_stacks_back_are_made_again_and_nothing_else_moves(
    engine: ProviderEngine,
    ibm_cloud_fake: IbmCloudFake,
    tmp_path: Path,
    t10k_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    config = stack_config(ibm_cloud_fake, tmp_path / "work", t10k_dir, dryRun=True)
    first = up(engine, config).outputs
    client = ibm.watsonx(ibm_cloud_fake, space_id=first["endpoints"]["pytorch"]["space"])
    (deployment_id,) = ibm_cloud_fake.state.deployments
    (model_id,) = ibm_cloud_fake.state.models
    client.deployments.delete(deployment_id)  # someone cleans up in the console
    client.repository.delete(model_id)

    gone = engine.refresh()

    assert sorted(gone) == ["mnist-pytorch-deployment", "mnist-pytorch-model"]
    steps_before = len(engine.steps)
    outputs = up(engine, config).outputs
    moved = sorted(s for s in engine.steps[steps_before:] if s[0] != "same")
    assert moved == [("create", "mnist-pytorch-deployment"), ("create", "mnist-pytorch-model")]
    assert_one_of_each(ibm_cloud_fake)
    assert_serves(outputs, ibm_cloud_fake, t10k_dir, monkeypatch)


def test_a_deployment_changed_in_the_console_is_seen_by_refresh_and_replaced_by_the_next_up(
    engine: ProviderEngine, ibm_cloud_fake: IbmCloudFake, tmp_path: Path, t10k_dir: Path
):
    config = stack_config(ibm_cloud_fake, tmp_path / "work", t10k_dir, dryRun=True)
    up(engine, config)
    (served,) = ibm_cloud_fake.state.deployments.values()
    served.document["entity"]["hardware_spec"].update(name="L", num_nodes=3)  # scaled up by hand

    assert engine.refresh() == []
    assert engine.live["mnist-pytorch-deployment"].state["instance_type"] == "L"
    steps_before = len(engine.steps)
    up(engine, config)

    assert ("replace", "mnist-pytorch-deployment") in engine.steps[steps_before:]
    (again,) = ibm_cloud_fake.state.deployments.values()
    assert (
        again.document["entity"]["hardware_spec"]["name"],
        again.document["entity"]["hardware_spec"]["num_nodes"],
    ) == ("XS", 1)


def test_a_deployment_that_never_becomes_ready_is_named_and_removed_before_the_error(
    engine: ProviderEngine,
    ibm_cloud_fake: IbmCloudFake,
    tmp_path: Path,
    t10k_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(deployment, "READY_TIMEOUT_SECONDS", 1)
    ibm_cloud_fake.stuck_deployments()
    with pytest.raises(
        Exception, match=r"timed out .* online deployment mnist-platform-ibm-pytorch to be ready"
    ):
        up(engine, stack_config(ibm_cloud_fake, tmp_path / "work", t10k_dir, dryRun=True))
    assert ibm_cloud_fake.state.deployments == {}  # nothing left billing
    assert "mnist-pytorch-deployment" not in engine.live

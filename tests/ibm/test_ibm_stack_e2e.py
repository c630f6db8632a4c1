"""The watsonx.ai stack end to end: its program under mocks, its dynamic providers executed for real
against the loopback fakes of IBM Cloud (IBM's own SDKs inside them, HTTPS with a test CA).

`ProviderEngine` (tests/harness.py) plays the Pulumi engine, so `run_stack(..., new_resource=engine)`
is `pulumi up` and `engine.destroy()` is `pulumi destroy`. The fake deploys a stored model by serving
it with `mnistctl serve --flavor watsonx`; `mnistctl smoke` then scores it through the v4 API with an
IAM token, exactly as against IBM Cloud.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import IbmCloudFake
from harness import ProviderEngine, StackRun, run_stack

from infra.ibm import connection
from infra.ibm import platform as ibm_platform
from infra.settings import Framework
from mnistctl.smoke import smoke

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IBM_TYPES = "pulumi-python:dynamic/ibm:"


@pytest.fixture(autouse=True)
def training_code_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash the training code once per test, so that a second `up` counts steps against the same code."""
    code_hash = ibm_platform.training_code_hash(Framework.PYTORCH)
    monkeypatch.setattr(ibm_platform, "training_code_hash", lambda _model: code_hash)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "wait_exponential", lambda **_: lambda _state: 0.01)


def stack_config(fake: IbmCloudFake, root: Path, t10k_dir: Path, **extra: Any) -> dict[str, Any]:
    endpoints = {
        "iam_url": fake.iam_url,
        "resource_controller_url": fake.resource_controller_url,
        "global_catalog_url": fake.global_catalog_url,
        "iam_policy_url": fake.iam_policy_url,
        "cos_url": fake.cos_url,
        "wml_url": fake.wml_url,
        "platform_url": fake.platform_url,
        "ca_file": fake.ca_file,
        "poll_seconds": "0.1",
    }
    return {
        "ibm:apiKey": fake.api_key,
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "localRoot": str(root),
        "resourceGroup": fake.resource_group_id,
        "ibmEndpoints": json.dumps(endpoints),
        **extra,
    }


def up(engine: ProviderEngine, config: dict[str, Any]) -> StackRun:
    run = run_stack("ibm", config, new_resource=engine)
    engine.finish()
    return run


def assert_account_empty(fake: IbmCloudFake, root: Path) -> None:
    state = fake.state
    assert [d for d in state.deployments] == []
    assert list(state.models) == []
    assert list(state.spaces) == []
    assert list(state.buckets) == []
    assert [i["name"] for i in state.instances.values() if i["state"] != "removed"] == []
    assert [r for r in state.reclamations.values() if r["state"] == "SCHEDULED"] == []  # reclaimed
    assert not (root / "models").exists() or not list((root / "models").iterdir())


def test_ibm_stack_trains_deploys_scores_98_percent_and_destroy_leaves_nothing(
    engine: ProviderEngine,
    ibm_cloud_fake: IbmCloudFake,
    tmp_path: Path,
    t10k_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    root = tmp_path / "work"
    # The trainer's defaults on 8,000 digits, not full MNIST: a floor under mnist-t10k's 0.98 (the gate is
    # tested on its own in test_ibm_gate.py).
    config = stack_config(ibm_cloud_fake, root, t10k_dir, minAccuracy=0.95)
    started = time.monotonic()
    run = up(engine, config)
    print(f"\nup (PyTorch on 8,000 digits, gated, stored, deployed): {time.monotonic() - started:.1f}s")

    outputs = run.outputs
    (deployment_id,) = ibm_cloud_fake.state.deployments
    (space_id,) = ibm_cloud_fake.state.spaces
    assert outputs["endpoints"]["pytorch"] == {
        "flavor": "watsonx",
        "name": deployment_id,
        "region": "us-south",
        "version": "2024-05-01",
        "space": space_id,
        "url": ibm_cloud_fake.wml_url,
        "iam_url": ibm_cloud_fake.iam_url,
        "input_shape": [1, 28, 28],  # read by the stored model's provider from the trained ONNX file
    }
    bucket = outputs["bucket"]
    assert bucket in ibm_cloud_fake.state.buckets
    # The gate scored the job by its metrics.json and copied its upload; the space stores that copy.
    job_id = engine.live["mnist-pytorch-training"].state["job_id"]
    artifact = outputs["models"]["pytorch"]["artifact"]
    assert artifact == f"cos://{bucket}/champions/pytorch/{job_id}/model.tar.gz"
    objects = ibm_cloud_fake.state.buckets[bucket].objects
    for name in ("model.tar.gz", "model.onnx", "metrics.json"):
        assert objects[f"champions/pytorch/{job_id}/{name}"].body == objects[f"models/{job_id}/{name}"].body
    assert outputs["models"]["pytorch"]["metrics"]["accuracy"] >= 0.97
    assert outputs["models"]["pytorch"]["challenger"]["decision"] == "promoted"
    model = engine.live["mnist-pytorch-model"].state
    assert model["archive_key"] == f"champions/pytorch/{job_id}/model.tar.gz"
    assert (model["model_type"], model["software_spec"]) == ("onnxruntime_1.16", "onnxruntime_opset_19")

    monkeypatch.setenv("IBMCLOUD_API_KEY", ibm_cloud_fake.api_key)
    result = smoke(outputs, count=200, data_dir=t10k_dir, label="ibm")
    assert result.ok, [r.error for r in result.results]
    assert result.for_model("pytorch").correct >= 196  # >= 98 % of 200 held-out digits

    # The second `pulumi up` with nothing changed changes nothing.
    steps_before = len(engine.steps)
    again = up(engine, config)
    assert {step for step, _ in engine.steps[steps_before:]} == {"same"}
    assert again.outputs == outputs

    started = time.monotonic()
    engine.destroy()
    print(f"destroy: {time.monotonic() - started:.1f}s")
    # Destroy follows the dependencies, as Pulumi's does: the deployment before its model, the model before
    # its space, the space before the bucket (depends_on), the bucket before its COS instance, and the
    # space before the runtime it is bound to. The bucket and the runtime do not depend on each other:
    # their order is the order they happened to be created in.
    deleted = [name for step, name in engine.steps if step == "delete"]
    chain = ("pytorch-deployment", "pytorch-model", "space", "bucket", "cos")
    order = [deleted.index(f"mnist-{name}") for name in chain]
    assert order == sorted(order)
    assert deleted.index("mnist-space") < deleted.index("mnist-runtime")
    assert_account_empty(ibm_cloud_fake, root)


def test_a_failing_deployment_fails_the_update_with_its_own_message_and_destroy_cleans_up(
    engine: ProviderEngine, ibm_cloud_fake: IbmCloudFake, tmp_path: Path, t10k_dir: Path
):
    root = tmp_path / "work"
    ibm_cloud_fake.fail_deployments("Deployment failed: not enough capacity for hardware spec XS.")
    with pytest.raises(Exception, match="not enough capacity for hardware spec XS") as error:
        up(engine, stack_config(ibm_cloud_fake, root, t10k_dir, dryRun=True))
    assert "online deployment mnist-platform-ibm-pytorch" in str(error.value)
    assert "mnist-pytorch-deployment" not in engine.live
    assert "mnist-pytorch-model" in engine.live  # the rest of the stack stays, for the next `up`
    assert list(ibm_cloud_fake.state.deployments) == []  # the failed deployment was removed
    engine.destroy()
    assert_account_empty(ibm_cloud_fake, root)


def test_a_held_model_leaves_the_deployment_and_a_winner_is_deployed_before_the_old_one_goes(
    engine: ProviderEngine, ibm_cloud_fake: IbmCloudFake, tmp_path: Path, t10k_dir: Path
):
    root = tmp_path / "work"
    config = stack_config(ibm_cloud_fake, root, t10k_dir, dryRun=True)
    first = up(engine, config)
    deployed = first.outputs["endpoints"]["pytorch"]["name"]

    # New hyperparameters and a floor no model reaches: retrained, held back by the gate; the stored model
    # and the deployment stay.
    config.update(hyperparameters={"pytorch": {"seed": 1}}, minAccuracy=1.0)
    steps_before = len(engine.steps)
    held = up(engine, config)
    changed = [s for s in engine.steps[steps_before:] if s[0] != "same"]
    assert changed == [
        ("replace", "mnist-pytorch-training"),
        ("update", "mnist-pytorch-gate"),
        ("delete", "mnist-pytorch-training"),
    ]
    assert held.outputs["models"]["pytorch"]["challenger"]["decision"] == "held"
    assert held.outputs["endpoints"] == first.outputs["endpoints"]
    assert list(ibm_cloud_fake.state.deployments) == [deployed]

    # The rule relaxed (dry run: no floor; any accuracy within 1 of the champion's): the same challenger
    # is promoted, stored and deployed before the old deployment and model go.
    del config["minAccuracy"]
    config["promotionTolerance"] = "1"
    steps_before = len(engine.steps)
    second = up(engine, config)
    changed = [s for s in engine.steps[steps_before:] if s[0] != "same"]
    assert changed == [
        ("update", "mnist-pytorch-gate"),
        ("replace", "mnist-pytorch-model"),
        ("replace", "mnist-pytorch-deployment"),
        ("delete", "mnist-pytorch-deployment"),
        ("delete", "mnist-pytorch-model"),
    ]
    assert second.outputs["models"]["pytorch"]["challenger"]["decision"] == "promoted"
    new = second.outputs["endpoints"]["pytorch"]["name"]
    assert deployed != new and list(ibm_cloud_fake.state.deployments) == [new]
    assert len(ibm_cloud_fake.state.models) == 1
    engine.destroy()
    assert_account_empty(ibm_cloud_fake, root)

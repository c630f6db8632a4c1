"""The watsonx.ai stack's program under Pulumi mocks, with the config of Pulumi.ibm.yaml.

What `pulumi up --stack ibm` would declare: two service instances, the bucket, the deployment space,
the training job, the champion gate, the stored model and the online deployment, chained so that
`pulumi destroy` goes deployment -> model -> gate and space -> bucket -> instances; and the API key a
secret everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from harness import Resource, StackRun, run_stack
from ibm_mocks import (
    ACCOUNT,
    API_KEY,
    AUTHORIZATION,
    BUCKET,
    DATASET,
    DEPLOYMENT,
    GATE,
    INSTANCE,
    KMS_KEY_CRN,
    KP_INSTANCE,
    MODEL,
    PLATFORM,
    SPACE,
    TRAINING_JOB,
    plausible_outputs,
)
from pulumi.runtime import rpc


def run_ibm(tmp_path: Path, t10k_dir: Path, overrides: dict[str, Any] | None = None) -> StackRun:
    config = {
        "ibm:apiKey": API_KEY,
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "localRoot": str(tmp_path / "work"),
        **(overrides or {}),
    }
    return run_stack("ibm", config, outputs=plausible_outputs)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, t10k_dir: Path) -> StackRun:
    return run_ibm(tmp_path_factory.mktemp("ibm"), t10k_dir)


@pytest.fixture(scope="module")
def kms_run(tmp_path_factory: pytest.TempPathFactory, t10k_dir: Path) -> StackRun:
    return run_ibm(tmp_path_factory.mktemp("ibm-kms"), t10k_dir, {"kmsKeyCrn": KMS_KEY_CRN})


def _instance(run: StackRun, service: str) -> Resource:
    (found,) = [r for r in run.of_type(INSTANCE) if r.props["service"] == service]
    return found


def test_stack_declares_every_resource_of_the_watsonx_workflow(run: StackRun):
    assert len(run.of_type(PLATFORM)) == 1
    for typ in (BUCKET, SPACE, DATASET, TRAINING_JOB, GATE, MODEL, DEPLOYMENT):
        assert len(run.of_type(typ)) == 1, typ
    assert sorted(r.props["service"] for r in run.of_type(INSTANCE)) == ["cloud-object-storage", "pm-20"]
    assert run.of_type(AUTHORIZATION) == []  # no Key Protect key asked for
    platform = run.one(PLATFORM)
    assert {r.urn for r in run.children_of(platform)} == {r.urn for r in run.resources} - {platform.urn}


def test_instances_use_the_configured_plans_and_targets(run: StackRun):
    cos, runtime = _instance(run, "cloud-object-storage"), _instance(run, "pm-20")
    assert (cos.props["plan"], cos.props["target"]) == ("standard", "global")
    assert (runtime.props["plan"], runtime.props["target"]) == ("v2-standard", "us-south")
    assert cos.props["resource_group"] == runtime.props["resource_group"] == "Default"
    for resource in (cos, runtime, run.one(SPACE), run.one(MODEL), run.one(DEPLOYMENT)):
        assert resource.props["tags"] == ["project:mnist-platform", "stack:ibm"], resource.name


def test_bucket_is_regional_private_and_emptied_on_destroy(run: StackRun):
    bucket = run.one(BUCKET)
    assert bucket.props["location"] == "us-south-standard"
    assert bucket.props["public_access"] is False
    assert bucket.props["force_destroy"] is True
    assert bucket.props.get("kms_key_crn") is None
    assert bucket.props["cos_instance_crn"].startswith("crn:v1:bluemix:public:cloud-object-storage:")


def test_space_stores_in_cos_and_computes_on_the_runtime_instance(run: StackRun):
    space = run.one(SPACE).props
    assert space["cos_instance_crn"] == _instance(run, "cloud-object-storage").outputs["crn"]
    assert space["runtime_crn"] == _instance(run, "pm-20").outputs["crn"]
    assert space["runtime_name"] == _instance(run, "pm-20").props["name"]


def test_training_feeds_the_gate_the_gates_champion_the_model_and_the_model_the_deployment(run: StackRun):
    job, gate, model = run.one(TRAINING_JOB), run.one(GATE), run.one(MODEL)
    deployment, bucket = run.one(DEPLOYMENT), run.one(BUCKET).outputs["bucket"]
    assert job.props["framework"] == "pytorch"
    assert job.props["bucket"] == bucket
    assert job.props["data_hash"] == "c0ffee"
    # The gate judges the job's upload (its metrics.json beside the archive), with mnist-t10k's floor.
    assert gate.props["challenger_id"] == "pytorch-1"
    assert gate.props["challenger_artifact"] == f"cos://{bucket}/models/pytorch-1/model.tar.gz"
    assert (gate.props["model"], gate.props["bucket"]) == ("pytorch", bucket)
    assert gate.props["min_accuracy"] == 0.98
    assert (gate.props["promotion_tolerance"], gate.props["force_promotion"]) == (0, False)
    assert run.depends_on(gate, job)
    # The space stores the gate's copy (not the job's upload, which the next training deletes), and only
    # once the gate has decided: a new champion is a new stored model.
    champion = "champions/pytorch/pytorch-1/model.tar.gz"
    assert model.props["archive_key"] == champion
    assert model.props["artifact_hash"] == f"cos://{bucket}/{champion}"
    assert model.property_dependencies["archive_key"] == {gate.urn}
    assert model.property_dependencies["artifact_hash"] == {gate.urn}
    assert not run.depends_on(model, job)  # the job reaches the model only through the gate
    assert deployment.props["model_id"] == "model-1"
    assert (deployment.props["instance_type"], deployment.props["max_replicas"]) == ("XS", 1)


def test_destroy_goes_deployment_model_space_bucket_instances(run: StackRun):
    deployment, model, space, bucket = (run.one(t) for t in (DEPLOYMENT, MODEL, SPACE, BUCKET))
    cos, runtime = _instance(run, "cloud-object-storage"), _instance(run, "pm-20")
    # Pulumi deletes a resource only after everything that depends on it.
    assert run.depends_on(deployment, model)
    assert run.depends_on(model, space)
    assert run.depends_on(model, run.one(GATE)) and run.depends_on(run.one(GATE), bucket)
    assert run.depends_on(space, bucket)
    assert run.depends_on(space, cos) and run.depends_on(space, runtime)
    assert run.depends_on(bucket, cos)
    assert _delete_order(run).index(deployment.name) < _delete_order(run).index(model.name)
    order = [_delete_order(run).index(r.name) for r in (deployment, model, space, bucket)]
    assert order == sorted(order)
    # The bucket (and the space) live in the COS instance; the space computes on the Runtime instance.
    assert max(order) < _delete_order(run).index(cos.name)
    assert _delete_order(run).index(space.name) < _delete_order(run).index(runtime.name)


def _delete_order(run: StackRun) -> list[str]:
    """The order `pulumi destroy` may delete the custom resources in: dependents first."""
    remaining = {r.urn: r for r in run.resources if r.custom}
    order: list[str] = []
    while remaining:
        leaves = sorted(
            (r for r in remaining.values() if not any(r.urn in o.dependencies for o in remaining.values())),
            key=lambda r: r.name,
        )
        assert leaves, "dependency cycle"
        for leaf in leaves:
            order.append(leaf.name)
            del remaining[leaf.urn]
    return order


def test_api_key_is_a_secret_input_and_in_no_output(run: StackRun):
    ibm_resources = [r for r in run.resources if r.typ.startswith("pulumi-python:dynamic/ibm:")]
    assert len(ibm_resources) == 8  # instances x2, bucket, space, job, gate, model, deployment
    for resource in ibm_resources:
        assert rpc.is_rpc_secret(resource.inputs["api_key"]), resource.name
        assert rpc.unwrap_rpc_secret(resource.inputs["api_key"]) == API_KEY
        plain = {k: v for k, v in resource.props.items() if k != "api_key"}
        assert API_KEY not in json.dumps(plain, default=str), resource.name
    assert API_KEY not in json.dumps(run.outputs, default=str)
    for outputs in run.component_outputs.values():
        assert API_KEY not in json.dumps(outputs, default=str)


def test_outputs_follow_the_contract_every_stack_exports(run: StackRun):
    assert run.outputs["endpoints"] == {
        "pytorch": {
            "flavor": "watsonx",
            "name": "deployment-1",
            "region": "us-south",
            "version": "2024-05-01",
            "space": "space-1",
            "url": "https://us-south.ml.cloud.ibm.com",
            # the stored model's declared input (read from its ONNX file), for the clients to send
            "input_shape": [28, 28, 1],
        }
    }
    bucket = run.one(BUCKET).outputs["bucket"]
    champion = f"cos://{bucket}/champions/pytorch/pytorch-1/model.tar.gz"
    assert run.outputs["models"] == {
        "pytorch": {
            "artifact": champion,
            "metrics": {"accuracy": 0.985},
            "champion": {"artifact": champion, "accuracy": 0.985, "source": "pytorch-1"},
            "challenger": {
                "artifact": f"cos://{bucket}/models/pytorch-1/model.tar.gz",
                "accuracy": 0.985,
                "source": "pytorch-1",
                "decision": "promoted",
            },
        }
    }
    assert run.outputs["bucket"] == bucket
    assert run.outputs["dataset"] == "mnist-t10k"


def test_key_protect_key_is_authorized_before_the_bucket_uses_it(kms_run: StackRun):
    authorization, bucket = kms_run.one(AUTHORIZATION), kms_run.one(BUCKET)
    assert authorization.props["source_service"] == "cloud-object-storage"
    assert authorization.props["source_instance_guid"] == "guid-cloud-object-storage"
    assert authorization.props["target_service"] == "kms"
    assert authorization.props["target_instance_guid"] == KP_INSTANCE
    assert authorization.props["account_id"] == ACCOUNT
    assert authorization.props["role"] == "Reader"
    assert kms_run.depends_on(bucket, authorization)
    assert bucket.props["kms_key_crn"] == KMS_KEY_CRN


def test_plans_hardware_and_region_come_from_config(tmp_path: Path, t10k_dir: Path):
    run = run_ibm(
        tmp_path,
        t10k_dir,
        {"ibm:region": "eu-de", "cosPlan": "lite", "runtimePlan": "lite", "hardwareSpec": "S"},
    )
    assert _instance(run, "cloud-object-storage").props["plan"] == "lite"
    assert (_instance(run, "pm-20").props["plan"], _instance(run, "pm-20").props["target"]) == (
        "lite",
        "eu-de",
    )
    assert run.one(BUCKET).props["location"] == "eu-de-standard"
    assert run.one(DEPLOYMENT).props["instance_type"] == "S"
    assert run.outputs["endpoints"]["pytorch"]["region"] == "eu-de"


def test_api_key_from_ibm_cloud_environment_variable_is_a_secret(
    tmp_path: Path, t10k_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("IC_API_KEY", API_KEY)
    run = run_ibm(tmp_path, t10k_dir, {"ibm:apiKey": None})
    deployment = run.one(DEPLOYMENT)
    assert rpc.is_rpc_secret(deployment.inputs["api_key"])
    assert rpc.unwrap_rpc_secret(deployment.inputs["api_key"]) == API_KEY


def test_without_an_api_key_the_program_says_where_to_set_one(
    tmp_path: Path, t10k_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    for name in ("IC_API_KEY", "IBMCLOUD_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match=r"pulumi config set --secret ibm:apiKey"):
        run_ibm(tmp_path, t10k_dir, {"ibm:apiKey": None})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"hardwareSpec": "XXL"}, "mnist-platform:hardwareSpec"),
        # in the platform's list of hardware specifications, but not among the sizes IBM lists for deployments
        ({"hardwareSpec": "XXS"}, "mnist-platform:hardwareSpec"),
        # a bucket in us-south cannot be encrypted with a root key of a Key Protect instance in eu-de
        (
            {"kmsKeyCrn": KMS_KEY_CRN.replace(":us-south:", ":eu-de:")},
            "names a key in eu-de, but the bucket is in",
        ),
        ({"runtimePlan": "standard"}, "mnist-platform:runtimePlan"),
        ({"ibm:region": "us-east"}, "ibm:region"),
        ({"kmsKeyCrn": "not-a-crn"}, "mnist-platform:kmsKeyCrn"),
        ({"models": ["xgboost"]}, "cannot run on ibm"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, t10k_dir: Path, override: dict[str, Any], message: str):
    with pytest.raises(ValueError, match=message):
        run_ibm(tmp_path, t10k_dir, override)


@pytest.mark.parametrize("stack", ["IBM-dev", "ibm_dev", "-ibm", "x" * 40])
def test_a_stack_name_no_cos_bucket_name_can_hold_is_refused_before_any_call(
    tmp_path: Path, t10k_dir: Path, stack: str
):
    config = {"cloud": "ibm", "ibm:apiKey": API_KEY, "dataset": "mnist-t10k", "dataDir": str(t10k_dir)}
    with pytest.raises(ValueError, match=r"lowercase letters, digits and hyphens") as error:
        run_stack(stack, {**config, "localRoot": str(tmp_path / "work")}, outputs=plausible_outputs)
    assert repr(stack) in str(error.value)


def test_the_longest_stack_name_still_gives_a_valid_bucket_name(tmp_path: Path, t10k_dir: Path):
    stack = "a" * 39
    config = {"cloud": "ibm", "ibm:apiKey": API_KEY, "dataset": "mnist-t10k", "dataDir": str(t10k_dir)}
    run = run_stack(stack, {**config, "localRoot": str(tmp_path / "work")}, outputs=plausible_outputs)
    assert len(f"{run.one(BUCKET).props['prefix']}-0123abcd") == 63


def test_the_trainer_gets_the_datasets_preset(run: StackRun, tmp_path: Path, t10k_dir: Path) -> None:
    assert run.one(TRAINING_JOB).props["preset"] == "standard"
    long = run_ibm(tmp_path, t10k_dir, {"trainingPreset": "long"})
    assert long.one(TRAINING_JOB).props["preset"] == "long"

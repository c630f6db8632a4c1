"""An endpoint update that SageMaker rolls back fails `pulumi up` with the reason, and nothing the endpoint
still uses (its configuration, model and champion copy) is deleted, then or by a later `up`.

The whole aws stack runs under mocks with its dynamic resources executed for real (tests/harness.py
ProviderEngine: the training attempt, the endpoint suffix, the champion gate and the endpoint check) against
moto; the serving chain's native resources are played by tests/aws/aws_natives.py as terraform-provider-aws
and the Pulumi engine treat them (replacements, pending deletes, retain_on_delete, and a rollback
SageMaker does that the provider does not see).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_mocks import ACCOUNT, ENDPOINT, MODEL, REGION, TRAINING_JOB, _call
from aws_natives import NativeResources, record_retain_on_delete
from harness import ProviderEngine, StackRun, run_stack
from moto import mock_aws
from moto.sagemaker.models import sagemaker_backends
from test_aws_gate import moto_backed

from infra.aws import endpoint_check
from infra.aws.endpoint_check import EndpointUpdateCheckProvider, EndpointUpdateError
from infra.aws.gate import champion_key

CHECK = "pulumi-python:dynamic/aws:EndpointUpdateCheck"
ROLLBACK_REASON = (
    "The primary container for production variant AllTraffic did not pass the ping health check. Please "
    "check CloudWatch logs for this endpoint."
)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


@pytest.fixture
def natives(aws: None, monkeypatch: pytest.MonkeyPatch) -> NativeResources:
    natives = NativeResources(others=moto_backed)
    record_retain_on_delete(natives, monkeypatch)
    monkeypatch.setattr(endpoint_check, "POLL_SECONDS", 0.0)
    return natives


def up(
    engine: ProviderEngine, natives: NativeResources, data_dir: Path, num_round: int, **extra: Any
) -> StackRun:
    config = {
        "dataset": "mnist-t10k",
        "dataDir": str(data_dir),
        "hyperparameters": {"xgboost": {"num_round": num_round}},
        **extra,
    }
    natives.begin()
    try:
        run = run_stack("aws", config, new_resource=engine, call=_call)
    except BaseException:
        natives.finish(succeeded=False)
        raise
    engine.finish()
    natives.finish(succeeded=True)
    return run


def names(kind: str) -> set[str]:
    client = boto3.client("sagemaker", region_name=REGION)
    if kind == "model":
        return {m["ModelName"] for m in client.list_models()["Models"]}
    return {c["EndpointConfigName"] for c in client.list_endpoint_configs()["EndpointConfigs"]}


def champion_copies(bucket: str) -> set[str]:
    listing = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=bucket, Prefix="champions/")
    return {item["Key"] for item in listing.get("Contents", [])}


def serving(run: StackRun) -> tuple[str, str, str]:
    """The configuration and model the stack declares, and the job whose champion copy the model reads."""
    model = run.one(MODEL)
    job = run.one(TRAINING_JOB).inputs["trainingJobName"]
    return run.one(ENDPOINT).inputs["endpointConfigName"], model.outputs["name"], job


@pytest.mark.slow
def test_a_rolled_back_update_fails_up_with_the_reason_and_deletes_nothing_the_endpoint_uses(
    natives: NativeResources, t10k_dir: Path
):
    engine = ProviderEngine(fallback=natives)
    first = up(engine, natives, t10k_dir, 150)
    bucket = first.outputs["bucket"]
    endpoint = first.one(ENDPOINT).inputs["name"]
    config_1, model_1, job_1 = serving(first)
    assert ("create", "mnist-xgboost-endpoint-check") in engine.steps

    # A better model is promoted; SageMaker rolls the endpoint update back onto the old configuration.
    natives.rollback_reason = ROLLBACK_REASON
    with pytest.raises(EndpointUpdateError) as failed:
        up(engine, natives, t10k_dir, 300)
    message = str(failed.value)
    assert f"endpoint {endpoint} does not serve the new configuration" in message
    assert f"SageMaker reports it InService on {config_1}" in message
    assert ROLLBACK_REASON in message and "pulumi up --refresh" in message
    assert config_1 in names("config") and model_1 in names("model")
    assert champion_key("xgboost", job_1) in champion_copies(bucket)

    # The next `up` promotes another model: the pending deletes of the failed update run first, and the
    # gate crowns a third champion (the one the endpoint serves is now two promotions old). It is rolled
    # back too: everything the endpoint uses is still there.
    with pytest.raises(EndpointUpdateError, match=f"on {config_1}"):
        up(engine, natives, t10k_dir, 400)
    assert config_1 in names("config") and model_1 in names("model")
    assert champion_key("xgboost", job_1) in champion_copies(bucket)
    assert sagemaker_backends[ACCOUNT][REGION].endpoints[endpoint].endpoint_config_name == config_1

    # The cause fixed, `pulumi up --refresh`: the endpoint takes the new configuration, the check passes and
    # only now removes every older configuration, model and champion copy.
    natives.rollback_reason = None
    natives.refresh()
    fixed = up(engine, natives, t10k_dir, 400)
    config_3, model_3, job_3 = serving(fixed)
    assert names("config") == {config_3} and names("model") == {model_3}
    assert champion_copies(bucket) == {champion_key("xgboost", job_3)}
    check = engine.live["mnist-xgboost-endpoint-check"].state
    assert (check["served_config"], check["served_model"]) == (config_3, model_3)

    # A second `up` with nothing changed asks SageMaker again and changes nothing.
    up(engine, natives, t10k_dir, 400)
    assert engine.steps[-1] != ("update", "mnist-xgboost-endpoint-check")
    assert ("same", "mnist-xgboost-endpoint-check") in engine.steps[-6:]


@pytest.mark.slow
def test_a_new_instance_type_is_verified_on_the_new_endpoint_and_the_old_chain_removed(
    natives: NativeResources, t10k_dir: Path
):
    """A new instance type is a new endpoint (infra/aws/unique_suffix.py): the check follows it to the new
    endpoint, and the old endpoint's configuration and model go once the new one serves."""
    engine = ProviderEngine(fallback=natives)
    first = up(engine, natives, t10k_dir, 150)
    old_endpoint = first.one(ENDPOINT).inputs["name"]
    moved = up(engine, natives, t10k_dir, 150, endpointInstanceType="ml.c5.large")
    config, model, _ = serving(moved)
    new_endpoint = moved.one(ENDPOINT).inputs["name"]
    assert new_endpoint != old_endpoint
    assert names("config") == {config} and names("model") == {model}
    assert set(sagemaker_backends[ACCOUNT][REGION].endpoints) == {new_endpoint}
    assert ("update", "mnist-xgboost-endpoint-check") in engine.steps  # never replaced: see its delete
    assert engine.live["mnist-xgboost-endpoint-check"].state["served_config"] == config


# -- the provider alone ------------------------------------------------------------------------------


def _props(**extra: Any) -> dict[str, Any]:
    return {
        "region": REGION,
        "endpoint_name": "mnist-aws-xgboost-0a1b2c3d",
        "endpoint_config_name": "cfg-new",
        "model_name": "mnist-xgboost-model-new",
        "champion_artifact": "s3://b/champions/xgboost/job-2/model.tar.gz",
        "bucket": "b",
        "champion_prefix": "champions/",
        "config_name_prefix": "cfg-",
        "model_name_prefix": "mnist-xgboost-model-",
        "stack_tags": {"project": "mnist-platform", "stack": "aws"},
        **extra,
    }


class DescribeOnly:
    """A SageMaker client that answers DescribeEndpoint with a sequence of states (moto's endpoints have no
    Updating or RollingBack phase)."""

    def __init__(self, *answers: dict[str, Any]) -> None:
        self.answers = list(answers)

    def describe_endpoint(self, EndpointName: str) -> dict[str, Any]:
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_the_check_waits_through_rolling_back_and_reports_an_empty_failure_reason(
    monkeypatch: pytest.MonkeyPatch,
):
    client = DescribeOnly(
        {"EndpointStatus": "Updating", "EndpointConfigName": "cfg-old"},
        {"EndpointStatus": "RollingBack", "EndpointConfigName": "cfg-old"},
        {"EndpointStatus": "InService", "EndpointConfigName": "cfg-old"},
    )
    monkeypatch.setattr(endpoint_check, "sagemaker_client", lambda region: client)
    monkeypatch.setattr(endpoint_check, "POLL_SECONDS", 0.0)
    with pytest.raises(EndpointUpdateError) as failed:
        EndpointUpdateCheckProvider().create(_props())
    assert "SageMaker reports it InService on cfg-old" in str(failed.value)
    assert "SageMaker gave no FailureReason" in str(failed.value)
    assert client.answers == [{"EndpointStatus": "InService", "EndpointConfigName": "cfg-old"}]


def test_a_failed_endpoint_is_reported_with_its_reason(monkeypatch: pytest.MonkeyPatch):
    client = DescribeOnly(
        {
            "EndpointStatus": "Failed",
            "EndpointConfigName": "cfg-new",
            "FailureReason": "Insufficient capacity.",
        }
    )
    monkeypatch.setattr(endpoint_check, "sagemaker_client", lambda region: client)
    with pytest.raises(EndpointUpdateError, match=r"reports it Failed on cfg-new\. Reason: Insufficient cap"):
        EndpointUpdateCheckProvider().update("id", _props(), _props())


def test_another_stacks_configurations_and_models_are_never_touched(aws: None):
    """Two stacks in one account share the logical names: only the stack's own tags make a leftover ours."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    role = f"arn:aws:iam::{ACCOUNT}:role/hosting"
    for stack, suffix in (("aws", "1"), ("aws-eu", "2")):
        tags = [{"Key": "project", "Value": "mnist-platform"}, {"Key": "stack", "Value": stack}]
        sagemaker.create_model(
            ModelName=f"mnist-xgboost-model-{suffix}",
            ExecutionRoleArn=role,
            PrimaryContainer={"Image": "xgboost:1.7-1", "ModelDataUrl": "s3://b/m.tar.gz"},
            Tags=tags,
        )
        sagemaker.create_endpoint_config(
            EndpointConfigName=f"cfg-{suffix}",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": f"mnist-xgboost-model-{suffix}",
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                }
            ],
            Tags=tags,
        )
    EndpointUpdateCheckProvider().delete("id", _props())
    assert names("model") == {"mnist-xgboost-model-2"} and names("config") == {"cfg-2"}


def test_a_deleted_endpoint_reads_as_gone(aws: None):
    assert EndpointUpdateCheckProvider().read("id", _props()).id is None

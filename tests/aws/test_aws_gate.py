"""The SageMaker stack's champion gate against moto: its provider with boto3's real clients, and the
whole stack under mocks with the gate executed for real (tests/harness.py ProviderEngine).

moto's DescribeTrainingJob returns a FinalMetricDataList, but always the same one (`train:progress`):
these tests set what the job "reported" on moto's own record of the job, so the provider reads it
through the real API call. Everything else (CreateTrainingJob, CopyObject with encryption, HeadObject,
DeleteObject) is moto answering boto3 as S3 and SageMaker would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_mocks import (
    ACCOUNT,
    BUCKET,
    ENDPOINT,
    ENDPOINT_CONFIG,
    GATE,
    MODEL,
    REGION,
    TRAINING_JOB,
    _call,
    _outputs,
)
from aws_natives import NativeResources
from botocore.exceptions import ClientError
from harness import ProviderEngine, StackRun, run_stack
from moto import mock_aws
from moto.sagemaker.models import sagemaker_backends
from pulumi.runtime.mocks import MockResourceArgs

from infra.aws.gate import SageMakerGateProvider, champion_key, with_retries
from infra.gate_provider import GateError

TEST_BUCKET = "mnist-gate-test"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/training"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        yield


def finished_job(
    bucket: str, name: str, metrics: dict[str, float], status: str = "Completed", model: bytes = b"model"
) -> str:
    """A training job as SageMaker leaves it: its record (status, final metrics) and its model.tar.gz."""
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    try:
        sagemaker.describe_training_job(TrainingJobName=name)
    except ClientError:
        sagemaker.create_training_job(
            TrainingJobName=name,
            AlgorithmSpecification={"TrainingImage": "xgboost:1.7-1", "TrainingInputMode": "File"},
            RoleArn=ROLE_ARN,
            OutputDataConfig={"S3OutputPath": f"s3://{bucket}/output"},
            ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
            StoppingCondition={"MaxRuntimeInSeconds": 3600},
            HyperParameters={},
        )
    record = sagemaker_backends[ACCOUNT][REGION].training_jobs[name]
    record.training_job_status = status
    record.final_metric_data_list = [
        {"MetricName": metric, "Value": value, "Timestamp": record.creation_time}
        for metric, value in metrics.items()
    ]
    key = f"output/{name}/output/model.tar.gz"
    boto3.client("s3", region_name=REGION).put_object(Bucket=bucket, Key=key, Body=model)
    return f"s3://{bucket}/{key}"


def gate_props(job: str, artifact: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "xgboost",
        "challenger_id": job,
        "challenger_artifact": artifact,
        "region": REGION,
        "bucket": TEST_BUCKET,
        "kms_key_arn": None,
        "min_accuracy": 0.95,
        "promotion_tolerance": 0.0,
        "force_promotion": False,
        **extra,
    }


def champion_keys() -> list[str]:
    listing = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=TEST_BUCKET, Prefix="champions/")
    return sorted(o["Key"] for o in listing.get("Contents", []))


@pytest.fixture
def bucket(aws: None) -> str:
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=TEST_BUCKET)
    return TEST_BUCKET


# -- the provider ----------------------------------------------------------------------------------


def test_a_gate_create_whose_result_was_lost_is_run_again_onto_the_same_copy_not_a_second_one(bucket: str):
    """`pulumi up` killed after the gate copied the champion and before its state was saved: the next
    `up` creates the gate again, which copies to the same key (the job's name), so nothing is left twice
    and nothing is orphaned."""
    artifact = finished_job(bucket, "job-1", {"validation:merror": 0.035})
    lost = SageMakerGateProvider().create(gate_props("job-1", artifact)).outs or {}
    kept = SageMakerGateProvider().create(gate_props("job-1", artifact)).outs or {}
    assert kept["champion_artifact"] == lost["champion_artifact"]
    assert champion_keys() == [champion_key("xgboost", "job-1")]


def test_accuracy_is_one_minus_validation_merror_and_the_champion_is_copied_encrypted(bucket: str):
    artifact = finished_job(bucket, "job-1", {"validation:merror": 0.035, "validation:mlogloss": 0.12})
    state = SageMakerGateProvider().create(gate_props("job-1", artifact)).outs or {}
    champion = state["champion"]
    assert champion["accuracy"] == pytest.approx(0.965)
    assert champion["metrics"] == {
        "training_job": "job-1",
        "validation:merror": 0.035,
        "validation:mlogloss": 0.12,
    }
    assert champion["trained"]  # TrainingEndTime
    copy = f"s3://{bucket}/champions/xgboost/job-1/model.tar.gz"
    assert state["champion_artifact"] == champion["artifact"] == copy
    head = boto3.client("s3", region_name=REGION).head_object(
        Bucket=bucket, Key=champion_key("xgboost", "job-1")
    )
    assert head["ServerSideEncryption"] == "AES256"
    body = boto3.client("s3", region_name=REGION).get_object(
        Bucket=bucket, Key=champion_key("xgboost", "job-1")
    )
    assert body["Body"].read() == b"model"


def test_with_a_customer_key_the_champion_copy_is_encrypted_with_it(bucket: str):
    key_arn = boto3.client("kms", region_name=REGION).create_key()["KeyMetadata"]["Arn"]
    artifact = finished_job(bucket, "job-1", {"validation:merror": 0.03})
    SageMakerGateProvider().create(gate_props("job-1", artifact, kms_key_arn=key_arn))
    head = boto3.client("s3", region_name=REGION).head_object(
        Bucket=bucket, Key=champion_key("xgboost", "job-1")
    )
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["SSEKMSKeyId"] == key_arn


def test_a_worse_job_is_held_and_a_better_one_promoted(bucket: str, warnings: list[str]):
    provider = SageMakerGateProvider()
    first = provider.create(
        gate_props("job-1", finished_job(bucket, "job-1", {"validation:merror": 0.03}))
    ).outs
    assert first is not None
    worse = gate_props("job-2", finished_job(bucket, "job-2", {"validation:merror": 0.40}))
    assert provider.diff("gate", first, worse).changes and not provider.diff("gate", first, worse).replaces
    held = provider.update("gate", first, worse).outs or {}
    assert held["champion"] == first["champion"] and held["champion_artifact"] == first["champion_artifact"]
    assert held["challenger"]["decision"] == "held"
    assert (
        "challenger accuracy 0.6000 < floor minAccuracy 0.9500 (champion accuracy 0.9700)"
        in (held["challenger"]["reason"])
    )
    assert any("held back" in w for w in warnings)
    better = gate_props("job-3", finished_job(bucket, "job-3", {"validation:merror": 0.02}))
    promoted = provider.update("gate", held, better).outs or {}
    assert promoted["champion"]["source"] == "job-3"
    assert promoted["champion_artifact"] == f"s3://{bucket}/champions/xgboost/job-3/model.tar.gz"
    # The previous champion's copy stays one round: the endpoint may still be serving it.
    assert champion_keys() == [champion_key("xgboost", "job-1"), champion_key("xgboost", "job-3")]
    provider.delete("gate", promoted)
    assert champion_keys() == []
    provider.delete("gate", promoted)  # already gone: success


def test_a_job_without_merror_is_never_promoted_silently(bucket: str):
    provider = SageMakerGateProvider()
    artifact = finished_job(bucket, "job-1", {"validation:mlogloss": 0.1})
    with pytest.raises(GateError) as error:
        provider.create(gate_props("job-1", artifact))
    message = str(error.value)
    assert "reported no validation:merror" in message and "eval_metric must include merror" in message
    assert "No endpoint is created for xgboost" in message
    assert champion_keys() == []


def test_a_failed_job_is_held_and_the_champion_kept(bucket: str):
    provider = SageMakerGateProvider()
    first = provider.create(
        gate_props("job-1", finished_job(bucket, "job-1", {"validation:merror": 0.03}))
    ).outs
    assert first is not None
    failed = finished_job(bucket, "job-2", {}, status="Failed")
    held = provider.update("gate", first, gate_props("job-2", failed)).outs or {}
    assert held["challenger"]["decision"] == "held" and "job-2 is Failed" in held["challenger"]["reason"]
    assert held["champion"] == first["champion"]


def test_a_job_stopped_at_max_runtime_is_held_saying_what_to_raise(bucket: str):
    """terraform-provider-aws's waiter returns normally when its poll first sees `Stopped`: the gate then
    holds the job and says which limit stopped it."""
    artifact = finished_job(bucket, "job-1", {}, status="Stopped")
    sagemaker_backends[ACCOUNT][REGION].training_jobs["job-1"].secondary_status = "MaxRuntimeExceeded"
    with pytest.raises(GateError, match=r"max runtime .*maxRuntimeSeconds is 3600 s\. Raise it"):
        SageMakerGateProvider().create(gate_props("job-1", artifact))


def test_a_champion_copy_deleted_behind_the_stacks_back_shows_in_the_diff(bucket: str):
    provider = SageMakerGateProvider()
    props = gate_props("job-1", finished_job(bucket, "job-1", {"validation:merror": 0.03}))
    state = provider.create(props).outs or {}
    assert not provider.diff("gate", state, props).changes
    boto3.client("s3", region_name=REGION).delete_object(Bucket=bucket, Key=champion_key("xgboost", "job-1"))
    assert provider.diff("gate", state, props).changes


def test_throttling_is_retried_and_other_errors_are_not():
    calls: list[int] = []

    def throttled_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ClientError(
                {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "Describe"
            )
        return "ok"

    assert with_retries(throttled_twice) == "ok" and len(calls) == 3

    def denied() -> None:
        calls.append(1)
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "Describe")

    calls.clear()
    with pytest.raises(ClientError):
        with_retries(denied)
    assert len(calls) == 1


# -- the stack, with the gate executed for real ------------------------------------------------------

# What the built-in algorithm "reports" for each num_round the stack trains with (default: 150).
MERROR_BY_NUM_ROUND = {"150": 0.03, "1": 0.40, "300": 0.02, "400": 0.015}


def moto_backed(args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
    """Plausible outputs for every native resource, and in moto what the gate reads: the bucket, and
    each training job's record and model as SageMaker would leave them."""
    id_, state = _outputs(args)
    if args.typ == BUCKET:
        s3 = boto3.client("s3", region_name=REGION)
        if state["bucket"] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=state["bucket"])
    if args.typ == TRAINING_JOB:
        bucket = args.inputs["outputDataConfig"]["s3OutputPath"].removeprefix("s3://").split("/")[0]
        merror = MERROR_BY_NUM_ROUND[args.inputs["hyperParameters"]["num_round"]]
        finished_job(bucket, args.inputs["trainingJobName"], {"validation:merror": merror})
    return id_, state


def up(engine: ProviderEngine, data_dir: Path, overrides: dict[str, Any] | None = None) -> StackRun:
    config = {"dataset": "mnist-t10k", "dataDir": str(data_dir), **(overrides or {})}
    run = run_stack("aws", config, new_resource=engine, call=_call)
    engine.finish()
    return run


def serving_inputs(run: StackRun) -> dict[str, dict[str, Any]]:
    return {typ: run.one(typ).inputs for typ in (MODEL, ENDPOINT_CONFIG, ENDPOINT)}


@pytest.mark.slow
def test_a_losing_job_leaves_model_configuration_and_endpoint_unchanged_a_winner_rolls_forward(
    aws: None, t10k_dir: Path, warnings: list[str]
):
    # The serving chain in moto too: the endpoint check reads what SageMaker serves.
    engine = ProviderEngine(fallback=NativeResources(others=moto_backed))
    first = up(engine, t10k_dir)
    bucket = first.outputs["bucket"]
    job_1 = first.one(TRAINING_JOB).inputs["trainingJobName"]
    served = first.one(MODEL).inputs["primaryContainer"]["modelDataUrl"]
    assert served == f"s3://{bucket}/champions/xgboost/{job_1}/model.tar.gz"
    assert first.outputs["models"]["xgboost"]["champion"]["accuracy"] == pytest.approx(0.97)

    worse = up(engine, t10k_dir, {"hyperparameters": {"xgboost": {"num_round": 1}}})
    assert worse.one(TRAINING_JOB).inputs["trainingJobName"] != job_1  # it did retrain
    assert ("update", "mnist-xgboost-gate") in engine.steps
    # Same inputs for the model, its endpoint configuration and the endpoint: Pulumi changes none of them.
    assert serving_inputs(worse) == serving_inputs(first)
    model = worse.outputs["models"]["xgboost"]
    assert model["artifact"] == served and model["challenger"]["decision"] == "held"
    assert "0.6000 < floor minAccuracy 0.9500" in model["challenger"]["reason"]
    assert any("held back" in w for w in warnings)

    better = up(engine, t10k_dir, {"hyperparameters": {"xgboost": {"num_round": 300}}})
    job_3 = better.one(TRAINING_JOB).inputs["trainingJobName"]
    rolled = better.one(MODEL).inputs["primaryContainer"]["modelDataUrl"]
    assert rolled == f"s3://{bucket}/champions/xgboost/{job_3}/model.tar.gz" != served
    assert better.outputs["models"]["xgboost"]["challenger"]["decision"] == "promoted"
    # As before the gate: a new model (and so configuration) behind the same endpoint name.
    assert better.one(ENDPOINT).inputs["name"] == first.one(ENDPOINT).inputs["name"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.head_object(Bucket=bucket, Key=champion_key("xgboost", job_3))

    engine.destroy()
    assert s3.list_objects_v2(Bucket=bucket, Prefix="champions/").get("KeyCount") == 0


@pytest.mark.slow
def test_a_first_job_under_the_floor_fails_before_any_model_or_endpoint(aws: None, t10k_dir: Path):
    engine = ProviderEngine(fallback=moto_backed)
    with pytest.raises(Exception, match="No endpoint is created for xgboost"):
        up(engine, t10k_dir, {"hyperparameters": {"xgboost": {"num_round": 1}}})
    assert GATE not in {live.typ for live in engine.live.values()}


def test_hyperparameters_without_merror_are_refused_before_anything_is_created(t10k_dir: Path):
    with pytest.raises(ValueError, match="eval_metric must include merror"):
        up(ProviderEngine(), t10k_dir, {"hyperparameters": {"xgboost": {"eval_metric": "mlogloss"}}})

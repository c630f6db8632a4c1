"""The SageMaker batch transform provider (infra/aws/batch_transform.py) against moto, with boto3's
real clients.

What moto does and does not: it records CreateTransformJob and answers Describe/List/Stop
TransformJob(s) (status Completed at once), and serves S3; it runs nothing. The gap is filled here, and
only here: `TransformRunner` wraps moto's backend so that a created job does what SageMaker's would on
the exact bytes in moto's S3: the input object is split by line, cut into mini-batches of at most
MaxPayloadInMB (MultiRecord), each sent through the SageMaker-flavor model's own wire path
(serving/models.py `infer`, CSV in, CSV out, SAGEMAKER_INFERENCE_OUTPUT=probabilities as the stack's
model sets it), and the answers joined by lines into `<S3OutputPath><input file>.out`. Before that,
the request is checked against botocore's sagemaker service model (enums, ranges, patterns, which
botocore's own client-side validation does not check). A job the runner is told to fail gets moto's
record set to Failed with a FailureReason, after writing a partial output, as a crashed container leaves.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import boto3
import numpy as np
import pytest
from moto import mock_aws
from moto.sagemaker.models import SageMakerModelBackend, sagemaker_backends
from tiny_models import train_tiny_xgboost

from infra.aws.batch_transform import (
    MAX_PAYLOAD_MB,
    SageMakerTransformJobProvider,
    TransformJobError,
    parse_transform_output,
    transform_request,
)
from infra.dynamic import IDENTITY_SEED
from serving.constants import SAGEMAKER_INFERENCE_OUTPUT_ENV
from serving.models import InferenceRequest, SageMakerXGBoostModel

REGION = "us-east-1"
ACCOUNT = "123456789012"
BUCKET = "mnist-batch-test"
DIGITS = 300


def check_against_service_model(shape: Any, value: Any, where: str) -> None:
    """Refuse what SageMaker's own model refuses: enums, min/max, patterns, unknown members."""
    if shape.type_name == "structure":
        assert isinstance(value, dict), where
        unknown = set(value) - set(shape.members)
        assert not unknown, f"{where}: {unknown} not in {shape.name}"
        for required in shape.required_members:
            assert required in value, f"{where}: {required} required"
        for key, item in value.items():
            check_against_service_model(shape.members[key], item, f"{where}.{key}")
    elif shape.type_name == "list":
        for index, item in enumerate(value):
            check_against_service_model(shape.member, item, f"{where}[{index}]")
    elif shape.type_name == "string":
        if shape.enum:
            assert value in shape.enum, f"{where}: {value!r} not in {shape.enum}"
        pattern = shape.metadata.get("pattern")
        # Java-style Unicode classes (\\p{...}, e.g. on tag values) are beyond Python's re: not checked.
        if pattern and "\\p" not in pattern:
            assert re.fullmatch(pattern, value), f"{where}: {value!r} does not match {pattern}"
        assert len(value) <= shape.metadata.get("max", 1 << 30), where
    elif shape.type_name == "integer":
        assert shape.metadata.get("min", -(1 << 62)) <= value <= shape.metadata.get("max", 1 << 62), where


class TransformRunner:
    """Does, on moto's S3, what SageMaker's transform job does with the model (module docstring)."""

    def __init__(self, model: SageMakerXGBoostModel) -> None:
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self.mini_batches: list[int] = []
        self.fail_with: str | None = None

    def run(self, name: str, request: dict[str, Any]) -> None:
        s3 = boto3.client("s3", region_name=REGION)
        bucket, key = request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"][5:].split("/", 1)
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        limit = request["MaxPayloadInMB"] * 1024 * 1024
        batches, current = [], b""
        for line in body.splitlines(keepends=True):
            if current and len(current) + len(line) > limit:
                batches.append(current)
                current = b""
            current += line
        batches.append(current)
        answers = []
        for batch in batches:
            self.mini_batches.append(batch.count(b"\n"))
            reply = self.model.infer(
                InferenceRequest(batch, "text/csv", request["TransformOutput"]["Accept"])
            )
            answers.append(reply.body.decode().rstrip("\n"))
        out_bucket, out_prefix = request["TransformOutput"]["S3OutputPath"][5:].split("/", 1)
        out_key = f"{out_prefix}{key.rsplit('/', 1)[-1]}.out"
        record = sagemaker_backends[ACCOUNT][REGION].transform_jobs[name]
        if self.fail_with is not None:
            s3.put_object(Bucket=out_bucket, Key=out_key, Body=answers[0][:10].encode())  # half an answer
            record.transform_job_status = "Failed"
            record.failure_reason = self.fail_with
            return
        s3.put_object(Bucket=out_bucket, Key=out_key, Body="\n".join(answers).encode() + b"\n")


@pytest.fixture
def champion(tmp_path_factory: pytest.TempPathFactory, t10k_dir) -> SageMakerXGBoostModel:
    folder = train_tiny_xgboost(tmp_path_factory.mktemp("xgb"), t10k_dir, images=800, rounds=3)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(SAGEMAKER_INFERENCE_OUTPUT_ENV, "probabilities")  # as the stack's Model sets it
        model = SageMakerXGBoostModel("champion", folder)
    model.load()
    return model


@pytest.fixture
def runner(champion: SageMakerXGBoostModel, monkeypatch: pytest.MonkeyPatch) -> Iterator[TransformRunner]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    runner = TransformRunner(champion)
    created = SageMakerModelBackend.create_transform_job
    operation = boto3.client("sagemaker", region_name=REGION).meta.service_model
    shape = operation.operation_model("CreateTransformJob").input_shape

    def create_and_run(backend: Any, **kwargs: Any) -> Any:
        job = created(backend, **kwargs)
        request = {
            "TransformJobName": kwargs["transform_job_name"],
            "ModelName": kwargs["model_name"],
            "MaxPayloadInMB": kwargs["max_payload_in_mb"],
            "BatchStrategy": kwargs["batch_strategy"],
            "TransformInput": kwargs["transform_input"],
            "TransformOutput": kwargs["transform_output"],
            "TransformResources": kwargs["transform_resources"],
            "Tags": kwargs["tags"],
        }
        check_against_service_model(shape, request, "CreateTransformJob")
        runner.requests.append(request)
        runner.run(kwargs["transform_job_name"], request)
        return job

    monkeypatch.setattr(SageMakerModelBackend, "create_transform_job", create_and_run)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
        yield runner


@pytest.fixture
def digits(t10k) -> tuple[np.ndarray, np.ndarray]:
    pixels = t10k.x_test[:DIGITS].reshape(DIGITS, 784).astype(np.float32) / 255.0
    return pixels, t10k.y_test[:DIGITS].astype(np.int64)


def props_for(digits: tuple[np.ndarray, np.ndarray], **overrides: Any) -> dict[str, Any]:
    from mnistctl.client import csv_payload

    pixels, labels = digits
    boto3.client("s3", region_name=REGION).put_object(
        Bucket=BUCKET, Key="batch/xgboost/input/held-out.csv", Body=csv_payload(pixels)
    )
    return {
        "region": REGION,
        "model": "xgboost",
        "model_name": "mnist-xgboost-model-0001",
        "input_uri": f"s3://{BUCKET}/batch/xgboost/input/held-out.csv",
        "output_prefix": f"s3://{BUCKET}/batch/xgboost/output",
        "instance_type": "ml.m5.large",
        "instance_count": 1,
        "labels": labels.tolist(),
        "source": "mnist-t10k-test",
        "job_prefix": "mnist-local-batch",
        "price_per_hour": None,
        "price_source": "no transform price in infra/prices/aws.csv",
        "kms_key_arn": None,
        IDENTITY_SEED: "seed",
        **overrides,
    }


def objects(prefix: str) -> list[str]:
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(item["Key"] for item in listed.get("Contents", []))


def test_the_request_is_csv_split_by_line_in_6_mb_mini_batches_and_passes_the_service_model():
    props = {
        "model_name": "m",
        "input_uri": f"s3://{BUCKET}/in.csv",
        "output_prefix": f"s3://{BUCKET}/out",
        "instance_type": "ml.m5.large",
        "instance_count": 2,
        "kms_key_arn": "arn:aws:kms:us-east-1:123456789012:key/abc",
        IDENTITY_SEED: "s",
    }
    request = transform_request(props, "p-abc-001")
    operation = boto3.client("sagemaker", region_name=REGION).meta.service_model
    check_against_service_model(
        operation.operation_model("CreateTransformJob").input_shape, request, "request"
    )
    assert request["TransformInput"]["ContentType"] == "text/csv"
    assert request["TransformInput"]["SplitType"] == "Line"
    assert request["BatchStrategy"] == "MultiRecord" and request["MaxPayloadInMB"] == MAX_PAYLOAD_MB == 6
    assert request["TransformOutput"]["AssembleWith"] == "Line"
    assert request["TransformOutput"]["S3OutputPath"] == f"s3://{BUCKET}/out/p-abc-001/"
    assert request["TransformOutput"]["KmsKeyId"] == props["kms_key_arn"]
    assert request["TransformResources"] == {
        "InstanceType": "ml.m5.large",
        "InstanceCount": 2,
        "VolumeKmsKeyId": "arn:aws:kms:us-east-1:123456789012:key/abc",
    }


def test_a_transform_job_scores_the_input_and_its_report_lands_beside_the_output(
    runner: TransformRunner, digits, champion: SageMakerXGBoostModel
):
    props = props_for(digits)
    created = SageMakerTransformJobProvider().create(props)
    outs = created.outs or {}
    assert len(runner.requests) == 1 and runner.mini_batches == [DIGITS]  # 300 digits fit in one 6 MB batch
    pixels, labels = digits
    expected = float((champion.predict(pixels).argmax(axis=1) == labels).mean())
    assert outs["accuracy"] == expected and outs["images"] == DIGITS
    prefix = f"batch/xgboost/output/{created.id}/"
    assert objects(prefix) == sorted(
        f"{prefix}{name}"
        for name in ("held-out.csv.out", "predictions.csv", "report.json", "confusion.csv", "confusion.png")
    )
    assert outs["confusion_png"] == f"s3://{BUCKET}/{prefix}confusion.png"
    assert SageMakerTransformJobProvider().read(created.id, outs).id == created.id

    # An up that died after the job completed: the next create adopts it, no second job.
    again = SageMakerTransformJobProvider().create(props)
    assert again.id == created.id and len(runner.requests) == 1

    SageMakerTransformJobProvider().delete(created.id, outs)
    assert objects(prefix) == []
    assert SageMakerTransformJobProvider().read(created.id, outs).id is None


def test_a_failing_job_raises_sagemakers_reason_and_leaves_no_output_and_the_next_up_tries_anew(
    runner: TransformRunner, digits
):
    props = props_for(digits)
    runner.fail_with = "ClientError: See job logs for more information"
    with pytest.raises(TransformJobError, match="failed: ClientError: See job logs for more information"):
        SageMakerTransformJobProvider().create(props)
    assert objects("batch/xgboost/output/") == []
    runner.fail_with = None
    created = SageMakerTransformJobProvider().create(props)
    assert created.id.endswith("-002") and len(runner.requests) == 2  # a name is never reused


def test_the_containers_csv_answers_are_read_in_both_of_its_modes():
    quoted = '"[0.1, 0.9, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]"\n'
    plain = "0.1,0.9,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0\n"
    for text in (quoted, plain):
        np.testing.assert_allclose(parse_transform_output(text * 2)[:, 1], [0.9, 0.9])


def test_with_a_batch_block_the_aws_stack_declares_a_transform_job_of_the_champions_model(t10k_dir):
    import json as json_module

    from aws_mocks import MODEL, OBJECT, ROLE_POLICY, run_aws

    stack = run_aws(t10k_dir, {"batch": {"xgboost": {"input": "test", "instanceType": "ml.c5.xlarge"}}})
    (job,) = [r for r in stack.resources if r.typ == "pulumi-python:dynamic/aws:TransformJob"]
    (model,) = [r for r in stack.resources if r.typ == MODEL]
    assert job.inputs["model_name"] == model.outputs["name"]  # the endpoint's Model: the champion's artifact
    assert stack.run.depends_on(job, model)
    assert job.inputs["instance_type"] == "ml.c5.xlarge" and job.inputs["instance_count"] == 1
    assert len(job.inputs["labels"]) == 2000  # mnist-t10k's held-out part, labels kept on this machine
    (upload,) = [r for r in stack.resources if r.typ == OBJECT and r.name.endswith("-batch-input")]
    assert (
        job.inputs["input_uri"].endswith(upload.inputs["key"]) and upload.inputs["contentType"] == "text/csv"
    )
    assert stack.run.depends_on(job, upload)
    (access,) = [r for r in stack.resources if r.typ == ROLE_POLICY and r.name.endswith("-batch-access")]
    statements = {s["Sid"]: s for s in json_module.loads(access.inputs["policy"])["Statement"]}
    assert statements["ReadBatchInputs"]["Resource"].endswith("/batch/*/input/*")
    assert statements["WriteBatchOutputs"]["Resource"].endswith("/batch/*/output/*")
    assert "unknown" in job.inputs["price_source"]  # no transform price in infra/prices/aws.csv yet


def test_without_a_batch_block_the_aws_stack_declares_no_transform_job(t10k_dir):
    from aws_mocks import run_aws

    stack = run_aws(t10k_dir)
    assert not [r for r in stack.resources if "TransformJob" in r.typ]
    assert "batch" not in stack.outputs

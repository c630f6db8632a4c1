"""The aws stack's batch scoring: a SageMaker batch transform job of the champion's model.

CreateTransformJob has no Pulumi resource (pulumi-aws has none, nor has Terraform), so this is a dynamic
provider around boto3. The job reads one CSV object in the stack's bucket (784 pixels a row, no label,
no header: what the built-in XGBoost container scores), split by line and sent to the container in
mini-batches of as many rows as fit in `MaxPayloadInMB` (BatchStrategy MultiRecord), and writes
`<input file>.out` under its own prefix, one answer a line (AssembleWith Line). Once it has completed,
the provider reads that file, and writes beside it the report every stack writes (mnistctl/batch.py:
predictions.csv, report.json, confusion.csv/.png with the labels kept on this machine).

MaxPayloadInMB is 6: the transform job's container is the one the endpoint runs, whose request limit is
InvokeEndpoint's 6 MB (serving/constants.py SAGEMAKER_MAX_PAYLOAD_BYTES, which the local server
enforces); a held-out digit is 1-4 KB of CSV, so a mini-batch carries about 2,000 digits, few enough
requests that the per-request overhead vanishes. MaxConcurrentTransforms is left to SageMaker (its
default, one request at a time per instance, is what the XGBoost container's single worker serves).

Identity and crash-safety (docs/reliability.md): names are `<prefix>-<identity>-<attempt>`, the
identity covering every input (a transform job is immutable, and a name is never reused, even after a
failure: SageMaker has no DeleteTransformJob). A create first lists the jobs of its identity: one still
running is waited for, one completed is adopted (its report written if missing); a failed one's outputs
are removed and the next attempt number is used. A job that fails raises SageMaker's FailureReason and
leaves no output. Delete stops a running job and removes the job's output prefix (the job's record
stays, as SageMaker keeps every job's). `read` asks DescribeTransformJob and S3 for the report.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.aws.gate import split_s3_uri, with_retries
from infra.aws.names import sagemaker_name
from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, log, state_of

# SageMaker's limit on a mini-batch for the container (module docstring: why 6).
MAX_PAYLOAD_MB = 6
BATCH_STRATEGY = "MultiRecord"
CSV_CONTENT_TYPE = "text/csv"
RUNNING = ("InProgress", "Stopping")
POLL_SECONDS = 30.0
WAIT_LIMIT_SECONDS = 4 * 3600
# Everything a transform job is made of: a change is a new job (SageMaker cannot update one).
_REPLACE_KEYS = (
    "region",
    "model",
    "model_name",
    "input_uri",
    "output_prefix",
    "instance_type",
    "instance_count",
    "kms_key_arn",
    "job_prefix",
)
IDENTITY_LENGTH = 12
ATTEMPT_ROOM = 4  # "-999"


class TransformJobError(Exception):
    """A transform job that failed or could not be started; the message says which and why."""


@dataclass
class SageMakerTransformJobArgs:
    """Inputs of a SageMakerTransformJob."""

    region: pulumi.Input[str]
    model: pulumi.Input[str]
    """The framework scored (xgboost): names the report."""
    model_name: pulumi.Input[str]
    """The SageMaker Model of the champion (what the endpoint serves)."""
    input_uri: pulumi.Input[str]
    """s3://bucket/key of the CSV to score (784 pixels a row)."""
    output_prefix: pulumi.Input[str]
    """s3://bucket/prefix under which each job writes into `<job name>/`."""
    instance_type: pulumi.Input[str]
    instance_count: pulumi.Input[int]
    labels: pulumi.Input[list[int]] | None
    """The input's labels (kept on this machine, never sent to the container); None when it has none."""
    source: pulumi.Input[str]
    """What the input was (a path, or `<dataset>-test`): names the report."""
    job_prefix: pulumi.Input[str]
    """The readable part of the job names."""
    price_per_hour: pulumi.Input[float] | None = None
    """The instance's on-demand price for the cost estimate; None: unknown."""
    price_source: pulumi.Input[str] = "unknown"
    kms_key_arn: pulumi.Input[str] | None = None
    """The stack's KMS key: outputs and the instances' volumes are encrypted with it."""


def transform_request(props: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The CreateTransformJob request (every field checked against botocore's sagemaker model in tests)."""
    output: dict[str, Any] = {
        "S3OutputPath": f"{str(props['output_prefix']).rstrip('/')}/{name}/",
        "Accept": CSV_CONTENT_TYPE,
        "AssembleWith": "Line",
    }
    resources: dict[str, Any] = {
        "InstanceType": str(props["instance_type"]),
        "InstanceCount": int(props["instance_count"]),
    }
    if props.get("kms_key_arn"):
        output["KmsKeyId"] = str(props["kms_key_arn"])
        resources["VolumeKmsKeyId"] = str(props["kms_key_arn"])
    return {
        "TransformJobName": name,
        "ModelName": str(props["model_name"]),
        "MaxPayloadInMB": MAX_PAYLOAD_MB,
        "BatchStrategy": BATCH_STRATEGY,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": str(props["input_uri"])}},
            "ContentType": CSV_CONTENT_TYPE,
            "CompressionType": "None",
            "SplitType": "Line",
        },
        "TransformOutput": output,
        "TransformResources": resources,
        "Tags": [{"Key": "mnist-platform-id", "Value": _identity(props)}],
    }


def _identity(props: Mapping[str, Any]) -> str:
    return identity(props, _REPLACE_KEYS)[:IDENTITY_LENGTH]


def _base_name(props: Mapping[str, Any]) -> str:
    return sagemaker_name(str(props["job_prefix"]), f"{_identity(props)}-000")[: -len("-000")]


class SageMakerTransformJobProvider(ResourceProvider):
    """CreateTransformJob, waited for; its report written beside its output."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        sagemaker, s3 = _clients(props)
        base = _base_name(props)
        jobs = _jobs_of(sagemaker, base)
        running = [j for j in jobs if j["TransformJobStatus"] in RUNNING]
        done = [j for j in jobs if j["TransformJobStatus"] == "Completed"]
        if running:
            name = running[-1]["TransformJobName"]
            log(f"batch {props['model']}: waiting for {name}, started by an interrupted up")
        elif done:
            name = done[-1]["TransformJobName"]
            log(f"batch {props['model']}: adopting {name}, completed for an interrupted up")
        else:
            for failed in jobs:  # nothing of a failed attempt may stay in the bucket
                _remove_outputs(s3, _output_uri(props, failed["TransformJobName"]))
            name = f"{base}-{len(jobs) + 1:03d}"
            log(f"batch {props['model']}: CreateTransformJob {name}")
            with_retries(lambda: sagemaker.create_transform_job(**transform_request(props, name)))
        job = _wait(sagemaker, name)
        if job["TransformJobStatus"] != "Completed":
            _remove_outputs(s3, _output_uri(props, name))
            raise TransformJobError(
                f"SageMaker transform job {name} {job['TransformJobStatus'].lower()}: "
                f"{job.get('FailureReason') or 'no reason given'}. Fix the cause (the input CSV, the model, "
                "the instance type or its quota) and run `pulumi up` again."
            )
        outs = _collect(props, s3, job)
        return CreateResult(id_=name, outs={**state_of(props), **outs})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        others = changed_keys(olds, news, ("labels", "source", "price_per_hour", "price_source"))
        return DiffResult(
            changes=bool(replaces or others), replaces=[*replaces, *others], delete_before_replace=False
        )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        sagemaker, s3 = _clients(props)
        job = _describe(sagemaker, id_)
        if job is None or job["TransformJobStatus"] != "Completed" or not _exists(s3, props.get("report")):
            return ReadResult(None, {})
        return ReadResult(id_, state_of(props))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        sagemaker, s3 = _clients(props)
        job = _describe(sagemaker, id_)
        if job is not None and job["TransformJobStatus"] == "InProgress":
            with_retries(lambda: sagemaker.stop_transform_job(TransformJobName=id_))
            _wait(sagemaker, id_)
        _remove_outputs(s3, _output_uri(props, id_))
        log(f"batch {props['model']}: removed {_output_uri(props, id_)} (SageMaker keeps the job's record)")


def _clients(props: Mapping[str, Any]) -> tuple[Any, Any]:
    import boto3

    region = str(props["region"])
    return boto3.client("sagemaker", region_name=region), boto3.client("s3", region_name=region)


def _output_uri(props: Mapping[str, Any], name: str) -> str:
    return f"{str(props['output_prefix']).rstrip('/')}/{name}/"


def _jobs_of(sagemaker: Any, base: str) -> list[dict[str, Any]]:
    """The attempts of one identity, oldest first (their names end in the attempt number)."""
    found: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {"NameContains": base, "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = with_retries(lambda kwargs=kwargs: sagemaker.list_transform_jobs(**kwargs))
        found += [j for j in page.get("TransformJobSummaries", []) if j["TransformJobName"].startswith(base)]
        token = page.get("NextToken")
        if not token:
            return sorted(found, key=lambda j: j["TransformJobName"])


def _describe(sagemaker: Any, name: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return with_retries(lambda: sagemaker.describe_transform_job(TransformJobName=name))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("ValidationException", "ResourceNotFound"):
            return None
        raise


def _wait(sagemaker: Any, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while True:
        job = _describe(sagemaker, name)
        if job is None:
            raise TransformJobError(f"SageMaker transform job {name} vanished while it was waited for")
        if job["TransformJobStatus"] not in RUNNING:
            return job
        if time.monotonic() > deadline:
            raise TransformJobError(f"SageMaker transform job {name} still runs after {WAIT_LIMIT_SECONDS} s")
        time.sleep(POLL_SECONDS)


def _exists(s3: Any, uri: Any) -> bool:
    from botocore.exceptions import ClientError

    if not uri:
        return False
    bucket, key = split_s3_uri(str(uri))
    try:
        with_retries(lambda: s3.head_object(Bucket=bucket, Key=key))
    except ClientError:
        return False
    return True


def _remove_outputs(s3: Any, prefix_uri: str) -> None:
    bucket, prefix = split_s3_uri(prefix_uri)
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            with_retries(lambda keys=keys: s3.delete_objects(Bucket=bucket, Delete={"Objects": keys}))


def parse_transform_output(text: str) -> np.ndarray:
    """The container's CSV answers, one a line: with SAGEMAKER_INFERENCE_OUTPUT=probabilities (what the
    stack's model sets) a single quoted cell `"[p0, ..., p9]"`, else the ten probabilities as cells."""
    rows = []
    for cells in csv.reader(io.StringIO(text)):
        if not cells:
            continue
        if len(cells) == 1 and cells[0].startswith("["):
            rows.append(json.loads(cells[0]))
        else:
            rows.append([float(c) for c in cells])
    return np.asarray(rows, dtype=np.float32)


def _collect(props: Mapping[str, Any], s3: Any, job: Mapping[str, Any]) -> dict[str, Any]:
    """Read `<input>.out`, write the report beside it, and return where everything is."""
    from mnistctl.batch import BatchInput, Cost, write_results

    name = str(job["TransformJobName"])
    out_prefix = _output_uri(props, name)
    bucket, prefix = split_s3_uri(out_prefix)
    input_key = split_s3_uri(str(props["input_uri"]))[1]
    out_key = f"{prefix}{input_key.rsplit('/', 1)[-1]}.out"
    body = with_retries(lambda: s3.get_object(Bucket=bucket, Key=out_key))["Body"].read().decode()
    probabilities = parse_transform_output(body)
    labels = props.get("labels")
    count = len(probabilities)
    if labels is not None and len(labels) != count:
        raise TransformJobError(f"{name} answered {count} rows for {len(labels)} labelled digits")
    started, ended = job.get("TransformStartTime"), job.get("TransformEndTime")
    seconds = (ended - started).total_seconds() if started and ended else 0.0
    price = props.get("price_per_hour")
    cost = Cost(
        str(props["instance_type"]),
        int(props["instance_count"]),
        float(price) if price is not None else None,
        str(props.get("price_source") or "unknown"),
    )
    # The pixels stay in the bucket: the report needs only names, labels and the answers.
    batch = BatchInput(
        str(props["source"]),
        np.zeros((count, 784), dtype=np.float32),
        [f"row {i + 1}" for i in range(count)],
        None if labels is None else np.asarray(labels, dtype=np.int64),
    )
    with tempfile.TemporaryDirectory() as scratch:
        report = write_results(Path(scratch), batch, probabilities, seconds, str(props["model"]), cost)
        uris: dict[str, str] = {}
        for kind, path in report.files.items():
            key = f"{prefix}{Path(path).name}"
            extra = (
                {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": str(props["kms_key_arn"])}
                if props.get("kms_key_arn")
                else {}
            )
            data = Path(path).read_bytes()
            with_retries(
                lambda key=key, data=data, extra=extra: s3.put_object(
                    Bucket=bucket, Key=key, Body=data, **extra
                )
            )
            uris[kind] = f"s3://{bucket}/{key}"
    return {
        "job_name": name,
        "transform_output": f"s3://{bucket}/{out_key}",
        "predictions": uris["predictions"],
        "report": uris["report"],
        "confusion_png": uris.get("confusion_png", ""),
        "confusion_csv": uris.get("confusion_csv", ""),
        "accuracy": report.accuracy,
        "images": report.images,
    }


class SageMakerTransformJob(pulumi.dynamic.Resource, module="aws", name="TransformJob"):
    """A batch transform job of the champion's model, and its report."""

    job_name: pulumi.Output[str]
    transform_output: pulumi.Output[str]
    predictions: pulumi.Output[str]
    report: pulumi.Output[str]
    confusion_png: pulumi.Output[str]
    confusion_csv: pulumi.Output[str]
    accuracy: pulumi.Output[float | None]
    images: pulumi.Output[int]

    def __init__(
        self, name: str, args: SageMakerTransformJobArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "region": args.region,
            "model": args.model,
            "model_name": args.model_name,
            "input_uri": args.input_uri,
            "output_prefix": args.output_prefix,
            "instance_type": args.instance_type,
            "instance_count": args.instance_count,
            "labels": args.labels,
            "source": args.source,
            "job_prefix": args.job_prefix,
            "price_per_hour": args.price_per_hour,
            "price_source": args.price_source,
            "kms_key_arn": args.kms_key_arn,
            IDENTITY_SEED: identity_seed("aws:TransformJob", name),
            **dict.fromkeys(
                (
                    "job_name",
                    "transform_output",
                    "predictions",
                    "report",
                    "confusion_png",
                    "confusion_csv",
                    "accuracy",
                    "images",
                )
            ),
        }
        super().__init__(SageMakerTransformJobProvider(), name, props, opts)

    def entry(self) -> pulumi.Output[dict[str, Any]]:
        """The `batch.<model>` output."""
        return pulumi.Output.all(
            self.job_name,
            self.transform_output,
            self.predictions,
            self.report,
            self.confusion_png,
            self.confusion_csv,
            self.accuracy,
            self.images,
        ).apply(
            lambda v: dict(
                zip(
                    (
                        "job",
                        "transform_output",
                        "predictions",
                        "report",
                        "confusion_png",
                        "confusion_csv",
                        "accuracy",
                        "images",
                    ),
                    v,
                    strict=True,
                )
            )
        )


# --- what the stack declares ---------------------------------------------------------------------------

BATCH_PREFIX = "batch"
TRANSFORM_LOG_GROUP = "/aws/sagemaker/TransformJobs"


@dataclass(frozen=True)
class BatchPlan:
    """A `batch` entry made ready on this machine: the CSV to upload, its labels and the machines."""

    model: str
    path: Path
    sha256: str
    labels: list[int] | None
    source: str
    instance_type: str
    instance_count: int
    price_per_hour: float | None
    price_source: str


def plan_batch(settings: Any, model: Any) -> BatchPlan | None:
    """The `batch.<model>` of `settings` staged as the CSV the container scores (784 pixels a row, the
    bytes mnistctl's SageMaker client sends), cached by content under the user cache dir."""
    import hashlib

    from infra.aws.data import staging_root
    from mnistctl.batch import read_input, read_test_split
    from mnistctl.client import csv_payload

    job = settings.batch.get(model)
    if job is None or settings.aws is None:
        return None
    digits = (
        read_test_split(settings.dataset.value, settings.data_dir)
        if job.is_test_split()
        else read_input(job.input)
    )
    body = csv_payload(digits.pixels)
    digest = hashlib.sha256(body).hexdigest()
    path = staging_root(settings.dataset.value) / BATCH_PREFIX / f"{digest[:16]}.csv"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_bytes(body)
        partial.replace(path)
    instance_type = job.resolved_instance_type(settings.cloud)
    price, source = transform_price(settings.aws.region, instance_type)
    return BatchPlan(
        model=model.value,
        path=path,
        sha256=digest,
        labels=None if digits.labels is None else [int(v) for v in digits.labels],
        source=digits.source,
        instance_type=instance_type,
        instance_count=job.instance_count,
        price_per_hour=price,
        price_source=source,
    )


def transform_price(region: str, instance_type: str) -> tuple[float | None, str]:
    """The on-demand price of a transform instance from the project's price table (infra/prices/aws.csv,
    sku `sagemaker-transform:<type>`), or None and why when the table has none."""
    from infra.cost import load_price_table

    sku = f"sagemaker-transform:{instance_type}"
    row = load_price_table("aws").find(region, sku)
    if row is None or row.amount is None:
        return None, f"unknown: infra/prices/aws.csv has no price for {sku} in {region}"
    return row.amount, f"{row.source} (read {row.read_on.isoformat()})"


def transform_role_policy(bucket_arn: str, log_group_arn: str, kms_key_arn: str | None) -> dict[str, Any]:
    """What the model's execution role needs beyond serving to run a transform job: read the batch
    inputs, write the outputs, log (the transform job runs with the Model's role)."""
    statements: list[dict[str, Any]] = [
        {
            "Sid": "ReadBatchInputs",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{bucket_arn}/{BATCH_PREFIX}/*/input/*",
        },
        {
            "Sid": "WriteBatchOutputs",
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
            "Resource": f"{bucket_arn}/{BATCH_PREFIX}/*/output/*",
        },
        {
            "Sid": "WriteTransformLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [log_group_arn, f"{log_group_arn}:*"],
        },
    ]
    if kms_key_arn:
        statements.append(
            {
                "Sid": "UseStackKeyForBatch",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey", "kms:CreateGrant"],
                "Resource": kms_key_arn,
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def declare_transform_job(
    name: str,
    plan: BatchPlan,
    *,
    region: str,
    bucket: pulumi.Input[str],
    model_name: pulumi.Input[str],
    role_name: pulumi.Input[str],
    account: pulumi.Input[Any],
    job_prefix: str,
    kms_key_arn: str | None,
    opts: pulumi.ResourceOptions,
) -> SageMakerTransformJob:
    """The input object, the role's batch permissions and the transform job of the champion's model."""
    import pulumi_aws as aws

    key = f"{BATCH_PREFIX}/{plan.model}/input/{plan.sha256[:16]}.csv"
    upload = aws.s3.BucketObjectv2(
        f"{name}-input",
        bucket=bucket,
        key=key,
        source=pulumi.FileAsset(str(plan.path)),
        source_hash=plan.sha256,
        content_type=CSV_CONTENT_TYPE,
        opts=opts,
    )
    access = aws.iam.RolePolicy(
        f"{name}-access",
        role=role_name,
        policy=pulumi.Output.all(bucket, account).apply(
            lambda v: json.dumps(
                transform_role_policy(
                    f"arn:{v[1].partition}:s3:::{v[0]}",
                    v[1].arn("logs", f"log-group:{TRANSFORM_LOG_GROUP}"),
                    kms_key_arn,
                )
            )
        ),
        opts=opts,
    )
    return SageMakerTransformJob(
        name,
        SageMakerTransformJobArgs(
            region=region,
            model=plan.model,
            model_name=model_name,
            input_uri=pulumi.Output.concat("s3://", bucket, "/", key),
            output_prefix=pulumi.Output.concat("s3://", bucket, f"/{BATCH_PREFIX}/{plan.model}/output"),
            instance_type=plan.instance_type,
            instance_count=plan.instance_count,
            labels=plan.labels,
            source=plan.source,
            job_prefix=job_prefix,
            price_per_hour=plan.price_per_hour,
            price_source=plan.price_source,
            kms_key_arn=kms_key_arn,
        ),
        pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[upload, access])),
    )

"""The SageMaker stack's champion gate: between the TrainingJob and the Model the endpoint serves.

The challenger is a SageMaker training job; its held-out accuracy is `1 - validation:merror`, the final
value the built-in XGBoost algorithm reports for the `validation` channel (DescribeTrainingJob's
FinalMetricDataList; the stack's hyperparameters include `merror` in `eval_metric` for that). A
promoted challenger's `model.tar.gz` is copied (S3 CopyObject, encrypted as the bucket is: the stack's
KMS key when it has one) to `s3://<bucket>/champions/<model>/<job>/model.tar.gz`, which is what the
SageMaker Model serves: the champion outlives the training job's replacement and its output prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import pulumi
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from infra.aws.names import s3_uri
from infra.aws.training_attempt import max_runtime_message, stopped_at_max_runtime
from infra.gate import PromotionRule, readable_accuracy
from infra.gate_provider import Candidate, ChampionGateProvider, GateError, gate_inputs

CHAMPIONS_PREFIX = "champions"
MERROR_METRIC = "validation:merror"
MODEL_ARCHIVE = "model.tar.gz"
# Error codes AWS returns for throttling and transient service trouble: retried with backoff.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "SlowDown",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalFailure",
        "InternalError",
        "InternalServerError",
    }
)
NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})

T = TypeVar("T")
HyperparametersT = TypeVar("HyperparametersT")


@dataclass
class SageMakerGateArgs:
    """Inputs of a SageMakerGate."""

    model: pulumi.Input[str]
    """The gated model's key in the stack outputs (xgboost)."""
    training_job_name: pulumi.Input[str]
    """The challenger: the training job whose metrics are read."""
    challenger_artifact: pulumi.Input[str]
    """`s3://…/<job>/output/model.tar.gz`, where the job wrote its model."""
    region: pulumi.Input[str]
    """Where the job and the bucket are."""
    bucket: pulumi.Input[str]
    """The stack's bucket; champions go under `champions/`."""
    rule: PromotionRule
    """minAccuracy, promotionTolerance and forcePromotion for this model."""
    kms_key_arn: pulumi.Input[str] | None = None
    """The stack's customer KMS key: champion copies are encrypted with it (SSE-S3 when None)."""


def is_transient(error: BaseException) -> bool:
    """Throttling, 5xx and connection trouble: worth another try; anything else is not."""
    from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

    if isinstance(error, ConnectionError | ReadTimeoutError):
        return True
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return code in TRANSIENT_ERROR_CODES or status >= 500
    return False


def with_retries(call: Callable[[], T], attempts: int = 6) -> T:
    """`call()`, retried with exponential backoff while it fails transiently."""
    retrying = retry(
        retry=retry_if_exception(is_transient),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.5, max=20),
        reraise=True,
    )
    return retrying(call)()


def _error_code(error: BaseException) -> str:
    response = getattr(error, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def champion_key(model: str, job_name: str) -> str:
    return f"{CHAMPIONS_PREFIX}/{model}/{job_name}/{MODEL_ARCHIVE}"


class SageMakerGateProvider(ChampionGateProvider):
    """Reads the challenger with DescribeTrainingJob; champion copies are S3 objects in the stack's bucket."""

    location_keys = ("region", "bucket")
    # The endpoint may still serve the retired copy (SageMaker rolled the update back): the stack's
    # EndpointUpdateCheck removes old copies once the endpoint serves the new champion (endpoint_check.py).
    discards_retired_on_promotion = False

    def evaluate(self, props: Mapping[str, Any]) -> Candidate:
        import boto3
        from botocore.exceptions import ClientError

        job_name = str(props["challenger_id"])
        artifact = str(props["challenger_artifact"])
        sagemaker = boto3.client("sagemaker", region_name=str(props["region"]))
        try:
            job = with_retries(lambda: sagemaker.describe_training_job(TrainingJobName=job_name))
        except ClientError as error:
            raise GateError(
                f"gate {props['model']}: could not describe training job {job_name} in {props['region']}: "
                f"{error}. Check the deploying identity may call sagemaker:DescribeTrainingJob (docs/aws.md)."
            ) from error
        status = job.get("TrainingJobStatus")
        trained = job.get("TrainingEndTime")
        trained_text = trained.isoformat(timespec="seconds") if trained is not None else None
        metrics = {m["MetricName"]: float(m["Value"]) for m in job.get("FinalMetricDataList") or []}
        record = {"training_job": job_name, **metrics}
        if status != "Completed":
            why = f"training job {job_name} is {status}: {job.get('FailureReason') or 'no final metrics'}"
            if stopped_at_max_runtime(job):
                # terraform-provider-aws's waiter returns normally when it first sees `Stopped`.
                why = max_runtime_message(job)
            return Candidate(job_name, artifact, None, trained_text, record, unreadable_because=why)
        merror = metrics.get(MERROR_METRIC)
        accuracy = readable_accuracy(1.0 - merror) if merror is not None else None
        why = (
            f"training job {job_name} reported no {MERROR_METRIC} (its final metrics: "
            f"{sorted(metrics) or 'none'}); the xgboost hyperparameter eval_metric must include merror"
        )
        return Candidate(job_name, artifact, accuracy, trained_text, record, unreadable_because=why)

    def keep(self, props: Mapping[str, Any], candidate: Candidate) -> str:
        import boto3
        from botocore.exceptions import ClientError

        bucket = str(props["bucket"])
        key = champion_key(str(props["model"]), candidate.source)
        source_bucket, source_key = split_s3_uri(candidate.artifact)
        encryption: dict[str, Any] = {"ServerSideEncryption": "AES256"}
        if props.get("kms_key_arn"):
            encryption = {
                "ServerSideEncryption": "aws:kms",
                "SSEKMSKeyId": str(props["kms_key_arn"]),
                "BucketKeyEnabled": True,
            }
        s3 = boto3.client("s3", region_name=str(props["region"]))
        try:
            # One CopyObject: SageMaker's model.tar.gz of a built-in XGBoost model is far below 5 GB.
            with_retries(
                lambda: s3.copy_object(
                    Bucket=bucket,
                    Key=key,
                    CopySource={"Bucket": source_bucket, "Key": source_key},
                    MetadataDirective="COPY",
                    **encryption,
                )
            )
        except ClientError as error:
            raise GateError(
                f"gate {props['model']}: could not copy the challenger {candidate.artifact} to "
                f"{s3_uri(bucket, key)}: {error}. The deploying identity needs s3:GetObject and s3:PutObject "
                "there (and kms:Decrypt/GenerateDataKey on the stack's key); see docs/aws.md."
            ) from error
        return s3_uri(bucket, key)

    def discard(self, props: Mapping[str, Any], artifact: str) -> None:
        import boto3
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(artifact)
        s3 = boto3.client("s3", region_name=str(props["region"]))
        try:
            with_retries(lambda: s3.delete_object(Bucket=bucket, Key=key))
        except ClientError as error:
            if _error_code(error) in NOT_FOUND_CODES or _error_code(error) == "NoSuchBucket":
                return  # already gone (or the whole bucket is): nothing left to remove
            raise GateError(f"gate {props['model']}: could not delete {artifact}: {error}") from error

    def kept(self, props: Mapping[str, Any], artifact: str) -> bool:
        import boto3
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(artifact)
        s3 = boto3.client("s3", region_name=str(props["region"]))
        try:
            with_retries(lambda: s3.head_object(Bucket=bucket, Key=key))
        except ClientError as error:
            if _error_code(error) in NOT_FOUND_CODES or _error_code(error) == "NoSuchBucket":
                return False
            raise GateError(
                f"gate {props['model']}: could not check the champion's copy {artifact}: {error}. The "
                "deploying identity needs s3:GetObject on the stack's bucket (docs/aws.md)."
            ) from error
        return True


class SageMakerGate(pulumi.dynamic.Resource, module="aws", name="ChampionGate"):
    """Holds the champion of one model; the SageMaker Model serves `champion_artifact`."""

    champion: pulumi.Output[dict]
    challenger: pulumi.Output[dict]
    champion_artifact: pulumi.Output[str]
    retired: pulumi.Output[dict]

    def __init__(
        self, name: str, args: SageMakerGateArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            **gate_inputs(args.model, args.training_job_name, args.challenger_artifact, args.rule),
            "region": args.region,
            "bucket": args.bucket,
            "kms_key_arn": args.kms_key_arn,
        }
        super().__init__(SageMakerGateProvider(), name, props, opts)


def require_merror(hyperparameters: HyperparametersT) -> HyperparametersT:
    """The xgboost hyperparameters, refused when their eval_metric leaves out merror (the gate's score)."""
    if "merror" not in getattr(hyperparameters, "eval_metrics", []):
        raise ValueError(
            f"config mnist-platform:hyperparameters: xgboost's eval_metric must include merror (got "
            f"{getattr(hyperparameters, 'eval_metric', None)!r}): the champion gate reads {MERROR_METRIC} "
            'from the training job. Use e.g. {"xgboost": {"eval_metric": "merror,mlogloss"}}.'
        )
    return hyperparameters

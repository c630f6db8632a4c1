"""Which name the next SageMaker training job gets, so that a failed job never blocks the next `pulumi up`.

The job's name is `<prefix>-<hash of its spec>` (infra/aws/platform.py): an unchanged spec keeps its
name and `pulumi up` retrains nothing. But when a job fails (a role or key policy, a quota, a bad
hyperparameter), terraform-provider-aws's TrainingJob create returns the error and keeps no state;
after the user fixed the cause outside the spec, the next `up` would create the same name again, and
SageMaker refuses a name that is taken, by a failed job too.

This dynamic resource holds the name. It is the only place where the engine (not the program) looks
at SageMaker, so the program stays a pure function of its config under mocks and in previews:

- create: the first of `<base>`, `<base>-r1`, `<base>-r2`, ... that no job in the account and region
  uses (DescribeTrainingJob), so a name left behind by anything is never reused;
- diff: the job recorded under the name is looked up; if it `Failed`, the resource is replaced: a new
  attempt takes the next free name, the TrainingJob follows (its name changed) and trains again;
  a new base (a changed spec) replaces it too;
- delete: removes the record of a job that failed under this attempt's name (DeleteTrainingJob); a job
  that completed belongs to the TrainingJob resource, which deletes it itself.

The provider runs in the engine with the deploying identity: it needs sagemaker:DescribeTrainingJob
and sagemaker:DeleteTrainingJob on the stack's jobs (docs/aws.md, deployer policy).
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from infra.dynamic import changed_keys, log, state_of

FAILED = "Failed"
# What the provider calls with the deploying identity (docs/aws.md's deployer policy grants them).
DEPLOYER_ACTIONS = ("sagemaker:DescribeTrainingJob", "sagemaker:DeleteTrainingJob")
# `-r<n>`: the room platform.py keeps free after the hash, so every attempt fits in 63 characters.
ATTEMPT_SUFFIX_ROOM = 4
MAX_ATTEMPTS = 99
RETRY_ATTEMPTS = 5
_TRANSIENT_CODES = frozenset(
    {"ThrottlingException", "Throttling", "ServiceUnavailable", "InternalFailure", "InternalServerError"}
)
_REPLACE_KEYS = ("base_name", "region")


class TrainingAttemptError(Exception):
    """A SageMaker call of the attempt provider failed; the message says which and what to do."""


def attempt_name(base: str, attempt: int) -> str:
    """`<base>` for the first attempt, `<base>-r<n>` after."""
    return base if attempt == 0 else f"{base}-r{attempt}"


def sagemaker_client(region: str) -> Any:
    """A SageMaker control-plane client (tests replace this)."""
    import boto3

    return boto3.client("sagemaker", region_name=region)


def _is_transient(error: BaseException) -> bool:
    from botocore.exceptions import ClientError, ConnectionError

    if isinstance(error, ConnectionError):
        return True
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return error.response.get("Error", {}).get("Code") in _TRANSIENT_CODES or status >= 500
    return False


def _call(what: str, function: Any, **kwargs: Any) -> Any:
    """`function(**kwargs)` with backoff on throttling and 5xx; other errors say what failed."""
    from botocore.exceptions import BotoCoreError, ClientError

    retrying = Retrying(
        retry=retry_if_exception(_is_transient),
        stop=stop_after_attempt(RETRY_ATTEMPTS),
        wait=wait_exponential(multiplier=0.5, max=10.0),
        reraise=True,
    )
    try:
        return retrying(function, **kwargs)
    except ClientError as error:
        if _is_not_found(error):
            raise
        raise TrainingAttemptError(
            f"{what} failed: {error}. The deploying identity needs sagemaker:DescribeTrainingJob and "
            "sagemaker:DeleteTrainingJob on the stack's training jobs (docs/aws.md, deployer policy)."
        ) from None
    except BotoCoreError as error:
        raise TrainingAttemptError(f"{what} failed: {error} (check AWS credentials and aws:region)") from None


def _is_not_found(error: Any) -> bool:
    details = error.response.get("Error", {})
    message = str(details.get("Message", "")).lower()
    return details.get("Code") in {"ValidationException", "ResourceNotFound"} and (
        "not found" in message or "could not find" in message
    )


def job_status(region: str, name: str) -> str | None:
    """The training job's status, or None when no job has that name."""
    from botocore.exceptions import ClientError

    client = sagemaker_client(region)
    try:
        job = _call(f"DescribeTrainingJob {name}", client.describe_training_job, TrainingJobName=name)
    except ClientError:  # only "not found" gets here
        return None
    return str(job["TrainingJobStatus"])


class TrainingJobAttemptProvider(ResourceProvider):
    """Chooses a free job name; replaces itself when the job under its name failed."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        base, region = str(props["base_name"]), str(props["region"])
        for attempt in range(MAX_ATTEMPTS + 1):
            name = attempt_name(base, attempt)
            status = job_status(region, name)
            if status is None:
                if attempt:
                    log(f"this attempt trains as {name}")
                return CreateResult(id_=name, outs={**state_of(props), "job_name": name, "attempt": attempt})
            log(f"training job name {name} is taken by a {status} job; trying the next attempt")
        raise TrainingAttemptError(
            f"{MAX_ATTEMPTS} training jobs named {base}[-rN] exist already: find out why they fail "
            "(SageMaker console, FailureReason) and delete them with DeleteTrainingJob"
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        if not replaces and olds.get("job_name"):
            status = job_status(str(olds["region"]), str(olds["job_name"]))
            if status == FAILED:
                log(f"training job {olds['job_name']} failed: a new attempt trains under the next name")
                replaces = ["job_name"]
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, state_of(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        name, region = props.get("job_name"), props.get("region")
        if not name or not region:
            return
        if job_status(str(region), str(name)) != FAILED:
            return  # absent, or a job the TrainingJob resource owns and deletes
        from botocore.exceptions import ClientError

        client = sagemaker_client(str(region))
        if not hasattr(client, "delete_training_job"):  # a boto3 older than the DeleteTrainingJob API
            log(f"failed training job {name} is left in SageMaker: this boto3 cannot delete job records")
            return
        try:
            _call(f"DeleteTrainingJob {name}", client.delete_training_job, TrainingJobName=name)
        except ClientError:  # not found: already gone
            return
        log(f"deleted the record of failed training job {name}")


class TrainingJobAttempt(pulumi.dynamic.Resource, module="aws", name="TrainingJobAttempt"):
    """The name of the stack's next training job: `<base>`, or `<base>-r<n>` after failed attempts."""

    job_name: pulumi.Output[str]
    attempt: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        base_name: pulumi.Input[str],
        region: str,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"base_name": base_name, "region": region, "job_name": None, "attempt": None}
        super().__init__(TrainingJobAttemptProvider(), name, props, opts)

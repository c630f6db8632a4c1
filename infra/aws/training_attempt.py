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
- diff: the job recorded under the name is looked up; if it `Failed` or was `Stopped` (a person's
  StopTrainingJob), the resource is replaced: a new attempt takes the next free name, the TrainingJob
  follows (its name changed) and trains again; a new base (a changed spec) replaces it too;
- a job SageMaker stopped at its max runtime (`Stopping`/`Stopped` with SecondaryStatus
  `MaxRuntimeExceeded`) is not retried as it is: the same spec would be stopped at the same limit, billed
  again. The diff fails with what to raise (`maxRuntimeSeconds` and its current value); raising it
  changes the spec's hash, so the next attempt has a new base name and the stopped job's name is never
  used again. terraform-provider-aws's waiter fails on `Stopping` (it waits while `InProgress` for
  `Completed`/`Stopped`) and keeps no state, so this is where the user learns why;
- delete: removes the record of a job that failed or was stopped under this attempt's name
  (DeleteTrainingJob); a job that completed belongs to the TrainingJob resource, which deletes it itself.

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
STOPPING = "Stopping"
STOPPED = "Stopped"
# Terminal states of a job that did not complete: its name is taken and its model is not to be served.
NOT_COMPLETED = frozenset({FAILED, STOPPED})
# DescribeTrainingJob's SecondaryStatus of a job stopped at StoppingCondition.MaxRuntimeInSeconds.
MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"
MAX_RUNTIME_KEY = "mnist-platform:maxRuntimeSeconds"
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


def describe_job(region: str, name: str) -> dict[str, Any] | None:
    """DescribeTrainingJob's answer, or None when no job has that name."""
    from botocore.exceptions import ClientError

    client = sagemaker_client(region)
    try:
        return _call(f"DescribeTrainingJob {name}", client.describe_training_job, TrainingJobName=name)
    except ClientError:  # only "not found" gets here
        return None


def job_status(region: str, name: str) -> str | None:
    """The training job's status, or None when no job has that name."""
    job = describe_job(region, name)
    return None if job is None else str(job["TrainingJobStatus"])


def stopped_at_max_runtime(job: dict[str, Any]) -> bool:
    """Whether SageMaker stopped (or is stopping) the job because it ran into its max runtime."""
    return job.get("TrainingJobStatus") in (STOPPING, STOPPED) and (
        job.get("SecondaryStatus") == MAX_RUNTIME_EXCEEDED
    )


def max_runtime_message(job: dict[str, Any]) -> str:
    """What a user reads when a job was stopped at its max runtime: the limit, and what to raise."""
    limit = (job.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
    return (
        f"training job {job.get('TrainingJobName')} was stopped by SageMaker at its max runtime "
        f"({job.get('TrainingJobStatus')}, {MAX_RUNTIME_EXCEEDED}): {MAX_RUNTIME_KEY} is {limit} s. Raise "
        f"it (e.g. `pulumi config set {MAX_RUNTIME_KEY} {2 * int(limit or 0) or 7200}`) and run `pulumi up` "
        "again: the new limit gives the job a new name. Training the same spec again under the same limit "
        "would be stopped the same way; to try that anyway, delete the stopped job "
        f"(`aws sagemaker delete-training-job --training-job-name {job.get('TrainingJobName')}`)."
    )


class TrainingJobAttemptProvider(ResourceProvider):
    """Chooses a free job name; replaces itself when the job under its name failed or was stopped."""

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
            job = describe_job(str(olds["region"]), str(olds["job_name"])) or {}
            if stopped_at_max_runtime(job):
                raise TrainingAttemptError(max_runtime_message(job))
            status = job.get("TrainingJobStatus")
            if status in NOT_COMPLETED:
                log(f"training job {olds['job_name']} is {status}: a new attempt trains under the next name")
                replaces = ["job_name"]
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, state_of(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        name, region = props.get("job_name"), props.get("region")
        if not name or not region:
            return
        if job_status(str(region), str(name)) not in NOT_COMPLETED:
            return  # absent, a job the TrainingJob resource owns and deletes, or one still stopping
        from botocore.exceptions import ClientError

        client = sagemaker_client(str(region))
        if not hasattr(client, "delete_training_job"):  # a boto3 older than the DeleteTrainingJob API
            log(f"failed training job {name} is left in SageMaker: this boto3 cannot delete job records")
            return
        try:
            _call(f"DeleteTrainingJob {name}", client.delete_training_job, TrainingJobName=name)
        except ClientError:  # not found: already gone
            return
        log(f"deleted the record of training job {name}, which did not complete")


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

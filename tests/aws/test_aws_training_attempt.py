"""A failed training job does not block the next `pulumi up`: the attempt provider against moto's
SageMaker (DescribeTrainingJob, CreateTrainingJob) and a stubbed DeleteTrainingJob (moto has none).

The engine's part is played by hand, as it happens with terraform-provider-aws's TrainingJob: its
create calls CreateTrainingJob, the waiter sees `Failed`, the create fails and no state is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from infra.aws import training_attempt
from infra.aws.training_attempt import TrainingAttemptError, TrainingJobAttemptProvider

REGION = "us-east-1"
BASE = "mnist-aws-xgboost-0123456789ab"
ROLE = "arn:aws:iam::123456789012:role/mnist-training"
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


@pytest.fixture
def sagemaker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("sagemaker", region_name=REGION)


def _run_training_job(client: Any, name: str, status: str) -> None:
    """What the TrainingJob resource's create does, ending in `status` (moto's jobs complete at once)."""
    client.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://mnist-data/output"},
        ResourceConfig={"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends["123456789012"][REGION].training_jobs[name].training_job_status = status


def _up(provider: TrainingJobAttemptProvider, state: dict[str, Any] | None) -> dict[str, Any]:
    """One `pulumi up` of the attempt resource as the engine runs it: create, or diff then maybe replace."""
    news = {"base_name": BASE, "region": REGION}
    if state is None:
        created = provider.create(news)
        return {**news, **(created.outs or {})}
    diff = provider.diff(state["job_name"], state, news)
    if not diff.changes:
        return state
    assert diff.replaces, "a failed job must replace the attempt, not update it"
    created = provider.create(news)
    provider.delete(state["job_name"], state)  # replaced resources are deleted at the end of the update
    return {**news, **(created.outs or {})}


def test_first_attempt_uses_the_base_name(sagemaker: Any) -> None:
    state = _up(TrainingJobAttemptProvider(), None)
    assert state["job_name"] == BASE and state["attempt"] == 0


def test_a_failed_job_is_retried_under_a_new_name_by_the_next_up(
    sagemaker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = TrainingJobAttemptProvider()
    first = _up(provider, None)
    _run_training_job(sagemaker, first["job_name"], "Failed")  # pulumi up fails; no TrainingJob state

    deleted: list[str] = []
    monkeypatch.setattr(
        sagemaker, "delete_training_job", lambda TrainingJobName: deleted.append(TrainingJobName)
    )
    monkeypatch.setattr(training_attempt, "sagemaker_client", lambda region: sagemaker)
    second = _up(provider, first)  # the user fixed the cause (say a key policy); nothing in the spec changed

    assert second["job_name"] == f"{BASE}-r1"
    existing = {j["TrainingJobName"] for j in sagemaker.list_training_jobs()["TrainingJobSummaries"]}
    assert second["job_name"] not in existing, "CreateTrainingJob would be refused on a taken name"
    assert deleted == [BASE], "the failed job's record is removed once the retry is in place"

    _run_training_job(sagemaker, second["job_name"], "Completed")
    assert _up(provider, second) == second, "a completed job keeps its name: the next up changes nothing"


def test_a_completed_job_is_never_replaced_nor_deleted_by_the_attempt(
    sagemaker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = TrainingJobAttemptProvider()
    state = _up(provider, None)
    _run_training_job(sagemaker, state["job_name"], "Completed")
    assert not provider.diff(state["job_name"], state, {"base_name": BASE, "region": REGION}).changes
    monkeypatch.setattr(training_attempt, "sagemaker_client", lambda region: sagemaker)
    monkeypatch.setattr(sagemaker, "delete_training_job", lambda **_: pytest.fail("owned by TrainingJob"))
    provider.delete(state["job_name"], state)


def test_a_new_spec_replaces_the_attempt(sagemaker: Any) -> None:
    provider = TrainingJobAttemptProvider()
    state = _up(provider, None)
    diff = provider.diff(
        state["job_name"], state, {"base_name": "mnist-aws-xgboost-ffffffffffff", "region": REGION}
    )
    assert diff.changes and diff.replaces == ["base_name"]


def test_names_taken_by_earlier_failures_are_skipped(sagemaker: Any) -> None:
    for name in (BASE, f"{BASE}-r1"):
        _run_training_job(sagemaker, name, "Failed")
    assert _up(TrainingJobAttemptProvider(), None)["job_name"] == f"{BASE}-r2"


def test_a_denied_lookup_says_which_permission_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="a", aws_secret_access_key="b")
    monkeypatch.setattr(training_attempt, "sagemaker_client", lambda region: client)
    with Stubber(client) as stubber:
        stubber.add_client_error("describe_training_job", "AccessDeniedException", "not authorized", 400)
        with pytest.raises(TrainingAttemptError, match="sagemaker:DescribeTrainingJob"):
            TrainingJobAttemptProvider().create({"base_name": BASE, "region": REGION})


def test_throttling_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    client = boto3.client("sagemaker", region_name=REGION, aws_access_key_id="a", aws_secret_access_key="b")
    monkeypatch.setattr(training_attempt, "sagemaker_client", lambda region: client)
    monkeypatch.setattr(training_attempt, "wait_exponential", lambda **_: lambda state: 0)
    with Stubber(client) as stubber:
        stubber.add_client_error("describe_training_job", "ThrottlingException", "slow down", 400)
        stubber.add_client_error(
            "describe_training_job", "ValidationException", "Requested resource not found.", 400
        )
        created = TrainingJobAttemptProvider().create({"base_name": BASE, "region": REGION})
    assert created.outs is not None and created.outs["job_name"] == BASE


def _set_states(name: str, status: str, secondary: str) -> None:
    from moto.sagemaker.models import sagemaker_backends

    record = sagemaker_backends["123456789012"][REGION].training_jobs[name]
    record.training_job_status, record.secondary_status = status, secondary


def _stop_at_max_runtime(name: str, status: str) -> None:
    """What SageMaker does to a job that runs into StoppingCondition.MaxRuntimeInSeconds: `Stopping` during
    the 120 s SIGTERM window, then `Stopped`, SecondaryStatus `MaxRuntimeExceeded` throughout. moto's jobs
    complete at once and it has no StopTrainingJob, so its record is set as SageMaker's would be."""
    _set_states(name, status, "MaxRuntimeExceeded")


@pytest.mark.parametrize("status", ["Stopping", "Stopped"])
def test_a_job_stopped_at_max_runtime_fails_the_next_up_saying_what_to_raise(
    sagemaker: Any, monkeypatch: pytest.MonkeyPatch, status: str
) -> None:
    """The TrainingJob's waiter fails on `Stopping` (or returns on `Stopped`) and keeps no state: the next
    `up` neither re-creates the taken name nor trains the same spec into the same limit again."""
    provider = TrainingJobAttemptProvider()
    first = _up(provider, None)
    _run_training_job(sagemaker, first["job_name"], "InProgress")
    _stop_at_max_runtime(first["job_name"], status)
    monkeypatch.setattr(training_attempt, "sagemaker_client", lambda region: sagemaker)

    with pytest.raises(TrainingAttemptError) as raised:
        provider.diff(first["job_name"], first, {"base_name": BASE, "region": REGION})
    message = str(raised.value)
    assert f"training job {BASE} was stopped by SageMaker at its max runtime" in message
    assert "mnist-platform:maxRuntimeSeconds is 3600 s. Raise it" in message
    assert "pulumi config set mnist-platform:maxRuntimeSeconds 7200" in message

    # Raising the limit changes the spec's hash: a new base name, and the stopped job's record goes.
    raised_base = "mnist-aws-xgboost-fedcba987654"
    diff = provider.diff(first["job_name"], first, {"base_name": raised_base, "region": REGION})
    assert diff.replaces == ["base_name"]
    created = provider.create({"base_name": raised_base, "region": REGION}).outs or {}
    assert created["job_name"] == raised_base
    _stop_at_max_runtime(first["job_name"], "Stopped")
    deleted: list[str] = []
    monkeypatch.setattr(
        sagemaker, "delete_training_job", lambda TrainingJobName: deleted.append(TrainingJobName)
    )
    provider.delete(first["job_name"], first)
    assert deleted == [BASE]


def test_a_job_a_person_stopped_is_retried_under_the_next_name(
    sagemaker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped by StopTrainingJob (SecondaryStatus `Stopped`), not by its limit: like a failed job, the next
    `up` trains again under `-r1` and removes the stopped job's record."""
    provider = TrainingJobAttemptProvider()
    first = _up(provider, None)
    _run_training_job(sagemaker, first["job_name"], "Stopped")
    _set_states(first["job_name"], "Stopped", "Stopped")
    deleted: list[str] = []
    monkeypatch.setattr(training_attempt, "sagemaker_client", lambda region: sagemaker)
    monkeypatch.setattr(
        sagemaker, "delete_training_job", lambda TrainingJobName: deleted.append(TrainingJobName)
    )
    second = _up(provider, first)
    assert second["job_name"] == f"{BASE}-r1" and deleted == [BASE]


def test_a_job_still_stopping_is_not_deleted(sagemaker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """DeleteTrainingJob takes only jobs in a terminal state: one still `Stopping` is left for now."""
    provider = TrainingJobAttemptProvider()
    state = _up(provider, None)
    _run_training_job(sagemaker, state["job_name"], "Stopping")
    _set_states(state["job_name"], "Stopping", "Stopping")
    monkeypatch.setattr(training_attempt, "sagemaker_client", lambda region: sagemaker)
    monkeypatch.setattr(sagemaker, "delete_training_job", lambda **_: pytest.fail("not terminal yet"))
    provider.delete(state["job_name"], state)

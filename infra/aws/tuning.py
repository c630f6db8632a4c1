"""The SageMaker stack's hyperparameter tuning: a tuning job of the built-in XGBoost, waited for to the end.

With `tuning: {xgboost: {...}}` the stack declares an `aws.sagemaker.HyperParameterTuningJob` instead of
the single TrainingJob: the same image, role, channels, output path, instances and stopping condition
for every trial, the searched hyperparameters as SageMaker's ParameterRanges and the rest as
StaticHyperParameters, Bayesian search by default, the objective `validation:merror` (Minimize), early
stopping `Auto` (the built-in XGBoost reports its metric every round, so SageMaker can stop trials that
are unlikely to win).

pulumi-aws's HyperParameterTuningJob returns as soon as SageMaker accepted the job (terraform-provider-aws
does not wait for it), so this module's dynamic resource, `SageMakerTuningResult`, does: its create polls
DescribeHyperParameterTuningJob until the job ends, fails with SageMaker's FailureReason when it ended
Failed or Stopped, and otherwise reads `BestTrainingJob` (name, final objective, tuned hyperparameters),
the best job's `ModelArtifacts.S3ModelArtifacts` (DescribeTrainingJob) and every trial's objective
(ListTrainingJobsForHyperParameterTuningJob, for the spread). The champion gate then scores the best
trial's training job exactly as it scores a single job (infra/aws/gate.py) and copies its model.tar.gz.

It makes nothing: it is named by the tuning job it reads (a create interrupted by a killed `pulumi up`
runs again and waits for the same job; nothing is started twice), `read` asks SageMaker (a tuning job
gone is gone), and `delete` has nothing to remove (the tuning job is the HyperParameterTuningJob
resource's, its trials' models are in the stack's bucket, which `pulumi destroy` empties).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.aws.gate import with_retries
from infra.aws.training_attempt import sagemaker_client
from infra.dynamic import changed_keys, log, state_of
from infra.settings import ModelTuning, ScalingType, TuningRange, TuningStrategy

# DescribeHyperParameterTuningJob's HyperParameterTuningJobStatus (botocore's service model).
COMPLETED = "Completed"
# HyperParameterTuningJobName: 1-32 characters, [a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}.
TUNING_JOB_NAME_MAX = 32
TUNING_DIGEST_LENGTH = 12
# Each wave of parallel trials may run for the job's max runtime; provisioning, image pulls and the tuner's
# own work between waves come on top.
TUNING_SLACK_SECONDS = 1800.0
DEFAULT_POLL_SECONDS = 30.0
# What the provider calls with the deploying identity (docs/aws.md's deployer policy grants them).
DEPLOYER_ACTIONS = (
    "sagemaker:DescribeHyperParameterTuningJob",
    "sagemaker:ListTrainingJobsForHyperParameterTuningJob",
    "sagemaker:DescribeTrainingJob",
)
_REPLACE_KEYS = ("tuning_job_name", "region")


class TuningJobError(Exception):
    """The tuning job ended without a model to gate, or SageMaker could not be asked; the message says why."""


# -- the tuning job's configuration -----------------------------------------------------------------


def early_stopping_type(strategy: TuningStrategy) -> str:
    """`Auto` where SageMaker allows it. Hyperband stops trials itself and requires `Off`; Grid runs every
    combination, which early stopping would leave unfinished."""
    return "Auto" if strategy in (TuningStrategy.BAYESIAN, TuningStrategy.RANDOM) else "Off"


def _number(value: float, kind: type) -> str:
    return str(int(value)) if kind is int else repr(float(value))


def _choice(value: Any) -> str:
    # SageMaker takes hyperparameters as strings; booleans as the built-in algorithm spells them.
    return str(value).lower() if isinstance(value, bool) else str(value)


def parameter_ranges(tuning: ModelTuning, types: Mapping[str, type]) -> dict[str, list[dict[str, Any]]]:
    """SageMaker's ParameterRanges (pulumi-aws's snake_case): an integer hyperparameter's range is an
    IntegerParameterRange, a number's a ContinuousParameterRange, a list of choices a
    CategoricalParameterRange; the scale as SageMaker names it (Auto, Linear, Logarithmic, ...)."""
    integer, continuous, categorical = [], [], []
    for name, searched in sorted(tuning.ranges.items()):
        if isinstance(searched, TuningRange):
            kind = types[name]
            spec = {
                "name": name,
                "min_value": _number(searched.min, kind),
                "max_value": _number(searched.max, kind),
                "scaling_type": ScalingType(searched.scale).value,
            }
            (integer if kind is int else continuous).append(spec)
        else:
            categorical.append({"name": name, "values": [_choice(v) for v in searched]})
    ranges = {
        "integer_parameter_ranges": integer,
        "continuous_parameter_ranges": continuous,
        "categorical_parameter_ranges": categorical,
    }
    return {kind: specs for kind, specs in ranges.items() if specs}


def tuning_job_config(tuning: ModelTuning, types: Mapping[str, type]) -> dict[str, Any]:
    """The HyperParameterTuningJob's `config`: strategy, objective, ranges, limits, early stopping."""
    if tuning.objective is None:
        raise ValueError("the tuning settings carry no objective: call ModelTuning.checked_for(model) first")
    return {
        "strategy": TuningStrategy(tuning.strategy).value,
        "objective": {"metric_name": tuning.objective.metric, "type": tuning.objective.goal.value},
        "parameter_ranges": parameter_ranges(tuning, types),
        "resource_limits": {
            "max_number_of_training_jobs": tuning.max_trials,
            "max_parallel_training_jobs": tuning.parallel_trials,
        },
        "training_job_early_stopping_type": early_stopping_type(TuningStrategy(tuning.strategy)),
    }


def static_hyperparameters(hyperparameters: Mapping[str, str], tuning: ModelTuning) -> dict[str, str]:
    """Every hyperparameter the stack trains with, except those the tuner searches."""
    return {name: value for name, value in hyperparameters.items() if name not in tuning.ranges}


def tuning_budget_seconds(tuning: ModelTuning, max_runtime_seconds: int) -> float:
    """How long the whole search may take: its waves of parallel trials, each up to the max runtime."""
    waves = math.ceil(tuning.max_trials / tuning.parallel_trials)
    return float(waves * max_runtime_seconds) + TUNING_SLACK_SECONDS


# -- the waiter -------------------------------------------------------------------------------------


def _is_not_found(error: Any) -> bool:
    details = error.response.get("Error", {})
    message = str(details.get("Message", "")).lower()
    return details.get("Code") in {"ValidationException", "ResourceNotFound"} and (
        "not found" in message or "could not find" in message or "does not exist" in message
    )


def _ask(what: str, call: Any, **kwargs: Any) -> Any:
    """`call(**kwargs)` retried on throttling and 5xx; another error names the call and the permission."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return with_retries(lambda: call(**kwargs))
    except ClientError as error:
        if _is_not_found(error):
            raise
        raise TuningJobError(
            f"{what} failed: {error}. The deploying identity needs {', '.join(DEPLOYER_ACTIONS)} on the "
            "stack's tuning and training jobs (docs/aws.md, deployer policy)."
        ) from None
    except BotoCoreError as error:
        raise TuningJobError(f"{what} failed: {error} (check AWS credentials and aws:region)") from None


def describe_tuning_job(client: Any, name: str) -> dict[str, Any] | None:
    """DescribeHyperParameterTuningJob, or None when no tuning job has that name."""
    from botocore.exceptions import ClientError

    try:
        return _ask(
            f"DescribeHyperParameterTuningJob {name}",
            client.describe_hyper_parameter_tuning_job,
            HyperParameterTuningJobName=name,
        )
    except ClientError:  # only "not found" gets here
        return None


def wait_until_ended(client: Any, name: str, timeout: float, poll_seconds: float) -> dict[str, Any]:
    """The tuning job's description once its status is no longer InProgress or Stopping."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        job = describe_tuning_job(client, name)
        if job is None:
            raise TuningJobError(
                f"SageMaker has no hyperparameter tuning job {name}: it was deleted while `pulumi up` waited "
                "for it. Run `pulumi refresh`, then `pulumi up` to start it again."
            )
        status = str(job["HyperParameterTuningJobStatus"])
        counters = job.get("TrainingJobStatusCounters") or {}
        progress = (status, counters.get("Completed"), counters.get("InProgress"))
        if progress != last:
            log(
                f"tuning job {name}: {status} ({counters.get('Completed', 0)} trials completed, "
                f"{counters.get('InProgress', 0)} running)"
            )
            last = progress
        if status not in ("InProgress", "Stopping"):
            return job
        if time.monotonic() > deadline:
            raise TuningJobError(
                f"tuning job {name} is still {status} after {timeout:.0f}s, longer than its trials may run "
                "(its waves of parallel trials x maxRuntimeSeconds plus 30 minutes). Look at it in the "
                "SageMaker console (Training > Hyperparameter tuning jobs); `pulumi up` waits for it again."
            )
        time.sleep(poll_seconds)


def trial_objectives(client: Any, name: str) -> list[float]:
    """The final objective of every trial that reported one (ListTrainingJobsForHyperParameterTuningJob)."""
    values: list[float] = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = _ask(
            f"ListTrainingJobsForHyperParameterTuningJob {name}",
            client.list_training_jobs_for_hyper_parameter_tuning_job,
            **kwargs,
        )
        for summary in page.get("TrainingJobSummaries") or []:
            metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric")
            if metric is not None:
                values.append(float(metric["Value"]))
        token = page.get("NextToken")
        if not token:
            return values


def tuning_summary(job: Mapping[str, Any], best_artifact: str, objectives: list[float]) -> dict[str, Any]:
    """`models.xgboost.tuning`, in the shape the local stack's search reports (training/tuning.py): trials
    run (completed, stopped early by SageMaker = pruned, failed), the best trial, its hyperparameters and
    objective, and the spread of every trial's final objective."""
    best = job["BestTrainingJob"]
    metric = best["FinalHyperParameterTuningJobObjectiveMetric"]
    config = job.get("HyperParameterTuningJobConfig") or {}
    objective = config.get("HyperParameterTuningJobObjective") or {}
    limits = config.get("ResourceLimits") or {}
    counters = {key: int(value or 0) for key, value in (job.get("TrainingJobStatusCounters") or {}).items()}
    return {
        "service": "sagemaker",
        "job": job["HyperParameterTuningJobName"],
        "trials": sum(counters.values()),
        "completed": counters.get("Completed", 0),
        "pruned": counters.get("Stopped", 0),
        "failed": counters.get("RetryableError", 0) + counters.get("NonRetryableError", 0),
        "max_trials": limits.get("MaxNumberOfTrainingJobs"),
        "parallel_trials": limits.get("MaxParallelTrainingJobs"),
        "strategy": config.get("Strategy"),
        "objective": {"metric": metric["MetricName"], "goal": objective.get("Type") or metric.get("Type")},
        "best_trial": best["TrainingJobName"],
        "best_objective": float(metric["Value"]),
        "best_hyperparameters": dict(best.get("TunedHyperParameters") or {}),
        "best_artifact": best_artifact,
        "spread": {"min": min(objectives), "median": statistics.median(objectives), "max": max(objectives)}
        if objectives
        else None,
    }


class SageMakerTuningResultProvider(ResourceProvider):
    """Waits for a SageMaker tuning job to end and reads its best training job."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        name, region = str(props["tuning_job_name"]), str(props["region"])
        client = sagemaker_client(region)
        log(f"waiting for hyperparameter tuning job {name} (up to {float(props['timeout_seconds']):.0f}s)")
        job = wait_until_ended(
            client,
            name,
            float(props["timeout_seconds"]),
            float(props.get("poll_seconds") or DEFAULT_POLL_SECONDS),
        )
        status = str(job["HyperParameterTuningJobStatus"])
        best = job.get("BestTrainingJob")
        if status != COMPLETED or not best:
            reason = job.get("FailureReason") or (
                "no trial reported the objective" if status == COMPLETED else "SageMaker gave no reason"
            )
            raise TuningJobError(
                f"hyperparameter tuning job {name} ended {status}: {reason}. Its trials' logs are in "
                f"CloudWatch (/aws/sagemaker/TrainingJobs, streams {name}-*). Fix the cause, then change the "
                "tuning settings (or delete the job's record with `aws sagemaker "
                f"delete-hyper-parameter-tuning-job --hyper-parameter-tuning-job-name {name}`) and run "
                "`pulumi up` again: a tuning job's name cannot be used twice."
            )
        best_name = str(best["TrainingJobName"])
        trial = _ask(
            f"DescribeTrainingJob {best_name}", client.describe_training_job, TrainingJobName=best_name
        )
        artifact = str((trial.get("ModelArtifacts") or {}).get("S3ModelArtifacts") or "")
        if not artifact:
            raise TuningJobError(f"the best trial {best_name} of tuning job {name} has no model artifact")
        summary = tuning_summary(job, artifact, trial_objectives(client, name))
        metric, value = summary["objective"]["metric"], summary["best_objective"]
        log(
            f"tuning job {name}: {summary['trials']} trials, best {best_name}: {metric} {value:.4f} "
            f"{summary['best_hyperparameters']}"
        )
        outs = {"best_training_job": best_name, "best_artifact": artifact, "summary": summary}
        return CreateResult(id_=name, outs={**state_of(props), **outs})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        job = describe_tuning_job(sagemaker_client(str(props["region"])), id_)
        if job is None:
            return ReadResult(None, {})  # deleted behind the stack's back: the next `up` waits for a new one
        return ReadResult(id_, state_of(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # Nothing of its own: the tuning job belongs to the HyperParameterTuningJob resource, the trials'
        # models to the stack's bucket (force_destroy).
        return None


class SageMakerTuningResult(pulumi.dynamic.Resource, module="aws", name="TuningJobResult"):
    """The outcome of a SageMaker hyperparameter tuning job, once it has ended: its best training job."""

    best_training_job: pulumi.Output[str]
    """The best trial's training job name: the champion gate's challenger."""
    best_artifact: pulumi.Output[str]
    """Its `s3://…/model.tar.gz` (DescribeTrainingJob ModelArtifacts.S3ModelArtifacts)."""
    summary: pulumi.Output[dict]
    """`models.xgboost.tuning`: trials, best trial, its hyperparameters and objective, spread."""

    def __init__(
        self,
        name: str,
        tuning_job_name: pulumi.Input[str],
        region: str,
        timeout_seconds: float,
        opts: pulumi.ResourceOptions | None = None,
        poll_seconds: float = DEFAULT_POLL_SECONDS,
    ) -> None:
        props = {
            "tuning_job_name": tuning_job_name,
            "region": region,
            "timeout_seconds": timeout_seconds,
            "poll_seconds": poll_seconds,
            "best_training_job": None,
            "best_artifact": None,
            "summary": None,
        }
        super().__init__(SageMakerTuningResultProvider(), name, props, opts)

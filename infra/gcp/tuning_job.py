"""A Vertex AI HyperparameterTuningJob of the project's image: every trial a custom job of the TF trainer.

pulumi-gcp has no tuning job (as it has no CustomJob), so this provider drives the v1 JobService like
infra/gcp/custom_job.py does, with the same waiting, adoption, cancel and delete (its `JobMethods`): the
job carries the label `mnist-platform-id`, a `create` first adopts a running or succeeded job of its
identity, an interrupted or timed-out wait cancels the job, `delete` cancels then deletes it (404 = gone).

The study: the trainer's `accuracy` (MAXIMIZE), the ranges of `tuning.tensorflow` as parameter specs (a
range of an integer hyperparameter is an integerValueSpec, of a number a doubleValueSpec, a list of
choices a categoricalValueSpec; the scale as UNIT_LINEAR/LOG/REVERSE_LOG_SCALE), Vertex's default
(Bayesian) search unless `strategy` says Random or Grid. Vertex passes each trial's values to the
container as `--<parameter_id>=<value>` after its args and sets AIP_MODEL_DIR to
`<baseOutputDirectory>/<trial id>/model/`; the trainer reports `accuracy` through cloudml-hypertune
(training/tf_trainer.py), which Vertex reads as the trial's final measurement.

Vertex's job has no "best trial" field: `create` picks the succeeded trial whose final measurement is best
for the study's goal. Its SavedModel (`<base>/<trial id>/model`) and the metrics.json beside it are the
champion gate's challenger (infra/gcp/gate.py).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.dynamic import IDENTITY_SEED, IDENTITY_TAG, changed_keys, identity, identity_seed, log, state_of
from infra.gcp.clients import DEFAULT_POLL_SECONDS, GcpProviderError, ignore_not_found, job_service, retrying
from infra.gcp.custom_job import (
    PROVISIONING_SLACK_SECONDS,
    SUCCEEDED,
    JobMethods,
    cancel_quietly,
    custom_job_body,
    delete_job,
    left_by_an_interrupted_create,
    wait_until_done,
)
from infra.gcp.names import resource_id
from infra.settings import ModelTuning, ScalingType, TuningRange, TuningStrategy

TUNING_JOB = JobMethods(
    "hyperparameter tuning job",
    "get_hyperparameter_tuning_job",
    "list_hyperparameter_tuning_jobs",
    "cancel_hyperparameter_tuning_job",
    "delete_hyperparameter_tuning_job",
)
OBJECTIVE_METRIC = "accuracy"  # what training/tf_trainer.py reports to the tuning service
SCALE_TYPES = {
    ScalingType.AUTO: "SCALE_TYPE_UNSPECIFIED",
    ScalingType.LINEAR: "UNIT_LINEAR_SCALE",
    ScalingType.LOGARITHMIC: "UNIT_LOG_SCALE",
    ScalingType.REVERSE_LOGARITHMIC: "UNIT_REVERSE_LOG_SCALE",
}
# StudySpec.Algorithm: ALGORITHM_UNSPECIFIED is Vertex's Bayesian optimization; no Hyperband (refused).
ALGORITHMS = {
    TuningStrategy.BAYESIAN: "ALGORITHM_UNSPECIFIED",
    TuningStrategy.RANDOM: "RANDOM_SEARCH",
    TuningStrategy.GRID: "GRID_SEARCH",
}
GOALS = {"Maximize": "MAXIMIZE", "Minimize": "MINIMIZE"}
_REPLACE_KEYS = (
    "project",
    "region",
    "display_name",
    "image_uri",
    "command",
    "args",
    "base_output_directory",
    "service_account",
    "instance_type",
    "instance_count",
    "max_runtime_seconds",
    "labels",
    "kms_key_name",
    "api_endpoint",
    "study_spec",
    "max_trial_count",
    "parallel_trial_count",
)


def _choice(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def study_spec(tuning: ModelTuning, types: Mapping[str, type]) -> dict[str, Any]:
    """The StudySpec (aiplatform_v1 field names) of a `tuning.tensorflow` search."""
    objective = tuning.objective
    if objective is None or objective.metric != OBJECTIVE_METRIC:
        raise ValueError(f"the TF trainer reports only {OBJECTIVE_METRIC!r} to Vertex AI's tuning service")
    parameters = []
    for name, searched in sorted(tuning.ranges.items()):
        if isinstance(searched, TuningRange):
            # IntegerValueSpec's bounds are int64 (strings in JSON), DoubleValueSpec's doubles.
            values = (
                {
                    "integer_value_spec": {
                        "min_value": str(int(searched.min)),
                        "max_value": str(int(searched.max)),
                    }
                }
                if types[name] is int
                else {"double_value_spec": {"min_value": searched.min, "max_value": searched.max}}
            )
            spec: dict[str, Any] = {
                "parameter_id": name,
                **values,
                "scale_type": SCALE_TYPES[ScalingType(searched.scale)],
            }
        else:
            spec = {
                "parameter_id": name,
                "categorical_value_spec": {"values": [_choice(v) for v in searched]},
            }
        parameters.append(spec)
    return {
        "metrics": [{"metric_id": objective.metric, "goal": GOALS[objective.goal.value]}],
        "parameters": parameters,
        "algorithm": ALGORITHMS[TuningStrategy(tuning.strategy)],
    }


def best_trial(trials: Sequence[Any], metric: str, goal: str) -> Any:
    """The succeeded trial whose final measurement of `metric` is best for `goal`, or None."""
    scored = []
    for trial in trials:
        if trial.state.name != "SUCCEEDED" or not trial.final_measurement:
            continue
        values = [m.value for m in trial.final_measurement.metrics if m.metric_id == metric]
        if values and math.isfinite(values[0]):
            scored.append((values[0], trial))
    if not scored:
        return None
    pick = max if goal == "MAXIMIZE" else min
    return pick(scored, key=lambda item: item[0])[1]


def _parameter_value(value: Any) -> Any:
    # TrialParameter.value is a google.protobuf.Value: a float for numbers, a string for categories.
    return int(value) if isinstance(value, float) and value.is_integer() else value


STRATEGY_NAMES = {algorithm: strategy.value for strategy, algorithm in ALGORITHMS.items()}
GOAL_NAMES = {goal: name for name, goal in GOALS.items()}


def tuning_summary(job: Any, best: Any, metric: str, goal: str) -> dict[str, Any]:
    """`models.tensorflow.tuning`, in the shape the local stack's search reports (training/tuning.py):
    trials run (succeeded, infeasible = failed; Vertex stops none early here), the best trial, its
    hyperparameters and objective, and the spread of the trials' final measurements."""
    values = [
        m.value
        for trial in job.trials
        if trial.final_measurement
        for m in trial.final_measurement.metrics
        if m.metric_id == metric
    ]
    best_value = next(m.value for m in best.final_measurement.metrics if m.metric_id == metric)
    states = [trial.state.name for trial in job.trials]
    return {
        "service": "vertex",
        "job": job.name,
        "trials": len(job.trials),
        "completed": states.count("SUCCEEDED"),
        "pruned": 0,
        "failed": states.count("INFEASIBLE"),
        "max_trials": job.max_trial_count,
        "parallel_trials": job.parallel_trial_count,
        "strategy": STRATEGY_NAMES.get(job.study_spec.algorithm.name, job.study_spec.algorithm.name),
        "objective": {"metric": metric, "goal": GOAL_NAMES[goal]},
        "best_trial": best.id,
        "best_objective": float(best_value),
        "best_hyperparameters": {p.parameter_id: _parameter_value(p.value) for p in best.parameters},
        "spread": {"min": min(values), "median": statistics.median(values), "max": max(values)}
        if values
        else None,
    }


@dataclass
class VertexTuningJobArgs:
    """Inputs of a VertexTuningJob (snake_case, as the policy pack reads them: `instance_type`,
    `instance_count`, `max_runtime_seconds` per trial, `max_trial_count`, `labels`, `kms_key_name`)."""

    project: pulumi.Input[str]
    region: pulumi.Input[str]
    display_name: pulumi.Input[str]
    image_uri: pulumi.Input[str]
    command: Sequence[str]
    args: pulumi.Input[Sequence[pulumi.Input[str]]]
    """Every trial's arguments; Vertex appends `--<parameter_id>=<value>` for the searched ones."""
    base_output_directory: pulumi.Input[str]
    """gs:// prefix; a trial's AIP_MODEL_DIR is `<prefix>/<trial id>/model/`."""
    service_account: pulumi.Input[str]
    study_spec: Mapping[str, Any]
    """`study_spec(tuning, types)`."""
    max_trial_count: int
    parallel_trial_count: int
    instance_type: str = "n1-standard-4"
    instance_count: int = 1
    max_runtime_seconds: int = 3600
    """Each trial's `scheduling.timeout`."""
    labels: Mapping[str, str] = field(default_factory=dict)
    kms_key_name: pulumi.Input[str] | None = None
    api_endpoint: str | None = None
    """Tests only: a loopback fake of the Vertex AI API."""
    poll_seconds: float = DEFAULT_POLL_SECONDS


def tuning_job_body(props: Mapping[str, Any]) -> dict[str, Any]:
    """The HyperparameterTuningJob (aiplatform_v1 field names); its trial spec is the custom job's."""
    custom = custom_job_body(props)
    body: dict[str, Any] = {
        "display_name": props["display_name"],
        "labels": custom["labels"],
        "study_spec": dict(props["study_spec"]),
        "max_trial_count": int(props["max_trial_count"]),
        "parallel_trial_count": int(props["parallel_trial_count"]),
        "trial_job_spec": custom["job_spec"],
    }
    if "encryption_spec" in custom:
        body["encryption_spec"] = custom["encryption_spec"]
    return body


def _budget(props: Mapping[str, Any]) -> dict[str, Any]:
    """How long the whole search may run: its waves of parallel trials, each up to the trial timeout."""
    waves = math.ceil(float(props["max_trial_count"]) / float(props["parallel_trial_count"]))
    return {
        **props,
        "max_runtime_seconds": waves * (float(props["max_runtime_seconds"]) + PROVISIONING_SLACK_SECONDS),
    }


class VertexTuningJobProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        from google.cloud import aiplatform_v1

        client = job_service(props["region"], props.get("api_endpoint"))
        parent = f"projects/{props['project']}/locations/{props['region']}"
        job_identity = identity(props, _REPLACE_KEYS)
        job = left_by_an_interrupted_create(client, parent, job_identity, TUNING_JOB)
        if job is None:
            body = tuning_job_body(props)
            body["labels"][IDENTITY_TAG] = job_identity
            job = retrying(
                client.create_hyperparameter_tuning_job,
                parent=parent,
                hyperparameter_tuning_job=aiplatform_v1.HyperparameterTuningJob(body),
            )
            action = "created"
        else:
            action = f"adopted ({job.state.name}, left by an interrupted `pulumi up`)"
        log(
            f"hyperparameter tuning job {job.name} {action}: {props['max_trial_count']:.0f} trials, "
            f"{props['parallel_trial_count']:.0f} at a time"
        )
        try:
            job = wait_until_done(client, job.name, _budget(props), slack=0, kind=TUNING_JOB)
        except BaseException:
            cancel_quietly(client, job.name, TUNING_JOB)  # no trials billing behind a failed update
            raise
        metric = props["study_spec"]["metrics"][0]["metric_id"]
        goal = props["study_spec"]["metrics"][0]["goal"]
        best = best_trial(job.trials, metric, goal)
        if job.state.name != SUCCEEDED or best is None:
            why = job.error.message or f"no trial reported {metric}"
            raise GcpProviderError(
                f"Vertex AI hyperparameter tuning job {job.name} ended {job.state.name}: {why}\n"
                f"Its {len(job.trials)} trials: "
                + "; ".join(f"{t.id} {t.state.name} {t.infeasible_reason}".strip() for t in job.trials)
                + "\nFix the cause (ranges, the training code, quota) and run `pulumi up` again; the job's "
                "record stays for inspection."
            )
        base = str(props["base_output_directory"]).rstrip("/")
        summary = tuning_summary(job, best, metric, goal)
        log(
            f"tuning job {resource_id(job.name)}: best trial {best.id} of {len(job.trials)}, {metric} "
            f"{summary['best_objective']:.4f} ({summary['best_hyperparameters']})"
        )
        outs = {
            "name": job.name,
            "job_id": resource_id(job.name),
            "state": job.state.name,
            "best_trial": best.id,
            "model_dir": f"{base}/{best.id}/model",
            "metrics_uri": f"{base}/{best.id}/metrics.json",
            "summary": summary,
        }
        return CreateResult(id_=job.name, outs={**state_of(props), **outs})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        client = job_service(props["region"], props.get("api_endpoint"))
        job = ignore_not_found(client.get_hyperparameter_tuning_job, name=id_)
        if job is None:
            return ReadResult(None, {})
        return ReadResult(id_, {**state_of(props), "state": job.state.name})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        client = job_service(props["region"], props.get("api_endpoint"))
        delete_job(client, id_, _budget(props), TUNING_JOB)


class VertexTuningJob(pulumi.dynamic.Resource, module="vertex", name="HyperparameterTuningJob"):
    """A Vertex AI hyperparameter tuning job of the project's image, run to completion; its best trial."""

    name: pulumi.Output[str]
    job_id: pulumi.Output[str]
    state: pulumi.Output[str]
    best_trial: pulumi.Output[str]
    model_dir: pulumi.Output[str]
    """The best trial's SavedModel (`<base>/<trial id>/model`)."""
    metrics_uri: pulumi.Output[str]
    summary: pulumi.Output[dict]
    """`models.tensorflow.tuning`."""

    def __init__(
        self, name: str, args: VertexTuningJobArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "project": args.project,
            "region": args.region,
            "display_name": args.display_name,
            "image_uri": args.image_uri,
            "command": list(args.command),
            "args": args.args,
            "base_output_directory": args.base_output_directory,
            "service_account": args.service_account,
            "study_spec": dict(args.study_spec),
            "max_trial_count": args.max_trial_count,
            "parallel_trial_count": args.parallel_trial_count,
            "instance_type": args.instance_type,
            "instance_count": args.instance_count,
            "max_runtime_seconds": args.max_runtime_seconds,
            "labels": dict(args.labels),
            "kms_key_name": args.kms_key_name,
            "api_endpoint": args.api_endpoint,
            "poll_seconds": args.poll_seconds,
            IDENTITY_SEED: identity_seed("vertex:HyperparameterTuningJob", name),
            "name": None,
            "job_id": None,
            "state": None,
            "best_trial": None,
            "model_dir": None,
            "metrics_uri": None,
            "summary": None,
        }
        super().__init__(VertexTuningJobProvider(), name, props, opts)

"""Hyperparameter tuning on the SageMaker stack: the tuning job the program declares, and the resource
that waits for it (infra/aws/tuning.py) run for real against moto.

What moto does and does not do for tuning jobs (moto 5.2): CreateHyperParameterTuningJob (its request
validated by botocore against SageMaker's service model, as every boto3 call is), Describe (a job moto
records as `Completed` at once, with a fixed `BestTrainingJob` named "FakeTrainingJobName"), List and
Delete. It has no StopHyperParameterTuningJob and no ListTrainingJobsForHyperParameterTuningJob. So these
tests create the tuning job and its trials' training jobs through the real API, then set on moto's own
record what SageMaker would have computed (status, best trial, failure reason), as tests/aws/test_aws_gate.py
does for a job's final metrics; the provider reads it all through the real calls. The trial listing (the
spread) goes to a boto3 client with botocore's Stubber, whose replies and requests botocore checks against
the same service model: a stand-in for that one call, not a model of SageMaker's trial bookkeeping.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.session
import pytest
from aws_mocks import (
    ACCOUNT,
    BUCKET,
    GATE,
    REGION,
    ROLE_POLICY,
    TRAINING_ATTEMPT,
    TRAINING_JOB,
    TUNING_JOB,
    TUNING_RESULT,
    _call,
    _outputs,
    run_aws,
)
from botocore.stub import Stubber
from botocore.validate import validate_parameters
from harness import ProviderEngine, StackRun, run_stack
from moto import mock_aws
from moto.sagemaker.models import sagemaker_backends
from pulumi.runtime.mocks import MockResourceArgs
from test_aws_gate import finished_job

from infra.aws import tuning
from infra.aws.gate import champion_key
from infra.aws.tuning import SageMakerTuningResultProvider, TuningJobError

SEARCH = {
    "maxTrials": 6,
    "parallelTrials": 2,
    "ranges": {
        "eta": {"min": 0.05, "max": 0.5, "scale": "Logarithmic"},
        "max_depth": {"min": 3, "max": 9},
        "tree_method": ["hist", "approx"],
    },
}
TUNED = {"tuning": {"xgboost": SEARCH}}
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/training"


# -- the program under mocks -----------------------------------------------------------------------


def test_with_tuning_the_stack_declares_a_bayesian_tuning_job_bounded_by_config_instead_of_a_training_job(
    t10k_dir: Path,
):
    run = run_aws(t10k_dir, TUNED)
    assert run.of_type(TRAINING_JOB) == [] and run.of_type(TRAINING_ATTEMPT) == []
    job = run.one(TUNING_JOB).inputs
    config = job["config"]
    assert config["strategy"] == "Bayesian"
    assert config["objective"] == {"metricName": "validation:merror", "type": "Minimize"}
    assert config["resourceLimits"] == {"maxNumberOfTrainingJobs": 6, "maxParallelTrainingJobs": 2}
    assert config["trainingJobEarlyStoppingType"] == "Auto"
    assert config["parameterRanges"] == {
        "continuousParameterRanges": [
            {"name": "eta", "minValue": "0.05", "maxValue": "0.5", "scalingType": "Logarithmic"}
        ],
        "integerParameterRanges": [
            {"name": "max_depth", "minValue": "3", "maxValue": "9", "scalingType": "Auto"}
        ],
        "categoricalParameterRanges": [{"name": "tree_method", "values": ["hist", "approx"]}],
    }
    assert len(job["name"]) <= 32 and re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}", job["name"])
    static = job["trainingJobDefinition"]["staticHyperParameters"]
    assert not {"eta", "max_depth", "tree_method"} & set(static)
    assert static["objective"] == "multi:softprob" and "merror" in static["eval_metric"]


def test_every_trial_is_the_stacks_training_job_with_other_hyperparameters(t10k_dir: Path):
    """Image, role, channels, output, instances, volume and stopping condition: as the untuned stack's
    TrainingJob has them; only the searched hyperparameters move out of the static ones."""
    plain = run_aws(t10k_dir).one(TRAINING_JOB).inputs
    definition = run_aws(t10k_dir, TUNED).one(TUNING_JOB).inputs["trainingJobDefinition"]
    assert definition["algorithmSpecification"] == plain["algorithmSpecification"]
    assert definition["roleArn"] == plain["roleArn"]
    assert definition["inputDataConfigs"] == plain["inputDataConfigs"]
    assert definition["outputDataConfig"] == plain["outputDataConfig"]
    assert definition["resourceConfig"] == plain["resourceConfig"]
    assert definition["stoppingCondition"] == plain["stoppingCondition"]
    assert definition["enableNetworkIsolation"] is True
    searched = {"eta", "max_depth", "tree_method"}
    assert definition["staticHyperParameters"] == {
        k: v for k, v in plain["hyperParameters"].items() if k not in searched
    }


def test_the_best_trial_is_the_gates_challenger_and_models_xgboost_tuning_reports_the_search(t10k_dir: Path):
    run = run_aws(t10k_dir, TUNED)
    name = run.one(TUNING_JOB).inputs["name"]
    result = run.one(TUNING_RESULT)
    assert result.inputs["tuning_job_name"] == name
    assert run.depends_on(result, run.one(TUNING_JOB))
    gate = run.one(GATE)
    assert gate.inputs["challenger_id"] == f"{name}-003-1a2b3c4d"
    assert (
        gate.inputs["challenger_artifact"]
        == f"s3://mnist-data-0a1b2c3/output/{name}-003-1a2b3c4d/output/model.tar.gz"
    )
    assert run.depends_on(gate, result)
    tuned = run.outputs["models"]["xgboost"]["tuning"]
    assert tuned["best_trial"] == f"{name}-003-1a2b3c4d" and tuned["spread"]["max"] == 0.09
    # The waiter may wait for every wave of parallel trials at the max runtime, plus slack.
    assert result.inputs["timeout_seconds"] == 3 * 3600 + tuning.TUNING_SLACK_SECONDS
    assert "tuning" not in run_aws(t10k_dir).outputs["models"]["xgboost"]


def test_the_training_role_may_write_the_trials_artifacts_named_after_the_tuning_job(t10k_dir: Path):
    """A stack name long enough that the tuning job's 32-character name keeps less of it than a training
    job's 63: SageMaker names the trials after the tuning job, and the role must let them write."""
    config = {
        "cloud": "aws",
        "aws:region": REGION,
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        **TUNED,
    }
    run = run_stack("eu-central-experiments", config, new_resource=_outputs, call=_call)
    name = run.one(TUNING_JOB).inputs["name"]
    assert len(name) == 32 and name.startswith("mnist-eu-central-ex-")
    policy = json.loads(run.one(ROLE_POLICY, "training-access").inputs["policy"])
    statements = {s["Sid"]: s for s in policy["Statement"]}
    pattern = statements["WriteOwnJobArtifacts"]["Resource"]
    bucket = run.outputs["bucket"]
    trial_key = f"arn:aws:s3:::{bucket}/output/{name}-001-0f1e2d3c/output/model.tar.gz"
    assert re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), trial_key), pattern
    streams = statements["WriteOwnJobLogs"]["Resource"]
    assert re.fullmatch(
        re.escape(streams).replace(r"\*", ".*"),
        f"{streams.split(':log-stream:')[0]}:log-stream:{name}-001-0f1e2d3c/algo-1",
    )


def _pascal(key: str) -> str:
    return key[0].upper() + key[1:]


# pulumi-aws input names that SageMaker's API spells otherwise (terraform-provider-aws's schema).
_RENAMED = {
    "InputDataConfigs": "InputDataConfig",
    "Objective": "HyperParameterTuningJobObjective",
    "VolumeSizeInGb": "VolumeSizeInGB",
}


def api_shape(value: Any) -> Any:
    """pulumi-aws's wire form of the tuning job (camelCase) in SageMaker's API form (PascalCase)."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            name = _pascal(key)
            out[_RENAMED.get(name, name)] = item if name == "StaticHyperParameters" else api_shape(item)
        return out
    if isinstance(value, list):
        return [api_shape(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)  # numbers cross the wire as floats
    return value


def create_request(inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "HyperParameterTuningJobName": inputs["name"],
        "HyperParameterTuningJobConfig": api_shape(inputs["config"]),
        "TrainingJobDefinition": api_shape(inputs["trainingJobDefinition"]),
    }


def model_violations(value: Any, shape: Any, where: str = "") -> list[str]:
    """What botocore's client-side validation leaves out: enums, string length maxima and patterns."""
    if shape.type_name == "structure":
        return [
            problem
            for key, item in value.items()
            for problem in model_violations(item, shape.members[key], f"{where}.{key}")
        ]
    if shape.type_name == "list":
        return [
            p for i, item in enumerate(value) for p in model_violations(item, shape.member, f"{where}[{i}]")
        ]
    if shape.type_name == "map":
        return [p for k, item in value.items() for p in model_violations(item, shape.value, f"{where}[{k}]")]
    problems = []
    if shape.type_name == "string":
        if shape.enum and value not in shape.enum:
            problems.append(f"{where}: {value!r} not in {shape.enum}")
        if "max" in shape.metadata and len(value) > shape.metadata["max"]:
            problems.append(f"{where}: longer than {shape.metadata['max']}")
        if "pattern" in shape.metadata and not re.fullmatch(shape.metadata["pattern"], value):
            problems.append(f"{where}: {value!r} does not match {shape.metadata['pattern']}")
    return problems


def test_the_declared_tuning_job_is_a_request_sagemakers_service_model_accepts(t10k_dir: Path):
    """The declared arguments, renamed as the API names them, pass botocore's validation of
    CreateHyperParameterTuningJob (member names, types, required members) and the model's enums, lengths
    and patterns (the 32-character name, Bayesian, Auto, Logarithmic, Minimize)."""
    overrides = {**TUNED, "kmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1"}
    inputs = run_aws(t10k_dir, overrides).one(TUNING_JOB).inputs
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateHyperParameterTuningJob").input_shape
    request = create_request(inputs)
    validate_parameters(request, shape)
    assert model_violations(request, shape) == []
    request["HyperParameterTuningJobConfig"]["Strategy"] = "Genetic"
    assert model_violations(request, shape) == [
        ".HyperParameterTuningJobConfig.Strategy: 'Genetic' not in "
        "['Bayesian', 'Random', 'Hyperband', 'Grid']"
    ]


def test_hyperband_and_grid_run_without_sagemakers_early_stopping(t10k_dir: Path):
    hyperband = {**SEARCH, "strategy": "Hyperband"}
    config = run_aws(t10k_dir, {"tuning": {"xgboost": hyperband}}).one(TUNING_JOB).inputs["config"]
    assert config["strategy"] == "Hyperband" and config["trainingJobEarlyStoppingType"] == "Off"
    grid = {**SEARCH, "strategy": "Grid", "ranges": {"max_depth": [4, 6], "tree_method": ["hist"]}}
    config = run_aws(t10k_dir, {"tuning": {"xgboost": grid}}).one(TUNING_JOB).inputs["config"]
    assert config["strategy"] == "Grid" and config["trainingJobEarlyStoppingType"] == "Off"
    assert config["parameterRanges"]["categoricalParameterRanges"][0] == {
        "name": "max_depth",
        "values": ["4", "6"],
    }


# -- the waiter against moto -----------------------------------------------------------------------

TEST_BUCKET = "mnist-tuning-test"
TUNING_NAME = "mnist-aws-xgboost-0123456789ab"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        boto3.client("s3", region_name=REGION).create_bucket(Bucket=TEST_BUCKET)
        yield


class MotoWithStubbedTrialList:
    """moto's SageMaker client, but ListTrainingJobsForHyperParameterTuningJob (which moto lacks) answered by
    a Stubber-backed client: botocore checks the request and the canned reply against the service model."""

    def __init__(self, objectives: list[float]) -> None:
        self.moto = boto3.client("sagemaker", region_name=REGION)
        self.stubbed = boto3.client("sagemaker", region_name=REGION)
        self.stubber = Stubber(self.stubbed)
        self.objectives = objectives

    def __getattr__(self, name: str) -> Any:
        return getattr(self.moto, name)

    def list_training_jobs_for_hyper_parameter_tuning_job(self, **kwargs: Any) -> Any:
        when = datetime(2026, 12, 8, tzinfo=UTC)
        summaries = [
            {
                "TrainingJobName": f"{kwargs['HyperParameterTuningJobName']}-{i:03d}-0a0b0c0d",
                "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/t{i}",
                "CreationTime": when,
                "TrainingJobStatus": "Completed",
                "TunedHyperParameters": {"eta": str(0.1 * i)},
                "FinalHyperParameterTuningJobObjectiveMetric": {
                    "MetricName": "validation:merror",
                    "Value": v,
                },
            }
            for i, v in enumerate(self.objectives, 1)
        ]
        self.stubber.add_response(
            "list_training_jobs_for_hyper_parameter_tuning_job", {"TrainingJobSummaries": summaries}, kwargs
        )
        with self.stubber:
            return self.stubbed.list_training_jobs_for_hyper_parameter_tuning_job(**kwargs)


def start_tuning_job(name: str = TUNING_NAME) -> Any:
    """A tuning job through the real CreateHyperParameterTuningJob, left InProgress on moto's record."""
    boto3.client("sagemaker", region_name=REGION).create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig={
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:merror"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Logarithmic"}
                ]
            },
            "TrainingJobEarlyStoppingType": "Auto",
        },
        TrainingJobDefinition={
            "AlgorithmSpecification": {"TrainingImage": "xgboost:1.7-1", "TrainingInputMode": "File"},
            "RoleArn": ROLE_ARN,
            "OutputDataConfig": {"S3OutputPath": f"s3://{TEST_BUCKET}/output"},
            "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 10},
            "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        },
    )
    record = sagemaker_backends[ACCOUNT][REGION].hyper_parameter_tuning_jobs[name]
    record.hyper_parameter_tuning_job_status = "InProgress"
    record.training_job_status_counters = {"Completed": 0, "InProgress": 1}
    return record


def finish_tuning_job(record: Any, best: str, merror: float, trials: int = 3) -> None:
    """What SageMaker records when the search ends: Completed, the best trial and its objective."""
    record.training_job_status_counters = {"Completed": trials, "InProgress": 0, "Stopped": 0}
    record.best_training_job = {
        "TrainingJobName": best,
        "TrainingJobArn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{best}",
        "CreationTime": datetime(2026, 12, 8, tzinfo=UTC),
        "TrainingJobStatus": "Completed",
        "TunedHyperParameters": {"eta": "0.21"},
        "FinalHyperParameterTuningJobObjectiveMetric": {
            "Type": "Minimize",
            "MetricName": "validation:merror",
            "Value": merror,
        },
    }
    record.hyper_parameter_tuning_job_status = "Completed"


def waiter_props(**extra: Any) -> dict[str, Any]:
    return {
        "tuning_job_name": TUNING_NAME,
        "region": REGION,
        "timeout_seconds": 30.0,
        "poll_seconds": 0.05,
        **extra,
    }


@pytest.fixture
def trials(monkeypatch: pytest.MonkeyPatch, aws: None) -> MotoWithStubbedTrialList:
    client = MotoWithStubbedTrialList([0.031, 0.05, 0.09])
    monkeypatch.setattr(tuning, "sagemaker_client", lambda region: client)
    return client


def test_the_result_waits_for_the_running_tuning_job_and_reads_its_best_trial_and_model(
    trials: MotoWithStubbedTrialList,
):
    record = start_tuning_job()
    best = f"{TUNING_NAME}-002-5e6f7a8b"
    artifact = finished_job(TEST_BUCKET, best, {"validation:merror": 0.031})
    finished_job(TEST_BUCKET, f"{TUNING_NAME}-001-1a2b3c4d", {"validation:merror": 0.09})

    def search_ends_later() -> None:
        time.sleep(0.4)  # several polls see it InProgress first
        finish_tuning_job(record, best, 0.031)

    threading.Thread(target=search_ends_later, daemon=True).start()
    started = time.monotonic()
    outs = SageMakerTuningResultProvider().create(waiter_props()).outs or {}
    assert time.monotonic() - started >= 0.4
    assert outs["best_training_job"] == best
    assert outs["best_artifact"] == artifact  # DescribeTrainingJob's ModelArtifacts, not a guessed path
    summary = outs["summary"]
    assert summary["trials"] == 3 and summary["completed"] == 3 and summary["failed"] == 0
    assert (
        summary["max_trials"] == 3 and summary["parallel_trials"] == 1 and summary["strategy"] == "Bayesian"
    )
    assert summary["objective"] == {"metric": "validation:merror", "goal": "Minimize"}
    assert summary["best_trial"] == best and summary["best_objective"] == 0.031
    assert summary["best_hyperparameters"] == {"eta": "0.21"}
    assert summary["spread"] == {"min": 0.031, "median": 0.05, "max": 0.09}


def test_a_stopped_tuning_job_fails_the_update_with_sagemakers_reason(trials: MotoWithStubbedTrialList):
    record = start_tuning_job()
    record.hyper_parameter_tuning_job_status = "Stopped"
    record.failure_reason = "The tuning job was stopped by a user."
    with pytest.raises(TuningJobError) as error:
        SageMakerTuningResultProvider().create(waiter_props())
    message = str(error.value)
    assert (
        f"hyperparameter tuning job {TUNING_NAME} ended Stopped: The tuning job was stopped by a user."
        in message
    )
    assert "cannot be used twice" in message


def test_a_failed_tuning_job_fails_with_its_reason_and_one_still_running_at_the_deadline_is_named(
    trials: MotoWithStubbedTrialList,
):
    record = start_tuning_job()
    with pytest.raises(TuningJobError, match="is still InProgress after 0s"):
        SageMakerTuningResultProvider().create(waiter_props(timeout_seconds=0.0))
    record.hyper_parameter_tuning_job_status = "Failed"
    record.failure_reason = "ClientError: No training job succeeded: the objective metric was never emitted."
    with pytest.raises(TuningJobError, match="ended Failed: ClientError: No training job succeeded"):
        SageMakerTuningResultProvider().create(waiter_props())


def test_read_asks_sagemaker_and_a_deleted_tuning_job_is_gone_and_delete_leaves_the_job_alone(
    trials: MotoWithStubbedTrialList,
):
    record = start_tuning_job()
    finish_tuning_job(record, f"{TUNING_NAME}-001-1a2b3c4d", 0.05)
    finished_job(TEST_BUCKET, f"{TUNING_NAME}-001-1a2b3c4d", {"validation:merror": 0.05})
    provider = SageMakerTuningResultProvider()
    state = {**waiter_props(), **(provider.create(waiter_props()).outs or {})}
    assert provider.read(TUNING_NAME, state).id == TUNING_NAME
    provider.delete(TUNING_NAME, state)  # the tuning job is the HyperParameterTuningJob resource's
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=TUNING_NAME)
    sagemaker.delete_hyper_parameter_tuning_job(HyperParameterTuningJobName=TUNING_NAME)
    assert provider.read(TUNING_NAME, state).id is None
    assert provider.diff(TUNING_NAME, state, waiter_props()).changes is False


# -- the stack, with the waiter and the gate executed for real -------------------------------------


def moto_backed(args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
    """Native resources as the mocks make them; the bucket and the tuning job (with the declared
    arguments, through CreateHyperParameterTuningJob) in moto, its search already over: three trials, each
    a training job with its model, the best recorded on the tuning job as SageMaker would."""
    id_, state = _outputs(args)
    if args.typ == BUCKET:
        s3 = boto3.client("s3", region_name=REGION)
        if state["bucket"] not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=state["bucket"])
    if (
        args.typ == TUNING_JOB
        and args.inputs["name"] not in sagemaker_backends[ACCOUNT][REGION].hyper_parameter_tuning_jobs
    ):
        name = args.inputs["name"]  # a second `up` of the same job leaves it as it is
        boto3.client("sagemaker", region_name=REGION).create_hyper_parameter_tuning_job(
            **create_request(args.inputs)
        )
        bucket = args.inputs["trainingJobDefinition"]["outputDataConfig"]["s3OutputPath"][5:].split("/")[0]
        # A search of 3 trials finds merror 0.031 (trial 2); one of 2 trials a poor best, 0.40 (trial 1).
        trials = int(args.inputs["config"]["resourceLimits"]["maxNumberOfTrainingJobs"])
        merrors = [0.05, 0.031, 0.09] if trials == 3 else [0.40, 0.45]
        for i, merror in enumerate(merrors, 1):
            finished_job(bucket, f"{name}-{i:03d}-0a0b0c0d", {"validation:merror": merror})
        record = sagemaker_backends[ACCOUNT][REGION].hyper_parameter_tuning_jobs[name]
        best = 1 + merrors.index(min(merrors))
        finish_tuning_job(record, f"{name}-{best:03d}-0a0b0c0d", min(merrors), trials=len(merrors))
    return id_, state


class TuningAndGateEngine(ProviderEngine):
    """The engine running the tuning result and the gate for real; the stack's other dynamic resources
    (the endpoint's name suffix and checks, which need a live endpoint) get the mocks' outputs."""

    def __call__(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.typ.startswith("pulumi-python:dynamic") and args.typ not in (TUNING_RESULT, GATE):
            return self.fallback(args)
        return super().__call__(args)


def up(engine: ProviderEngine, data_dir: Path, overrides: dict[str, Any]) -> StackRun:
    config = {"dataset": "mnist-t10k", "dataDir": str(data_dir), **overrides}
    run = run_stack("aws", config, new_resource=engine, call=_call)
    engine.finish()
    return run


def test_the_best_trial_is_promoted_and_served_a_worse_search_is_held_and_destroy_leaves_no_copy(
    monkeypatch: pytest.MonkeyPatch, aws: None, t10k_dir: Path
):
    client = MotoWithStubbedTrialList([0.05, 0.031, 0.09])
    monkeypatch.setattr(tuning, "sagemaker_client", lambda region: client)
    monkeypatch.setattr(tuning, "DEFAULT_POLL_SECONDS", 0.05)
    engine = TuningAndGateEngine(fallback=moto_backed)
    run = up(engine, t10k_dir, {"tuning": {"xgboost": {**SEARCH, "maxTrials": 3, "parallelTrials": 1}}})
    name = run.one(TUNING_JOB).inputs["name"]
    best = f"{name}-002-0a0b0c0d"
    bucket = run.outputs["bucket"]
    model = run.outputs["models"]["xgboost"]
    assert model["champion"]["source"] == best and model["champion"]["accuracy"] == pytest.approx(0.969)
    assert model["artifact"] == f"s3://{bucket}/champions/xgboost/{best}/model.tar.gz"
    assert model["tuning"]["best_trial"] == best and model["tuning"]["spread"]["max"] == 0.09
    served = run.one("aws:sagemaker/model:Model").inputs["primaryContainer"]["modelDataUrl"]
    assert served == model["artifact"]
    s3 = boto3.client("s3", region_name=REGION)
    s3.head_object(Bucket=bucket, Key=champion_key("xgboost", best))

    again = up(engine, t10k_dir, {"tuning": {"xgboost": {**SEARCH, "maxTrials": 3, "parallelTrials": 1}}})
    assert again.one(TUNING_JOB).inputs == run.one(TUNING_JOB).inputs
    assert ("same", "mnist-tuning-result") in engine.steps and ("same", "mnist-xgboost-gate") in engine.steps

    # A new search whose best trial is worse than the champion: held, the endpoint keeps serving the champion.
    client.objectives = [0.40, 0.45]
    worse = up(engine, t10k_dir, {"tuning": {"xgboost": {**SEARCH, "maxTrials": 2, "parallelTrials": 1}}})
    held = worse.outputs["models"]["xgboost"]
    assert worse.one(TUNING_JOB).inputs["name"] != name
    assert held["challenger"]["decision"] == "held" and held["challenger"]["source"].endswith("-001-0a0b0c0d")
    assert held["champion"]["source"] == best and held["artifact"] == model["artifact"]
    assert worse.one("aws:sagemaker/model:Model").inputs["primaryContainer"]["modelDataUrl"] == served
    assert held["tuning"]["best_objective"] == 0.40 and held["tuning"]["spread"]["max"] == 0.45

    engine.destroy()
    assert s3.list_objects_v2(Bucket=bucket, Prefix="champions/").get("KeyCount") == 0
    assert engine.live == {}
    # What SageMaker keeps is the HyperParameterTuningJob resource's to delete, not the waiter's.
    sagemaker = boto3.client("sagemaker", region_name=REGION)
    assert sagemaker.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)["BestTrainingJob"]
    assert json.dumps(model["tuning"])  # a plain JSON output


# -- the policy pack's bounded-training rule -------------------------------------------------------


def test_the_bounded_training_rule_bounds_the_tuning_jobs_trials_and_its_whole_search(t10k_dir: Path):
    """max trials x instances x max runtime within maxTuningInstanceHours, each trial within the training
    limits, and a search without a trial limit refused."""
    from policy.rules import TrainingLimits, training_bounds_violations

    job = run_aws(t10k_dir, TUNED).one(TUNING_JOB)
    assert training_bounds_violations(job.typ, job.inputs) == []  # 6 trials x 1 x 3600 s = 6 h

    wide = run_aws(t10k_dir, {**TUNED, "trainingInstanceCount": 2, "maxRuntimeSeconds": 7200}).one(TUNING_JOB)
    assert training_bounds_violations(
        wide.typ, wide.inputs, TrainingLimits(max_tuning_instance_hours=20)
    ) == [
        "the tuning job may use 24 instance-hours (6 trials x 2 instances x 7200 s), more than the limit 20 "
        "(maxTuningInstanceHours in the policy pack config)"
    ]
    assert training_bounds_violations(wide.typ, wide.inputs, TrainingLimits(max_runtime_seconds=3600)) == [
        "the tuning job's trial may run 7200 s (stoppingCondition.maxRuntimeInSeconds), "
        "more than the limit 3600 s"
    ]
    unbounded = json.loads(json.dumps(job.inputs))
    del unbounded["config"]["resourceLimits"]["maxNumberOfTrainingJobs"]
    assert training_bounds_violations(job.typ, unbounded) == [
        "the tuning job sets no config.resourceLimits.maxNumberOfTrainingJobs: the number of trials it may "
        "start is unbounded"
    ]


def test_the_deployer_policy_in_docs_lets_the_waiter_read_the_tuning_job_and_its_trials() -> None:
    from test_aws_deployer_policy import _allowed, _deployer_policy

    policy = _deployer_policy()
    tuning_job = (
        f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:hyper-parameter-tuning-job/mnist-aws-xgboost-0123456789ab"
    )
    trial = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/mnist-aws-xgboost-0123456789ab-001-0a1b2c3d"
    for action in tuning.DEPLOYER_ACTIONS:
        resource = trial if action == "sagemaker:DescribeTrainingJob" else tuning_job
        assert _allowed(policy, action, resource), action
    assert _allowed(policy, "sagemaker:CreateHyperParameterTuningJob", tuning_job)

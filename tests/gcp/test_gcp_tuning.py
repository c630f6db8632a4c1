"""Hyperparameter tuning on the Vertex AI stack: the tuning job the program declares (under mocks), and its
provider (infra/gcp/tuning_job.py) with Google's v1 JobServiceClient against the Vertex fake, whose trials
really train the TF CNN at dry-run size and report `accuracy` through cloudml-hypertune
(tests/gcp/gcp_fakes/tuning.py says what the fake cannot be: Vizier)."""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from gcp_fakes import GcsFake, VertexFake
from gcp_fakes.clients import job_client
from gcp_mocks import CUSTOM_JOB, GATE, TUNING_JOB, run_gcp
from google.api_core import exceptions

from infra.gcp.clients import GcpProviderError
from infra.gcp.tuning_job import VertexTuningJobProvider
from training.datasets import Split
from training.formats import write_npz

SEARCH = {
    "maxTrials": 2,
    "parallelTrials": 2,
    "ranges": {"learning_rate": {"min": 0.001, "max": 0.01, "scale": "Logarithmic"}, "width": [8, 16]},
}
TUNED = {"tuning": {"tensorflow": SEARCH}}
BUCKET = "mnist-bucket"


# -- the program under mocks -----------------------------------------------------------------------


def test_with_tuning_the_stack_declares_a_vertex_tuning_job_bounded_by_config_instead_of_the_custom_job(
    t10k_dir: Path,
) -> None:
    fixed = {"hyperparameters": {"tensorflow": {"epochs": 2, "learning_rate": 0.002}}}
    run = run_gcp(t10k_dir, {**TUNED, **fixed})
    assert run.of_type(CUSTOM_JOB) == []
    job = run.one(TUNING_JOB).inputs
    assert job["max_trial_count"] == 2 and job["parallel_trial_count"] == 2
    assert job["max_runtime_seconds"] == 3600 and job["instance_type"] == "n1-standard-4"
    assert job["study_spec"] == {
        "metrics": [{"metric_id": "accuracy", "goal": "MAXIMIZE"}],
        "parameters": [
            {
                "parameter_id": "learning_rate",
                "double_value_spec": {"min_value": 0.001, "max_value": 0.01},
                "scale_type": "UNIT_LOG_SCALE",
            },
            {"parameter_id": "width", "categorical_value_spec": {"values": ["8", "16"]}},
        ],
        "algorithm": "ALGORITHM_UNSPECIFIED",  # Vertex's default: Bayesian optimization
    }
    # The trials run the trainer of the custom job; the searched values are Vertex's to pass.
    plain = run_gcp(t10k_dir, fixed).one(CUSTOM_JOB).inputs
    assert job["command"] == plain["command"] and job["image_uri"] == plain["image_uri"]
    assert job["service_account"] == plain["service_account"]
    assert "--set" in plain["args"] and "learning_rate=0.002" in plain["args"]
    # The stack's fixed learning rate would hide the searched one: only the other overrides stay.
    assert job["args"] == [a for a in plain["args"] if a != "learning_rate=0.002"][: len(job["args"])]
    assert "epochs=2" in job["args"] and not [a for a in job["args"] if a.startswith("learning_rate=")]


def test_the_best_trials_savedmodel_is_the_gates_challenger_and_models_tensorflow_tuning_reports_it(
    t10k_dir: Path,
) -> None:
    run = run_gcp(t10k_dir, TUNED)
    job = run.one(TUNING_JOB)
    base = job.inputs["base_output_directory"]
    gate = run.one(GATE)
    assert gate.inputs["challenger_artifact"] == f"{base}/2/model"
    assert gate.inputs["metrics_uri"] == f"{base}/2/metrics.json"
    assert gate.inputs["challenger_id"].endswith(
        f"/hyperparameterTuningJobs/{run.states[job.name]['job_id']}"
    )
    assert run.depends_on(gate, job)
    tuning = run.outputs["models"]["tensorflow"]["tuning"]
    assert tuning["best_trial"] == "2" and tuning["best_objective"] == 0.991
    assert "tuning" not in run_gcp(t10k_dir).outputs["models"]["tensorflow"]


def test_the_bounded_training_rule_bounds_the_vertex_tuning_job(t10k_dir: Path) -> None:
    from policy.rules import TrainingLimits, training_bounds_violations

    job = run_gcp(t10k_dir, {**TUNED, "trainingReplicaCount": 2}).one(TUNING_JOB)
    assert training_bounds_violations(job.typ, job.inputs) == []
    assert training_bounds_violations(job.typ, job.inputs, TrainingLimits(max_tuning_instance_hours=3)) == [
        "the vertex:HyperparameterTuningJob may use 4 instance-hours (2 trials x 2 instances x 3600 s), more "
        "than the limit 3 (maxTuningInstanceHours in the policy pack config)"
    ]


# -- the provider against the Vertex fake, trials that really train ----------------------------------


def tuning_props(vertex: VertexFake, args: list[str], **overrides: Any) -> dict[str, Any]:
    return {
        "project": vertex.project,
        "region": vertex.location,
        "display_name": "mnist-gcp-tensorflow-tuning-abc",
        "image_uri": "us-central1-docker.pkg.dev/mnist-test/mnist-gcp/mnist-platform:0123456789ab",
        "command": [sys.executable, "-m", "training.tf_trainer"],
        "args": args,
        "base_output_directory": f"gs://{BUCKET}/tuning/abc",
        "service_account": "mnist-gcp-train@mnist-test.iam.gserviceaccount.com",
        "study_spec": {
            "metrics": [{"metric_id": "accuracy", "goal": "MAXIMIZE"}],
            "parameters": [
                {"parameter_id": "width", "categorical_value_spec": {"values": ["4", "16"]}},
            ],
            "algorithm": "GRID_SEARCH",
        },
        "max_trial_count": 2.0,  # numbers reach a provider as floats
        "parallel_trial_count": 2.0,
        "instance_type": "n1-standard-4",
        "instance_count": 1.0,
        "max_runtime_seconds": 600.0,
        "labels": {"project": "mnist-platform", "stack": "gcp"},
        "kms_key_name": None,
        "api_endpoint": vertex.api_endpoint,
        "poll_seconds": 0.2,
        "identity_seed": "0123456789abcdef",
        **overrides,
    }


@pytest.fixture
def staged(gcs_fake: GcsFake, t10k: Split) -> str:
    """The dataset as the stack stages it (train.npz, test.npz) in the Cloud Storage fake."""
    write_npz(t10k, gcs_fake.path_of(f"gs://{BUCKET}/data/t10k"))
    return f"gs://{BUCKET}/data/t10k"


def test_two_trials_really_train_report_accuracy_and_the_best_is_handed_to_the_gate(
    vertex_fake: VertexFake, gcs_fake: GcsFake, staged: str
) -> None:
    provider = VertexTuningJobProvider()
    props = tuning_props(vertex_fake, ["--data", staged, "--dry-run", "--set", "epochs=1"])
    result = provider.create(props)
    outs = result.outs or {}
    job_id = outs["job_id"]
    assert outs["state"] == "JOB_STATE_SUCCEEDED"
    # The fake scored each trial from the metric file the trainer wrote with cloudml-hypertune.
    job = vertex_fake.tuning.jobs[job_id]
    scores = {t.id: (t.final or {})["metrics"][0]["value"] for t in job.trials}
    assert sorted(t.parameters["width"] for t in job.trials) == ["16", "4"]  # the grid, each once
    for trial in job.trials:
        metrics = json.loads(
            (gcs_fake.path_of(f"gs://{BUCKET}/tuning/abc/{trial.id}") / "metrics.json").read_text()
        )
        assert metrics["hyperparameters"]["width"] == int(trial.parameters["width"])  # --width=<v> reached it
        assert metrics["accuracy"] == pytest.approx(scores[trial.id])  # what the trial reported
        assert (gcs_fake.path_of(f"gs://{BUCKET}/tuning/abc/{trial.id}/model") / "saved_model.pb").exists()
    best = vertex_fake.tuning.best_trial(job_id)
    assert best is not None
    assert outs["best_trial"] == best and scores[best] == max(scores.values())
    assert outs["model_dir"] == f"gs://{BUCKET}/tuning/abc/{best}/model"
    assert outs["metrics_uri"] == f"gs://{BUCKET}/tuning/abc/{best}/metrics.json"
    summary = outs["summary"]
    assert summary["trials"] == 2 and summary["completed"] == 2 and summary["failed"] == 0
    assert summary["strategy"] == "Grid" and summary["objective"] == {
        "metric": "accuracy",
        "goal": "Maximize",
    }
    assert summary["best_objective"] == pytest.approx(scores[best])
    assert summary["best_hyperparameters"] == {"width": job.trials[int(best) - 1].parameters["width"]}
    assert summary["spread"]["min"] == pytest.approx(min(scores.values()))

    # A second `up` (the state lost, the create run again) adopts the job of its identity, trains nothing.
    again = provider.create(props).outs or {}
    assert again["name"] == outs["name"] and len(vertex_fake.tuning.jobs) == 1

    provider.delete(result.id, {**props, **outs})
    assert vertex_fake.tuning.jobs == {} and not vertex_fake.running_processes()
    assert provider.read(result.id, {**props, **outs}).id is None
    provider.delete(result.id, {**props, **outs})  # already gone: success


FAILS = "import sys; sys.exit('the trainer broke')"
NO_METRIC = "print('trained, reported nothing')"


def test_a_job_whose_trials_all_fail_names_each_trials_reason(vertex_fake: VertexFake) -> None:
    props = tuning_props(vertex_fake, [], command=[sys.executable, "-c", FAILS])
    with pytest.raises(GcpProviderError) as error:
        VertexTuningJobProvider().create(props)
    message = str(error.value)
    assert "ended JOB_STATE_FAILED: All trials failed." in message
    assert "1 INFEASIBLE The replica workerpool0-0 exited with a non-zero status of 1." in message
    props = tuning_props(vertex_fake, [], command=[sys.executable, "-c", NO_METRIC], display_name="other")
    with pytest.raises(GcpProviderError, match="The trial reported no metric 'accuracy'"):
        VertexTuningJobProvider().create(props)


# Trial 1 reports at once (as the trainer does, through cloudml-hypertune); trial 2 trains on and on.
ONE_DONE_ONE_RUNNING = (
    "import os, time, hypertune\n"
    "if os.environ['CLOUD_ML_TRIAL_ID'] == '1':\n"
    "    hypertune.HyperTune().report_hyperparameter_tuning_metric('accuracy', 0.9, 1)\n"
    "else:\n"
    "    time.sleep(60)\n"
)


def test_a_tuning_job_cancelled_while_it_runs_fails_the_update_and_bills_nothing(
    vertex_fake: VertexFake,
) -> None:
    """Cancelled (in the console) after one trial succeeded: the update fails, the succeeded trial is not
    taken for a finished search, and no trial is left running."""
    props = tuning_props(vertex_fake, [], command=[sys.executable, "-c", ONE_DONE_ONE_RUNNING])
    client = job_client(vertex_fake)

    def cancel_once_a_trial_succeeded() -> None:
        while True:
            jobs = list(vertex_fake.tuning.jobs.values())
            trials = jobs[0].trials if jobs else []
            if [t.state for t in trials] == ["SUCCEEDED", "ACTIVE"]:
                client.cancel_hyperparameter_tuning_job(name=vertex_fake.tuning.job_name(jobs[0].id))
                return
            time.sleep(0.1)

    threading.Thread(target=cancel_once_a_trial_succeeded, daemon=True).start()
    with pytest.raises(GcpProviderError, match="ended JOB_STATE_CANCELLED: CANCELED") as error:
        VertexTuningJobProvider().create(props)
    assert "1 SUCCEEDED" in str(error.value)
    assert not vertex_fake.running_processes()


def test_the_fake_refuses_what_the_discovery_document_and_vertex_refuse(vertex_fake: VertexFake) -> None:
    from google.cloud import aiplatform_v1

    client = job_client(vertex_fake)
    body = {
        "display_name": "x",
        "study_spec": {"metrics": [{"metric_id": "accuracy", "goal": "MAXIMIZE"}], "parameters": []},
        "max_trial_count": 2,
        "parallel_trial_count": 1,
        "trial_job_spec": {
            "worker_pool_specs": [
                {
                    "machine_spec": {"machine_type": "n1-standard-4"},
                    "replica_count": 1,
                    "container_spec": {"image_uri": "i", "command": ["true"]},
                }
            ]
        },
    }
    # "Required." in the document: study_spec.parameters.
    with pytest.raises(
        exceptions.BadRequest, match=re.escape("study_spec.parameters; Message: Required field is not set")
    ):
        client.create_hyperparameter_tuning_job(
            parent=vertex_fake.parent, hyperparameter_tuning_job=aiplatform_v1.HyperparameterTuningJob(body)
        )
    # The value specs are a oneof (the client keeps one); a parameter with none is refused.
    body["study_spec"]["parameters"] = [{"parameter_id": "width"}]
    with pytest.raises(exceptions.BadRequest, match="exactly one value spec"):
        client.create_hyperparameter_tuning_job(
            parent=vertex_fake.parent, hyperparameter_tuning_job=aiplatform_v1.HyperparameterTuningJob(body)
        )


def test_a_tuning_job_whose_create_is_interrupted_by_ctrl_c_is_cancelled_not_left_billing(
    vertex_fake: VertexFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra.gcp import tuning_job

    def ctrl_c_once_trials_run(client: Any, name: str, *args: Any, **kwargs: Any) -> Any:
        while not vertex_fake.running_processes():
            time.sleep(0.1)
        raise KeyboardInterrupt

    monkeypatch.setattr(tuning_job, "wait_until_done", ctrl_c_once_trials_run)
    props = tuning_props(vertex_fake, [], command=[sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(KeyboardInterrupt):
        VertexTuningJobProvider().create(props)
    (job,) = vertex_fake.tuning.jobs.values()
    assert vertex_fake.tuning.wait(job.id, timeout=60) == "JOB_STATE_CANCELLED"
    assert not vertex_fake.running_processes()

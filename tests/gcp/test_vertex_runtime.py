"""The project's image as Vertex AI runs it, proved on the Vertex fake: the custom job's container command
(the TF trainer) on two replicas with the TF_CONFIG Vertex writes, then the model's serving command
(`mnistctl serve --flavor vertex` on the AIP_* environment) behind an endpoint, asked through Google's
PredictionServiceClient."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from gcp_fakes import VertexFake
from gcp_fakes.clients import endpoint_client, job_client, model_client, prediction_client
from google.cloud import aiplatform_v1

from infra.gcp.image_context import HEALTH_ROUTE, PREDICT_ROUTE, SERVE_COMMAND, SERVING_PORT, TRAIN_COMMAND
from training.datasets import load_dataset
from training.formats import write_npz

pytestmark = pytest.mark.slow

IMAGE = "us-central1-docker.pkg.dev/mnist-test/mnist/mnist-platform:0123abcd"
OUTPUT = "gs://mnist-bucket/jobs/distributed"
HELD_OUT = 20


def _two_replica_job() -> aiplatform_v1.CustomJob:
    container = {
        "image_uri": IMAGE,
        "command": list(TRAIN_COMMAND),
        "args": ["--data", "gs://mnist-bucket/data", "--dry-run"],
    }
    pool = {
        "machine_spec": {"machine_type": "n1-standard-4"},
        "replica_count": 1,
        "container_spec": container,
    }
    return aiplatform_v1.CustomJob(
        display_name="mnist-distributed",
        job_spec={
            "worker_pool_specs": [pool, pool],  # pool 0: the chief; pool 1: one worker
            "base_output_directory": {"output_uri_prefix": OUTPUT},
            "scheduling": {"timeout": "900s"},
        },
    )


def test_a_chief_and_a_worker_train_together_only_the_chief_exports_and_the_model_serves_on_vertex(
    vertex_fake: VertexFake, t10k_dir: Path
) -> None:
    split = load_dataset("mnist-t10k", t10k_dir)
    write_npz(split, vertex_fake.gcs.path_of("gs://mnist-bucket/data"))
    jobs = job_client(vertex_fake)

    job = jobs.create_custom_job(parent=vertex_fake.parent, custom_job=_two_replica_job())
    job_id = job.name.rsplit("/", 1)[-1]
    state = vertex_fake.wait_for_job(job_id, timeout=900)
    log = vertex_fake.job_log(job_id)
    assert state == "JOB_STATE_SUCCEEDED", log[-3000:]

    # Only the chief wrote to the job's output: the SavedModel, its metrics and hyperparameters.
    output = vertex_fake.gcs.path_of(OUTPUT)
    assert sorted(p.name for p in output.iterdir()) == ["hyperparameters.json", "metrics.json", "model"]
    assert (output / "model" / "saved_model.pb").is_file()
    metrics = json.loads((output / "metrics.json").read_text())
    # The worker evaluated the same synchronised weights: the two replicas report one accuracy.
    reported = {float(a) for a in re.findall(r'"accuracy": ([0-9.]+)', log)}
    assert reported == {metrics["accuracy"]}, log[-3000:]

    model = aiplatform_v1.Model(
        display_name="mnist-tensorflow",
        artifact_uri=f"{OUTPUT}/model",
        container_spec={
            "image_uri": IMAGE,
            "command": list(SERVE_COMMAND),
            "ports": [{"container_port": SERVING_PORT}],
            "health_route": HEALTH_ROUTE,
            "predict_route": PREDICT_ROUTE,
        },
    )
    model_name = (
        model_client(vertex_fake).upload_model(parent=vertex_fake.parent, model=model).result(30).model
    )
    endpoint = vertex_fake.add_endpoint("4242")
    deployed = aiplatform_v1.DeployedModel(
        model=model_name,
        dedicated_resources={
            "machine_spec": {"machine_type": "n1-standard-2"},
            "min_replica_count": 1,
            "max_replica_count": 1,
        },
    )
    endpoints = endpoint_client(vertex_fake)
    result = endpoints.deploy_model(
        endpoint=endpoint, deployed_model=deployed, traffic_split={"0": 100}
    ).result(300)

    images = split.x_test[:HELD_OUT].reshape(HELD_OUT, 784).astype(np.float32) / 255.0
    reply = prediction_client(vertex_fake).predict(endpoint=endpoint, instances=images.tolist())
    classes = [int(p["classes"]) for p in reply.predictions]
    probabilities = np.array([list(p["probabilities"]) for p in reply.predictions])
    assert reply.deployed_model_id == result.deployed_model.id
    assert probabilities.shape == (HELD_OUT, 10) and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    assert classes == probabilities.argmax(axis=1).tolist()
    assert np.mean(np.array(classes) == split.y_test[:HELD_OUT]) >= 0.5  # a dry run: 512 images, 2 epochs

    endpoints.undeploy_model(endpoint=endpoint, deployed_model_id=result.deployed_model.id).result(60)
    deadline = time.monotonic() + 30
    while vertex_fake.running_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not vertex_fake.running_processes()

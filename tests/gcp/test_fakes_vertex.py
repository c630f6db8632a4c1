"""The Vertex AI fake, driven by Google's own v1 clients: jobs run for real with Vertex's environment,
deployments serve through the endpoint, and the failure modes the providers must handle are there
(job failure, cancel, 404, 429/503, slow operations, deleting a deployed model)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from gcp_fakes import GcsFake, VertexFake
from gcp_fakes.clients import endpoint_client, job_client, model_client, prediction_client, storage_client
from google.api_core import exceptions
from google.cloud import aiplatform_v1

STAND_IN_SERVER = Path(__file__).parent / "gcp_fakes" / "stand_in_server.py"
JobState = aiplatform_v1.JobState


def _job(command: list[str], replicas: int = 1, timeout: str = "600s") -> aiplatform_v1.CustomJob:
    container = {"image_uri": "us-central1-docker.pkg.dev/p/r/mnist:1", "command": command}
    pool = {"machine_spec": {"machine_type": "n1-standard-4"}, "container_spec": container}
    pools = [{**pool, "replica_count": 1}]
    if replicas > 1:
        pools.append({**pool, "replica_count": replicas - 1})
    return aiplatform_v1.CustomJob(
        display_name="mnist-test-job",
        job_spec={
            "worker_pool_specs": pools,
            "base_output_directory": {"output_uri_prefix": "gs://mnist-bucket/jobs/1"},
            "scheduling": {"timeout": timeout},
        },
    )


# Writes the Vertex environment it sees to <AIP_MODEL_DIR>/env-<task>.json (AIP_MODEL_DIR is a local
# folder here: the fake maps gs:// as Cloud Storage FUSE maps it to /gcs/).
RECORD_ENV = (
    "import json, os, pathlib\n"
    "task = json.loads(os.environ['TF_CONFIG'])['task']\n"
    "out = pathlib.Path(os.environ['AIP_MODEL_DIR'])\n"
    "out.mkdir(parents=True, exist_ok=True)\n"
    "keys = ('AIP_MODEL_DIR', 'AIP_CHECKPOINT_DIR', 'AIP_TENSORBOARD_LOG_DIR', 'CLOUD_ML_JOB_ID',"
    " 'TF_CONFIG', 'CLUSTER_SPEC')\n"
    "seen = json.dumps({k: os.environ[k] for k in keys})\n"
    "(out / f\"env-{task['type']}-{task['index']}.json\").write_text(seen)\n"
)


def _wait(
    client: aiplatform_v1.JobServiceClient, name: str, states: set[JobState], timeout: float = 60
) -> JobState:
    deadline = time.monotonic() + timeout
    while (state := client.get_custom_job(name=name).state) not in states:
        assert time.monotonic() < deadline, f"job still {state.name}"
        time.sleep(0.1)
    return state


def test_a_job_runs_its_container_command_with_the_environment_vertex_sets(vertex_fake: VertexFake) -> None:
    client = job_client(vertex_fake)
    job = client.create_custom_job(parent=vertex_fake.parent, custom_job=_job(["python", "-c", RECORD_ENV]))
    assert job.state == JobState.JOB_STATE_PENDING
    assert job.name.startswith(f"projects/{vertex_fake.project_number}/locations/us-central1/customJobs/")

    assert _wait(client, job.name, {JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED}) == (
        JobState.JOB_STATE_SUCCEEDED
    )
    output = vertex_fake.gcs.path_of("gs://mnist-bucket/jobs/1")
    env = json.loads((output / "model" / "env-chief-0.json").read_text())
    assert env["AIP_MODEL_DIR"] == f"{output}/model/"
    assert env["AIP_CHECKPOINT_DIR"] == f"{output}/checkpoints/"
    assert env["AIP_TENSORBOARD_LOG_DIR"] == f"{output}/logs/"
    assert env["CLOUD_ML_JOB_ID"] == job.name.rsplit("/", 1)[-1]
    assert json.loads(env["TF_CONFIG"])["task"] == {"type": "chief", "index": 0}
    finished = client.get_custom_job(name=job.name)
    assert finished.start_time and finished.end_time


def test_a_distributed_job_gives_each_replica_its_place_in_the_cluster(vertex_fake: VertexFake) -> None:
    client = job_client(vertex_fake)
    job = client.create_custom_job(
        parent=vertex_fake.parent, custom_job=_job(["python", "-c", RECORD_ENV], 3)
    )
    _wait(client, job.name, {JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED})

    model_dir = vertex_fake.gcs.path_of("gs://mnist-bucket/jobs/1/model")
    seen = {p.stem: json.loads(p.read_text()) for p in model_dir.glob("env-*.json")}
    assert set(seen) == {"env-chief-0", "env-worker-0", "env-worker-1"}
    tf_configs = [json.loads(e["TF_CONFIG"]) for e in seen.values()]
    cluster = tf_configs[0]["cluster"]
    assert len(cluster["chief"]) == 1 and len(cluster["worker"]) == 2
    assert len(set(cluster["chief"] + cluster["worker"])) == 3  # one loopback port per replica
    assert all(c["cluster"] == cluster and c["environment"] == "cloud" for c in tf_configs)
    spec = json.loads(seen["env-worker-1"]["CLUSTER_SPEC"])
    assert spec["cluster"] == {"workerpool0": cluster["chief"], "workerpool1": cluster["worker"]}
    assert spec["task"] == {"type": "workerpool1", "index": 1}


def test_a_failing_process_fails_the_job_with_vertex_s_message(vertex_fake: VertexFake) -> None:
    client = job_client(vertex_fake)
    job = client.create_custom_job(
        parent=vertex_fake.parent, custom_job=_job(["python", "-c", "import sys; sys.exit('bad data')"])
    )
    assert _wait(client, job.name, {JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED}) == (
        JobState.JOB_STATE_FAILED
    )
    failed = client.get_custom_job(name=job.name)
    assert "workerpool0-0 exited with a non-zero status of 1" in failed.error.message
    assert "bad data" in vertex_fake.job_log(job.name.rsplit("/", 1)[-1])


def test_cancel_stops_a_running_job_and_only_then_can_it_be_deleted(vertex_fake: VertexFake) -> None:
    client = job_client(vertex_fake)
    job = client.create_custom_job(
        parent=vertex_fake.parent, custom_job=_job(["python", "-c", "import time; time.sleep(300)"])
    )
    _wait(client, job.name, {JobState.JOB_STATE_RUNNING})
    with pytest.raises(exceptions.BadRequest, match="cancel it first"):
        client.delete_custom_job(name=job.name)

    client.cancel_custom_job(name=job.name)
    assert _wait(client, job.name, {JobState.JOB_STATE_CANCELLED}, timeout=30) == JobState.JOB_STATE_CANCELLED
    assert not vertex_fake.running_processes()
    client.delete_custom_job(name=job.name).result(timeout=10)

    with pytest.raises(exceptions.NotFound):
        client.get_custom_job(name=job.name)
    with pytest.raises(exceptions.NotFound):
        client.delete_custom_job(name=job.name)


def test_a_job_past_its_timeout_fails(vertex_fake: VertexFake) -> None:
    client = job_client(vertex_fake)
    job = client.create_custom_job(
        parent=vertex_fake.parent,
        custom_job=_job(["python", "-c", "import time; time.sleep(300)"], timeout="1s"),
    )
    assert _wait(client, job.name, {JobState.JOB_STATE_FAILED}, timeout=30) == JobState.JOB_STATE_FAILED
    assert "timeout" in client.get_custom_job(name=job.name).error.message


def test_injected_429_and_503_reach_the_client_once_each(vertex_fake: VertexFake) -> None:
    client = job_client(vertex_fake)
    vertex_fake.fail_next("POST", r"/customJobs$", 429)
    vertex_fake.fail_next("GET", r"/customJobs/\d+$", 503)
    with pytest.raises(exceptions.TooManyRequests):
        client.create_custom_job(parent=vertex_fake.parent, custom_job=_job(["python", "-c", "pass"]))
    job = client.create_custom_job(parent=vertex_fake.parent, custom_job=_job(["python", "-c", "pass"]))
    with pytest.raises(exceptions.ServiceUnavailable):
        client.get_custom_job(name=job.name)
    _wait(client, job.name, {JobState.JOB_STATE_SUCCEEDED})
    assert len(vertex_fake.requests_to("POST", r"/customJobs$")) == 2


def test_a_model_upload_is_a_slow_operation_and_a_deployed_model_cannot_be_deleted(
    vertex_fake: VertexFake,
) -> None:
    models = model_client(vertex_fake)
    vertex_fake.slow_operations(polls=2)
    operation = models.upload_model(parent=vertex_fake.parent, model=_model("gs://mnist-bucket/jobs/1/model"))
    assert not operation.done()
    assert not operation.done()
    assert operation.done()
    model_name = operation.result(timeout=10).model
    vertex_fake.slow_operations(polls=0)
    assert models.get_model(name=model_name).container_spec.predict_route == "/predict"

    endpoint = vertex_fake.add_endpoint("1234567890")
    endpoints = endpoint_client(vertex_fake)
    deployed = endpoints.deploy_model(
        endpoint=endpoint, deployed_model=_deployed(model_name), traffic_split={"0": 100}
    ).result(timeout=120)
    with pytest.raises(exceptions.BadRequest, match="is deployed or being deployed"):
        models.delete_model(name=model_name)

    endpoints.undeploy_model(endpoint=endpoint, deployed_model_id=deployed.deployed_model.id).result(
        timeout=60
    )
    models.delete_model(name=model_name).result(timeout=10)
    with pytest.raises(exceptions.NotFound):
        models.get_model(name=model_name)


def _model(artifact_uri: str) -> aiplatform_v1.Model:
    return aiplatform_v1.Model(
        display_name="mnist-tensorflow",
        artifact_uri=artifact_uri,
        container_spec={
            "image_uri": "us-central1-docker.pkg.dev/p/r/mnist:1",
            "command": [sys.executable, str(STAND_IN_SERVER)],
            "ports": [{"container_port": 8080}],
            "health_route": "/health",
            "predict_route": "/predict",
        },
    )


def _deployed(model_name: str) -> aiplatform_v1.DeployedModel:
    return aiplatform_v1.DeployedModel(
        model=model_name,
        display_name="mnist",
        dedicated_resources={
            "machine_spec": {"machine_type": "n1-standard-2"},
            "min_replica_count": 1,
            "max_replica_count": 1,
        },
    )


def test_a_deployment_runs_the_serving_command_with_the_aip_environment_and_predict_reaches_it(
    vertex_fake: VertexFake,
) -> None:
    vertex_fake.gcs.put("gs://mnist-bucket/jobs/1/model/saved_model.pb", b"graph")
    model_name = (
        model_client(vertex_fake)
        .upload_model(parent=vertex_fake.parent, model=_model("gs://mnist-bucket/jobs/1/model"))
        .result(timeout=10)
        .model
    )
    endpoint = vertex_fake.add_endpoint("1234567890")
    endpoints = endpoint_client(vertex_fake)
    first = endpoints.deploy_model(
        endpoint=endpoint, deployed_model=_deployed(model_name), traffic_split={"0": 100}
    ).result(timeout=120)

    reply = prediction_client(vertex_fake).predict(endpoint=endpoint, instances=[[0.0] * 784])
    assert reply.deployed_model_id == first.deployed_model.id
    env = dict(reply.predictions[0]["env"])
    # Vertex AI serves a copy of the artifacts in a bucket of its own, not the user's bucket.
    assert env["AIP_STORAGE_URI"].startswith(f"gs://{vertex_fake.managed_bucket}/")
    copy = vertex_fake.gcs.path_of(str(env["AIP_STORAGE_URI"]))
    assert (copy / "saved_model.pb").read_bytes() == b"graph"
    assert env["AIP_HEALTH_ROUTE"] == "/health" and env["AIP_PREDICT_ROUTE"] == "/predict"
    assert env["AIP_DEPLOYED_MODEL_ID"] == first.deployed_model.id and env["AIP_HTTP_PORT"].isdigit()

    # A second deployment with all the traffic; the first can then be undeployed without a gap.
    second = endpoints.deploy_model(
        endpoint=endpoint, deployed_model=_deployed(model_name), traffic_split={"0": 100}
    ).result(timeout=120)
    state = endpoints.get_endpoint(name=endpoint)
    assert dict(state.traffic_split) == {second.deployed_model.id: 100}
    assert prediction_client(vertex_fake).predict(
        endpoint=endpoint, instances=[[0.0] * 784]
    ).deployed_model_id == (second.deployed_model.id)
    with pytest.raises(exceptions.BadRequest, match="traffic"):  # the serving one needs a new split first
        endpoints.undeploy_model(endpoint=endpoint, deployed_model_id=second.deployed_model.id)
    endpoints.undeploy_model(endpoint=endpoint, deployed_model_id=first.deployed_model.id).result(timeout=60)
    assert [d.id for d in endpoints.get_endpoint(name=endpoint).deployed_models] == [second.deployed_model.id]
    with pytest.raises(exceptions.NotFound):
        endpoints.undeploy_model(endpoint=endpoint, deployed_model_id=first.deployed_model.id)
    assert len(vertex_fake.running_processes()) == 1


def test_a_deployment_whose_server_exits_fails_its_operation(vertex_fake: VertexFake) -> None:
    model = _model("gs://mnist-bucket/jobs/1/model")
    model.container_spec.command = [sys.executable, "-c", "raise SystemExit(3)"]
    model_name = (
        model_client(vertex_fake).upload_model(parent=vertex_fake.parent, model=model).result(10).model
    )
    endpoint = vertex_fake.add_endpoint("42")
    operation = endpoint_client(vertex_fake).deploy_model(
        endpoint=endpoint, deployed_model=_deployed(model_name), traffic_split={"0": 100}
    )
    with pytest.raises(exceptions.GoogleAPICallError, match="Model server exited unexpectedly"):
        operation.result(timeout=60)
    assert not endpoint_client(vertex_fake).get_endpoint(name=endpoint).deployed_models


def test_unknown_resources_are_404(vertex_fake: VertexFake) -> None:
    with pytest.raises(exceptions.NotFound):
        job_client(vertex_fake).get_custom_job(name=f"{vertex_fake.parent}/customJobs/404")
    with pytest.raises(exceptions.NotFound):
        model_client(vertex_fake).delete_model(name=f"{vertex_fake.parent}/models/404")
    with pytest.raises(exceptions.NotFound):
        endpoint_client(vertex_fake).undeploy_model(
            endpoint=f"{vertex_fake.parent}/endpoints/404", deployed_model_id="1"
        )


def test_the_storage_fake_serves_what_jobs_wrote(gcs_fake: GcsFake) -> None:
    gcs_fake.put("gs://mnist-bucket/jobs/1/metrics.json", b'{"accuracy": 0.99}')
    client = storage_client(gcs_fake)
    blob = client.bucket("mnist-bucket").blob("jobs/1/metrics.json")
    assert json.loads(blob.download_as_text()) == {"accuracy": 0.99}
    assert [b.name for b in client.list_blobs("mnist-bucket", prefix="jobs/")] == ["jobs/1/metrics.json"]
    client.bucket("mnist-bucket").blob("jobs/2/model/saved_model.pb").upload_from_string(b"\x08\x01")
    assert gcs_fake.path_of("gs://mnist-bucket/jobs/2/model/saved_model.pb").read_bytes() == b"\x08\x01"
    with pytest.raises(exceptions.NotFound):
        client.bucket("mnist-bucket").blob("missing").download_as_bytes()

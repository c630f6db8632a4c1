"""The stack's dynamic providers, with Google's real v1 clients pointed at the loopback fakes
(tests/gcp/gcp_fakes): create waits, failures say why and where to look, cancel, delete, 404, retry."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from gcp_fakes import CloudBuildFake, GcsFake, VertexFake
from gcp_fakes.clients import endpoint_client, job_client, registry_client
from google.api_core import exceptions
from google.cloud import aiplatform_v1

from infra.gcp.clients import GcpProviderError
from infra.gcp.custom_job import VertexCustomJobProvider
from infra.gcp.deployment import VertexDeploymentProvider
from infra.gcp.image_build import CloudBuildImageProvider
from infra.gcp.model import VertexModelProvider
from infra.gcp.names import ImageRef

STAND_IN_SERVER = Path(__file__).parent / "gcp_fakes" / "stand_in_server.py"
IMAGE = "us-central1-docker.pkg.dev/mnist-test/mnist-gcp/mnist-platform:0123456789ab"
BUCKET = "mnist-bucket"
# A "trainer": exports a model folder to AIP_MODEL_DIR and metrics.json beside it, as the TF trainer does.
EXPORT = (
    "import json, os, pathlib\n"
    "model = pathlib.Path(os.environ['AIP_MODEL_DIR'])\n"
    "model.mkdir(parents=True, exist_ok=True)\n"
    "(model / 'saved_model.pb').write_bytes(b'model')\n"
    "(model.parent / 'metrics.json').write_text(json.dumps({'accuracy': 0.987}))\n"
)


def job_props(vertex: VertexFake, gcs: GcsFake, code: str = EXPORT, **overrides: Any) -> dict[str, Any]:
    return {
        "project": vertex.project,
        "region": vertex.location,
        "display_name": "mnist-gcp-tensorflow-abc",
        "image_uri": IMAGE,
        "command": [sys.executable, "-c", code],
        "args": [],
        "base_output_directory": f"gs://{BUCKET}/jobs/abc",
        "service_account": "mnist-gcp-train@mnist-test.iam.gserviceaccount.com",
        "instance_type": "n1-standard-4",
        "instance_count": 1.0,  # numbers reach a provider as floats
        "max_runtime_seconds": 600.0,
        "labels": {"project": "mnist-platform", "stack": "gcp"},
        "kms_key_name": None,
        "api_endpoint": vertex.api_endpoint,
        "storage_api_endpoint": gcs.api_endpoint,
        "poll_seconds": 0.1,
        **overrides,
    }


# -- custom job ----------------------------------------------------------------------------------


def test_job_create_waits_for_success_and_reads_the_trainers_metrics(
    vertex_fake: VertexFake, gcs_fake: GcsFake
) -> None:
    result = VertexCustomJobProvider().create(job_props(vertex_fake, gcs_fake))
    outs = result.outs
    assert outs["state"] == "JOB_STATE_SUCCEEDED"
    assert result.id == outs["name"] and outs["name"].endswith(f"/customJobs/{outs['job_id']}")
    assert outs["model_dir"] == f"gs://{BUCKET}/jobs/abc/model"
    assert outs["metrics"] == {"accuracy": 0.987}
    assert (gcs_fake.path_of(outs["model_dir"]) / "saved_model.pb").read_bytes() == b"model"
    (sent,) = vertex_fake.requests_to("POST", r"/customJobs$")
    spec = sent.json["jobSpec"]
    assert spec["scheduling"]["timeout"] == "600s"
    assert spec["serviceAccount"] == "mnist-gcp-train@mnist-test.iam.gserviceaccount.com"
    assert spec["baseOutputDirectory"] == {"outputUriPrefix": f"gs://{BUCKET}/jobs/abc"}
    assert [int(p["replicaCount"]) for p in spec["workerPoolSpecs"]] == [1]  # int64: a JSON string


def test_a_distributed_job_runs_one_chief_and_the_other_workers_in_pool_1(
    vertex_fake: VertexFake, gcs_fake: GcsFake
) -> None:
    record_task = (
        "import json, os, pathlib\n"
        "task = json.loads(os.environ['TF_CONFIG'])['task']\n"
        "out = pathlib.Path(os.environ['AIP_MODEL_DIR'])\n"
        "out.mkdir(parents=True, exist_ok=True)\n"
        "(out / f\"{task['type']}-{task['index']}\").write_text('')\n"
    )
    props = job_props(vertex_fake, gcs_fake, record_task, instance_count=3.0)
    outs = VertexCustomJobProvider().create(props).outs
    tasks = sorted(p.name for p in gcs_fake.path_of(outs["model_dir"]).iterdir())
    assert tasks == ["chief-0", "worker-0", "worker-1"]
    pools = vertex_fake.requests_to("POST", r"/customJobs$")[0].json["jobSpec"]["workerPoolSpecs"]
    assert [int(p["replicaCount"]) for p in pools] == [1, 2]
    assert pools[0]["containerSpec"] == pools[1]["containerSpec"]
    assert outs["metrics"] == {}  # this stand-in wrote none: a warning, not a failed update


def test_a_failed_job_raises_with_its_error_and_console_link(
    vertex_fake: VertexFake, gcs_fake: GcsFake
) -> None:
    crash = "import sys; print('unknown hyperparameter epocs', file=sys.stderr); sys.exit(3)"
    with pytest.raises(GcpProviderError) as error:
        VertexCustomJobProvider().create(job_props(vertex_fake, gcs_fake, crash))
    message = str(error.value)
    assert "JOB_STATE_FAILED" in message
    assert "https://console.cloud.google.com/vertex-ai/locations/us-central1/training/" in message
    assert "pulumi up" in message


def test_job_create_retries_429_and_503(vertex_fake: VertexFake, gcs_fake: GcsFake) -> None:
    vertex_fake.fail_next("POST", r"/customJobs$", 429)
    vertex_fake.fail_next("GET", r"/customJobs/\d+$", 503)
    outs = VertexCustomJobProvider().create(job_props(vertex_fake, gcs_fake)).outs
    assert outs["state"] == "JOB_STATE_SUCCEEDED"
    assert len(vertex_fake.requests_to("POST", r"/customJobs$")) == 2


ACT_AS_DENIED = (
    "Permission 'iam.serviceAccounts.actAs' denied on service account "
    "mnist-gcp-train@mnist-test.iam.gserviceaccount.com (or it may not exist)."
)


def test_a_permission_denied_is_retried_while_a_fresh_grant_propagates(
    vertex_fake: VertexFake, gcs_fake: GcsFake
) -> None:
    """The stack uses its accounts and grants seconds after making them; Google answers 403 until they have
    propagated (typically 2 minutes, up to 7)."""
    vertex_fake.fail_next("POST", r"/customJobs$", 403, times=2, message=ACT_AS_DENIED)
    outs = VertexCustomJobProvider().create(job_props(vertex_fake, gcs_fake)).outs
    assert outs["state"] == "JOB_STATE_SUCCEEDED"
    assert len(vertex_fake.requests_to("POST", r"/customJobs$")) == 3


def test_a_permission_that_stays_missing_fails_with_googles_message(
    vertex_fake: VertexFake, gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra.gcp import clients

    monkeypatch.setattr(clients, "IAM_PROPAGATION_SECONDS", 2.0)
    vertex_fake.fail_next("POST", r"/customJobs$", 403, times=100, message=ACT_AS_DENIED)
    with pytest.raises(exceptions.Forbidden, match=r"iam\.serviceAccounts\.actAs"):  # REST: HTTP 403
        VertexCustomJobProvider().create(job_props(vertex_fake, gcs_fake))
    assert not vertex_fake.jobs


def test_deleting_a_running_job_cancels_it_waits_then_deletes_it(
    vertex_fake: VertexFake, gcs_fake: GcsFake
) -> None:
    props = job_props(vertex_fake, gcs_fake, "import time; time.sleep(600)")
    client = job_client(vertex_fake)
    job = client.create_custom_job(
        parent=vertex_fake.parent, custom_job=aiplatform_v1.CustomJob(_body(props))
    )
    VertexCustomJobProvider().delete(job.name, props)
    assert vertex_fake.requests_to("POST", r":cancel$")
    with pytest.raises(exceptions.NotFound):
        client.get_custom_job(name=job.name)
    VertexCustomJobProvider().delete(job.name, props)  # already gone: nothing to do, no error


def _body(props: dict[str, Any]) -> dict[str, Any]:
    from infra.gcp.custom_job import custom_job_body

    return custom_job_body(props)


def test_a_job_changes_only_when_what_it_computes_changes(vertex_fake: VertexFake, gcs_fake: GcsFake) -> None:
    provider = VertexCustomJobProvider()
    olds = job_props(vertex_fake, gcs_fake)
    assert not provider.diff("j", olds, dict(olds)).changes
    assert not provider.diff("j", olds, {**olds, "poll_seconds": 30.0}).changes
    for key, value in (("args", ["--set", "epochs=4"]), ("image_uri", IMAGE + "x"), ("instance_count", 2.0)):
        assert provider.diff("j", olds, {**olds, key: value}).replaces == [key]


# -- model and deployment ------------------------------------------------------------------------


def model_props(vertex: VertexFake, artifact_uri: str) -> dict[str, Any]:
    return {
        "project": vertex.project,
        "region": vertex.location,
        "display_name": "mnist-gcp-tensorflow-1",
        "artifact_uri": artifact_uri,
        "image_uri": IMAGE,
        "command": [sys.executable, str(STAND_IN_SERVER)],
        "args": [],
        "env": {},
        "port": 8080.0,
        "predict_route": "/predict",
        "health_route": "/health",
        "labels": {"project": "mnist-platform", "stack": "gcp"},
        "kms_key_name": None,
        "api_endpoint": vertex.api_endpoint,
    }


def deployment_props(vertex: VertexFake, endpoint_id: str, model: str) -> dict[str, Any]:
    return {
        "project": vertex.project,
        "region": vertex.location,
        "endpoint": endpoint_id,
        "model": model,
        "display_name": "mnist-gcp-tensorflow",
        "service_account": "mnist-gcp-serve@mnist-test.iam.gserviceaccount.com",
        "instance_type": "n1-standard-2",
        "min_replicas": 1.0,
        "max_replicas": 2.0,
        "api_endpoint": vertex.api_endpoint,
    }


@pytest.mark.slow
def test_a_new_model_is_deployed_before_the_old_is_undeployed_and_undeploy_comes_before_model_delete(
    vertex_fake: VertexFake, gcs_fake: GcsFake
) -> None:
    gcs_fake.put(f"gs://{BUCKET}/jobs/1/model/saved_model.pb", b"one")
    gcs_fake.put(f"gs://{BUCKET}/jobs/2/model/saved_model.pb", b"two")
    endpoint_id = "1234567890"
    endpoint = vertex_fake.add_endpoint(endpoint_id)
    models, deployments = VertexModelProvider(), VertexDeploymentProvider()

    first_model = models.create(model_props(vertex_fake, f"gs://{BUCKET}/jobs/1/model"))
    uploaded = vertex_fake.requests_to("POST", r"/models:upload$")[0].json["model"]
    assert uploaded["containerSpec"]["ports"] == [{"containerPort": 8080}]
    assert uploaded["containerSpec"]["predictRoute"] == "/predict"
    first = deployments.create(deployment_props(vertex_fake, endpoint_id, first_model.id))
    (sent,) = vertex_fake.requests_to("POST", r":deployModel$")
    assert sent.json["trafficSplit"] == {"0": 100}
    dedicated = sent.json["deployedModel"]["dedicatedResources"]
    assert dedicated == {
        "machineSpec": {"machineType": "n1-standard-2"},
        "minReplicaCount": 1,
        "maxReplicaCount": 2,
    }

    # The model cannot go while deployed: a clear error, nothing removed.
    with pytest.raises(GcpProviderError, match="still deployed"):
        models.delete(first_model.id, first_model.outs)

    # A new model: deployed (all traffic) while the first still serves, then the first undeployed.
    second_model = models.create(model_props(vertex_fake, f"gs://{BUCKET}/jobs/2/model"))
    second = deployments.create(deployment_props(vertex_fake, endpoint_id, second_model.id))
    live = endpoint_client(vertex_fake).get_endpoint(name=endpoint)
    assert len(live.deployed_models) == 2
    # Each serving container runs as the serving account, not as Vertex AI's default identity.
    serving_account = deployment_props(vertex_fake, endpoint_id, "")["service_account"]
    assert [m.service_account for m in live.deployed_models] == [serving_account] * 2
    assert dict(live.traffic_split) == {second.outs["deployed_model_id"]: 100}
    deployments.delete(first.id, first.outs)
    models.delete(first_model.id, first_model.outs)
    live = endpoint_client(vertex_fake).get_endpoint(name=endpoint)
    assert [m.id for m in live.deployed_models] == [second.outs["deployed_model_id"]]

    # Destroy: undeploy, then delete the model; a second pass finds both gone (404 = done).
    deployments.delete(second.id, second.outs)
    models.delete(second_model.id, second_model.outs)
    deployments.delete(second.id, second.outs)
    models.delete(second_model.id, second_model.outs)
    assert not endpoint_client(vertex_fake).get_endpoint(name=endpoint).deployed_models
    assert not vertex_fake.running_processes()


@pytest.mark.parametrize("cancel_honoured", [True, False], ids=["cancelled", "finished-anyway"])
def test_a_deploy_that_times_out_leaves_nothing_deployed_to_bill(
    vertex_fake: VertexFake, gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch, cancel_honoured: bool
) -> None:
    from infra.gcp import deployment

    monkeypatch.setattr(deployment, "DEPLOY_WAIT_SECONDS", 1.0)
    vertex_fake.honour_cancel = cancel_honoured
    gcs_fake.put(f"gs://{BUCKET}/jobs/1/model/saved_model.pb", b"one")
    endpoint_id = "1234567890"
    endpoint = vertex_fake.add_endpoint(endpoint_id)
    slow = {**model_props(vertex_fake, f"gs://{BUCKET}/jobs/1/model"), "env": {"STAND_IN_START_SECONDS": "3"}}
    model = VertexModelProvider().create(slow)

    with pytest.raises(GcpProviderError, match="did not finish within 1s; it was cancelled"):
        VertexDeploymentProvider().create(deployment_props(vertex_fake, endpoint_id, model.id))

    assert vertex_fake.requests_to("POST", r"/operations/\d+:cancel$")
    vertex_fake.settle()  # whatever the deploy was going to do, it has done
    assert not endpoint_client(vertex_fake).get_endpoint(name=endpoint).deployed_models
    assert not vertex_fake.running_processes()
    VertexModelProvider().delete(model.id, model.outs)


def test_a_model_upload_retries_a_503_and_waits_for_a_slow_operation(vertex_fake: VertexFake) -> None:
    vertex_fake.fail_next("POST", r"/models:upload$", 503)
    vertex_fake.slow_operations(polls=2)
    created = VertexModelProvider().create(model_props(vertex_fake, f"gs://{BUCKET}/jobs/1/model"))
    assert created.outs["name"].endswith(f"/models/{created.outs['model_id']}")
    VertexModelProvider().delete(created.id, created.outs)
    assert VertexModelProvider().read(created.id, created.outs).id is None


# -- image build ---------------------------------------------------------------------------------


def image_props(fake: CloudBuildFake, gcs: GcsFake) -> dict[str, Any]:
    gcs.put(f"gs://{BUCKET}/build/ctx.tar.gz", _tiny_context())
    return {
        "project": fake.project,
        "region": "us-central1",
        "image": IMAGE,
        "bucket": BUCKET,
        "source_object": "build/ctx.tar.gz",
        "context_sha256": "0123456789abcdef",
        "service_account": "mnist-gcp-build@mnist-test.iam.gserviceaccount.com",
        "api_endpoint": fake.api_endpoint,
        "registry_api_endpoint": fake.api_endpoint,
    }


def _tiny_context() -> bytes:
    import io
    import tarfile

    data = b"FROM python:3.11-slim\n"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_an_image_build_pushes_the_tag_and_delete_removes_it(
    cloudbuild_fake: CloudBuildFake, gcs_fake: GcsFake
) -> None:
    provider = CloudBuildImageProvider()
    props = image_props(cloudbuild_fake, gcs_fake)
    created = provider.create(props)
    assert cloudbuild_fake.tags() == {IMAGE: created.outs["digest"]}
    tag = registry_client(cloudbuild_fake).get_tag(name=ImageRef.parse(IMAGE).tag_name)
    assert tag.version == f"{ImageRef.parse(IMAGE).package_name}/versions/{created.outs['digest']}"
    (build,) = cloudbuild_fake.builds.values()
    assert build.resource["images"] == [IMAGE]
    assert (
        build.resource["serviceAccount"] == f"projects/mnist-test/serviceAccounts/{props['service_account']}"
    )
    assert build.resource["options"]["logging"] in ("CLOUD_LOGGING_ONLY", 5)
    provider.delete(created.id, created.outs)
    assert cloudbuild_fake.tags() == {}
    provider.delete(created.id, created.outs)  # gone already: fine
    assert provider.read(created.id, created.outs).id is None


def test_a_failed_build_raises_with_its_log_url(cloudbuild_fake: CloudBuildFake, gcs_fake: GcsFake) -> None:
    cloudbuild_fake.fail_next_build("step 0 failed: pip could not resolve tensorflow-cpu")
    with pytest.raises(GcpProviderError) as error:
        CloudBuildImageProvider().create(image_props(cloudbuild_fake, gcs_fake))
    (build,) = cloudbuild_fake.builds.values()
    assert build.resource["logUrl"] in str(error.value)
    assert cloudbuild_fake.tags() == {}


def test_only_the_placeholder_token_goes_to_a_plain_http_fake() -> None:
    from infra.gcp.clients import LOOPBACK_ACCESS_TOKEN, client_kwargs

    loopback = client_kwargs("http://127.0.0.1:9")["credentials"]
    assert loopback.token == LOOPBACK_ACCESS_TOKEN and loopback.valid and not loopback.refresh_token
    assert "credentials" not in client_kwargs(None)  # production: Application Default Credentials
    assert "credentials" not in client_kwargs("us-central1-aiplatform.googleapis.com")
    assert json.dumps(client_kwargs(None)["transport"]) == '"rest"'


@pytest.mark.slow
def test_a_deploy_whose_traffic_does_not_reach_the_new_model_fails_and_the_old_one_keeps_serving(
    vertex_fake: VertexFake, gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    gcs_fake.put(f"gs://{BUCKET}/jobs/1/model/saved_model.pb", b"one")
    gcs_fake.put(f"gs://{BUCKET}/jobs/2/model/saved_model.pb", b"two")
    endpoint_id = "1234567890"
    endpoint = vertex_fake.add_endpoint(endpoint_id)
    models, deployments = VertexModelProvider(), VertexDeploymentProvider()
    first_model = models.create(model_props(vertex_fake, f"gs://{BUCKET}/jobs/1/model"))
    first = deployments.create(deployment_props(vertex_fake, endpoint_id, first_model.id))
    assert first.outs is not None
    old_id = first.outs["deployed_model_id"]

    # The fault: the deploy operation succeeds, but the endpoint's split still sends everything to the old
    # model (as when something else sets the split meanwhile).
    real_run = vertex_fake._run_deployment

    def split_left_on_the_old_model(endpoint_, deployed, model, split, operation) -> None:
        real_finish = operation.finish

        def finish(*args: Any, **kwargs: Any) -> None:
            endpoint_.traffic = {old_id: 100}
            real_finish(*args, **kwargs)

        operation.finish = finish
        real_run(endpoint_, deployed, model, split, operation)

    monkeypatch.setattr(vertex_fake, "_run_deployment", split_left_on_the_old_model)
    second_model = models.create(model_props(vertex_fake, f"gs://{BUCKET}/jobs/2/model"))
    assert first_model.outs is not None and second_model.outs is not None
    with pytest.raises(GcpProviderError, match="did not take: its trafficSplit") as error:
        deployments.create(deployment_props(vertex_fake, endpoint_id, second_model.id))
    assert f"{{'{old_id}': 100}}" in str(error.value) and "keeps serving" in str(error.value)
    live = endpoint_client(vertex_fake).get_endpoint(name=endpoint)
    assert [m.id for m in live.deployed_models] == [old_id]  # the new one undeployed, nothing else touched
    assert dict(live.traffic_split) == {old_id: 100}

    deployments.delete(first.id, first.outs)
    models.delete(first_model.id, first_model.outs)
    models.delete(second_model.id, second_model.outs)
    assert not vertex_fake.running_processes()

"""The fakes refuse what Google refuses: each kind of refusal, shown through Google's own clients where
they can send the request (a proto message cannot carry an unknown field or a wrong type, so those go
through google-auth's AuthorizedSession, Google's HTTP client, with raw JSON)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from gcp_fakes import CloudBuildFake, GcsFake, VertexFake
from gcp_fakes.base import MISSING_CREDENTIALS
from gcp_fakes.clients import build_client, credentials, job_client, prediction_client, storage_client
from gcp_fakes.discovery import Contract
from gcp_fakes.vertex import PREDICT_PAYLOAD_LIMIT
from google.api_core import exceptions
from google.auth import exceptions as auth_exceptions
from google.auth.transport.requests import AuthorizedSession
from google.cloud import aiplatform_v1
from google.cloud.devtools import cloudbuild_v1

IMAGE = "us-central1-docker.pkg.dev/mnist-test/mnist/mnist-platform:abc123"


def _job(**container: Any) -> dict[str, Any]:
    """A CustomJob as JSON (camelCase), with `container` as its container spec."""
    return {
        "displayName": "mnist-contract",
        "jobSpec": {
            "workerPoolSpecs": [
                {
                    "machineSpec": {"machineType": "n1-standard-4"},
                    "replicaCount": "1",
                    "containerSpec": {"imageUri": IMAGE, "command": ["python", "-c", "pass"], **container},
                }
            ],
            "baseOutputDirectory": {"outputUriPrefix": "gs://mnist-bucket/jobs/1"},
        },
    }


def _post(fake: VertexFake | CloudBuildFake, path: str, body: Any) -> Any:
    session = AuthorizedSession(credentials())
    return session.post(
        f"{fake.api_endpoint}{path}", data=json.dumps(body), headers={"Content-Type": "application/json"}
    )


def _error(reply: Any) -> dict[str, Any]:
    document = reply.json()
    assert set(document) == {"error"} and set(document["error"]) == {"code", "message", "status"}
    return document["error"]


def test_a_custom_job_without_its_image_is_refused_as_the_required_field_it_is(
    vertex_fake: VertexFake,
) -> None:
    job = aiplatform_v1.CustomJob(
        display_name="mnist-contract",
        job_spec={
            "worker_pool_specs": [
                {
                    "machine_spec": {"machine_type": "n1-standard-4"},
                    "replica_count": 1,
                    "container_spec": {"command": ["python", "-c", "pass"]},
                }
            ],
            "base_output_directory": {"output_uri_prefix": "gs://mnist-bucket/jobs/1"},
        },
    )
    with pytest.raises(exceptions.BadRequest) as refused:
        job_client(vertex_fake).create_custom_job(parent=vertex_fake.parent, custom_job=job)
    assert "custom_job.job_spec.worker_pool_specs[0].container_spec.image_uri" in refused.value.message
    assert "Required field is not set" in refused.value.message
    assert not vertex_fake.jobs


def test_a_request_without_a_bearer_token_is_unauthenticated(
    vertex_fake: VertexFake, gcs_fake: GcsFake
) -> None:
    name = f"{vertex_fake.parent}/customJobs/1"
    # Google's clients answer a 401 by refreshing their credentials; anonymous ones cannot be refreshed.
    with pytest.raises(auth_exceptions.InvalidOperation, match="cannot be refreshed"):
        job_client(vertex_fake, token=None).get_custom_job(name=name)
    with pytest.raises(auth_exceptions.InvalidOperation):
        storage_client(gcs_fake, token=None).bucket("mnist-bucket").blob("x").download_as_bytes()
    assert [r.token for r in vertex_fake.requests] == [None]

    reply = requests.get(f"{vertex_fake.api_endpoint}/v1/{name}", timeout=10)
    assert reply.status_code == 401
    assert _error(reply) == {"code": 401, "message": MISSING_CREDENTIALS, "status": "UNAUTHENTICATED"}
    vertex_fake.rejected_tokens.add("revoked")
    reply = requests.get(
        f"{vertex_fake.api_endpoint}/v1/{name}", headers={"Authorization": "Bearer revoked"}, timeout=10
    )
    assert reply.status_code == 401 and _error(reply)["message"].startswith(
        "Request had invalid authentication"
    )


def test_an_unknown_field_is_refused_with_googles_words(vertex_fake: VertexFake) -> None:
    reply = _post(vertex_fake, f"/v1/{vertex_fake.parent}/customJobs", _job(imageUrl=IMAGE))
    assert reply.status_code == 400
    error = _error(reply)
    assert error["status"] == "INVALID_ARGUMENT"
    assert error["message"] == (
        'Invalid JSON payload received. Unknown name "imageUrl" at '
        "'custom_job.job_spec.worker_pool_specs[0].container_spec': Cannot find field."
    )


def test_a_value_of_the_wrong_type_is_refused(vertex_fake: VertexFake) -> None:
    body = _job()
    body["jobSpec"]["workerPoolSpecs"][0]["replicaCount"] = "one"
    reply = _post(vertex_fake, f"/v1/{vertex_fake.parent}/customJobs", body)
    assert reply.status_code == 400
    assert _error(reply)["message"] == (
        "Invalid value at 'custom_job.job_spec.worker_pool_specs[0].replica_count' (TYPE_INT64), \"one\""
    )
    reply = _post(vertex_fake, f"/v1/{vertex_fake.parent}/customJobs", _job(command="python -c pass"))
    assert reply.status_code == 400 and "cannot start list" not in _error(reply)["message"]


def test_an_enum_name_outside_the_documented_ones_is_refused(cloudbuild_fake: CloudBuildFake) -> None:
    build = {
        "source": {"storageSource": {"bucket": "mnist-bucket", "object": "build/context.tar.gz"}},
        "steps": [{"name": "gcr.io/cloud-builders/docker", "args": ["build", "--tag", IMAGE, "."]}],
        "images": [IMAGE],
        "options": {"logging": "CLOUD_LOGGING_PLEASE"},
    }
    reply = _post(cloudbuild_fake, "/v1/projects/mnist-test/locations/us-central1/builds", build)
    assert reply.status_code == 400
    assert (
        _error(reply)["message"]
        == "Invalid value at 'build.options.logging' (enum), \"CLOUD_LOGGING_PLEASE\""
    )
    build["options"]["logging"] = "CLOUD_LOGGING_ONLY"
    assert _post(cloudbuild_fake, "/v1/projects/mnist-test/locations/us-central1/builds", build).ok
    assert len(cloudbuild_fake.builds) == 1


def test_a_required_field_counts_only_inside_a_message_that_is_there(vertex_fake: VertexFake) -> None:
    """EncryptionSpec.kmsKeyName is "Required." when an encryptionSpec is given, not otherwise; output-only
    fields sent back (state, createTime) are ignored, as the service ignores them."""
    path = f"/v1/{vertex_fake.parent}/customJobs"
    assert _post(
        vertex_fake, path, {**_job(), "state": "JOB_STATE_SUCCEEDED", "createTime": "2020-01-01T00:00:00Z"}
    ).ok
    reply = _post(vertex_fake, path, {**_job(), "encryptionSpec": {}})
    assert reply.status_code == 400
    assert (
        "1.Field: custom_job.encryption_spec.kms_key_name; Message: Required field is not set."
        in (_error(reply)["message"])
    )


def test_a_method_the_api_does_not_have_is_404(
    vertex_fake: VertexFake, cloudbuild_fake: CloudBuildFake
) -> None:
    session = AuthorizedSession(credentials())
    reply = session.get(f"{vertex_fake.api_endpoint}/v1/{vertex_fake.parent}/customJobz/1")
    assert reply.status_code == 404 and _error(reply)["status"] == "NOT_FOUND"
    reply = session.patch(f"{cloudbuild_fake.api_endpoint}/v1/projects/mnist-test/builds/1", json={})
    assert reply.status_code == 404


def test_every_request_of_googles_clients_matches_a_documented_method() -> None:
    """The contract itself: the paths our fakes serve are methods of the discovery documents."""
    vertex = Contract(("aiplatform", "v1"), aliases={"/ui/": "/v1/"})
    parent = "projects/p/locations/us-central1"
    for method, path, expected in (
        ("POST", f"/v1/{parent}/customJobs", "aiplatform.projects.locations.customJobs.create"),
        ("POST", f"/v1/{parent}/endpoints/1:predict", "aiplatform.projects.locations.endpoints.predict"),
        ("GET", f"/ui/{parent}/operations/7", "aiplatform.projects.locations.operations.get"),
    ):
        found = vertex.method(method, path)
        assert found is not None and found.id == expected, (method, path, found)
    storage = Contract(("storage", "v1"))
    found = storage.method("POST", "/storage/v1/b/b/o/a%2Fb/rewriteTo/b/c/o/d%2Fe")
    assert found is not None and found.id == "storage.objects.rewrite"
    found = storage.method("POST", "/upload/storage/v1/b/b/o")
    assert found is not None and found.id == "storage.objects.insert"


def test_predict_refuses_a_body_without_instances_and_one_over_1_5_mb(vertex_fake: VertexFake) -> None:
    endpoint = vertex_fake.add_endpoint("1234567890")
    with pytest.raises(
        exceptions.BadRequest, match=r"1\.Field: instances; Message: Required field is not set"
    ):
        prediction_client(vertex_fake).predict(endpoint=endpoint, instances=[])
    too_big = [[0.5] * 784] * (PREDICT_PAYLOAD_LIMIT // (784 * 5) + 1)
    with pytest.raises(exceptions.BadRequest, match="Request payload size exceeds the limit: 1572864 bytes"):
        prediction_client(vertex_fake).predict(endpoint=endpoint, instances=too_big)


def test_a_build_whose_steps_never_tag_its_image_fails_as_cloud_build_does(
    cloudbuild_fake: CloudBuildFake,
) -> None:
    build = cloudbuild_v1.Build(
        source={"storage_source": {"bucket": "mnist-bucket", "object_": "build/context.tar.gz"}},
        steps=[{"name": "gcr.io/cloud-builders/docker", "args": ["build", "."]}],
        images=[IMAGE],
    )
    client = build_client(cloudbuild_fake)
    operation = client.create_build(
        parent="projects/mnist-test/locations/us-central1", project_id="mnist-test", build=build
    )
    with pytest.raises(exceptions.GoogleAPICallError, match="Build failed"):
        operation.result(timeout=30)
    failed = client.get_build(name=operation.metadata.build.name)
    assert failed.status == cloudbuild_v1.Build.Status.FAILURE
    assert (
        failed.status_detail
        == f'failed to find one or more images after execution of build steps: ["{IMAGE}"]'
    )
    assert cloudbuild_fake.tags() == {}


def test_listing_comes_in_pages_and_the_client_follows_them(gcs_fake: GcsFake) -> None:
    for i in range(5):
        gcs_fake.put(f"gs://mnist-bucket/data/{i}.npz", b"x")
    gcs_fake.list_page_size = 2
    names = [b.name for b in storage_client(gcs_fake).list_blobs("mnist-bucket", prefix="data/")]
    assert names == [f"data/{i}.npz" for i in range(5)]
    assert len(gcs_fake.requests_to("GET", r"/b/mnist-bucket/o$")) == 3
    assert len(list(storage_client(gcs_fake).list_blobs("mnist-bucket", max_results=1))) == 1


def test_a_rewrite_token_carries_a_large_copy_to_its_end(gcs_fake: GcsFake) -> None:
    gcs_fake.put("gs://mnist-bucket/big", bytes(range(256)) * 40)  # 10,240 bytes
    gcs_fake.rewrite_bytes_per_call = 4096
    source = storage_client(gcs_fake).bucket("mnist-bucket").blob("big")
    target = storage_client(gcs_fake).bucket("mnist-bucket").blob("copy")
    token, done, total = target.rewrite(source)
    assert (done, total) == (4096, 10240) and token
    assert not gcs_fake.path_of("gs://mnist-bucket/copy").exists()  # not there before the last call
    token, done, _ = target.rewrite(source, token=token)
    token, done, _ = target.rewrite(source, token=token)
    assert token is None and done == 10240
    assert gcs_fake.path_of("gs://mnist-bucket/copy").read_bytes() == bytes(range(256)) * 40


def test_the_metadata_of_a_multipart_upload_is_held_to_the_object_schema(gcs_fake: GcsFake) -> None:
    gcs_fake.put("gs://mnist-bucket/.keep", b"")
    blob = storage_client(gcs_fake).bucket("mnist-bucket").blob("data/x.npz")
    blob.metadata = {"stage": "train"}
    blob.upload_from_string(b"x")  # google-cloud-storage sends name, metadata: known fields
    assert gcs_fake.path_of("gs://mnist-bucket/data/x.npz").read_bytes() == b"x"
    body = (
        b'--B\r\nContent-Type: application/json\r\n\r\n{"name": "y", "colour": "red"}\r\n'
        b"--B\r\nContent-Type: application/octet-stream\r\n\r\ny\r\n--B--"
    )
    reply = AuthorizedSession(credentials()).post(
        f"{gcs_fake.api_endpoint}/upload/storage/v1/b/mnist-bucket/o?uploadType=multipart",
        data=body,
        headers={"Content-Type": "multipart/related; boundary=B"},
    )
    assert reply.status_code == 400 and 'Unknown name "colour"' in _error(reply)["message"]

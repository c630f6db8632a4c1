"""The fakes' IAM model (gcp_fakes.iam), through Google's own clients: a call without the permission is
Google's 403 naming it, a grant holds only once it has propagated, a job or a build whose account lacks
what it needs fails the way the service fails it."""

from __future__ import annotations

import time

import pytest
from gcp_fakes import CloudBuildFake, GcsFake, VertexFake
from gcp_fakes.base import DEPLOYER
from gcp_fakes.clients import build_client, job_client, storage_client
from gcp_fakes.iam import IamModel
from google.api_core import exceptions
from google.cloud import aiplatform_v1
from google.cloud.devtools import cloudbuild_v1

PROJECT = "mnist-test"
TRAINER = "mnist-gcp-train@mnist-test.iam.gserviceaccount.com"
BUILDER = "mnist-gcp-build@mnist-test.iam.gserviceaccount.com"
IMAGE = "us-central1-docker.pkg.dev/mnist-test/mnist-gcp/mnist-platform:abc123"


def iam_for(*fakes: object, propagation_seconds: float = 0.0) -> IamModel:
    model = IamModel(PROJECT, propagation_seconds)
    for fake in fakes:
        fake.iam = model  # type: ignore[attr-defined]
    return model


def test_a_call_without_the_permission_is_403_naming_it(gcs_fake: GcsFake) -> None:
    iam = iam_for(gcs_fake)
    iam.grant("buckets/mnist-bucket", "roles/storage.objectViewer", DEPLOYER, propagated=True)
    gcs_fake.put("gs://mnist-bucket/data/train.npz", b"x")
    bucket = storage_client(gcs_fake).bucket("mnist-bucket")

    assert bucket.blob("data/train.npz").download_as_bytes() == b"x"
    with pytest.raises(
        exceptions.Forbidden, match=r"does not have storage\.objects\.create access"
    ) as denied:
        bucket.blob("data/new.npz").upload_from_string(b"y")
    assert "Permission 'storage.objects.create' denied" in denied.value.message
    with pytest.raises(exceptions.Forbidden, match=r"storage\.objects\.get"):  # another bucket: nothing there
        storage_client(gcs_fake).bucket("other").blob("x").download_as_bytes()


def test_a_grant_holds_only_once_it_has_propagated(gcs_fake: GcsFake) -> None:
    iam = iam_for(gcs_fake, propagation_seconds=1.5)
    gcs_fake.put("gs://mnist-bucket/data/train.npz", b"x")
    iam.grant("buckets/mnist-bucket", "roles/storage.objectViewer", DEPLOYER)
    blob = storage_client(gcs_fake).bucket("mnist-bucket").blob("data/train.npz")

    with pytest.raises(exceptions.Forbidden):
        blob.download_as_bytes()
    assert iam.pending(DEPLOYER, "storage.objects.get", "buckets/mnist-bucket")
    time.sleep(1.6)
    assert blob.download_as_bytes() == b"x"


def _job(account: str) -> aiplatform_v1.CustomJob:
    return aiplatform_v1.CustomJob(
        display_name="mnist-iam",
        job_spec={
            "worker_pool_specs": [
                {
                    "machine_spec": {"machine_type": "n1-standard-4"},
                    "replica_count": 1,
                    "container_spec": {"image_uri": IMAGE, "command": ["python", "-c", "pass"]},
                }
            ],
            "base_output_directory": {"output_uri_prefix": "gs://mnist-bucket/jobs/1"},
            "service_account": account,
        },
    )


def test_a_caller_without_the_vertex_permission_is_403_naming_it(vertex_fake: VertexFake) -> None:
    iam = iam_for(vertex_fake)
    with pytest.raises(exceptions.Forbidden, match=r"Permission 'aiplatform\.customJobs\.create' denied"):
        job_client(vertex_fake).create_custom_job(parent=vertex_fake.parent, custom_job=_job(""))
    iam.grant(f"projects/{PROJECT}", "roles/aiplatform.user", DEPLOYER, propagated=True)
    assert job_client(vertex_fake).create_custom_job(parent=vertex_fake.parent, custom_job=_job("")).name


def test_running_a_job_as_an_account_needs_act_as_on_it(vertex_fake: VertexFake) -> None:
    iam = iam_for(vertex_fake, vertex_fake.gcs)
    iam.grant(f"projects/{PROJECT}", "roles/aiplatform.user", DEPLOYER, propagated=True)
    iam.grant(
        "buckets/mnist-bucket", "roles/storage.objectUser", f"serviceAccount:{TRAINER}", propagated=True
    )
    client = job_client(vertex_fake)

    with pytest.raises(
        exceptions.Forbidden, match=r"Permission 'iam\.serviceAccounts\.actAs' denied on service"
    ):
        client.create_custom_job(parent=vertex_fake.parent, custom_job=_job(TRAINER))
    assert not vertex_fake.jobs

    iam.grant(f"serviceAccounts/{TRAINER}", "roles/iam.serviceAccountUser", DEPLOYER, propagated=True)
    job = client.create_custom_job(parent=vertex_fake.parent, custom_job=_job(TRAINER))
    assert vertex_fake.wait_for_job(job.name.rsplit("/", 1)[-1], timeout=60) == "JOB_STATE_SUCCEEDED"


def test_a_job_whose_account_may_not_write_its_output_fails(vertex_fake: VertexFake) -> None:
    iam = iam_for(vertex_fake, vertex_fake.gcs)
    iam.grant(f"projects/{PROJECT}", "roles/aiplatform.user", DEPLOYER, propagated=True)
    iam.grant(f"serviceAccounts/{TRAINER}", "roles/iam.serviceAccountUser", DEPLOYER, propagated=True)
    iam.grant(
        "buckets/mnist-bucket", "roles/storage.objectViewer", f"serviceAccount:{TRAINER}", propagated=True
    )

    job = job_client(vertex_fake).create_custom_job(parent=vertex_fake.parent, custom_job=_job(TRAINER))
    job_id = job.name.rsplit("/", 1)[-1]
    assert vertex_fake.wait_for_job(job_id, timeout=60) == "JOB_STATE_FAILED"
    failed = job_client(vertex_fake).get_custom_job(name=job.name)
    assert f"{TRAINER} does not have storage.objects.create access" in failed.error.message


def test_a_build_whose_account_may_not_push_fails_with_artifact_registrys_words(
    cloudbuild_fake: CloudBuildFake,
) -> None:
    iam = iam_for(cloudbuild_fake)
    member = f"serviceAccount:{BUILDER}"
    iam.grant(f"projects/{PROJECT}", "roles/cloudbuild.builds.editor", DEPLOYER, propagated=True)
    iam.grant(f"serviceAccounts/{BUILDER}", "roles/iam.serviceAccountUser", DEPLOYER, propagated=True)
    iam.grant(f"projects/{PROJECT}", "roles/logging.logWriter", member, propagated=True)
    iam.grant("buckets/mnist-bucket", "roles/storage.objectViewer", member, propagated=True)
    build = cloudbuild_v1.Build(
        source={"storage_source": {"bucket": "mnist-bucket", "object_": "build/context.tar.gz"}},
        steps=[{"name": "gcr.io/cloud-builders/docker", "args": ["build", "--tag", IMAGE, "."]}],
        images=[IMAGE],
        service_account=f"projects/{PROJECT}/serviceAccounts/{BUILDER}",
        options={"logging": "CLOUD_LOGGING_ONLY"},
    )
    client = build_client(cloudbuild_fake)
    operation = client.create_build(
        parent=f"projects/{PROJECT}/locations/us-central1", project_id=PROJECT, build=build
    )
    with pytest.raises(exceptions.GoogleAPICallError):
        operation.result(timeout=30)
    failed = client.get_build(name=operation.metadata.build.name)
    assert 'Permission "artifactregistry.repositories.uploadArtifacts" denied' in failed.status_detail
    assert cloudbuild_fake.tags() == {}

    iam.grant("repositories/mnist-gcp", "roles/artifactregistry.writer", member, propagated=True)
    assert client.create_build(project_id=PROJECT, build=build).result(timeout=30).status == (
        cloudbuild_v1.Build.Status.SUCCESS
    )

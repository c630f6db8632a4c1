"""The Cloud Build and Artifact Registry fake, driven by Google's own clients: what the image build
provider relies on."""

from __future__ import annotations

from pathlib import Path

import pytest
from gcp_fakes import CloudBuildFake, GcsFake
from gcp_fakes.clients import build_client, registry_client
from google.api_core import exceptions
from google.cloud.devtools import cloudbuild_v1

from infra.gcp.image_context import build_image_context

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE = "us-central1-docker.pkg.dev/mnist-test/mnist/mnist-platform:abc123"
PACKAGE = "projects/mnist-test/locations/us-central1/repositories/mnist/packages/mnist-platform"
PARENT = "projects/mnist-test/locations/us-central1"


def _build(source_object: str = "build/context.tar.gz") -> cloudbuild_v1.Build:
    return cloudbuild_v1.Build(
        source={"storage_source": {"bucket": "mnist-bucket", "object_": source_object}},
        steps=[{"name": "gcr.io/cloud-builders/docker", "args": ["build", "--tag", IMAGE, "."]}],
        images=[IMAGE],
        options={"logging": "CLOUD_LOGGING_ONLY"},
    )


def test_a_build_succeeds_and_pushes_its_image_tag(
    cloudbuild_fake: CloudBuildFake, gcs_fake: GcsFake, tmp_path: Path
) -> None:
    context = build_image_context(REPO_ROOT, tmp_path)
    gcs_fake.put("gs://mnist-bucket/build/context.tar.gz", context.archive.read_bytes())
    client = build_client(cloudbuild_fake)

    operation = client.create_build(parent=PARENT, project_id="mnist-test", build=_build())
    assert operation.metadata.build.log_url.startswith("https://console.cloud.google.com/cloud-build/builds")
    build = operation.result(timeout=30)

    assert build.status == cloudbuild_v1.Build.Status.SUCCESS
    assert [i.name for i in build.results.images] == [IMAGE]
    digest = build.results.images[0].digest
    assert digest.startswith("sha256:")
    assert client.get_build(name=build.name).status == cloudbuild_v1.Build.Status.SUCCESS
    tag = registry_client(cloudbuild_fake).get_tag(name=f"{PACKAGE}/tags/abc123")
    assert tag.version == f"{PACKAGE}/versions/{digest}"
    (recorded,) = cloudbuild_fake.builds.values()
    assert set(recorded.source_files) == set(context.files)


def test_a_failed_build_fails_its_operation_and_keeps_its_log_url(cloudbuild_fake: CloudBuildFake) -> None:
    cloudbuild_fake.fail_next_build('Build step 0 "gcr.io/cloud-builders/docker" failed: exit status 1')
    client = build_client(cloudbuild_fake)

    operation = client.create_build(parent=PARENT, project_id="mnist-test", build=_build())
    with pytest.raises(exceptions.GoogleAPICallError, match="Build failed"):
        operation.result(timeout=30)

    build = client.get_build(name=operation.metadata.build.name)
    assert build.status == cloudbuild_v1.Build.Status.FAILURE
    assert "exit status 1" in build.status_detail
    assert build.log_url
    assert cloudbuild_fake.tags() == {}


def test_deleting_the_tag_then_the_version_removes_the_image_and_a_second_delete_is_404(
    cloudbuild_fake: CloudBuildFake,
) -> None:
    build = build_client(cloudbuild_fake).create_build(parent=PARENT, project_id="mnist-test", build=_build())
    digest = build.result(timeout=30).results.images[0].digest
    registry = registry_client(cloudbuild_fake)

    with pytest.raises(exceptions.BadRequest, match="has tags"):  # a tagged version needs force
        registry.delete_version(name=f"{PACKAGE}/versions/{digest}").result(timeout=10)
    registry.delete_tag(name=f"{PACKAGE}/tags/abc123")
    registry.delete_version(name=f"{PACKAGE}/versions/{digest}").result(timeout=10)

    assert cloudbuild_fake.tags() == {}
    with pytest.raises(exceptions.NotFound):
        registry.delete_tag(name=f"{PACKAGE}/tags/abc123")
    with pytest.raises(exceptions.NotFound):
        registry.get_tag(name=f"{PACKAGE}/tags/abc123")


def test_a_429_is_answered_once_then_the_build_goes_through(cloudbuild_fake: CloudBuildFake) -> None:
    cloudbuild_fake.fail_next("POST", r"/builds$", 429)
    client = build_client(cloudbuild_fake)

    with pytest.raises(exceptions.TooManyRequests):
        client.create_build(parent=PARENT, project_id="mnist-test", build=_build())
    build = client.create_build(parent=PARENT, project_id="mnist-test", build=_build()).result(timeout=30)

    assert build.status == cloudbuild_v1.Build.Status.SUCCESS
    assert len(cloudbuild_fake.requests_to("POST", r"/builds$")) == 2


def test_a_global_build_and_its_operation_use_the_project_paths(cloudbuild_fake: CloudBuildFake) -> None:
    client = build_client(cloudbuild_fake)
    operation = client.create_build(project_id="mnist-test", build=_build())
    build = operation.result(timeout=30)
    assert build.status == cloudbuild_v1.Build.Status.SUCCESS
    assert client.get_build(project_id="mnist-test", id=build.id).id == build.id
    assert cloudbuild_fake.requests_to("GET", r"^/v1/operations/build/mnist-test/")

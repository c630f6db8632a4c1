"""The project's container image, built in the cloud by Cloud Build from the uploaded build context.

No Docker is needed on the deploying machine. The image's tag is the content hash of the context
(infra/gcp/image_context.py), so changed code builds a new tag and unchanged code builds nothing.
`create` returns once the build has succeeded and raises with the build's log URL when it failed;
`delete` removes the tag and the image version it pointed to from Artifact Registry (404: gone).

A `pulumi up` killed during or after a build leaves the build running or the image pushed, with nothing in
the state. Each build carries the Cloud Build tag `mnist-platform-id-<identity>` (infra.dynamic.identity:
the resource and every input that forces a replacement), and `create` first looks: an image already
pushed under its content tag is adopted (no build), a build of that identity still queued or working is
waited for and adopted; only then is a new build submitted. `read` reports the image gone when its tag
is no longer in Artifact Registry.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from google.api_core import exceptions
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.dynamic import IDENTITY_SEED, IDENTITY_TAG, changed_keys, identity, identity_seed, log, state_of
from infra.gcp.clients import (
    DEFAULT_POLL_SECONDS,
    GcpProviderError,
    client_kwargs,
    ignore_not_found,
    retrying,
    wait_for,
)
from infra.gcp.names import ImageRef, resource_id

DOCKER_BUILDER = "gcr.io/cloud-builders/docker"
BUILD_TIMEOUT_SECONDS = 1800
DELETE_WAIT_SECONDS = 300.0
# Cloud Build's Build.Status values of a build that has not ended.
UNFINISHED = frozenset({"QUEUED", "PENDING", "WORKING"})
_REPLACE_KEYS = (
    "project",
    "region",
    "image",
    "bucket",
    "source_object",
    "context_sha256",
    "service_account",
    "api_endpoint",
)


@dataclass
class CloudBuildImageArgs:
    """Inputs of a CloudBuildImage."""

    project: pulumi.Input[str]
    region: pulumi.Input[str]
    """Where the build runs (a regional build, next to the repository)."""
    image: pulumi.Input[str]
    """The full image URI to push, `{region}-docker.pkg.dev/{project}/{repository}/{package}:{tag}`."""
    bucket: pulumi.Input[str]
    source_object: pulumi.Input[str]
    """The build context archive (tar.gz) in `bucket`."""
    context_sha256: pulumi.Input[str]
    """The context's content hash: a new context is a new build."""
    service_account: pulumi.Input[str]
    """Email of the account the build runs as (reads the context, pushes to the repository, writes logs)."""
    api_endpoint: str | None = None
    """Tests only: a loopback fake of Cloud Build (cloudbuild.googleapis.com when unset)."""
    registry_api_endpoint: str | None = None
    """Tests only: a loopback fake of Artifact Registry (artifactregistry.googleapis.com when unset)."""


def build_identity_tag(props: Mapping[str, Any]) -> str:
    """The Cloud Build tag naming this resource's builds (tags match `^[\\w][\\w.-]{0,127}$`)."""
    return f"{IDENTITY_TAG}-{identity(props, _REPLACE_KEYS)}"


def build_body(props: Mapping[str, Any]) -> dict[str, Any]:
    """The Build to create (field names of cloudbuild_v1.Build)."""
    return {
        "source": {"storage_source": {"bucket": props["bucket"], "object_": props["source_object"]}},
        "steps": [{"name": DOCKER_BUILDER, "args": ["build", "--tag", props["image"], "."]}],
        "images": [props["image"]],
        "service_account": f"projects/{props['project']}/serviceAccounts/{props['service_account']}",
        # A build with its own service account must say where its logs go.
        "options": {"logging": "CLOUD_LOGGING_ONLY"},
        "timeout": f"{BUILD_TIMEOUT_SECONDS}s",
        "tags": ["mnist-platform", build_identity_tag(props)],
    }


class CloudBuildImageProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        from google.cloud.devtools import cloudbuild_v1

        client = cloudbuild_v1.CloudBuildClient(**client_kwargs(props.get("api_endpoint")))
        parent = f"projects/{props['project']}/locations/{props['region']}"
        builds = retrying(
            lambda: list(
                client.list_builds(
                    request={
                        "parent": parent,
                        "project_id": props["project"],
                        "filter": f'tags="{build_identity_tag(props)}"',
                    }
                )
            )
        )
        pushed = ignore_not_found(_registry(props).get_tag, name=ImageRef.parse(props["image"]).tag_name)
        if pushed is not None:
            # Pushed by an earlier create that never reached the state: the image under its content tag
            # is what a new build would make.
            done = [b for b in builds if b.status == cloudbuild_v1.Build.Status.SUCCESS]
            log(f"image {props['image']} adopted: pushed by an interrupted `pulumi up`")
            outs = {
                "build_id": done[0].id if done else "",
                "log_url": done[0].log_url if done else "",
                "digest": resource_id(pushed.version),
            }
            return CreateResult(id_=props["image"], outs={**state_of(props), **outs})
        running = [b for b in builds if b.status.name in UNFINISHED]
        if running:
            log(f"waiting for build {running[0].id} of {props['image']}, left by an interrupted `pulumi up`")
            build, log_url = _wait_for_build(client, running[0]), running[0].log_url
        else:
            operation = retrying(
                client.create_build,
                parent=parent,
                project_id=props["project"],
                build=cloudbuild_v1.Build(build_body(props)),
            )
            started = operation.metadata.build if operation.metadata is not None else None
            log_url = started.log_url if started is not None else ""
            log(f"building {props['image']} with Cloud Build: {log_url or '(no log URL yet)'}")
            try:
                build = wait_for(operation, f"building {props['image']}", BUILD_TIMEOUT_SECONDS + 600)
            except exceptions.GoogleAPICallError as error:
                raise GcpProviderError(
                    f"Cloud Build could not build {props['image']}: {error.message}\n"
                    f"Its log: {log_url or 'in the console'}\n"
                    "Fix the cause (the Dockerfile, the build account's access) and run `pulumi up` again."
                ) from error
        if build.status != cloudbuild_v1.Build.Status.SUCCESS:
            raise GcpProviderError(
                f"Cloud Build ended {build.status.name} for {props['image']}: {build.status_detail}\n"
                f"Its log: {build.log_url or log_url}"
            )
        digest = next((i.digest for i in build.results.images if i.digest), "")
        log(f"built {props['image']} ({digest or 'no digest reported'})")
        outs = {"build_id": build.id, "log_url": build.log_url or log_url, "digest": digest}
        return CreateResult(id_=props["image"], outs={**state_of(props), **outs})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        client = _registry(props)
        if ignore_not_found(client.get_tag, name=ImageRef.parse(props["image"]).tag_name) is None:
            return ReadResult(None, {})
        return ReadResult(id_, state_of(props))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        ref = ImageRef.parse(props["image"])
        client = _registry(props)
        ignore_not_found(client.delete_tag, name=ref.tag_name)
        if props.get("digest"):
            operation = ignore_not_found(
                client.delete_version, name=f"{ref.package_name}/versions/{props['digest']}"
            )
            if operation is not None:
                with contextlib.suppress(exceptions.NotFound):
                    wait_for(operation, f"deleting {ref.package}@{props['digest']}", DELETE_WAIT_SECONDS)
        log(f"deleted image {props['image']}")


def _wait_for_build(client: Any, build: Any) -> Any:
    """`build` (one found by listing) once it has ended, polled by its name."""
    deadline = time.monotonic() + BUILD_TIMEOUT_SECONDS + 600
    while build.status.name in UNFINISHED:
        if time.monotonic() > deadline:
            raise GcpProviderError(
                f"build {build.id} is still {build.status.name} after {BUILD_TIMEOUT_SECONDS + 600}s; "
                f"see its log ({build.log_url or 'in the console'}), then run `pulumi up` again"
            )
        time.sleep(min(DEFAULT_POLL_SECONDS, 1.0))
        build = retrying(client.get_build, request={"name": build.name, "id": build.id})
    return build


def _registry(props: Mapping[str, Any]) -> Any:
    from google.cloud import artifactregistry_v1

    return artifactregistry_v1.ArtifactRegistryClient(**client_kwargs(props.get("registry_api_endpoint")))


class CloudBuildImage(pulumi.dynamic.Resource, module="cloudbuild", name="Image"):
    """A Docker image built by Cloud Build from a context in Cloud Storage, pushed to Artifact Registry."""

    image: pulumi.Output[str]
    build_id: pulumi.Output[str]
    log_url: pulumi.Output[str]
    digest: pulumi.Output[str]

    def __init__(
        self, name: str, args: CloudBuildImageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "project": args.project,
            "region": args.region,
            "image": args.image,
            "bucket": args.bucket,
            "source_object": args.source_object,
            "context_sha256": args.context_sha256,
            "service_account": args.service_account,
            "api_endpoint": args.api_endpoint,
            "registry_api_endpoint": args.registry_api_endpoint,
            IDENTITY_SEED: identity_seed("cloudbuild:Image", name),
            "build_id": None,
            "log_url": None,
            "digest": None,
        }
        super().__init__(CloudBuildImageProvider(), name, props, opts)

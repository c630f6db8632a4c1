"""A Vertex AI Model: the SavedModel a custom job exported, with the container that serves it.

pulumi-gcp has no Model resource (terraform-provider-google #25152). `create` uploads it with the v1
ModelServiceClient and waits for the operation; `delete` deletes it (404: already gone). Vertex refuses to
delete a model that is still deployed, so the deployment (infra/gcp/deployment.py) depends on the model
and is always removed first (python-aiplatform #1441). Every input is part of what the model is: a
change is a new model, uploaded before the old one is deleted.

Each model carries the label `mnist-platform-id` (infra.dynamic.identity: the resource and every input
that forces a replacement). `create` first lists the models with that label and adopts one an interrupted
`pulumi up` uploaded (an upload either made a whole model or none), so a retried `up` never leaves a
second copy in the registry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from google.api_core import exceptions
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.dynamic import IDENTITY_SEED, IDENTITY_TAG, changed_keys, identity, identity_seed, log, state_of
from infra.gcp.clients import GcpProviderError, ignore_not_found, model_service, retrying, wait_for
from infra.gcp.names import resource_id

UPLOAD_WAIT_SECONDS = 1800.0
DELETE_WAIT_SECONDS = 600.0
_REPLACE_KEYS = (
    "project",
    "region",
    "display_name",
    "artifact_uri",
    "image_uri",
    "command",
    "args",
    "env",
    "port",
    "predict_route",
    "health_route",
    "labels",
    "kms_key_name",
    "api_endpoint",
)


@dataclass
class VertexModelArgs:
    """Inputs of a VertexModel."""

    project: pulumi.Input[str]
    region: pulumi.Input[str]
    display_name: pulumi.Input[str]
    artifact_uri: pulumi.Input[str]
    """gs:// folder of the SavedModel (the job's AIP_MODEL_DIR); Vertex passes it as AIP_STORAGE_URI."""
    image_uri: pulumi.Input[str]
    """The serving container's image."""
    command: Sequence[str] = ()
    """Its command; empty for a prebuilt image (Vertex knows how to start those)."""
    args: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    """The port the server listens on (AIP_HTTP_PORT); the image's default when None."""
    predict_route: str | None = None
    health_route: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    kms_key_name: pulumi.Input[str] | None = None
    api_endpoint: str | None = None
    """Tests only: a loopback fake of the Vertex AI API."""


def model_body(props: Mapping[str, Any]) -> dict[str, Any]:
    """The Model resource to upload (field names of aiplatform_v1.Model)."""
    container: dict[str, Any] = {"image_uri": props["image_uri"]}
    if props.get("command"):
        container["command"] = list(props["command"])
    if props.get("args"):
        container["args"] = list(props["args"])
    if props.get("env"):
        container["env"] = [{"name": k, "value": str(v)} for k, v in sorted(props["env"].items())]
    if props.get("port"):
        container["ports"] = [{"container_port": int(props["port"])}]
    for route in ("predict_route", "health_route"):
        if props.get(route):
            container[route] = props[route]
    body: dict[str, Any] = {
        "display_name": props["display_name"],
        "artifact_uri": props["artifact_uri"],
        "container_spec": container,
        "labels": dict(props.get("labels") or {}),
    }
    if props.get("kms_key_name"):
        body["encryption_spec"] = {"kms_key_name": props["kms_key_name"]}
    return body


class VertexModelProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        from google.cloud import aiplatform_v1

        client = model_service(props["region"], props.get("api_endpoint"))
        parent = f"projects/{props['project']}/locations/{props['region']}"
        model_identity = identity(props, _REPLACE_KEYS)
        found = retrying(
            lambda: list(
                client.list_models(
                    request={"parent": parent, "filter": f'labels.{IDENTITY_TAG}="{model_identity}"'}
                )
            )
        )
        if found:
            name = found[0].name
            log(f"model {name} adopted: uploaded by an interrupted `pulumi up`")
            return CreateResult(
                id_=name, outs={**state_of(props), "name": name, "model_id": resource_id(name)}
            )
        body = model_body(props)
        body["labels"][IDENTITY_TAG] = model_identity
        operation = retrying(client.upload_model, parent=parent, model=aiplatform_v1.Model(body))
        log(f"uploading model {props['display_name']} from {props['artifact_uri']}")
        try:
            response = wait_for(operation, f"uploading model {props['display_name']}", UPLOAD_WAIT_SECONDS)
        except exceptions.GoogleAPICallError as error:
            raise GcpProviderError(
                f"Vertex AI refused the model {props['display_name']} ({props['artifact_uri']}): "
                f"{error.message}. "
                "Check that the custom job exported a SavedModel there and that the image exists."
            ) from error
        name = response.model
        log(f"model {name} uploaded")
        return CreateResult(id_=name, outs={**state_of(props), "name": name, "model_id": resource_id(name)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        client = model_service(props["region"], props.get("api_endpoint"))
        if ignore_not_found(client.get_model, name=id_) is None:
            return ReadResult(None, {})
        return ReadResult(id_, state_of(props))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        client = model_service(props["region"], props.get("api_endpoint"))
        try:
            operation = ignore_not_found(client.delete_model, name=id_)
            if operation is not None:
                wait_for(operation, f"deleting model {id_}", DELETE_WAIT_SECONDS)
        except exceptions.NotFound:
            pass
        except (exceptions.FailedPrecondition, exceptions.BadRequest) as error:
            # FAILED_PRECONDITION, which Google's REST front end sends as HTTP 400.
            if "deployed" not in str(error.message):
                raise
            raise GcpProviderError(
                f"model {id_} is still deployed to an endpoint ({error.message}); undeploy it first "
                "(`pulumi destroy` does that in order; after a partial failure run it again)"
            ) from error
        log(f"deleted model {id_}")


class VertexModel(pulumi.dynamic.Resource, module="vertex", name="Model"):
    """A model in the Vertex AI Model Registry, served by a custom container."""

    name: pulumi.Output[str]
    model_id: pulumi.Output[str]

    def __init__(self, name: str, args: VertexModelArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "project": args.project,
            "region": args.region,
            "display_name": args.display_name,
            "artifact_uri": args.artifact_uri,
            "image_uri": args.image_uri,
            "command": list(args.command),
            "args": list(args.args),
            "env": dict(args.env),
            "port": args.port,
            "predict_route": args.predict_route,
            "health_route": args.health_route,
            "labels": dict(args.labels),
            "kms_key_name": args.kms_key_name,
            "api_endpoint": args.api_endpoint,
            IDENTITY_SEED: identity_seed("vertex:Model", name),
            "name": None,
            "model_id": None,
        }
        super().__init__(VertexModelProvider(), name, props, opts)

"""An online deployment of the stored model (ibm-watsonx-ai `client.deployments`).

Create waits from `initializing` to `ready` and fails with the deployment's own message on
`failed`. A new model is a replacement created before the old deployment is deleted (the engine
deletes replaced resources last), so the endpoint output moves to a deployment that is already
ready. Scoring: POST /ml/v4/deployments/{id}/predictions?version=... (mnistctl/client.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, identity_tag, log, state_of
from infra.ibm.connection import (
    CONNECTION_KEYS,
    Connection,
    IbmProviderError,
    create_or_adopt,
    failure,
    is_not_found,
    left_behind,
    message_of,
    retrying,
    secret_key_opts,
    update_connection,
    watsonx_url,
)

READY_TIMEOUT_SECONDS = 20 * 60
DELETE_TIMEOUT_SECONDS = 10 * 60
_REPLACE_KEYS = ("name", "space_id", "model_id", "instance_type", "min_replicas", "max_replicas", "tags")


@dataclass
class OnlineDeploymentArgs:
    """Inputs of an OnlineDeployment."""

    name: pulumi.Input[str]
    space_id: pulumi.Input[str]
    model_id: pulumi.Input[str]
    """The stored model to serve: a new one replaces the deployment (new first, old deleted last)."""
    instance_type: pulumi.Input[str]
    """Hardware specification name (XS, S, M, L, XL)."""
    replicas: pulumi.Input[int]
    """Nodes serving the deployment (`hardware_spec.num_nodes`)."""
    region: pulumi.Input[str]
    api_key: pulumi.Input[str]
    """IBM Cloud API key (a secret)."""
    tags: list[str] = field(default_factory=list)
    endpoints: pulumi.Input[dict[str, str]] = field(default_factory=dict)
    """URL overrides (empty in production)."""


def deployment_status(details: dict[str, Any]) -> tuple[str, str]:
    """(state, the deployment's own failure message) of a deployment's details."""
    status = (details.get("entity") or {}).get("status") or {}
    messages = [str(e.get("message", e)) for e in (status.get("failure") or {}).get("errors", [])]
    note = status.get("message")  # {"level": ..., "text": ...} beside the errors, when there is one
    if isinstance(note, dict) and note.get("text") and str(note["text"]) not in messages:
        messages.append(str(note["text"]))
    return str(status.get("state", "")), "; ".join(messages)


class OnlineDeploymentProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        conn = Connection.of(props)
        tag = identity_tag(identity(props, _REPLACE_KEYS))
        client = conn.watsonx_client(space_id=str(props["space_id"]))
        names = client.deployments.ConfigurationMetaNames
        meta = {
            names.NAME: props["name"],
            names.ONLINE: {},
            names.HARDWARE_SPEC: {"name": props["instance_type"], "num_nodes": int(props["max_replicas"])},
            names.TAGS: [*(props.get("tags") or []), tag],
        }

        def listed() -> list[dict[str, Any]]:
            return client.deployments.get_details(get_all=True, _silent=True).get("resources", [])

        def same_name(resources: list[dict[str, Any]]) -> set[str]:
            return {str(d["metadata"]["id"]) for d in resources if d["metadata"].get("name") == props["name"]}

        found = retrying(listed)
        adopted = left_behind(
            "online deployment",
            found,
            tag,
            lambda details: deployment_status(dict(details))[0],
            ("ready", "initializing"),
            client.deployments.delete,
            matches=lambda details: _serves(details, props),
        )
        if adopted is None:
            log(f"deploying model {props['model_id']} as {props['name']} ({props['instance_type']})")

        def create() -> str:
            created = client.deployments.create(props["model_id"], meta_props=meta, background_mode=True)
            return str(created["metadata"]["id"])

        try:
            deployment_id = adopted or create_or_adopt(
                f"creating online deployment {props['name']}",
                create,
                lambda: same_name(listed()),
                before=same_name(found),
            )
        except Exception as error:
            raise failure(
                f"creating online deployment {props['name']}",
                error,
                "The API key needs Editor in the space; a Lite plan allows fewer capacity-unit-hours.",
            ) from error
        last: dict[str, str] = {"state": "initializing"}

        def ready() -> dict[str, Any] | None:
            details = retrying(lambda: client.deployments.get_details(deployment_id))
            state, message = deployment_status(details)
            last["state"] = state
            if state == "ready":
                return details
            if state == "failed":
                raise IbmProviderError(
                    f"online deployment {props['name']} ({deployment_id}) failed: {message or 'no message'}. "
                    "Fix the cause and run `pulumi up` again (the failed deployment is replaced)."
                )
            return None

        try:
            details = conn.wait(
                f"online deployment {props['name']} to be ready",
                ready,
                READY_TIMEOUT_SECONDS,
                progress=lambda: last["state"],
            )
        except Exception:
            # Nothing that never served stays behind billing. (A killed `pulumi up` runs no cleanup: the
            # next create finds the deployment by its identity tag and adopts it.)
            _delete_quietly(client, deployment_id)
            raise
        _verify_serving(client, deployment_id, details, props)
        url = (conn.wml_url or watsonx_url(str(props["region"]))).rstrip("/")
        outs = {**state_of(props), "deployment_id": deployment_id, "url": url}
        return CreateResult(id_=deployment_id, outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        if olds.get("state") == "failed":  # `pulumi refresh` found it failed: it serves nothing, rebuild it
            replaces = [*replaces, "state"]
        updates = changed_keys(olds, news, CONNECTION_KEYS)
        return DiffResult(changes=bool(replaces or updates), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=update_connection(olds, news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """What the service really serves: a deployment deleted behind the stack's back is gone, one whose
        model or hardware was changed in the console reports those, so the next `up` replaces it."""
        client = Connection.of(props).watsonx_client(space_id=str(props["space_id"]))
        try:
            details = retrying(lambda: client.deployments.get_details(id_))
        except Exception as error:
            if is_not_found(error):
                return ReadResult(None, {})
            raise failure(f"reading online deployment {id_}", error) from error
        entity = details.get("entity") or {}
        hardware = entity.get("hardware_spec") or {}
        served = {
            "model_id": (entity.get("asset") or {}).get("id", props.get("model_id")),
            "instance_type": hardware.get("name", props.get("instance_type")),
            "min_replicas": hardware.get("num_nodes", props.get("min_replicas")),
            "max_replicas": hardware.get("num_nodes", props.get("max_replicas")),
        }
        return ReadResult(id_, {**props, **served, "state": deployment_status(details)[0]})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        conn = Connection.of(props)
        client = conn.watsonx_client(space_id=str(props["space_id"]))
        log(f"deleting online deployment {props.get('name')}")
        try:
            retrying(lambda: client.deployments.delete(id_))
        except Exception as error:
            if is_not_found(error):
                return
            raise failure(f"deleting online deployment {id_}", error) from error

        def gone() -> bool | None:
            try:
                client.deployments.get_details(id_)
            except Exception as error:
                if is_not_found(error):
                    return True
                raise failure(f"reading online deployment {id_}", error) from error
            return None

        conn.wait(f"online deployment {id_} to be deleted", gone, DELETE_TIMEOUT_SECONDS)


def _serves(details: Mapping[str, Any], props: dict[str, Any]) -> bool:
    """Whether a deployment serves what `props` ask for: the model, the hardware spec, the nodes."""
    entity = details.get("entity") or {}
    hardware = entity.get("hardware_spec") or {}
    return (
        (entity.get("asset") or {}).get("id") == props["model_id"]
        and hardware.get("name") == props["instance_type"]
        and int(hardware.get("num_nodes", 1)) == int(props["max_replicas"])
    )


def _verify_serving(
    client: Any, deployment_id: str, details: Mapping[str, Any], props: dict[str, Any]
) -> None:
    """The deployment as watsonx.ai reports it once ready must serve the new model (its asset id), on the
    hardware asked: otherwise it is deleted and the create fails with what it serves, and Pulumi keeps the
    deployment it was to replace, which goes on serving (docs/gate.md "What is verified")."""
    if _serves(details, props):
        return
    entity = details.get("entity") or {}
    served = (entity.get("asset") or {}).get("id")
    hardware = entity.get("hardware_spec") or {}
    _delete_quietly(client, deployment_id)
    state = deployment_status(dict(details))[0]
    asked = f"model {props['model_id']} on {props['instance_type']} x {int(props['max_replicas'])}"
    raise IbmProviderError(
        f"online deployment {props['name']} ({deployment_id}) is {state} but serves asset {served} on "
        f"{hardware.get('name')} x {hardware.get('num_nodes')}, not {asked}: it was deleted; the deployment "
        "it was to replace keeps serving. Run `pulumi up` again; if it persists, look at the space."
    )


def _delete_quietly(client: Any, deployment_id: str) -> None:
    try:
        client.deployments.delete(deployment_id)
    except Exception as error:  # noqa: BLE001 (the create error is the one to report)
        log(f"could not delete the failed deployment {deployment_id}: {message_of(error)}")


class OnlineDeployment(pulumi.dynamic.Resource, module="ibm", name="Deployment"):
    """The model, served online."""

    deployment_id: pulumi.Output[str]
    url: pulumi.Output[str]

    def __init__(
        self, name: str, args: OnlineDeploymentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "name": args.name,
            "space_id": args.space_id,
            "model_id": args.model_id,
            "instance_type": args.instance_type,
            # The policy pack reads min/max replicas; watsonx.ai serves a fixed number of nodes.
            "min_replicas": args.replicas,
            "max_replicas": args.replicas,
            "region": args.region,
            "tags": list(args.tags),
            "api_key": args.api_key,
            "endpoints": args.endpoints,
            "deployment_id": None,
            "url": None,
        }
        props[IDENTITY_SEED] = identity_seed("ibm:Deployment", name)
        super().__init__(OnlineDeploymentProvider(), name, props, secret_key_opts(opts))

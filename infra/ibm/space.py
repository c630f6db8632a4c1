"""A watsonx.ai deployment space (ibm-watsonx-ai `client.spaces`).

Its storage is the COS instance (the space creates a bucket of its own there, so the identity needs
Manager on that instance, as IBM's watsonx Terraform module grants; Writer is not enough) and its
compute the watsonx.ai Runtime instance. Create waits until the space is `active`. A first-time user
of watsonx.ai has no data-platform user profile and cannot create a space until they have one: the
error says so and how to get it.
"""

from __future__ import annotations

import contextlib
import io
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
)

ACTIVE_TIMEOUT_SECONDS = 10 * 60
DELETE_TIMEOUT_SECONDS = 10 * 60
COMPUTE_TYPE = "machine_learning"
USER_PROFILE_HINT = (
    "The identity behind the API key has no watsonx.ai user profile yet: log in once to "
    "https://dataplatform.cloud.ibm.com with that user (for a service ID, have an account owner add it "
    "to the account's watsonx users), then run `pulumi up` again (docs/ibm.md, 'User profile')."
)
_REPLACE_KEYS = ("name", "cos_instance_crn", "runtime_name", "runtime_crn", "tags")


@dataclass
class DeploymentSpaceArgs:
    """Inputs of a DeploymentSpace."""

    name: pulumi.Input[str]
    cos_instance_crn: pulumi.Input[str]
    """CRN of the COS instance (the space's storage)."""
    runtime_name: pulumi.Input[str]
    """Name of the watsonx.ai Runtime instance (the space's compute)."""
    runtime_crn: pulumi.Input[str]
    """CRN of the watsonx.ai Runtime instance."""
    region: pulumi.Input[str]
    api_key: pulumi.Input[str]
    """IBM Cloud API key (a secret)."""
    description: pulumi.Input[str] = ""
    tags: list[str] = field(default_factory=list)
    endpoints: pulumi.Input[dict[str, str]] = field(default_factory=dict)
    """URL overrides (empty in production)."""


def space_state(details: Mapping[str, Any]) -> str:
    return str(((details.get("entity") or {}).get("status") or {}).get("state", ""))


class DeploymentSpaceProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        conn = Connection.of(props)
        tag = identity_tag(identity(props, _REPLACE_KEYS))
        try:
            client = conn.watsonx_client()
            names = client.spaces.ConfigurationMetaNames
            meta = {
                names.NAME: props["name"],
                names.DESCRIPTION: props.get("description") or "",
                names.STORAGE: {"type": "bmcos_object_storage", "resource_crn": props["cos_instance_crn"]},
                names.COMPUTE: {
                    "name": props["runtime_name"],
                    "crn": props["runtime_crn"],
                    "type": COMPUTE_TYPE,
                },
                names.TAGS: [*(props.get("tags") or []), tag],
            }

            def listed() -> list[dict[str, Any]]:
                return client.spaces.get_details(space_name=props["name"], get_all=True).get("resources", [])

            def same_name(resources: list[dict[str, Any]]) -> set[str]:
                return {
                    str(space["metadata"]["id"])
                    for space in resources
                    if (space.get("entity") or {}).get("name") == props["name"]
                }

            found = retrying(listed)
            adopted = left_behind(
                "deployment space",
                found,
                tag,
                space_state,
                ("active", "preparing"),
                client.spaces.delete,
            )

            def create() -> str:
                with contextlib.redirect_stdout(io.StringIO()):  # the SDK prints advice on background mode
                    details = client.spaces.store(meta_props=meta, background_mode=True)
                return str(details["metadata"]["id"])

            if adopted is None:
                log(f"creating deployment space {props['name']}")
            space_id = adopted or create_or_adopt(
                f"creating deployment space {props['name']}",
                create,
                lambda: same_name(listed()),
                before=same_name(found),
            )
        except Exception as error:
            raise _space_failure(f"creating deployment space {props['name']}", error) from error

        def active() -> dict[str, Any] | None:
            current = retrying(lambda: client.spaces.get_details(space_id))
            state = space_state(current)
            if state == "active":
                return current
            if state in ("failed", "error"):
                errors = (
                    ((current.get("entity") or {}).get("status") or {}).get("failure", {}).get("errors", [])
                )
                reason = "; ".join(str(e.get("message", e)) for e in errors) or state
                raise IbmProviderError(f"deployment space {props['name']} ({space_id}) failed: {reason}")
            return None

        conn.wait(f"deployment space {props['name']} to become active", active, ACTIVE_TIMEOUT_SECONDS)
        return CreateResult(id_=space_id, outs={**state_of(props), "space_id": space_id})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        updates = changed_keys(olds, news, (*CONNECTION_KEYS, "description"))
        return DiffResult(changes=bool(replaces or updates), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**update_connection(olds, news), "description": news.get("description")})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        client = Connection.of(props).watsonx_client()
        try:
            retrying(lambda: client.spaces.get_details(id_))
        except Exception as error:
            if is_not_found(error):
                return ReadResult(None, {})
            raise failure(f"reading deployment space {id_}", error) from error
        return ReadResult(id_, props)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        conn = Connection.of(props)
        client = conn.watsonx_client()
        log(f"deleting deployment space {props.get('name')}")
        try:
            retrying(lambda: client.spaces.delete(id_))
        except Exception as error:
            if is_not_found(error):
                return
            raise failure(
                f"deleting deployment space {id_}",
                error,
                "Delete its deployments and assets first (the stack does, in that order), then retry.",
            ) from error

        def gone() -> bool | None:
            try:
                client.spaces.get_details(id_)
            except Exception as error:
                if is_not_found(error):
                    return True
                raise failure(f"reading deployment space {id_}", error) from error
            return None

        conn.wait(f"deployment space {id_} to be deleted", gone, DELETE_TIMEOUT_SECONDS)


def _space_failure(what: str, error: BaseException) -> IbmProviderError:
    text = message_of(error).lower()
    if "profile" in text or "user_not_found" in text or "not onboarded" in text:
        return failure(what, error, USER_PROFILE_HINT)
    return failure(
        what,
        error,
        "The API key needs Editor on the watsonx.ai Runtime instance and Manager on the COS instance, "
        "whose bucket the space creates (docs/ibm.md).",
    )


class DeploymentSpace(pulumi.dynamic.Resource, module="ibm", name="DeploymentSpace"):
    """A deployment space backed by the stack's COS and watsonx.ai Runtime instances."""

    space_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: DeploymentSpaceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "name": args.name,
            "description": args.description,
            "cos_instance_crn": args.cos_instance_crn,
            "runtime_name": args.runtime_name,
            "runtime_crn": args.runtime_crn,
            "region": args.region,
            "tags": list(args.tags),
            "api_key": args.api_key,
            "endpoints": args.endpoints,
            "space_id": None,
        }
        props[IDENTITY_SEED] = identity_seed("ibm:DeploymentSpace", name)
        super().__init__(DeploymentSpaceProvider(), name, props, secret_key_opts(opts))

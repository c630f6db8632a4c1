"""A random suffix that lives as long as the stack's deployment of something, so its name is never reused.

The endpoint's name fixes the name of its log group, `/aws/sagemaker/Endpoints/<endpoint>`, which the
stack creates (retention, tags, deleted on destroy). SageMaker can create that group again after the
stack deleted it (an instance flushing a last line), and then a name derived from the configuration
alone (the instance type) would collide: `pulumi up` after `destroy`, or switching back to an earlier
instance type, would fail with ResourceAlreadyExistsException on the log group.

This resource is that name's suffix: random on create, kept in the state while `keepers` stay the same
(so model updates keep the endpoint's name), replaced when they change (a new instance type needs a new
endpoint) and gone with `pulumi destroy`, so every deployment gets names no earlier one had. It is what
pulumi-random's RandomId does, as a dynamic provider so the stack needs no further provider plugin.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.dynamic import changed_keys, state_of

SUFFIX_BYTES = 4  # 8 hex characters


class UniqueSuffixProvider(ResourceProvider):
    """Random hex on create; replaced when `keepers` change; nothing to delete."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        suffix = secrets.token_hex(int(props.get("length_bytes") or SUFFIX_BYTES))
        return CreateResult(id_=suffix, outs={**state_of(props), "suffix": suffix})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, ("keepers", "length_bytes"))
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, state_of(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        return None  # nothing exists outside the state


class UniqueSuffix(pulumi.dynamic.Resource, module="aws", name="UniqueSuffix"):
    """`suffix`: random hex, new for every deployment and whenever `keepers` change."""

    suffix: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        keepers: Mapping[str, pulumi.Input[str]],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"keepers": dict(keepers), "length_bytes": SUFFIX_BYTES, "suffix": None}
        super().__init__(UniqueSuffixProvider(), name, props, opts)

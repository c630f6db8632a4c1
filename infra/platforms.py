"""Which component builds which cloud; every component exposes the same outputs (docs/architecture.md)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Protocol

import pulumi

from infra.settings import Cloud, Settings

# Imported lazily: a local stack must not need pulumi-aws installed, and vice versa.
_COMPONENTS: dict[Cloud, str] = {
    Cloud.LOCAL: "infra.local:LocalPlatform",
    Cloud.AWS: "infra.aws:SageMakerPlatform",
    Cloud.GCP: "infra.gcp:VertexPlatform",
    Cloud.IBM: "infra.ibm:WatsonxPlatform",
}


class Platform(Protocol):
    """The outputs every platform component exports, one contract for mnistctl and the tests."""

    endpoints: pulumi.Output[dict]
    models: pulumi.Output[dict]
    bucket: pulumi.Output[str]
    dataset: pulumi.Output[str]


def build_platform(
    name: str, settings: Settings, secrets: Mapping[str, pulumi.Output[str]] | None = None
) -> Platform:
    """Construct the component for `settings.cloud`; its `from_settings` builds its typed args.

    `secrets` (secret Outputs read from config by the program, e.g. the IBM API key) go to
    `from_settings` as keyword arguments."""
    target = _COMPONENTS[settings.cloud]
    module_name, class_name = target.split(":")
    component = getattr(importlib.import_module(module_name), class_name)
    return component.from_settings(name, settings, **(secrets or {}))

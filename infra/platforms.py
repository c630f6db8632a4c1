"""Which component builds which cloud; every component exposes the same outputs (docs/architecture.md)."""

from __future__ import annotations

import importlib
from typing import Protocol

import pulumi

from infra.settings import Cloud, Settings

# Imported lazily: a local stack must not need pulumi-aws installed, and vice versa.
_COMPONENTS: dict[Cloud, str] = {
    Cloud.LOCAL: "infra.local:LocalPlatform",
    Cloud.AWS: "infra.aws:SageMakerPlatform",
}


class Platform(Protocol):
    """The outputs every platform component exports, one contract for mnistctl and the tests."""

    endpoints: pulumi.Output[dict]
    models: pulumi.Output[dict]
    bucket: pulumi.Output[str]
    dataset: pulumi.Output[str]


def build_platform(name: str, settings: Settings) -> Platform:
    """Construct the component for `settings.cloud`; its `from_settings` builds its typed args."""
    target = _COMPONENTS.get(settings.cloud)
    if target is None:
        ready = ", ".join(c.value for c in _COMPONENTS)
        raise ValueError(
            f"the {settings.cloud.value} stack is not implemented yet (see README, 'Status'); ready: {ready}"
        )
    module_name, class_name = target.split(":")
    component = getattr(importlib.import_module(module_name), class_name)
    return component.from_settings(name, settings)

"""The Pulumi program: read the settings, build the platform of `settings.cloud`, export the outputs."""

from __future__ import annotations

from pathlib import Path

import pulumi

from infra.platforms import build_platform
from infra.settings import Cloud, ibm_api_key_from, load_settings

PROJECT_ROOT = Path(__file__).resolve().parents[1]

settings = load_settings(
    pulumi.get_stack(),
    pulumi.Config(),
    aws_config=pulumi.Config("aws"),
    project_root=PROJECT_ROOT,
    gcp_config=pulumi.Config("gcp"),
    ibm_config=pulumi.Config("ibm"),
)
secrets: dict[str, pulumi.Output[str]] = {}
if settings.cloud is Cloud.IBM:
    # A secret from the first moment: from the stack's encrypted config, or IBM's own variables.
    secrets["api_key"] = pulumi.Config("ibm").get_secret("apiKey") or pulumi.Output.secret(
        ibm_api_key_from(None)
    )
platform = build_platform("mnist", settings, secrets)

pulumi.export("endpoints", platform.endpoints)
pulumi.export("models", platform.models)
pulumi.export("bucket", platform.bucket)
pulumi.export("dataset", platform.dataset)
# Batch scoring with each champion (docs/batch.md), on stacks with a `batch` config.
if settings.batch:
    if (batch := getattr(platform, "batch", None)) is None:
        raise ValueError(
            f"config mnist-platform:batch is not available on the {settings.cloud.value} stack yet "
            "(docs/batch.md says which stacks score in batch); unset it"
        )
    pulumi.export("batch", batch)
# The draw-a-digit page's URL, on stacks that serve one (local, `ui: true`).
if (ui := getattr(platform, "ui", None)) is not None:
    pulumi.export("ui", ui)

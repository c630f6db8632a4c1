"""The aws extra admits no release that lacks what the stack uses (checked against the published wheels:
pulumi-aws 7.24.0 has no `sagemaker/training_job.py`, 7.25.0 has; sagemaker-core 1.0.78 has no
`sagemaker/core/image_uris.py`, 2.0 has)."""

from __future__ import annotations

import tomllib

import pytest
from harness import PROJECT_ROOT
from packaging.requirements import Requirement


def _aws_extra() -> dict[str, Requirement]:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["optional-dependencies"]["aws"]]
    return {r.name: r for r in requirements}


@pytest.mark.parametrize(
    ("package", "too_old", "first_good"),
    [("pulumi-aws", "7.24.0", "7.25.0"), ("sagemaker-core", "1.0.78", "2.0")],
)
def test_version_floor_is_the_first_release_with_what_the_stack_uses(
    package: str, too_old: str, first_good: str
) -> None:
    specifier = _aws_extra()[package].specifier
    assert not specifier.contains(too_old)
    assert specifier.contains(first_good)


def test_the_installed_versions_have_what_the_stack_uses() -> None:
    from pulumi_aws import sagemaker
    from sagemaker.core import image_uris

    assert hasattr(sagemaker, "TrainingJob")
    assert image_uris.retrieve("xgboost", "us-east-1", "1.7-1").endswith("/sagemaker-xgboost:1.7-1")

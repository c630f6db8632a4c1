"""The `batch` key: off by default, one job per served model, its machine checked per cloud, its
input found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.settings import Cloud, Framework, load_settings


class FakeConfig(dict):
    """Stands in for pulumi.Config: values are the raw strings `pulumi config set` stores."""

    def get(self, key: str) -> str | None:  # type: ignore[override]
        return dict.get(self, key)


AWS = FakeConfig(region="us-east-1")
GCP = FakeConfig(project="mnist-project")


def _load(stack: str, batch: object, tmp_path: Path):
    config = FakeConfig(batch=json.dumps(batch))
    return load_settings(stack, config, aws_config=AWS, gcp_config=GCP, project_root=tmp_path)


def test_batch_is_off_unless_configured(tmp_path: Path):
    for stack in ("local", "aws"):
        assert load_settings(stack, FakeConfig(), aws_config=AWS, project_root=tmp_path).batch == {}


@pytest.mark.parametrize(
    ("stack", "model", "instance_type"),
    [("aws", "xgboost", "ml.m5.large"), ("gcp", "tensorflow", "n1-standard-2"), ("ibm", "pytorch", "XS")],
)
def test_a_cloud_job_defaults_to_the_clouds_smallest_machine(stack, model, instance_type, tmp_path: Path):
    if stack == "ibm":
        settings = load_settings(
            stack, FakeConfig(batch=json.dumps({model: {"input": "test"}})), project_root=tmp_path
        )
    else:
        settings = _load(stack, {model: {"input": "test"}}, tmp_path)
    job = settings.batch[Framework(model)]
    assert job.is_test_split() and job.instance_count == 1
    assert job.resolved_instance_type(settings.cloud) == instance_type


def test_a_relative_input_is_read_from_the_project_folder(tmp_path: Path):
    (tmp_path / "digits").mkdir()
    settings = _load("local", {"xgboost": {"input": "digits"}}, tmp_path)
    assert settings.batch[Framework.XGBOOST].input == str(tmp_path / "digits")


def test_the_chosen_machine_and_count_are_kept(tmp_path: Path):
    settings = _load(
        "aws", {"xgboost": {"input": "test", "instanceType": "ml.c5.xlarge", "instanceCount": 3}}, tmp_path
    )
    job = settings.batch[Framework.XGBOOST]
    assert (job.resolved_instance_type(Cloud.AWS), job.instance_count) == ("ml.c5.xlarge", 3)


@pytest.mark.parametrize(
    ("stack", "batch", "message"),
    [
        ("aws", ["xgboost"], "mnist-platform:batch must be a JSON map model -> job"),
        ("aws", {"xgboost": 3}, "batch.xgboost: must be a JSON map such as"),
        (
            "aws",
            {"xgboost": {"inputs": "test"}},
            "batch.xgboost: unknown keys ['inputs']; allowed: input, instanceType",
        ),
        ("aws", {"xgboost": {}}, "batch.xgboost.input: Field required"),
        (
            "aws",
            {"tensorflow": {"input": "test"}},
            "batch: names tensorflow, which this stack does not serve; allowed: xgboost",
        ),
        ("aws", {"jax": {"input": "test"}}, "batch.jax.[key]: Input should be 'xgboost'"),
        (
            "aws",
            {"xgboost": {"input": "test", "instanceType": "ml.m5.larg"}},
            "xgboost.instanceType 'ml.m5.larg' is not a SageMaker batch transform instance type",
        ),
        # Graviton is a transform instance type, but not one the x86-64 XGBoost image runs on.
        ("aws", {"xgboost": {"input": "test", "instanceType": "ml.c7g.large"}}, "allowed: "),
        (
            "aws",
            {"xgboost": {"input": "test", "instanceCount": 11}},
            "batch.xgboost.instanceCount: Input should be less than or equal to 10, got 11",
        ),
        ("aws", {"xgboost": {"input": "test", "instanceCount": 0}}, "greater than or equal to 1, got 0"),
        (
            "gcp",
            {"tensorflow": {"input": "test", "instanceType": "n1-standrad-2"}},
            "tensorflow.instanceType 'n1-standrad-2' is not a Compute Engine",
        ),
        (
            "local",
            {"xgboost": {"input": "test", "instanceType": "ml.m5.large"}},
            "instanceType must be 'local' (or absent) and instanceCount 1, got 'ml.m5.large' x 1",
        ),
        ("local", {"xgboost": {"input": "test", "instanceCount": 2}}, "got 'local' x 2"),
        ("local", {"xgboost": {"input": "missing.csv"}}, "xgboost.input '"),
        ("local", {"xgboost": {"input": ""}}, "batch.xgboost.input: String should have at least 1 character"),
    ],
)
def test_a_bad_batch_names_the_key_the_value_and_what_is_allowed(stack, batch, message, tmp_path: Path):
    with pytest.raises(ValueError, match=r"invalid stack configuration|must be a JSON map") as error:
        _load(stack, batch, tmp_path)
    assert message in str(error.value)


def test_an_input_that_does_not_exist_is_named_with_the_choices(tmp_path: Path):
    with pytest.raises(ValueError) as error:
        _load("local", {"xgboost": {"input": "missing.csv"}}, tmp_path)
    assert f"{tmp_path / 'missing.csv'}' does not exist; give 'test'" in str(error.value)


def test_ibm_batch_takes_a_deployment_hardware_spec(tmp_path: Path):
    with pytest.raises(ValueError) as error:
        load_settings(
            "ibm",
            FakeConfig(batch=json.dumps({"pytorch": {"input": "test", "instanceType": "XXS"}})),
            project_root=tmp_path,
        )
    assert (
        "pytorch.instanceType 'XXS' is not a watsonx.ai hardware specification for deployments; "
        "allowed: XS, S, M, L, XL" in str(error.value)
    )

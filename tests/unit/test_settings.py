"""Settings are validated before any resource exists, and a bad value names the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import Cloud, Dataset, Framework, TrainingPreset, load_settings


class FakeConfig(dict):
    """Stands in for pulumi.Config: values are the raw strings `pulumi config set` stores."""

    def get(self, key: str) -> str | None:  # type: ignore[override]
        return dict.get(self, key)


AWS = FakeConfig(region="us-east-1")


def test_cloud_defaults_to_stack_name_and_models_to_that_clouds_default():
    settings = load_settings("aws", FakeConfig(), aws_config=AWS)
    assert settings.cloud is Cloud.AWS
    assert settings.models == (Framework.XGBOOST,)
    assert settings.aws is not None and settings.aws.xgboost_version == "1.7-1"


def test_local_stack_serves_all_three_models_under_one_root(tmp_path: Path):
    settings = load_settings("local", FakeConfig(), project_root=tmp_path)
    assert settings.models == (Framework.XGBOOST, Framework.TENSORFLOW, Framework.PYTORCH)
    assert settings.local is not None
    assert settings.local.root == tmp_path / ".mnist-platform" / "local"


def test_numbers_from_config_become_hyperparameter_strings():
    config = FakeConfig(hyperparameters='{"xgboost": {"num_round": 10, "eta": 0.2}}', dataset="mnist-t10k")
    settings = load_settings("aws", config, aws_config=AWS)
    assert settings.hyperparameters[Framework.XGBOOST] == {"num_round": "10", "eta": "0.2"}
    assert settings.dataset is Dataset.MNIST_T10K


def test_training_preset_is_standard_unless_set(tmp_path: Path):
    default = load_settings("local", FakeConfig(), project_root=tmp_path)
    assert default.training_preset is TrainingPreset.STANDARD
    chosen = load_settings("local", FakeConfig(trainingPreset="long"), project_root=tmp_path)
    assert chosen.training_preset is TrainingPreset.LONG


@pytest.mark.parametrize(
    ("stack", "config", "message"),
    [
        ("azure", FakeConfig(), "cloud must be one of aws, gcp, ibm, local"),
        (
            "local",
            FakeConfig(dataset="cifar"),
            "mnist-platform:dataset: Input should be 'mnist', 'mnist-t10k'",
        ),
        ("local", FakeConfig(models='["jax"]'), "mnist-platform:models.0: Input should be 'xgboost'"),
        ("local", FakeConfig(models='"xgboost"'), "models must be a JSON list"),
        ("aws", FakeConfig(models='["tensorflow"]'), "cannot run on aws; allowed: xgboost"),
        ("local", FakeConfig(ports='{"xgboost": 80}'), "mnist-platform:ports: Value error, port for xgboost"),
        ("local", FakeConfig(hyperparameters="{not json"), "hyperparameters must be JSON"),
        ("aws", FakeConfig(trainingInstanceType="m5.large"), "mnist-platform:trainingInstanceType"),
        ("aws", FakeConfig(endpointMinInstances="3"), "endpointMinInstances (3) must not exceed"),
        ("aws", FakeConfig(trainingInstanceCount="0"), "mnist-platform:trainingInstanceCount"),
        ("local", FakeConfig(trainingPreset="huge"), "trainingPreset: Input should be 'standard' or 'long'"),
    ],
)
def test_invalid_settings_name_the_key_and_the_allowed_values(stack, config, message):
    with pytest.raises(ValueError, match=None) as error:
        load_settings(stack, config, aws_config=AWS)
    assert message in str(error.value)


def test_aws_stack_requires_a_region():
    with pytest.raises(ValueError, match="aws:region is required"):
        load_settings("aws", FakeConfig(), aws_config=FakeConfig())


def test_unimplemented_clouds_say_so_before_building_anything():
    from infra.platforms import build_platform

    settings = load_settings("gcp", FakeConfig())
    with pytest.raises(ValueError, match="the gcp stack is not implemented yet"):
        build_platform("mnist", settings)

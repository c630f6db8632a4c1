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


def test_the_local_stack_serves_the_ui_page_unless_told_not_to(tmp_path: Path):
    default = load_settings("local", FakeConfig(), project_root=tmp_path)
    assert default.local is not None and default.local.ui is True
    off = load_settings("local", FakeConfig(ui="false"), project_root=tmp_path)
    assert off.local is not None and off.local.ui is False


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
        ("local", FakeConfig(ports='{"xgboost": 80}'), "mnist-platform:ports: port for xgboost"),
        ("local", FakeConfig(hyperparameters="{not json"), "hyperparameters must be JSON"),
        ("local", FakeConfig(ui="maybe"), "mnist-platform:ui: Input should be a valid boolean"),
        (
            "aws",
            FakeConfig(trainingInstanceType="m5.large"),
            "mnist-platform:trainingInstanceType: 'm5.large' is not one of the SageMaker training",
        ),
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


def test_every_cloud_maps_to_a_platform_component_with_from_settings():
    import importlib

    from infra.platforms import _COMPONENTS

    assert set(_COMPONENTS) == set(Cloud)
    for target in _COMPONENTS.values():
        module, name = target.split(":")
        assert callable(getattr(importlib.import_module(module), name).from_settings), target


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        # A typo: the message names the key, the value, and the closest real types first.
        ("trainingInstanceType", "ml.m5.xlarg", "trainingInstanceType: 'ml.m5.xlarg' is not one of"),
        ("trainingInstanceType", "ml.m5.xlarg", "allowed: ml.m5.xlarge,"),
        ("endpointInstanceType", "ml.m5.larg", "allowed: ml.m5.large,"),
        # Real SageMaker types the x86-64 XGBoost image cannot run on (Graviton, Inferentia).
        ("endpointInstanceType", "ml.c7g.large", "endpointInstanceType: 'ml.c7g.large' is not one of"),
        ("trainingInstanceType", "ml.trn1.2xlarge", "'ml.trn1.2xlarge' is not one of"),
        # Counts and runtime: over the ceiling, with the value and the bound.
        (
            "trainingInstanceCount",
            "20",
            "trainingInstanceCount: Input should be less than or equal to 10, got 20",
        ),
        (
            "endpointMaxInstances",
            "11",
            "endpointMaxInstances: Input should be less than or equal to 10, got 11",
        ),
        ("maxRuntimeSeconds", "2419201", "less than or equal to 2419200, got 2419201"),
    ],
)
def test_instance_types_and_counts_the_platform_does_not_offer_are_rejected(key, value, expected):
    with pytest.raises(ValueError, match="invalid stack configuration") as error:
        load_settings("aws", FakeConfig({key: value}), aws_config=AWS)
    assert expected in str(error.value)


def test_every_instance_type_the_aws_stack_file_uses_is_offered():
    import yaml
    from harness import PROJECT_ROOT

    from infra import offerings

    config = yaml.safe_load((PROJECT_ROOT / "Pulumi.aws.yaml").read_text())["config"]
    assert config["mnist-platform:trainingInstanceType"] in offerings.sagemaker_training_instance_types()
    assert config["mnist-platform:endpointInstanceType"] in offerings.sagemaker_endpoint_instance_types()
    assert "ml.m5.large" in offerings.sagemaker_endpoint_instance_types()
    assert "ml.c7g.large" not in offerings.sagemaker_endpoint_instance_types()


def test_a_bad_instance_type_stops_the_aws_program_before_any_resource_is_declared():
    from harness import default_new_resource, run_stack

    declared: list[str] = []
    fallback = default_new_resource()

    def new_resource(args):
        declared.append(args.typ)
        return fallback(args)

    with pytest.raises(ValueError, match=r"trainingInstanceType: 'ml\.m5\.xlarg'"):
        run_stack("aws", {"trainingInstanceType": "ml.m5.xlarg"}, new_resource=new_resource)
    assert declared == []


GCP = FakeConfig({"project": "my-mnist-project"})


def test_gcp_stack_requires_a_project_and_defaults_to_small_machines_in_us_central1():
    with pytest.raises(ValueError, match="gcp:project is required"):
        load_settings("gcp", FakeConfig(), gcp_config=FakeConfig())
    settings = load_settings("gcp", FakeConfig(), gcp_config=GCP)
    assert settings.gcp is not None
    assert (settings.gcp.project, settings.gcp.region) == ("my-mnist-project", "us-central1")
    assert settings.gcp.training_machine_type == "n1-standard-4"
    assert settings.gcp.serving_image == "project"
    assert settings.models == (Framework.TENSORFLOW,)


@pytest.mark.parametrize(
    ("config", "gcp_config", "message"),
    [
        ({"trainingReplicaCount": "0"}, GCP, "mnist-platform:trainingReplicaCount"),
        (
            {"servingMinReplicas": "3", "servingMaxReplicas": "2"},
            GCP,
            "servingMinReplicas (3) must not exceed",
        ),
        ({"kmsKeyName": "my-key"}, GCP, "mnist-platform:kmsKeyName"),
        ({"servingImage": "tf2-cpu.9-99"}, GCP, "allowed: project, tf2-cpu.2-15"),
        ({}, FakeConfig({"project": "Not_A_Project"}), "gcp:project"),
    ],
)
def test_invalid_gcp_settings_name_the_key(config, gcp_config, message):
    with pytest.raises(ValueError) as error:
        load_settings("gcp", FakeConfig(config), gcp_config=gcp_config)
    assert message in str(error.value)


def test_a_prebuilt_image_past_its_end_of_availability_stops_the_preflight():
    from datetime import date

    from infra.settings import check_prebuilt_image

    check_prebuilt_image("tf2-cpu.2-15", date(2027, 1, 14))  # its last day
    with pytest.raises(ValueError, match=r"tf2-cpu\.2-15 reached its end of availability on 2027-01-14"):
        check_prebuilt_image("tf2-cpu.2-15", date(2027, 1, 15))
    check_prebuilt_image("project", date(2099, 1, 1))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            "trainingMachineType",
            "n1-standrad-4",
            "trainingMachineType: 'n1-standrad-4' is not a Compute Engine",
        ),
        ("servingMachineType", "n1-standard", "servingMachineType: 'n1-standard' is not a Compute Engine"),
        ("servingMachineType", "n1-standard-3", "3 vCPUs is not a machine size"),
        (
            "trainingReplicaCount",
            "17",
            "trainingReplicaCount: Input should be less than or equal to 16, got 17",
        ),
    ],
)
def test_gcp_machine_types_and_counts_vertex_cannot_run_are_rejected(key, value, expected):
    with pytest.raises(ValueError, match="invalid stack configuration") as error:
        load_settings("gcp", FakeConfig({key: value}), gcp_config=GCP)
    assert expected in str(error.value)


def test_gcp_stack_files_machine_types_are_well_formed():
    import yaml
    from harness import PROJECT_ROOT

    from infra import offerings

    config = yaml.safe_load((PROJECT_ROOT / "Pulumi.gcp.yaml").read_text())["config"]
    for key in ("mnist-platform:trainingMachineType", "mnist-platform:servingMachineType"):
        assert offerings.vertex_machine_type_problem(config[key]) is None, config[key]

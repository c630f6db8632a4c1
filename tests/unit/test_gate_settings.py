"""The champion gate's config keys: minAccuracy (number or per-model map, defaults per dataset),
promotionTolerance and forcePromotion; a bad value names the key and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.gate import PromotionRule
from infra.settings import DEFAULT_MIN_ACCURACY, Dataset, Framework, load_settings


class FakeConfig(dict):
    """Stands in for pulumi.Config: values are the raw strings `pulumi config set` stores."""

    def get(self, key: str) -> str | None:  # type: ignore[override]
        return dict.get(self, key)


AWS = FakeConfig(region="us-east-1")


def test_floors_default_per_dataset_and_model(tmp_path: Path):
    mnist = load_settings("local", FakeConfig(), project_root=tmp_path).promotion
    assert mnist.rule(Framework.XGBOOST) == PromotionRule(min_accuracy=0.95, tolerance=0.0, force=False)
    assert mnist.rule(Framework.TENSORFLOW).min_accuracy == 0.98
    fashion = load_settings("local", FakeConfig(dataset="fashion-mnist"), project_root=tmp_path).promotion
    # Fashion-MNIST is harder: its published XGBoost baseline is 89.8 %, under MNIST's 95 % floor.
    assert fashion.rule(Framework.XGBOOST).min_accuracy == 0.85
    assert fashion.rule(Framework.PYTORCH).min_accuracy < mnist.rule(Framework.PYTORCH).min_accuracy
    assert set(DEFAULT_MIN_ACCURACY) == set(Dataset)
    assert all(set(floors) == set(Framework) for floors in DEFAULT_MIN_ACCURACY.values())


def test_a_dry_run_has_no_default_floor_but_keeps_an_explicit_one(tmp_path: Path):
    dry = load_settings("local", FakeConfig(dryRun="true"), project_root=tmp_path).promotion
    assert dry.rule(Framework.XGBOOST).min_accuracy == 0.0
    pinned = load_settings("local", FakeConfig(dryRun="true", minAccuracy="0.5"), project_root=tmp_path)
    assert pinned.promotion.rule(Framework.XGBOOST).min_accuracy == 0.5


def test_one_number_sets_every_models_floor_and_a_map_sets_some(tmp_path: Path):
    one = load_settings("local", FakeConfig(minAccuracy="0.9"), project_root=tmp_path).promotion
    assert {one.rule(m).min_accuracy for m in Framework} == {0.9}
    some = load_settings("local", FakeConfig(minAccuracy='{"pytorch": 0.99}'), project_root=tmp_path)
    assert some.promotion.rule(Framework.PYTORCH).min_accuracy == 0.99
    assert some.promotion.rule(Framework.XGBOOST).min_accuracy == 0.95  # the default for the others


def test_tolerance_and_force_reach_every_rule():
    settings = load_settings(
        "aws", FakeConfig(promotionTolerance="0.005", forcePromotion="true"), aws_config=AWS
    )
    assert settings.promotion.rule(Framework.XGBOOST) == PromotionRule(0.95, tolerance=0.005, force=True)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            FakeConfig(minAccuracy="1.2"),
            "mnist-platform:minAccuracy: the floor of xgboost must be between 0 and 1, got 1.2",
        ),
        (FakeConfig(minAccuracy='"high"'), "minAccuracy must be a number between 0 and 1 or a JSON map"),
        (
            FakeConfig(minAccuracy='{"pytorch": 0.9}'),
            "minAccuracy names ['pytorch'], which this stack does not",
        ),
        (FakeConfig(promotionTolerance="-0.1"), "mnist-platform:promotionTolerance: Input should be greater"),
        (FakeConfig(promotionTolerance="2"), "mnist-platform:promotionTolerance: Input should be less than"),
        (
            FakeConfig(forcePromotion="maybe"),
            "mnist-platform:forcePromotion: Input should be a valid boolean",
        ),
    ],
)
def test_bad_gate_settings_name_the_key_and_the_allowed_values(config: FakeConfig, message: str):
    with pytest.raises(ValueError) as error:
        load_settings("aws", config, aws_config=AWS)
    assert message in str(error.value)


def test_the_gcp_and_ibm_stacks_take_the_same_keys_with_their_models_floors(tmp_path: Path):
    gcp_config = FakeConfig(project="my-mnist-project")
    gcp = load_settings(
        "gcp", FakeConfig(promotionTolerance="0.01", forcePromotion="true"), gcp_config=gcp_config
    )
    assert gcp.promotion.rule(Framework.TENSORFLOW) == PromotionRule(0.98, tolerance=0.01, force=True)
    kmnist = load_settings("gcp", FakeConfig(dataset="kmnist"), gcp_config=gcp_config)
    assert kmnist.promotion.rule(Framework.TENSORFLOW).min_accuracy == 0.92
    with pytest.raises(ValueError, match=r"minAccuracy names \['xgboost'\], which this stack does not train"):
        load_settings("gcp", FakeConfig(minAccuracy='{"xgboost": 0.9}'), gcp_config=gcp_config)

    ibm_config = FakeConfig(region="us-south")

    def ibm(**config: str) -> PromotionRule:
        settings = load_settings("ibm", FakeConfig(**config), ibm_config=ibm_config, project_root=tmp_path)
        return settings.promotion.rule(Framework.PYTORCH)

    assert ibm() == PromotionRule(0.98)
    assert ibm(minAccuracy="0.97").min_accuracy == 0.97
    assert ibm(dryRun="true").min_accuracy == 0.0  # a tiny subset: no default floor

"""The `rollout` config key: absent means all at once; a JSON map sets the canary, with every bad
value named by its key, the value and what is allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import RolloutSettings, load_settings


class FakeConfig(dict):
    """Stands in for pulumi.Config: values are the raw strings `pulumi config set` stores."""

    def get(self, key: str) -> str | None:  # type: ignore[override]
        return dict.get(self, key)


AWS = FakeConfig(region="us-east-1")
GCP = FakeConfig(project="my-project")


def test_no_rollout_key_means_all_at_once(tmp_path: Path):
    assert load_settings("local", FakeConfig(), project_root=tmp_path).rollout is None


def test_a_rollout_map_sets_the_canary_and_leaves_the_rest_at_their_defaults(tmp_path: Path):
    settings = load_settings(
        "local", FakeConfig(rollout='{"canaryPercent": 25, "bakeMinutes": 0.05}'), project_root=tmp_path
    )
    assert settings.rollout == RolloutSettings(
        canaryPercent=25, bakeMinutes=0.05, maxErrorRate=0.01, minLiveAccuracy=0.0
    )
    assert settings.rollout is not None
    assert settings.rollout.bake_seconds == pytest.approx(3.0)  # fractional minutes: seconds in tests


def test_every_rollout_key_reaches_the_aws_stack():
    raw = '{"canaryPercent": 5, "bakeMinutes": 30, "maxErrorRate": 0.02, "minLiveAccuracy": 0.9}'
    aws = load_settings("aws", FakeConfig(rollout=raw), aws_config=AWS).rollout
    assert aws == RolloutSettings(canaryPercent=5, bakeMinutes=30, maxErrorRate=0.02, minLiveAccuracy=0.9)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            '{"canaryPercent": 0}',
            "mnist-platform:rollout.canaryPercent: Input should be greater than or equal to 1, got 0",
        ),
        (
            '{"canaryPercent": 100}',
            "mnist-platform:rollout.canaryPercent: Input should be less than or equal to 99, got 100",
        ),
        ('{"canaryPercent": 12.5}', "mnist-platform:rollout.canaryPercent: Input should be a valid integer"),
        (
            '{"bakeMinutes": -1}',
            "mnist-platform:rollout.bakeMinutes: Input should be greater than or equal to 0, got -1",
        ),
        (
            '{"maxErrorRate": 1.5}',
            "mnist-platform:rollout.maxErrorRate: Input should be less than or equal to 1, got 1.5",
        ),
        (
            '{"minLiveAccuracy": -0.1}',
            "mnist-platform:rollout.minLiveAccuracy: Input should be greater than or equal to 0, got -0.1",
        ),
        (
            '{"minLiveAccuracy": true}',
            "mnist-platform:rollout: minLiveAccuracy must be numbers, not true/false",
        ),
        (
            '{"canary": 10}',
            "mnist-platform:rollout: unknown keys ['canary']; allowed: canaryPercent, bakeMinutes, "
            "maxErrorRate, minLiveAccuracy",
        ),
        ("10", 'mnist-platform:rollout: must be a JSON map such as {"canaryPercent": 10'),
        ("{canaryPercent: 10}", "config mnist-platform:rollout must be JSON, got '{canaryPercent: 10}'"),
    ],
)
def test_bad_rollout_values_name_the_key_the_value_and_what_is_allowed(
    tmp_path: Path, raw: str, message: str
):
    with pytest.raises(ValueError) as error:
        load_settings("local", FakeConfig(rollout=raw), project_root=tmp_path)
    assert message in str(error.value)


def test_the_ibm_stack_refuses_a_rollout_it_cannot_split():
    with pytest.raises(
        ValueError, match=r"rollout is not available on the ibm stack.*allowed on: aws, local"
    ):
        load_settings("ibm", FakeConfig(rollout='{"canaryPercent": 10}'))


def test_the_gcp_stack_refuses_a_rollout_it_does_not_implement_yet():
    with pytest.raises(ValueError, match=r"not available on the gcp stack yet.*allowed on: aws, local"):
        load_settings("gcp", FakeConfig(rollout='{"canaryPercent": 10}'), gcp_config=GCP)

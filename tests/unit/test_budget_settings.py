"""The budget keys (maxHourlyCost, maxRunCost) are read and validated with the rest of the settings."""

from __future__ import annotations

import pytest

from infra.settings import BudgetSettings, load_settings


class FakeConfig(dict):
    """pulumi.Config's `get`: the value as `pulumi config` hands it over (a string), or None."""

    def get(self, key: str) -> str | None:  # type: ignore[override]
        return super().get(key)


AWS = FakeConfig(region="us-east-1")


def test_no_budget_unless_set():
    assert load_settings("aws", FakeConfig(), aws_config=AWS).budget == BudgetSettings()


def test_both_limits_are_read_as_numbers():
    settings = load_settings("aws", FakeConfig(maxHourlyCost="0.5", maxRunCost="2"), aws_config=AWS)
    assert (settings.budget.max_hourly_cost, settings.budget.max_run_cost) == (0.5, 2.0)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            FakeConfig(maxHourlyCost="-1"),
            "mnist-platform:maxHourlyCost: Input should be greater than 0, got -1",
        ),
        (
            FakeConfig(maxRunCost="-0.5"),
            "mnist-platform:maxRunCost: Input should be greater than 0, got -0.5",
        ),
        (FakeConfig(maxHourlyCost="cheap"), "mnist-platform:maxHourlyCost: Input should be a valid number"),
    ],
)
def test_a_bad_limit_names_its_key_and_value(config, message):
    with pytest.raises(ValueError) as raised:
        load_settings("aws", config, aws_config=AWS)
    assert message in str(raised.value)

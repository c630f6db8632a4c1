"""The champion/challenger rule (infra/gate.py) on its own: floor, champion, tolerance, ties, force,
unreadable scores."""

from __future__ import annotations

import math

import pytest

from infra.gate import Decision, PromotionRule, decide, readable_accuracy

RULE = PromotionRule(min_accuracy=0.95)


def test_first_challenger_above_the_floor_is_promoted():
    verdict = decide(0.965, None, RULE)
    assert verdict.decision is Decision.PROMOTED and verdict.promotes
    assert "0.9650" in verdict.reason and "minAccuracy 0.9500" in verdict.reason
    assert "no champion yet" in verdict.reason


def test_first_challenger_under_the_floor_is_held():
    verdict = decide(0.60, None, RULE)
    assert verdict.decision is Decision.HELD and not verdict.promotes
    assert "0.6000 < floor minAccuracy 0.9500" in verdict.reason
    assert "there is no champion to serve" in verdict.reason
    assert "forcePromotion true" in verdict.reason


def test_a_better_challenger_is_promoted_and_the_reason_names_both_accuracies():
    verdict = decide(0.97, 0.96, RULE)
    assert verdict.decision is Decision.PROMOTED
    assert "0.9700" in verdict.reason and "champion accuracy 0.9600" in verdict.reason


def test_a_worse_challenger_is_held_and_the_champion_keeps_serving():
    verdict = decide(0.955, 0.97, RULE)
    assert verdict.decision is Decision.HELD
    assert (
        "challenger accuracy 0.9550 < champion accuracy 0.9700 - promotionTolerance 0.0000" in verdict.reason
    )
    assert "keeps serving the champion unchanged" in verdict.reason
    assert "pulumi config set forcePromotion true" in verdict.reason


def test_a_tie_promotes_the_newer_model():
    assert decide(0.97, 0.97, RULE).decision is Decision.PROMOTED
    # The same accuracy reached by different arithmetic (1 - merror on SageMaker) is still a tie.
    assert decide(1 - 0.03, 0.97, RULE).decision is Decision.PROMOTED
    assert decide(0.97 - 1e-6, 0.97, RULE).decision is Decision.HELD


def test_the_floor_holds_even_a_challenger_better_than_the_champion():
    verdict = decide(0.94, 0.90, RULE)
    assert verdict.decision is Decision.HELD
    assert (
        "0.9400 < floor minAccuracy 0.9500" in verdict.reason and "champion accuracy 0.9000" in verdict.reason
    )


def test_the_floor_itself_passes():
    assert decide(0.95, None, RULE).decision is Decision.PROMOTED


@pytest.mark.parametrize(
    ("challenger", "champion", "tolerance", "decision"),
    [
        (0.965, 0.97, 0.01, Decision.PROMOTED),  # within the tolerance
        (0.96, 0.97, 0.01, Decision.PROMOTED),  # exactly at it
        (0.955, 0.97, 0.01, Decision.HELD),  # beyond it
        (0.965, 0.97, 0.0, Decision.HELD),  # no tolerance: never worse
    ],
)
def test_tolerance_lets_a_slightly_worse_challenger_win(
    challenger: float, champion: float, tolerance: float, decision: Decision
):
    assert decide(challenger, champion, PromotionRule(0.95, tolerance)).decision is decision


def test_tolerance_never_lowers_the_floor():
    assert decide(0.945, 0.95, PromotionRule(0.95, tolerance=0.05)).decision is Decision.HELD


def test_an_unreadable_challenger_is_never_promoted_on_the_rule():
    verdict = decide(None, 0.97, RULE, "metrics.json is missing")
    assert verdict.decision is Decision.HELD
    assert "could not be read (metrics.json is missing)" in verdict.reason
    assert "never promoted" in verdict.reason
    # Not even with no floor and no champion: a missing score is not a score of 1.
    assert decide(None, None, PromotionRule(0.0)).decision is Decision.HELD


def test_force_promotes_what_the_rule_holds_and_says_so():
    forced = PromotionRule(0.95, force=True)
    verdict = decide(0.60, 0.97, forced)
    assert verdict.decision is Decision.FORCED and verdict.promotes
    assert verdict.reason.startswith("forcePromotion is true: promoted although challenger accuracy 0.6000")
    assert decide(None, 0.97, forced).decision is Decision.FORCED
    # A challenger that passes anyway is simply promoted.
    assert decide(0.98, 0.97, forced).decision is Decision.PROMOTED


@pytest.mark.parametrize("value", [None, "0.97", True, math.nan, math.inf, -0.1, 1.5, [0.9]])
def test_only_a_number_in_zero_to_one_is_an_accuracy(value: object):
    assert readable_accuracy(value) is None


def test_numbers_in_range_are_accuracies():
    assert readable_accuracy(0.97) == 0.97
    assert readable_accuracy(1) == 1.0 and readable_accuracy(0) == 0.0


@pytest.mark.parametrize(("floor", "tolerance"), [(-0.1, 0.0), (1.01, 0.0), (0.9, -0.01), (0.9, 2.0)])
def test_rule_parameters_are_accuracies(floor: float, tolerance: float):
    with pytest.raises(ValueError, match="between 0 and 1"):
        PromotionRule(floor, tolerance)


# The reason is what `pulumi up` prints for a held or promoted model: each kind, word for word.
@pytest.mark.parametrize(
    ("challenger", "champion", "reason"),
    [
        (
            0.965,
            None,
            "challenger accuracy 0.9650 >= floor minAccuracy 0.9500 and there is no champion yet: promoted",
        ),
        (
            0.97,
            0.96,
            "challenger accuracy 0.9700 >= champion accuracy 0.9600 - promotionTolerance 0.0000 "
            "and >= floor minAccuracy 0.9500: promoted",
        ),
        (
            0.60,
            None,
            "held back: challenger accuracy 0.6000 < floor minAccuracy 0.9500; "
            "there is no champion to serve. "
            "To serve it anyway, run once with `pulumi config set forcePromotion true`.",
        ),
        (
            0.955,
            0.97,
            "held back: challenger accuracy 0.9550 < champion accuracy 0.9700 - promotionTolerance 0.0000; "
            "the endpoint keeps serving the champion unchanged. "
            "To serve it anyway, run once with `pulumi config set forcePromotion true`.",
        ),
        (
            None,
            None,
            "held back: the challenger's accuracy could not be read (no accuracy was reported), and a model "
            "without a score is never promoted on the rule; there is no champion to serve. "
            "To serve it anyway, run once with `pulumi config set forcePromotion true`.",
        ),
    ],
)
def test_the_reason_says_the_accuracies_the_rule_and_what_the_endpoint_serves(
    challenger: float | None, champion: float | None, reason: str
):
    assert decide(challenger, champion, RULE).reason == reason


@pytest.mark.parametrize(
    ("floor", "tolerance", "key"), [(1.01, 0.0, "minAccuracy"), (0.9, 2.0, "promotionTolerance")]
)
def test_a_rule_parameter_out_of_range_is_refused_naming_its_config_key(
    floor: float, tolerance: float, key: str
):
    with pytest.raises(ValueError, match=f"^{key} must be between 0 and 1"):
        PromotionRule(floor, tolerance)


def test_the_ends_of_zero_to_one_are_valid_rule_parameters():
    # A floor of 1.0 (only a perfect model) and a tolerance of 1.0 (any challenger over the floor) are rules.
    assert decide(1.0, 0.5, PromotionRule(1.0)).decision is Decision.PROMOTED
    assert decide(0.2, 0.9, PromotionRule(0.0, tolerance=1.0)).decision is Decision.PROMOTED

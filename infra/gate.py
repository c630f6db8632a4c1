"""The champion/challenger rule, as pure code: which model an endpoint may serve.

A freshly trained model (the challenger) replaces the one the endpoint serves (the champion) only when

    challenger accuracy >= minAccuracy                                   (the floor), and
    challenger accuracy >= champion accuracy - promotionTolerance        (no worse than what is served)

both measured on the held-out test set of the stack's dataset. A tie promotes (the newer model wins at
equal accuracy). A challenger whose accuracy cannot be read is never promoted on the rule: without a
score there is no evidence it is any good. `forcePromotion: true` promotes whatever the rule says.

Every stack's gate provider (infra/gate_provider.py) calls `decide` and nothing else decides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

# Accuracies come from different arithmetic (1 - merror on SageMaker, a mean over predictions locally):
# differences below this are the same accuracy, so a retrained identical model ties instead of losing.
TIE_EPSILON = 1e-9
FORCE_HINT = "To serve it anyway, run once with `pulumi config set forcePromotion true`."


class Decision(StrEnum):
    """What the gate did with a challenger."""

    PROMOTED = "promoted"
    """The challenger passed the rule and is the new champion."""
    FORCED = "forced"
    """forcePromotion made the challenger the champion (whatever the rule said)."""
    HELD = "held"
    """The challenger failed the rule; the champion keeps being served, untouched."""
    CHAMPION = "champion"
    """The challenger is the champion already (the same training run): nothing to decide."""


@dataclass(frozen=True)
class PromotionRule:
    """The rule's parameters for one model, from the stack's config."""

    min_accuracy: float
    """The floor: `minAccuracy` of this model."""
    tolerance: float = 0.0
    """`promotionTolerance`: how much worse than the champion a challenger may be and still win."""
    force: bool = False
    """`forcePromotion`: promote the challenger whatever the rule says."""

    def __post_init__(self) -> None:
        for name, value in (("minAccuracy", self.min_accuracy), ("promotionTolerance", self.tolerance)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")


@dataclass(frozen=True)
class Verdict:
    """The decision and its reason, in words that name both accuracies and the rule."""

    decision: Decision
    reason: str

    @property
    def promotes(self) -> bool:
        return self.decision in (Decision.PROMOTED, Decision.FORCED)


def readable_accuracy(value: object) -> float | None:
    """`value` as an accuracy in [0, 1], or None when it is not one (missing, NaN, text, out of range)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    accuracy = float(value)
    if not math.isfinite(accuracy) or not 0.0 <= accuracy <= 1.0:
        return None
    return accuracy


def decide(
    challenger: float | None,
    champion: float | None,
    rule: PromotionRule,
    unreadable_because: str = "no accuracy was reported",
) -> Verdict:
    """Promote or hold `challenger` (its accuracy, None: unreadable) against `champion` (None: none yet)."""
    failure = _rule_failure(challenger, champion, rule, unreadable_because)
    if failure is None:
        assert challenger is not None  # _rule_failure returns a failure for an unreadable challenger
        if champion is None:
            reason = (
                f"challenger accuracy {challenger:.4f} >= floor minAccuracy {rule.min_accuracy:.4f} "
                "and there is no champion yet: promoted"
            )
        else:
            reason = (
                f"challenger accuracy {challenger:.4f} >= champion accuracy {champion:.4f} - "
                f"promotionTolerance {rule.tolerance:.4f} and >= floor minAccuracy {rule.min_accuracy:.4f}: "
                "promoted"
            )
        return Verdict(Decision.PROMOTED, reason)
    if rule.force:
        return Verdict(Decision.FORCED, f"forcePromotion is true: promoted although {failure}")
    served = (
        "the endpoint keeps serving the champion unchanged"
        if champion is not None
        else "there is no champion to serve"
    )
    return Verdict(Decision.HELD, f"held back: {failure}; {served}. {FORCE_HINT}")


def _rule_failure(
    challenger: float | None, champion: float | None, rule: PromotionRule, unreadable_because: str
) -> str | None:
    """Why the rule refuses the challenger, or None when it passes."""
    champion_text = f" (champion accuracy {champion:.4f})" if champion is not None else ""
    if challenger is None:
        return (
            f"the challenger's accuracy could not be read ({unreadable_because}), and a model without a "
            f"score is never promoted on the rule{champion_text}"
        )
    if challenger + TIE_EPSILON < rule.min_accuracy:
        return (
            f"challenger accuracy {challenger:.4f} < floor minAccuracy {rule.min_accuracy:.4f}{champion_text}"
        )
    if champion is not None and challenger + TIE_EPSILON < champion - rule.tolerance:
        return (
            f"challenger accuracy {challenger:.4f} < champion accuracy {champion:.4f} - promotionTolerance "
            f"{rule.tolerance:.4f}"
        )
    return None

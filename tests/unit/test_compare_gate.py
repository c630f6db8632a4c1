"""`mnistctl compare` shows the champion gate: the served and the challenger's accuracy, the decision,
the rule, and why a challenger was held back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

from mnistctl.compare import GATE_RULE, compare, comparison_table, gate_notes


class AlwaysSeven:
    """An endpoint client that answers 7 to everything (no server needed)."""

    def __init__(self, entry: Any) -> None:
        self.endpoint = entry

    def predict(self, images: np.ndarray) -> np.ndarray:
        probabilities = np.zeros((len(images), 10), dtype=np.float32)
        probabilities[:, 7] = 1.0
        return probabilities


def outputs(decision: str, reason: str) -> dict[str, Any]:
    return {
        "endpoints": {"xgboost": {"flavor": "sagemaker", "name": "mnist-xgboost", "region": "local"}},
        "models": {
            "xgboost": {
                "artifact": "s3://bucket/champions/xgboost/job-1/model.tar.gz",
                "metrics": {"accuracy": 0.97},
                "champion": {"source": "job-1", "accuracy": 0.97},
                "challenger": {"source": "job-2", "accuracy": 0.61, "decision": decision, "reason": reason},
            }
        },
        "dataset": "mnist-t10k",
    }


def test_compare_shows_the_gate_decision_and_why_a_challenger_was_held(t10k_dir: Path):
    held = "held back: challenger accuracy 0.6100 < champion accuracy 0.9700 - promotionTolerance 0.0000"
    rows = compare(
        [("aws", outputs("held", held)), ("again", outputs("promoted", "promoted"))],
        count=3,
        data_dir=t10k_dir,
        client_factory=AlwaysSeven,
    )
    assert (rows[0].trained_accuracy, rows[0].challenger_accuracy, rows[0].decision) == (0.97, 0.61, "held")
    console = Console(width=250, record=True)
    console.print(comparison_table(rows))
    table = console.export_text()
    assert "61.00%" in table and "97.00%" in table and "held" in table and "promoted" in table
    notes = gate_notes(rows)
    assert notes == [GATE_RULE, f"aws/xgboost: {held}"]  # only the model that was held back is explained
    assert (
        ">= minAccuracy" in GATE_RULE and "promotionTolerance" in GATE_RULE and "forcePromotion" in GATE_RULE
    )

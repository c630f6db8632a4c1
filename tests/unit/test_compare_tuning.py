"""`mnistctl compare` and the page say whether each served model is a tuned one, and what the last
tuning job found (the `models.<m>.tuning` output and the champion's `metrics.tuning`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from starlette.testclient import TestClient

from mnistctl.compare import compare, comparison_table, gate_notes, search_summary, tuning_summary
from mnistctl.ui.server import create_app

SEARCH = {
    "trials": 4,
    "completed": 3,
    "pruned": 1,
    "failed": 0,
    "objective": {"metric": "validation:merror", "goal": "Minimize"},
    "best_trial": 2,
    "best_objective": 0.1234,
    "best_hyperparameters": {"eta": "0.3", "max_depth": "4"},
    "spread": {"min": 0.1234, "median": 0.2, "max": 0.3},
}


class AlwaysSeven:
    def __init__(self, entry: Any) -> None:
        self.endpoint = entry

    def predict(self, images: np.ndarray) -> np.ndarray:
        probabilities = np.zeros((len(images), 10), dtype=np.float32)
        probabilities[:, 7] = 1.0
        return probabilities


def outputs(champion_tuning: dict[str, Any] | None, last_search: dict[str, Any] | None) -> dict[str, Any]:
    model: dict[str, Any] = {
        "artifact": "s3://bucket/champions/xgboost/job-1/model.tar.gz",
        "metrics": {"accuracy": 0.9, **({"tuning": champion_tuning} if champion_tuning else {})},
        "champion": {"source": "job-1", "accuracy": 0.9},
        "challenger": {"source": "job-1", "accuracy": 0.9, "decision": "promoted", "reason": "promoted"},
    }
    if last_search:
        model["tuning"] = last_search
    return {
        "endpoints": {"xgboost": {"flavor": "sagemaker", "name": "mnist-xgboost", "region": "local"}},
        "models": {"xgboost": model},
        "dataset": "mnist-t10k",
    }


def test_compare_shows_tuned_against_untuned_and_the_last_search(t10k_dir: Path):
    rows = compare(
        [("tuned", outputs(SEARCH, SEARCH)), ("plain", outputs(None, None))],
        count=2,
        data_dir=t10k_dir,
        client_factory=AlwaysSeven,
    )
    assert [row.tuning for row in rows] == ["tuned: trial 2 of 4", "untuned"]
    console = Console(width=250, record=True)
    console.print(comparison_table(rows))
    table = console.export_text()
    assert "tuned: trial 2 of 4" in table and "untuned" in table
    (note,) = [n for n in gate_notes(rows) if "last tuning job" in n]
    assert note == (
        "tuned/xgboost: last tuning job: 4 trials (3 finished, 1 pruned); best trial 2: validation:merror "
        "0.1234; spread 0.1234 / 0.2000 / 0.3000 (min / median / max); eta=0.3, max_depth=4"
    )


def test_a_search_the_gate_held_is_reported_while_the_champion_stays_untuned():
    assert tuning_summary(None) == "untuned" and tuning_summary({"trials": "x"}) == "untuned"
    assert search_summary(None) is None
    assert search_summary(SEARCH) is not None


def test_the_page_labels_each_panel_tuned_or_untuned():
    page = create_app(
        {
            "endpoints": {
                "xgboost": {"flavor": "sagemaker", "name": "a", "url": "http://127.0.0.1:1"},
                "pytorch": {"flavor": "watsonx", "name": "b", "url": "http://127.0.0.1:2"},
            },
            "models": {"xgboost": {"metrics": {"tuning": SEARCH}}, "pytorch": {"metrics": {}}},
        },
        client_factory=AlwaysSeven,
    )
    described = TestClient(page, base_url="http://127.0.0.1").get("/api/stack").json()["endpoints"]
    assert {e["model"]: e["tuning"] for e in described} == {
        "xgboost": "tuned: trial 2 of 4",
        "pytorch": "untuned",
    }

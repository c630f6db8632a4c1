"""What every stack's champion gate shares (infra/gate_provider.py): the inputs of the gate resource, the
`models` stack output built from its state, and the engine's diff, read and delete, here on the local
stack's gate (its own steps are tested in tests/local/test_local_gate_provider.py)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pulumi
import pytest
from harness import run_stack

from infra.gate import PromotionRule
from infra.gate_provider import Candidate, ChampionGateProvider, gate_inputs, models_entry, rule_of, scored
from infra.local.gate import LocalGateProvider


def test_the_gate_declares_the_challenger_the_rule_and_its_outputs_still_unknown() -> None:
    declared = gate_inputs("xgboost", "job-7", "/models/job-7/model.tar.gz", PromotionRule(0.9, 0.02, True))
    assert declared == {
        "model": "xgboost",
        "challenger_id": "job-7",
        "challenger_artifact": "/models/job-7/model.tar.gz",
        "min_accuracy": 0.9,
        "promotion_tolerance": 0.02,
        "force_promotion": True,
        "champion": None,
        "challenger": None,
        "champion_artifact": None,
        "retired": None,
    }


def exported_entry(champion: dict, challenger: dict) -> dict:
    """`models_entry` of these gate outputs, as the stack exports it (resolved under Pulumi's mocks)."""

    def program() -> None:
        pulumi.export("entry", models_entry(champion, challenger))

    return run_stack("local", program=program).outputs["entry"]


def test_the_models_output_says_what_is_served_and_what_the_gate_decided_leaving_unknowns_out() -> None:
    champion = {
        "source": "job-6",
        "artifact": "/champions/xgboost/job-6.tar.gz",
        "accuracy": 0.97,
        "trained": "2026-12-01T10:00:00Z",
        "metrics": {"n_test": 2000, "train_seconds": 12.5},
        "source_artifact": "/models/job-6/model.tar.gz",
    }
    challenger = {
        "source": "job-7",
        "artifact": "/models/job-7/model.tar.gz",
        "accuracy": None,  # could not be read
        "trained": None,
        "metrics": {},
        "decision": "held",
        "reason": "held back: metrics.json is missing",
    }
    assert exported_entry(champion, challenger) == {
        "artifact": "/champions/xgboost/job-6.tar.gz",
        "metrics": {"n_test": 2000, "train_seconds": 12.5, "accuracy": 0.97},
        "champion": {
            "artifact": "/champions/xgboost/job-6.tar.gz",
            "accuracy": 0.97,
            "trained": "2026-12-01T10:00:00Z",
            "source": "job-6",
        },
        "challenger": {
            "artifact": "/models/job-7/model.tar.gz",
            "source": "job-7",
            "decision": "held",
            "reason": "held back: metrics.json is missing",
        },
    }


def test_refresh_reads_back_the_gates_state_without_its_provider() -> None:
    # The shared read, which the SageMaker, Vertex and watsonx gates use (the local one has its own).
    state = {
        "model": "xgboost",
        "champion_artifact": "/champions/x.tar.gz",
        "retired": None,
        "__provider": "p",
    }
    read = ChampionGateProvider().read("xgboost-gate-1", state)
    assert read.id == "xgboost-gate-1"
    assert read.outs == {"model": "xgboost", "champion_artifact": "/champions/x.tar.gz"}


def test_a_gate_for_another_model_replaces_the_old_one() -> None:
    # A new model starts without a champion: the gate is replaced, not updated in place.
    olds = {"model": "xgboost", "challenger_id": "job-7", "root": "/r", "min_accuracy": 0.9}
    diff = LocalGateProvider().diff("xgboost-gate-1", olds, {**olds, "model": "pytorch"})
    assert diff.changes
    assert diff.replaces == ["model"]
    assert diff.delete_before_replace is False  # the old gate's copies serve until the new gate is up


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{accuracy: 0.9", "metrics.json of job-7 is not JSON ("),
        ("[0.9]", "metrics.json of job-7 is not a JSON object"),
    ],
)
def test_a_challenger_whose_metrics_are_not_an_object_is_unreadable_and_still_named(
    text: str, why: str
) -> None:
    trained = "2026-12-01T10:00:00Z"
    candidate = scored("job-7", "/models/job-7/model.tar.gz", text, "metrics.json of job-7", trained)
    assert (candidate.source, candidate.artifact) == ("job-7", "/models/job-7/model.tar.gz")
    assert (candidate.accuracy, candidate.trained) == (None, trained)
    assert candidate.unreadable_because.startswith(why)


def test_destroy_removes_the_champion_and_the_retired_copy_and_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    copies = [tmp_path / "champions" / "xgboost" / job / "model.tar.gz" for job in ("job-7", "job-6")]
    for copy in copies:
        copy.parent.mkdir(parents=True)
        copy.write_text("weights")
    said: list[str] = []
    monkeypatch.setattr("infra.gate_provider.log", said.append)
    # A broken delete (as mutation testing makes) removing a relative path must stay in the test's folder.
    monkeypatch.chdir(tmp_path)
    state = {
        "model": "xgboost",
        "root": str(tmp_path),
        "champion": {"artifact": str(copies[0])},
        "retired": {"artifact": str(copies[1])},
    }
    LocalGateProvider().delete("xgboost-gate-1", state)
    assert not any(copy.parent.exists() for copy in copies)
    assert (tmp_path / "champions" / "xgboost").is_dir()  # only the copies go
    assert said == [
        f"gate xgboost: removing the champion's copy {copies[0]}",
        f"gate xgboost: removing the retired's copy {copies[1]}",
    ]


@pytest.mark.parametrize(
    ("props", "rule"),
    [
        (
            {"min_accuracy": 0.9, "promotion_tolerance": 0.02, "force_promotion": True},
            PromotionRule(0.9, 0.02, force=True),
        ),
        # Config left unset arrives as None (or is missing): no tolerance, no force.
        ({"min_accuracy": 0.9, "promotion_tolerance": None}, PromotionRule(0.9, 0.0, force=False)),
    ],
)
def test_the_gate_applies_the_rule_its_inputs_carry(props: dict, rule: PromotionRule) -> None:
    assert rule_of(props) == rule


def test_a_candidate_is_recorded_with_its_metrics_beside_the_file_s_and_without_the_unreadable_reason() -> (
    None
):
    candidate = scored(
        "job-7", "/m/job-7.tar.gz", '{"accuracy": 0.96, "n_test": 2000}', "m", extra={"host": "h"}
    )
    assert candidate.record(decision="held") == {
        "source": "job-7",
        "artifact": "/m/job-7.tar.gz",
        "accuracy": 0.96,
        "trained": None,
        "metrics": {"host": "h", "accuracy": 0.96, "n_test": 2000},
        "decision": "held",
    }


class FixedGate(ChampionGateProvider):
    """The shared engine calls around a stack that always trains the same good model."""

    def evaluate(self, props: Mapping[str, Any]) -> Candidate:
        return Candidate("job-7", "/models/job-7/model.tar.gz", 0.97)

    def keep(self, props: Mapping[str, Any], candidate: Candidate) -> str:
        return "/champions/job-7/model.tar.gz"

    def kept(self, props: Mapping[str, Any], artifact: str) -> bool:
        return True


def test_a_new_gate_is_named_after_its_model_with_a_random_suffix() -> None:
    props = {"model": "xgboost", "challenger_id": "job-7", "min_accuracy": 0.9}
    created = [FixedGate().create(props) for _ in range(2)]
    assert all(re.fullmatch(r"xgboost-gate-[0-9a-f]{8}", result.id) for result in created), created
    assert created[0].id != created[1].id
    assert created[0].outs["champion_artifact"] == "/champions/job-7/model.tar.gz"


def test_a_round_on_the_champions_own_training_run_decides_nothing_and_says_so() -> None:
    props = {"model": "xgboost", "challenger_id": "job-7", "min_accuracy": 0.9}
    gate = FixedGate()
    state = gate.create(props).outs
    again = gate.update("xgboost-gate-1", state, props).outs
    assert again["challenger"]["decision"] == "champion"
    assert (
        again["challenger"]["reason"]
        == "the challenger is the serving champion already (the same training run)"
    )
    assert again["champion"] == state["champion"]


class RecordingGate(ChampionGateProvider):
    """The shared engine calls around a stack whose challengers are what the inputs say; removals recorded."""

    def __init__(self) -> None:
        self.discarded: list[str] = []

    def evaluate(self, props: Mapping[str, Any]) -> Candidate:
        job = props["challenger_id"]
        return Candidate(job, f"/models/{job}.tar.gz", float(props["accuracy"]))

    def keep(self, props: Mapping[str, Any], candidate: Candidate) -> str:
        return f"/champions/{candidate.source}.tar.gz"

    def discard(self, props: Mapping[str, Any], artifact: str) -> None:
        self.discarded.append(artifact)

    def kept(self, props: Mapping[str, Any], artifact: str) -> bool:
        return True


def test_the_retired_champion_s_copy_is_removed_when_the_next_champion_is_crowned() -> None:
    gate = RecordingGate()
    rounds = [("job-1", 0.91), ("job-2", 0.92), ("job-3", 0.93)]
    state: dict[str, Any] = {}
    for job, accuracy in rounds:
        props = {"model": "xgboost", "challenger_id": job, "accuracy": accuracy, "min_accuracy": 0.9}
        result = gate.update("xgboost-gate-1", state, props) if state else gate.create(props)
        state = {**props, **(result.outs or {})}
    # job-1 retired when job-2 won (kept while what served it rolls over), removed when job-3 won.
    assert gate.discarded == ["/champions/job-1.tar.gz"]
    assert state["retired"]["artifact"] == "/champions/job-2.tar.gz"
    assert state["champion_artifact"] == "/champions/job-3.tar.gz"


def test_a_promotion_is_logged_and_a_held_challenger_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    said: dict[str, list[str]] = {"log": [], "warn": []}
    monkeypatch.setattr("infra.gate_provider.log", said["log"].append)
    monkeypatch.setattr("infra.gate_provider.warn", said["warn"].append)
    gate = RecordingGate()
    props = {"model": "xgboost", "challenger_id": "job-1", "accuracy": 0.95, "min_accuracy": 0.9}
    state = {**props, **(gate.create(props).outs or {})}
    gate.update("xgboost-gate-1", state, {**props, "challenger_id": "job-2", "accuracy": 0.5})
    assert [line.split(":")[0:2] for line in said["log"]] == [["gate xgboost", " challenger job-1"]]
    assert [line.split(":")[0:2] for line in said["warn"]] == [["gate xgboost", " challenger job-2"]]

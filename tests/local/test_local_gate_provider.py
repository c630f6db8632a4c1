"""The local champion gate's provider, called as the engine calls it, on training outputs made by hand
(a folder with an artifact and metrics.json, as `mnistctl train` writes it): fast, no training."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from faults import interrupt_once
from harness import EngineInterrupted

from infra.gate_provider import GateError
from infra.local.gate import LocalGateProvider

ARTIFACT = "model.tar.gz"
Props = dict[str, Any]


@pytest.fixture
def job(tmp_path: Path) -> Callable[..., tuple[str, str]]:
    """A finished training job's output folder: returns (job id, artifact path)."""

    def make(job_id: str, accuracy: Any, weights: str = "") -> tuple[str, str]:
        out = tmp_path / "root" / "models" / job_id
        out.mkdir(parents=True)
        (out / ARTIFACT).write_text(weights or f"weights of {job_id}")
        if accuracy is not None:
            (out / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "n_test": 2000}))
        return job_id, str(out / ARTIFACT)

    return make


def props(tmp_path: Path, challenger: tuple[str, str], **rule: Any) -> Props:
    return {
        "model": "xgboost",
        "challenger_id": challenger[0],
        "challenger_artifact": challenger[1],
        "root": str(tmp_path / "root"),
        "min_accuracy": rule.get("min_accuracy", 0.9),
        "promotion_tolerance": rule.get("tolerance", 0.0),
        "force_promotion": rule.get("force", False),
    }


def up(provider: LocalGateProvider, state: Props | None, news: Props) -> Props:
    """One `pulumi up` of the gate, as the engine runs it: create, or diff then update."""
    if state is None:
        return provider.create(news).outs or {}
    diff = provider.diff("gate", state, news)
    assert not diff.replaces, diff.replaces
    if not diff.changes:
        return state
    return {**news, **(provider.update("gate", state, news).outs or {})}


def champions(tmp_path: Path) -> list[str]:
    folder = tmp_path / "root" / "champions" / "xgboost"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_first_challenger_over_the_floor_is_copied_and_becomes_the_champion(tmp_path: Path, job):
    provider = LocalGateProvider()
    state = up(provider, None, props(tmp_path, job("xgboost-1", 0.96)))
    champion = state["champion"]
    copy = tmp_path / "root" / "champions" / "xgboost" / "xgboost-1"
    assert state["champion_artifact"] == champion["artifact"] == str(copy / ARTIFACT)
    assert (copy / ARTIFACT).read_text() == "weights of xgboost-1"
    assert json.loads((copy / "metrics.json").read_text())["accuracy"] == 0.96
    assert champion["accuracy"] == 0.96 and champion["source"] == "xgboost-1"
    assert champion["trained"] and champion["trained"].endswith("+00:00")
    assert state["challenger"]["decision"] == "promoted"
    assert "no champion yet" in state["challenger"]["reason"]


def test_first_challenger_under_the_floor_fails_the_update_and_copies_nothing(tmp_path: Path, job):
    with pytest.raises(GateError) as error:
        up(LocalGateProvider(), None, props(tmp_path, job("xgboost-1", 0.62)))
    message = str(error.value)
    assert "challenger accuracy 0.6200 < floor minAccuracy 0.9000" in message
    assert "No endpoint is created for xgboost" in message and "forcePromotion" in message
    assert champions(tmp_path) == []


def test_a_worse_challenger_is_held_and_the_champion_outputs_do_not_change(
    tmp_path: Path, job, warnings: list[str]
):
    provider = LocalGateProvider()
    first = up(provider, None, props(tmp_path, job("xgboost-1", 0.96)))
    second = up(provider, first, props(tmp_path, job("xgboost-2", 0.93)))
    # What the endpoint reads is exactly what it read before: Pulumi changes nothing downstream.
    assert second["champion"] == first["champion"]
    assert second["champion_artifact"] == first["champion_artifact"]
    assert second["challenger"]["decision"] == "held"
    assert second["challenger"]["accuracy"] == 0.93 and second["challenger"]["source"] == "xgboost-2"
    assert "0.9300 < champion accuracy 0.9600" in second["challenger"]["reason"]
    assert champions(tmp_path) == ["xgboost-1"]
    (warning,) = warnings
    assert "challenger xgboost-2: held back" in warning and "forcePromotion" in warning


def test_a_better_challenger_is_promoted_and_the_previous_copy_is_kept_one_round(tmp_path: Path, job):
    provider = LocalGateProvider()
    state = up(provider, None, props(tmp_path, job("xgboost-1", 0.95)))
    state = up(provider, state, props(tmp_path, job("xgboost-2", 0.96)))
    assert state["champion"]["source"] == "xgboost-2" and state["challenger"]["decision"] == "promoted"
    assert state["retired"]["source"] == "xgboost-1"
    # The previous champion may still be serving while the endpoint rolls forward: kept for now.
    assert champions(tmp_path) == ["xgboost-1", "xgboost-2"]
    state = up(provider, state, props(tmp_path, job("xgboost-3", 0.97)))
    assert champions(tmp_path) == ["xgboost-2", "xgboost-3"]
    assert state["retired"]["source"] == "xgboost-2"


def test_an_unreadable_challenger_is_held_with_the_reason(tmp_path: Path, job, warnings: list[str]):
    provider = LocalGateProvider()
    state = up(provider, None, props(tmp_path, job("xgboost-1", 0.96)))
    held = up(provider, state, props(tmp_path, job("xgboost-2", None)))  # no metrics.json
    assert held["champion"] == state["champion"]
    assert held["challenger"]["decision"] == "held"
    assert (
        "could not be read" in held["challenger"]["reason"] and "metrics.json" in held["challenger"]["reason"]
    )
    assert "accuracy" not in held["challenger"] or held["challenger"]["accuracy"] is None
    garbled = up(provider, held, props(tmp_path, job("xgboost-3", "0.99")))  # a string is not a score
    assert garbled["challenger"]["decision"] == "held" and garbled["champion"] == state["champion"]


def test_force_promotes_a_worse_challenger_and_says_so(tmp_path: Path, job, warnings: list[str]):
    provider = LocalGateProvider()
    state = up(provider, None, props(tmp_path, job("xgboost-1", 0.96)))
    forced = up(provider, state, props(tmp_path, job("xgboost-2", 0.60), force=True))
    assert forced["champion"]["source"] == "xgboost-2" and forced["champion"]["accuracy"] == 0.60
    assert forced["challenger"]["decision"] == "forced"
    assert forced["challenger"]["reason"].startswith("forcePromotion is true: promoted although")
    assert any("forcePromotion is true" in w for w in warnings)


def test_nothing_new_changes_nothing_and_a_new_rule_decides_again(tmp_path: Path, job):
    provider = LocalGateProvider()
    challenger = job("xgboost-1", 0.96)
    state = up(provider, None, props(tmp_path, challenger))
    assert not provider.diff("gate", state, props(tmp_path, challenger)).changes
    # A held challenger, then forcePromotion set on the next up without retraining: promoted then.
    worse = job("xgboost-2", 0.80)
    held = up(provider, state, props(tmp_path, worse))
    assert held["challenger"]["decision"] == "held"
    forced = up(provider, held, props(tmp_path, worse, force=True))
    assert forced["champion"]["source"] == "xgboost-2"
    # The champion judged against itself (forcePromotion unset again, same job): nothing to decide.
    again = up(provider, forced, props(tmp_path, worse))
    assert again["challenger"]["decision"] == "champion" and again["champion"] == forced["champion"]


def test_a_new_root_replaces_the_gate(tmp_path: Path, job):
    provider = LocalGateProvider()
    challenger = job("xgboost-1", 0.96)
    state = up(provider, None, props(tmp_path, challenger))
    moved = {**props(tmp_path, challenger), "root": str(tmp_path / "elsewhere")}
    assert provider.diff("gate", state, moved).replaces == ["root"]


def test_a_champion_copy_removed_behind_the_stacks_back_is_restored_byte_for_byte_and_still_holds(
    tmp_path: Path, job, warnings: list[str]
):
    provider = LocalGateProvider()
    state = up(provider, None, props(tmp_path, job("xgboost-1", 0.96, weights="the champion's weights")))
    loser = job("xgboost-2", 0.93)
    state = up(provider, state, props(tmp_path, loser))
    assert state["challenger"]["decision"] == "held"
    copy = Path(state["champion_artifact"]).parent
    before = {path.name: path.read_bytes() for path in copy.iterdir()}
    shutil.rmtree(copy)

    assert provider.read("gate", state).id == "gate"  # refresh keeps the gate: its champion still counts
    assert provider.diff("gate", state, props(tmp_path, loser)).changes
    state = up(provider, state, props(tmp_path, loser))
    assert state["challenger"]["decision"] == "held"  # not promoted as if there were no champion
    assert state["champion"]["source"] == "xgboost-1" and state["champion_artifact"] == str(copy / ARTIFACT)
    assert {path.name: path.read_bytes() for path in copy.iterdir()} == before  # copied from its source
    assert any("restoring it from" in w and "xgboost-1" in w for w in warnings)


def test_a_champion_copy_gone_with_its_source_fails_the_update_unless_forced(tmp_path: Path, job):
    provider = LocalGateProvider()
    champion = job("xgboost-1", 0.96)
    state = up(provider, None, props(tmp_path, champion))
    loser = job("xgboost-2", 0.93)
    state = up(provider, state, props(tmp_path, loser))
    shutil.rmtree(Path(state["champion_artifact"]).parent)
    shutil.rmtree(Path(champion[1]).parent)  # its training job's folder is gone too

    with pytest.raises(GateError, match="could not be restored from its source") as error:
        up(provider, state, props(tmp_path, loser))
    assert "forcePromotion" in str(error.value) and champion[1] in str(error.value)
    forced = up(provider, state, props(tmp_path, loser, force=True))
    assert forced["challenger"]["decision"] == "promoted" and forced["champion"]["source"] == "xgboost-2"


def test_delete_removes_every_copy_and_tolerates_already_gone(tmp_path: Path, job):
    provider = LocalGateProvider()
    state = up(provider, None, props(tmp_path, job("xgboost-1", 0.95)))
    state = up(provider, state, props(tmp_path, job("xgboost-2", 0.96)))
    assert champions(tmp_path) == ["xgboost-1", "xgboost-2"]
    provider.delete("gate", state)
    assert champions(tmp_path) == []
    provider.delete("gate", state)  # a second delete (a retried destroy) is not an error


def test_a_copy_made_by_an_interrupted_create_is_removed_by_the_next_one(
    tmp_path: Path, job, monkeypatch: pytest.MonkeyPatch
):
    # `pulumi up` dies once the champion's copy is made, before the gate reaches the state; by the next
    # `up` the job was trained anew (a new challenger): its copy is the one and only.
    interrupt_once(monkeypatch, LocalGateProvider, "keep")
    with pytest.raises(EngineInterrupted):
        LocalGateProvider().create(props(tmp_path, job("xgboost-1", 0.96)))
    assert champions(tmp_path) == ["xgboost-1"]
    state = up(LocalGateProvider(), None, props(tmp_path, job("xgboost-2", 0.95)))
    assert champions(tmp_path) == ["xgboost-2"]
    assert state["champion"]["source"] == "xgboost-2"


def test_read_keeps_a_gate_whose_champion_copy_is_gone(tmp_path: Path, job):
    provider = LocalGateProvider()
    news = props(tmp_path, job("xgboost-1", 0.96))
    created = provider.create(news)
    state = {**news, **(created.outs or {})}
    assert provider.read(created.id, state).id == created.id
    shutil.rmtree(Path(state["champion_artifact"]).parent)
    # Kept in the state, champion and all: the next up restores the copy (dropping it would crown anyone).
    assert provider.read(created.id, state).id == created.id


def retrain_in_place(job_output: tuple[str, str], accuracy: float, weights: str) -> None:
    """A later run under the same job name: its folder made again with another model and metrics (a
    reverted spec retrains under its old name)."""
    out = Path(job_output[1]).parent
    shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / ARTIFACT).write_text(weights)
    (out / "metrics.json").write_text(json.dumps({"accuracy": accuracy, "n_test": 2000}))


def test_a_job_name_reused_by_a_later_run_is_judged_again_and_both_copies_are_kept(tmp_path: Path, job):
    provider = LocalGateProvider()
    first = job("xgboost-a", 0.95, weights="run 1 of spec a")
    state = up(provider, None, props(tmp_path, first))
    state = up(provider, state, props(tmp_path, job("xgboost-b", 0.94)))  # spec b: held
    assert state["challenger"]["decision"] == "held"
    run1_copy = Path(state["champion_artifact"])

    # Back to spec a: retrained under its old name, and better this time. Not "the champion already".
    retrain_in_place(first, 0.97, "run 2 of spec a")
    state = up(provider, state, props(tmp_path, first))
    assert state["challenger"]["decision"] == "promoted", state["challenger"]["reason"]
    assert state["champion"]["source"] == "xgboost-a" and state["champion"]["accuracy"] == 0.97
    run2_copy = Path(state["champion_artifact"])
    assert run2_copy != run1_copy and run2_copy.read_text() == "run 2 of spec a"
    assert run1_copy.read_text() == "run 1 of spec a"  # the retired run's copy is not overwritten
    assert state["retired"]["artifact"] == str(run1_copy)

    # Retrained once more under the same name with no input changed: the diff sees the new run.
    retrain_in_place(first, 0.90, "run 3 of spec a")
    assert provider.diff("gate", state, props(tmp_path, first)).changes
    state = up(provider, state, props(tmp_path, first))
    assert state["challenger"]["decision"] == "held" and state["champion"]["accuracy"] == 0.97
    # The same run again (held) changes nothing.
    assert not provider.diff("gate", state, props(tmp_path, first)).changes


def test_a_retired_copy_still_served_is_kept_and_the_never_served_champion_goes_instead(tmp_path: Path, job):
    provider = LocalGateProvider()
    state = up(provider, None, props(tmp_path, job("xgboost-a", 0.95)))
    served = Path(state["champion_artifact"]).parent
    state = up(provider, state, props(tmp_path, job("xgboost-b", 0.96)))  # promoted, but its update failed
    never_served = Path(state["champion_artifact"]).parent
    assert state["retired"]["artifact"] == str(served / ARTIFACT)
    # What a rolled-back update leaves: the old server, still running on the retired copy.
    server = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "serve", "--model", str(served)],
        start_new_session=True,
    )
    try:
        state = up(provider, state, props(tmp_path, job("xgboost-c", 0.97)))
        assert served.is_dir()  # not removed under the server still using it
        assert not never_served.exists()
        assert state["retired"]["artifact"] == str(served / ARTIFACT)
    finally:
        server.kill()
        server.wait()
    # Once nothing serves it, the next promotion removes it as usual.
    state = up(provider, state, props(tmp_path, job("xgboost-d", 0.98)))
    assert not served.exists()

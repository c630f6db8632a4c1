"""The local training job provider: the real trainer in a subprocess, its failures, and what retrains."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from faults import stack_processes, stop_stack_processes

from infra.local import training_job
from infra.local.support import RECORDS_FOLDER, LocalProviderError
from infra.local.training_job import LocalTrainingJobProvider, TerminalLines, trainer_command

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # what a value not known yet looks like in a preview


@pytest.fixture
def props(tmp_path: Path, t10k_dir: Path) -> dict[str, Any]:
    return {
        "framework": "xgboost",
        "dataset": "mnist-t10k",
        "data_dir": str(t10k_dir),
        "data_hash": "data-1",
        "code_hash": "code-1",
        "root": str(tmp_path / "root"),
        "hyperparameters": {},
        "dry_run": True,
    }


def test_the_job_runs_the_command_a_user_would_type(props: dict[str, Any], tmp_path: Path):
    # localTrainingSlots arrives as a float, as numbers do from the engine.
    command = trainer_command(
        {
            **props,
            "hyperparameters": {"num_round": "5", "eta": "0.1"},
            "preset": "long",
            "training_slots": 3.0,
        },
        tmp_path / "out",
    )
    assert command[0] == sys.executable
    assert command[1:] == [
        "-m",
        "mnistctl",
        "train",
        "--framework",
        "xgboost",
        "--dataset",
        "mnist-t10k",
        "--data-dir",
        props["data_dir"],
        "--out",
        str(tmp_path / "out"),
        "--preset",
        "long",
        "--slots",
        "3",
        "--hp",
        "eta=0.1",
        "--hp",
        "num_round=5",
        "--dry-run",
    ]


def test_a_job_without_localTrainingSlots_queues_for_one_slot_per_4_cores(
    props: dict[str, Any], tmp_path: Path
):
    command = trainer_command(props, tmp_path / "out")
    assert command[command.index("--slots") + 1] == str(max(1, len(os.sched_getaffinity(0)) // 4))


@pytest.mark.slow
def test_create_trains_streams_progress_and_returns_artifact_and_metrics(
    props: dict[str, Any], capsys: pytest.CaptureFixture[str]
):
    provider = LocalTrainingJobProvider()
    result = provider.create(props)
    state = {**props, **(result.outs or {})}

    out = Path(state["out_dir"])
    assert out.parent == Path(props["root"]) / "models" and result.id == out.name
    assert Path(state["artifact"]) == out / "model.tar.gz" and Path(state["artifact"]).is_file()
    assert state["metrics"] == json.loads((out / "metrics.json").read_text())
    assert {"accuracy", "n_train", "n_test", "train_seconds"} <= set(state["metrics"])
    assert Path(state["log_path"]).read_text().strip()
    # Without an engine connection (a dynamic provider's process) pulumi.log writes to stderr, which the
    # CLI shows under the resource: the trainer's own lines, prefixed with its framework.
    streamed = capsys.readouterr().err
    assert "info: [xgboost] xgboost on mnist-t10k" in streamed and "accuracy" in streamed

    assert not provider.diff(result.id, state, props).changes
    provider.delete(result.id, state)
    assert not out.exists()
    provider.delete(result.id, state)  # already gone: success


@pytest.mark.slow
def test_a_crashing_trainer_fails_create_with_its_own_last_lines(props: dict[str, Any]):
    bad = {**props, "hyperparameters": {"num_rounds_typo": "3"}}
    with pytest.raises(LocalProviderError) as error:
        LocalTrainingJobProvider().create(bad)
    message = str(error.value)
    assert "training xgboost failed" in message
    assert "num_rounds_typo" in message  # the trainer's own words, not only an exit code
    assert "logs/train-xgboost-" in message
    assert not list((Path(props["root"]) / "models").glob("*"))  # nothing half-made is left
    assert not list((Path(props["root"]) / RECORDS_FOLDER).glob("*.json"))  # nothing for the next up to adopt


@pytest.mark.slow
def test_a_create_that_fails_while_its_trainer_runs_stops_it_and_leaves_nothing(
    props: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    def lost(*args: Any) -> None:
        raise LocalProviderError("the trainer's log could not be read")

    monkeypatch.setattr(training_job, "follow_trainer", lost)
    root = Path(props["root"])
    running = {}
    try:
        with pytest.raises(LocalProviderError, match="could not be read"):
            LocalTrainingJobProvider().create(props)
        running = stack_processes(root)
    finally:
        stop_stack_processes(root)  # should the create leave it, this test does not
    assert not running  # the trainer was stopped, not left training for nobody
    assert not list((root / "models").glob("*")) and not list((root / RECORDS_FOLDER).glob("*.json"))


@pytest.mark.parametrize(
    ("change", "replaced"),
    [
        ({"code_hash": "code-2"}, ["code_hash"]),
        ({"data_hash": "data-2"}, ["data_hash"]),
        ({"hyperparameters": {"num_round": "10"}}, ["hyperparameters"]),
        ({"dry_run": False}, ["dry_run"]),
        ({"data_hash": UNKNOWN}, ["data_hash"]),
    ],
)
def test_new_code_data_or_hyperparameters_replace_the_job(
    props: dict[str, Any], tmp_path: Path, change: dict, replaced: list[str]
):
    state = {**props, **_fake_artifact(tmp_path)}
    diff = LocalTrainingJobProvider().diff("job", state, {**props, **change})
    assert diff.changes and diff.replaces == replaced
    assert not diff.delete_before_replace  # the new job trains into its own folder first


def test_an_artifact_removed_behind_the_stacks_back_is_trained_again_in_place(
    props: dict[str, Any], tmp_path: Path
):
    state = {**props, **_fake_artifact(tmp_path)}
    provider = LocalTrainingJobProvider()
    assert not provider.diff("job", state, props).changes
    assert provider.read("job", state).id == "job"
    shutil.rmtree(state["out_dir"])
    # An update (same id, same folder): a replacement would share the old job's identity and folder.
    diff = provider.diff("job", state, props)
    assert diff.changes and not diff.replaces
    assert not provider.read("job", state).id


def _fake_artifact(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "root" / "models" / "xgboost-0"
    out.mkdir(parents=True)
    (out / "model.tar.gz").write_bytes(b"model")
    (out / "metrics.json").write_text('{"accuracy": 0.5}')
    return {"out_dir": str(out), "artifact": str(out / "model.tar.gz"), "metrics": {"accuracy": 0.5}}


def test_progress_bar_redraws_become_a_few_log_lines_and_every_other_line_is_kept():
    emitted: list[str] = []
    lines = TerminalLines(emitted.append, interval=3600)
    lines.feed(b"\x1b[?25lloading data\n\x1b[1mtraining\x1b[0m 0/10\r\x1b[2Ktraining 1/10\r\x1b[2Ktrain")
    lines.feed(b"ing 2/10\r\x1b[2Ktraining 10/10\r\x1b[2Ktraining 10/10\nerror: unknown hyperparameter\n")
    lines.close()
    assert emitted == ["loading data", "training 0/10", "training 10/10", "error: unknown hyperparameter"]

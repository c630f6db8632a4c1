"""The local stack after an interrupted `pulumi up`, after changes behind its back, and after a code change.

The program runs under mocks with every dynamic provider executed for real (tests/harness.py
`ProviderEngine`): dry-run xgboost training on mnist-t10k, a real server, the real ui, real answers.
What runs is asked of the process table (faults.stack_processes), what exists of the files under
localRoot; the state is `engine.live`. One model and dry-run training keep each `up` to seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import UpInterrupted, interrupt_once, interruptible, stack_processes, stop_stack_processes
from harness import ProviderEngine, StackRun, run_stack

from infra.local import dataset as local_dataset
from infra.local import platform as local
from infra.local import servers as local_servers
from infra.local import training_job as local_training
from infra.local.gate import LocalGateProvider
from infra.local.support import RECORDS_FOLDER, wait_gone
from infra.settings import Framework
from mnistctl.smoke import smoke

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DATASET, TRAINING, GATE = "mnist-data", "mnist-xgboost-training", "mnist-xgboost-gate"
ENDPOINT, UI = "mnist-xgboost-endpoint", "mnist-ui"
ALL = (DATASET, TRAINING, GATE, ENDPOINT, UI)


@pytest.fixture(autouse=True)
def code_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash the training and serving code once per test: an edit made meanwhile (a developer at work in
    the same tree) would rightly retrain or restart, but these tests count the steps of each `up`."""
    hashes = {model: local.training_code_hash(model) for model in Framework}
    monkeypatch.setattr(local, "training_code_hash", hashes.__getitem__)
    serving, ui = local.serving_code_hash(), local.ui_code_hash()
    monkeypatch.setattr(local, "serving_code_hash", lambda: serving)
    monkeypatch.setattr(local, "ui_code_hash", lambda: ui)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """The stack's localRoot; whatever a failed test left running under it is stopped afterwards."""
    root = tmp_path / "local-root"
    yield root
    stop_stack_processes(root)


@pytest.fixture
def engine(root: Path) -> Iterator[ProviderEngine]:
    engine = ProviderEngine()
    yield engine
    engine.destroy()


@pytest.fixture
def config(root: Path, t10k_dir: Path) -> dict[str, Any]:
    return {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "dryRun": True,
    }


def up(engine: ProviderEngine, config: dict[str, Any]) -> tuple[StackRun, dict[str, str]]:
    """`pulumi up`: the run, and each resource's step in it (create, same, update, replace, ...)."""
    before = len(engine.steps)
    run = run_stack("local", config, new_resource=interruptible(engine))
    engine.finish()
    steps: dict[str, str] = {}
    for step, name in engine.steps[before:]:
        steps.setdefault(name, step)  # a replacement's own step, not the old one's delete after it
    return run, steps


def others(engine: ProviderEngine, name: str) -> dict[str, dict[str, Any]]:
    """The state of every resource but `name`, as `read` reports it (no serialized provider, no nulls)."""
    return {
        n: {k: v for k, v in r.state.items() if k != "__provider" and v is not None}
        for n, r in engine.live.items()
        if n != name
    }


def moved(steps: dict[str, str]) -> dict[str, str]:
    return {name: step for name, step in steps.items() if step != "same"}


def assert_one_of_each_held_in_the_state(engine: ProviderEngine, root: Path) -> None:
    """Exactly one copy of everything the stack makes, and it is the one the state holds."""
    live = {name: r.state for name, r in engine.live.items()}
    assert sorted(live) == sorted(ALL)
    running = stack_processes(root)
    assert sorted(running) == sorted(int(live[name]["pid"]) for name in (ENDPOINT, UI)), running
    assert [p.name for p in (root / "data").iterdir()] == [Path(live[DATASET]["path"]).name]
    assert [p.name for p in (root / "models").iterdir()] == [Path(live[TRAINING]["out_dir"]).name]
    champion = Path(live[GATE]["champion_artifact"]).parent
    assert [p.name for p in champion.parent.iterdir()] == [champion.name]


def assert_smoke_passes(run: StackRun, t10k_dir: Path) -> None:
    result = smoke(run.outputs, count=10, data_dir=t10k_dir)
    assert result.ok and result.for_model("xgboost").correct >= 5, result.results  # chance is 1 in 10


# -- (a) `pulumi up` stopped after the thing came into being, before its result reached the state ----


def _interrupt_endpoint(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # The server answers /ping, then the provider is gone before it returns the pid and port.
    return interrupt_once(
        monkeypatch, local_servers, "wait_ready", when=lambda spec, *_: spec.marker == "serve"
    )


def _interrupt_ui(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return interrupt_once(monkeypatch, local_servers, "wait_ready", when=lambda spec, *_: spec.marker == "ui")


def _interrupt_training_running(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # The trainer has started; the provider dies at once, while it trains.
    return interrupt_once(monkeypatch, local_training, "follow_trainer", run_first=False)


def _interrupt_training_finished(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # The trainer has finished and written its model; the provider dies before collecting it.
    return interrupt_once(monkeypatch, local_training, "follow_trainer")


def _interrupt_dataset(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return interrupt_once(monkeypatch, local_dataset, "_prepare_recorded")


def _interrupt_gate(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    # The champion's copy is made; the round's result never reaches the state.
    return interrupt_once(monkeypatch, LocalGateProvider, "keep")


INTERRUPTIONS = {
    "dataset": (_interrupt_dataset, DATASET),
    "training-while-it-runs": (_interrupt_training_running, TRAINING),
    "training-after-it-finished": (_interrupt_training_finished, TRAINING),
    "gate": (_interrupt_gate, GATE),
    "endpoint": (_interrupt_endpoint, ENDPOINT),
    "ui": (_interrupt_ui, UI),
}


@pytest.mark.parametrize("where", list(INTERRUPTIONS))
def test_an_up_interrupted_inside_a_create_is_finished_by_the_next_up_with_one_copy_of_everything(
    where: str,
    engine: ProviderEngine,
    config: dict[str, Any],
    root: Path,
    t10k_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    inject, interrupted = INTERRUPTIONS[where]
    fired = inject(monkeypatch)
    trainer_starts: list[list[str]] = []
    start_detached = local_training.start_detached

    def counted(command: list[str], *args: Any, **kwargs: Any) -> Any:
        trainer_starts.append(command)
        return start_detached(command, *args, **kwargs)

    monkeypatch.setattr(local_training, "start_detached", counted)
    preparations: list[str] = []
    prepare = local_dataset._prepare

    def counted_preparation(props: dict[str, Any], target: Path) -> dict[str, Any]:
        preparations.append(str(target))
        return prepare(props, target)

    monkeypatch.setattr(local_dataset, "_prepare", counted_preparation)

    with pytest.raises(UpInterrupted):
        up(engine, config)
    assert fired and ("interrupted", interrupted) in engine.steps
    assert interrupted not in engine.live  # a pending create: the thing exists, the state does not hold it
    left_running = set(stack_processes(root))
    if where == "training-while-it-runs":
        [trainer] = left_running  # still training when the next `up` begins
        assert "train" in stack_processes(root)[trainer]

    run, steps = up(engine, config)

    # What was in the state before stays as it was; the interrupted create and what depends on it run.
    before = ALL[: ALL.index(interrupted)]
    assert {name: steps[name] for name in before} == dict.fromkeys(before, "same")
    assert steps[interrupted] == "create"
    assert_one_of_each_held_in_the_state(engine, root)
    assert len(trainer_starts) == 1, trainer_starts  # trained once: the next create adopted, not retrained
    assert len(preparations) == 1, preparations  # the dataset's files copied and hashed once
    if where in ("endpoint", "ui"):
        # The very server the interrupted create started, adopted (not stopped and started anew).
        assert left_running <= set(stack_processes(root))
    assert_smoke_passes(run, t10k_dir)


# -- (b) removed behind the stack's back -> `pulumi refresh` -> `pulumi up` ----------------------------


def _kill(engine: ProviderEngine, name: str) -> None:
    pid = int(engine.live[name].state["pid"])
    os.killpg(pid, signal.SIGKILL)
    assert wait_gone(pid, 10)


def _remove(path: str | Path) -> None:
    shutil.rmtree(path)


REMOVALS = {
    "endpoint process killed": (ENDPOINT, lambda engine: _kill(engine, ENDPOINT)),
    "ui process killed": (UI, lambda engine: _kill(engine, UI)),
    "model folder deleted": (TRAINING, lambda engine: _remove(engine.live[TRAINING].state["out_dir"])),
    "champion copy deleted": (
        GATE,
        lambda engine: _remove(Path(engine.live[GATE].state["champion_artifact"]).parent),
    ),
    "dataset folder deleted": (DATASET, lambda engine: _remove(engine.live[DATASET].state["path"])),
}


@pytest.mark.parametrize("what", list(REMOVALS))
def test_what_is_removed_behind_the_stacks_back_is_dropped_by_refresh_and_made_again_by_up_alone(
    what: str, engine: ProviderEngine, config: dict[str, Any], root: Path, t10k_dir: Path
):
    name, remove = REMOVALS[what]
    first, _ = up(engine, config)
    untouched = others(engine, name)
    remove(engine)

    if name == GATE:
        # The gate stays in the state, its champion still the one to beat; the up copies it back in place.
        assert engine.refresh() == []
        run, steps = up(engine, config)
        assert moved(steps) == {name: "update"}  # nothing else moved
    elif name == TRAINING:
        assert engine.refresh() == [name]
        run, steps = up(engine, config)
        # Trained again in place: a new run under the same name, which the gate judges (infra/gate_provider.py
        # same_run); it scores the same, so the champion is kept and nothing downstream moves.
        assert moved(steps) == {name: "create", GATE: "update"}
        assert run.outputs["models"]["xgboost"]["challenger"]["decision"] == "champion"
    else:
        assert engine.refresh() == [name]  # read asked the process table / the files: only that one is gone
        run, steps = up(engine, config)
        assert moved(steps) == {name: "create"}  # nothing else moved
    now = others(engine, name)
    if name == TRAINING:  # the gate recorded the new run as its challenger; its champion is the same
        assert now.pop(GATE)["champion"] == untouched.pop(GATE)["champion"]
    assert now == untouched
    assert run.outputs["endpoints"] == first.outputs["endpoints"]  # same URLs: a killed server's port again
    assert_one_of_each_held_in_the_state(engine, root)
    assert_smoke_passes(run, t10k_dir)


# -- (d) new serving code restarts the servers, nothing else --------------------------------------------


def test_new_serving_code_restarts_the_endpoint_on_the_next_up_and_nothing_else_moves(
    engine: ProviderEngine,
    config: dict[str, Any],
    root: Path,
    t10k_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    up(engine, config)
    old_pid = int(engine.live[ENDPOINT].state["pid"])
    monkeypatch.setattr(local, "serving_code_hash", lambda: "serving code edited")

    run, steps = up(engine, config)

    # The endpoint is replaced (created beside the old server, which is stopped after); the ui follows
    # its new URL. Data, training and gate stay.
    assert moved(steps) == {ENDPOINT: "replace", UI: "replace"}
    assert ("delete", ENDPOINT) in engine.steps
    assert wait_gone(old_pid, 10) and int(engine.live[ENDPOINT].state["pid"]) != old_pid
    assert_one_of_each_held_in_the_state(engine, root)
    assert_smoke_passes(run, t10k_dir)

    # An edit of the page's code alone restarts the ui alone.
    monkeypatch.setattr(local, "ui_code_hash", lambda: "ui code edited")
    _, steps = up(engine, config)
    assert moved(steps) == {UI: "replace"}
    assert_one_of_each_held_in_the_state(engine, root)


def test_records_of_what_runs_go_with_it(engine: ProviderEngine, config: dict[str, Any], root: Path):
    up(engine, config)
    records = sorted(p.name for p in (root / RECORDS_FOLDER).iterdir())
    # One per dataset, gate and server; the trainer's record went when the trainer ended.
    assert len(records) == 4, records
    engine.destroy()
    assert not root.exists()

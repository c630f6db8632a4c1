"""The local stack's trainings share the machine's training slots (training/slots.py), and an interrupted
`pulumi up` leaves none of them taken.

The program runs under mocks with its providers executed for real (tests/harness.py ProviderEngine);
the slots live in this test session's cache (tests/conftest.py points XDG_CACHE_HOME at a fresh folder),
as a user's live in theirs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import UpInterrupted, interrupt_once, interruptible, stack_processes, stop_stack_processes
from harness import EngineInterrupted, ProviderEngine, run_stack

from infra.local import platform as local
from infra.local import training_job as local_training
from infra.local.support import wait_gone
from infra.settings import Framework
from training.slots import SlotQueue

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(autouse=True)
def training_code_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hash the training code once per test (an edit meanwhile would rightly retrain; these tests count)."""
    hashes = {model: local.training_code_hash(model) for model in Framework}
    monkeypatch.setattr(local, "training_code_hash", hashes.__getitem__)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "local-root"
    yield root
    stop_stack_processes(root)


@pytest.fixture
def engine(root: Path) -> Iterator[ProviderEngine]:
    engine = ProviderEngine()
    yield engine
    engine.destroy()


def free_at_once(queue: SlotQueue) -> bool:
    """Whether a training queued now gets a slot at once (nothing holds them all, nobody waits)."""
    with queue.ticket(0, "probe") as ticket:
        return ticket.wait().waited_seconds < 2


def test_an_up_interrupted_while_its_trainer_waits_leaves_no_slot_taken(
    engine: ProviderEngine, root: Path, t10k_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    config = {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "dryRun": True,
        "ui": False,
        "localTrainingSlots": 1,
    }
    queue = SlotQueue(1, settle=0)  # the folder every queued training of this user shares
    with queue.ticket(0, "another stack's training") as other:
        other.wait()  # holds the only slot: the stack's trainer has to queue
        interrupt_once(monkeypatch, local_training, "follow_trainer", run_first=False)
        with pytest.raises(UpInterrupted):
            run_stack("local", config, new_resource=interruptible(engine))
        (trainer,) = stack_processes(root)  # left running on purpose: the next up waits for it
        deadline = time.monotonic() + 60
        while not list((queue.folder / "queue").glob("*.ticket")):
            assert time.monotonic() < deadline, "the trainer never queued"
            time.sleep(0.1)
    # The other training ended: the orphaned trainer takes the slot, trains, and gives it back by ending.
    holders: set[int] = set()
    deadline = time.monotonic() + 120
    while trainer in stack_processes(root):
        holders |= {int(h["pid"]) for h in queue.holders()}
        assert time.monotonic() < deadline, "the trainer never finished"
        time.sleep(0.05)
    assert trainer in holders  # it trained in the slot, not beside it
    assert free_at_once(queue)

    run = run_stack("local", config, new_resource=engine)  # the next up adopts its model
    engine.finish()
    assert run.outputs["models"]["xgboost"]["metrics"]["slot"]["count"] == 1
    assert free_at_once(queue)


def test_a_trainer_stopped_by_destroy_frees_its_slot(
    engine: ProviderEngine, root: Path, t10k_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """`pulumi destroy` of a job whose trainer still runs (an earlier create failed around it) stops the
    trainer, and with it goes its slot."""
    config: dict[str, Any] = {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "dryRun": True,
        "ui": False,
        "localTrainingSlots": 1,
    }
    queue = SlotQueue(1, settle=0)
    with queue.ticket(0, "another stack's training") as other:
        other.wait()
        interrupt_once(monkeypatch, local_training, "follow_trainer", run_first=False)
        with pytest.raises(UpInterrupted):
            run_stack("local", config, new_resource=interruptible(engine))
        ((trainer, command),) = stack_processes(root).items()
        out = command[command.index("--out") + 1]
        local_training.LocalTrainingJobProvider().delete(Path(out).name, {"root": str(root), "out_dir": out})
        assert wait_gone(trainer, 15)
    assert free_at_once(queue)
    assert not list((queue.folder / "queue").glob("*.ticket"))


def test_the_ibm_stacks_trainer_dies_with_an_interrupted_up_and_its_place_in_the_queue_with_it(
    root: Path, t10k_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    """The ibm stack trains through `run_trainer`, a child of the provider that an interruption kills."""
    props: dict[str, Any] = {
        "framework": "xgboost",
        "dataset": "mnist-t10k",
        "data_dir": str(t10k_dir),
        "root": str(root),
        "hyperparameters": {},
        "dry_run": True,
        "training_slots": 1,
    }
    feed = local_training.TerminalLines.feed

    def interrupted_once_it_waits(lines: local_training.TerminalLines, data: bytes) -> None:
        feed(lines, data)
        if b"waiting for one of 1 training slot" in data:
            raise EngineInterrupted("pulumi up stopped while the trainer waited for a slot")

    monkeypatch.setattr(local_training.TerminalLines, "feed", interrupted_once_it_waits)
    queue = SlotQueue(1, settle=0)
    with queue.ticket(0, "another stack's training") as other:
        other.wait()
        with pytest.raises(EngineInterrupted):
            local_training.run_trainer("xgboost-ibm", props, root / "models" / "xgboost-ibm")
        assert not stack_processes(root)  # killed, not left waiting
    assert free_at_once(queue)
    assert not list((queue.folder / "queue").glob("*.ticket"))  # its ticket was found dead and removed

"""Machine-wide training slots (training/slots.py): how many train at once, in which order, with how many
threads, and that a slot or a place in the queue dies with its process.

The trainings here are fakes (tests/training/fake_training.py): real processes that queue exactly as
`train_model` does and record when they held their slot, then sleep instead of training.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from training import run, xgboost_trainer
from training.run import train_model
from training.slots import (
    SlotQueue,
    available_cores,
    default_slot_count,
    threads_per_training,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
FAKE_TRAINING = Path(__file__).with_name("fake_training.py")


class Fakes:
    """Starts fake trainings sharing one slot folder and one record file; kills what is left at the end."""

    def __init__(self, folder: Path, record: Path) -> None:
        self.folder = folder
        self.record = record
        self.started: list[subprocess.Popen[str]] = []

    def start(
        self, label: str, priority: int, seconds: float, count: int = 1, settle: float = 0.0
    ) -> subprocess.Popen[str]:
        """A fake training, returned once it is in the queue."""
        arguments = [str(seconds), str(self.record), str(settle)]
        process = subprocess.Popen(
            [
                sys.executable,
                str(FAKE_TRAINING),
                str(self.folder),
                str(count),
                str(priority),
                label,
                *arguments,
            ],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},  # this tree's training/, not an installed one
        )
        self.started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "queued", f"{label} did not queue"
        return process

    def wait_all(self, timeout: float = 60) -> None:
        for process in self.started:
            assert process.wait(timeout) == 0

    def events(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def starts(self) -> list[str]:
        return [e["label"] for e in sorted(self.events(), key=lambda e: e["at"]) if e["event"] == "start"]

    def wait_started(self, label: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while label not in self.starts():
            assert time.monotonic() < deadline, f"{label} never got a slot; started: {self.starts()}"
            time.sleep(0.05)

    def kill_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.fixture
def fakes(tmp_path: Path) -> Iterator[Fakes]:
    started = Fakes(tmp_path / "slots", tmp_path / "record.jsonl")
    yield started
    started.kill_all()


def most_at_once(events: list[dict[str, Any]]) -> int:
    running = most = 0
    for event in sorted(events, key=lambda e: (e["at"], e["event"] == "start")):  # an end before a start
        running += 1 if event["event"] == "start" else -1
        most = max(most, running)
    return most


def test_never_more_trainings_run_at_once_than_there_are_slots(fakes: Fakes):
    holding = SlotQueue(2, fakes.folder, settle=0)
    with holding.ticket(0, "first") as first, holding.ticket(0, "second") as second:
        first.wait()  # both slots taken until all six have queued: then they rush in
        second.wait()
        for number in range(6):
            fakes.start(f"training-{number}", priority=number % 3, seconds=0.4, count=2)
    fakes.wait_all()
    events = fakes.events()
    assert sorted(e["label"] for e in events if e["event"] == "end") == [f"training-{n}" for n in range(6)]
    # Two at a time: never three, and the second slot is used (not one at a time).
    assert most_at_once(events) == 2, events
    # Each has half of the (8 fake) cores.
    assert {e["threads"] for e in events} == {4}


def test_the_queue_goes_by_priority_then_arrival(fakes: Fakes):
    fakes.start("blocker", priority=9, seconds=4)
    fakes.wait_started("blocker")
    for label, priority in (("tensorflow", 2), ("xgboost", 0), ("pytorch", 1), ("second xgboost", 0)):
        fakes.start(label, priority, seconds=0.1)
    fakes.wait_all()
    assert fakes.starts() == ["blocker", "xgboost", "second xgboost", "pytorch", "tensorflow"]
    assert most_at_once(fakes.events()) == 1


def test_trainings_queued_at_the_same_moment_go_by_priority_not_by_who_came_first(fakes: Fakes):
    # `pulumi up` starts the trainings together; the slowest one's process may queue a little earlier.
    fakes.start("tensorflow", priority=2, seconds=0.1, settle=1.5)
    fakes.start("xgboost", priority=0, seconds=0.1, settle=1.5)
    fakes.wait_all()
    assert fakes.starts() == ["xgboost", "tensorflow"]


def test_a_killed_training_frees_its_slot(fakes: Fakes):
    holder = fakes.start("killed", priority=0, seconds=600)
    fakes.wait_started("killed")
    fakes.start("next", priority=1, seconds=0)
    time.sleep(0.5)
    assert fakes.starts() == ["killed"]  # the slot is taken while its holder lives
    holder.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel drops the lock
    fakes.wait_started("next", timeout=10)


def test_a_killed_waiter_does_not_hold_up_the_queue(fakes: Fakes):
    fakes.start("blocker", priority=9, seconds=3)
    fakes.wait_started("blocker")
    first = fakes.start("killed while waiting", priority=0, seconds=0)
    fakes.start("behind it", priority=1, seconds=0)
    first.send_signal(signal.SIGKILL)
    fakes.wait_started("behind it", timeout=15)
    assert fakes.starts() == ["blocker", "behind it"]
    assert not list((fakes.folder / "queue").iterdir())  # the dead one's ticket was removed


def test_leaving_the_block_frees_the_ticket_and_the_slot(tmp_path: Path):
    queue = SlotQueue(1, tmp_path, settle=0)
    with queue.ticket(0, "first") as ticket:
        assert ticket.wait().index == 0
        assert [h["label"] for h in queue.holders()] == ["first"]
    assert queue.holders() == [] and not list((tmp_path / "queue").iterdir())
    with queue.ticket(0, "second") as ticket:
        assert ticket.wait().waited_seconds < 5  # at once: nothing holds the slot


def test_threads_are_the_cores_of_this_process_shared_by_the_slots():
    assert threads_per_training(1, cores=8) == 8
    assert threads_per_training(2, cores=8) == 4
    assert threads_per_training(3, cores=8) == 2
    assert threads_per_training(4, cores=2) == 1  # never none
    assert [default_slot_count(cores) for cores in (1, 2, 4, 7, 8, 16)] == [1, 1, 1, 1, 2, 4]
    assert available_cores() == len(os.sched_getaffinity(0))


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is a Linux call")
def test_a_process_limited_to_one_core_counts_one_core():
    one = min(os.sched_getaffinity(0))
    probe = (
        "from training import slots as s; "
        "print(s.available_cores(), s.default_slot_count(), s.threads_per_training(1))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        preexec_fn=lambda: os.sched_setaffinity(0, {one}),  # as `taskset -c 0` or a container's cpuset
    ).stdout.split()
    assert out == ["1", "1", "1"]


def test_bad_slot_counts_are_refused_with_what_is_allowed(tmp_path: Path):
    for bad in (0, -1, 65, 2.5, True, "2"):
        with pytest.raises(ValueError, match="whole number from 1 to 64"):
            SlotQueue(bad, tmp_path)  # type: ignore[arg-type]


def test_the_training_order_is_fastest_first():
    # bench/results/train-2.json, train-fashion-mnist-standard-2.json: xgboost, pytorch, tensorflow.
    assert [run.training_priority(f) for f in ("xgboost", "pytorch", "tensorflow")] == [0, 1, 2]


@pytest.mark.slow
def test_a_queued_training_trains_with_its_slots_threads(
    tmp_path: Path, t10k_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    seen: list[int | None] = []
    original = xgboost_trainer.train_and_evaluate

    def recording(*args: Any, nthread: int | None = None, **kwargs: Any) -> dict[str, Any]:
        seen.append(nthread)
        return original(*args, nthread=nthread, **kwargs)

    monkeypatch.setattr(xgboost_trainer, "train_and_evaluate", recording)
    queue = SlotQueue(2, tmp_path / "slots", cores=6, settle=0)
    metrics = train_model("xgboost", "mnist-t10k", t10k_dir, tmp_path / "out", dry_run=True, slots=queue)
    assert seen == [3]  # 6 cores, 2 slots
    assert metrics["slot"]["count"] == 2 and metrics["slot"]["threads"] == 3
    assert queue.holders() == []  # given back when the training ended

    seen.clear()
    train_model("xgboost", "mnist-t10k", t10k_dir, tmp_path / "out", dry_run=True, slots=queue, threads=1)
    assert seen == [1]  # an explicit thread count wins

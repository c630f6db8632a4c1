"""Machine-wide training slots: how many trainings run at once on this machine, with how many threads each.

Three trainings started together by `pulumi up`, each asking for every core, ran 1.55x slower than the
same three one after the other (issue 35): their thread pools fought over the cores. A training that
queues here takes one of `count` slots before it starts and trains with `cores / count` threads, so the
machine runs `count` trainings at a time, each with its share of the cores.

A slot is a lock file, `<folder>/slot-<i>.lock` for i < count, held with `fcntl.flock` for as long as the
training runs. The kernel drops a flock when the process holding it ends, however it ends (SIGKILL
included), so a killed trainer or an interrupted `pulumi up` never leaves a slot taken. The folder is
in the user's cache (`default_slots_dir`), so every stack and every `mnistctl train --slots` of the user
on this machine shares the same slots.

Waiting trainings queue by priority, then arrival: each waiter holds a ticket in `<folder>/queue/`, a file
named by its priority and arrival time and flocked by its owner like a slot (a ticket whose lock can be
taken belongs to a waiter that died, and is removed). Only the first living ticket may take a free slot,
and only once it has been queued `settle` seconds: trainings that `pulumi up` starts at the same moment
then go by priority, not by whichever process happened to start first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import platformdirs

APP_NAME = "mnist-platform"  # the user cache folder training.datasets uses too
SLOTS_FOLDER = "training-slots"
QUEUE_FOLDER = "queue"
# One training per 4 cores by default. Measured on 2 cores (bench/up.py): one slot with both cores beats two
# trainings of one thread each for the first endpoint (it gets every core) and costs nothing in total.
# Past ~4 threads these small models gain little from more threads, so bigger machines run several at once.
CORES_PER_SLOT = 4
MAX_SLOTS = 64
SETTLE_SECONDS = 1.0
POLL_SECONDS = 0.2
WAIT_REPORT_SECONDS = 60.0
DRAFT_SECONDS = 60.0
_TICKET = re.compile(r"^(\d+)-(\d+)-(\d+)-([0-9a-f]+)\.ticket$")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's or `taskset`'s limit, not the
    machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity: every core
        return os.cpu_count() or 1


def default_slot_count(cores: int | None = None) -> int:
    """How many trainings run at once when the stack does not say (config `localTrainingSlots`)."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // CORES_PER_SLOT)


def threads_per_training(slots: int, cores: int | None = None) -> int:
    """Each training's share of the cores when `slots` trainings run at once (at least one thread)."""
    cores = available_cores() if cores is None else cores
    return max(1, cores // slots)


def default_slots_dir() -> Path:
    """The folder every queued training of this user on this machine shares (in the user cache)."""
    return Path(platformdirs.user_cache_dir(APP_NAME)) / SLOTS_FOLDER


def check_slot_count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_SLOTS:
        raise ValueError(
            f"the number of training slots must be a whole number from 1 to {MAX_SLOTS}, got {count!r}"
        )
    return count


@dataclass(frozen=True)
class Slot:
    """A slot taken: which one, how many there are, the threads it gives, how long it took to get it."""

    index: int
    count: int
    threads: int
    waited_seconds: float
    taken_at: float
    """When it was taken (seconds since the epoch)."""


@dataclass(frozen=True, order=True)
class _TicketName:
    priority: int
    arrival_ns: int
    pid: int
    token: str

    @property
    def file_name(self) -> str:
        return f"{self.priority:04d}-{self.arrival_ns:020d}-{self.pid}-{self.token}.ticket"

    @classmethod
    def parse(cls, name: str) -> _TicketName | None:
        match = _TICKET.match(name)
        if match is None:
            return None
        return cls(int(match[1]), int(match[2]), int(match[3]), match[4])


class SlotQueue:
    """`count` slots in `folder` (the user cache's by default) and the queue of trainings waiting for one."""

    def __init__(
        self,
        count: int,
        folder: Path | None = None,
        *,
        cores: int | None = None,
        settle: float = SETTLE_SECONDS,
        poll: float = POLL_SECONDS,
    ) -> None:
        self.count = check_slot_count(count)
        self.folder = Path(folder) if folder is not None else default_slots_dir()
        self.cores = available_cores() if cores is None else cores
        self.settle = settle
        self.poll = poll

    @contextlib.contextmanager
    def ticket(self, priority: int, label: str) -> Iterator[Ticket]:
        """Join the queue now (the caller may do slow work, such as imports, before `Ticket.wait`); leaving
        the block frees the ticket and the slot it got."""
        if not 0 <= priority <= 9999:
            raise ValueError(f"priority must be from 0 to 9999, got {priority}")
        ticket = Ticket(self, priority, label)
        try:
            yield ticket
        finally:
            ticket.release()

    def holders(self) -> list[dict]:
        """What the slots' current holders wrote into them (label, pid, since), for messages."""
        found = []
        for index in range(self.count):
            path = self._slot_path(index)
            try:
                record = json.loads(path.read_text() or "null")
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and _alive(int(record.get("pid") or 0)):
                found.append(record)
        return found

    def _slot_path(self, index: int) -> Path:
        return self.folder / f"slot-{index}.lock"

    def _queue(self) -> Path:
        return self.folder / QUEUE_FOLDER

    def _try_take(self, label: str) -> tuple[int, int] | None:
        """(index, fd) of a free slot, now held; None when every slot is taken."""
        for index in range(self.count):
            fd = os.open(self._slot_path(index), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            record = json.dumps({"label": label, "pid": os.getpid(), "since": time.time()}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, record, 0)
            return index, fd
        return None

    def _waiting(self) -> list[_TicketName]:
        """The living tickets, in queue order; those of dead waiters are removed on the way."""
        living = []
        for path in self._queue().iterdir():
            name = _TicketName.parse(path.name)
            if name is None:
                # A draft is unlocked for an instant after its creation: only an old free one is a dead one's.
                if path.name.endswith(".new") and _age(path) > DRAFT_SECONDS and _lock_is_free(path):
                    path.unlink(missing_ok=True)
                continue
            if _lock_is_free(path):  # its owner is gone (its lock went with it)
                path.unlink(missing_ok=True)
            else:
                living.append(name)
        return sorted(living)


class Ticket:
    """A place in the queue of `SlotQueue`, then the slot it got."""

    def __init__(self, queue: SlotQueue, priority: int, label: str) -> None:
        self._queue = queue
        self.label = label
        self.name = _TicketName(priority, time.time_ns(), os.getpid(), uuid.uuid4().hex[:12])
        self.slot: Slot | None = None
        self._slot_fd: int | None = None
        folder = queue._queue()
        folder.mkdir(parents=True, exist_ok=True)
        # Locked before it gets its name, so that nobody ever sees it unlocked and takes it for a dead one.
        draft = folder / f".{self.name.file_name}.new"
        self._fd: int | None = os.open(draft, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        os.write(self._fd, label.encode())
        self._path = folder / self.name.file_name
        draft.rename(self._path)

    def wait(self, on_wait: Callable[[str], None] | None = None) -> Slot:
        """Block until this ticket is first in the queue and a slot is free; take it. `on_wait` hears,
        now and then, what it waits for."""
        if self.slot is not None:
            return self.slot
        queue = self._queue
        reported = -WAIT_REPORT_SECONDS
        while True:
            ahead = [t for t in queue._waiting() if t < self.name]
            queued = (time.time_ns() - self.name.arrival_ns) / 1e9
            if not ahead and queued >= queue.settle:
                taken = queue._try_take(self.label)
                if taken is not None:
                    index, self._slot_fd = taken
                    self._leave_queue()
                    self.slot = Slot(
                        index,
                        queue.count,
                        threads_per_training(queue.count, queue.cores),
                        queued,
                        time.time(),
                    )
                    return self.slot
            if (
                on_wait is not None
                and queued - reported >= WAIT_REPORT_SECONDS
                and (ahead or queued >= queue.settle)
            ):
                reported = queued
                running = (
                    ", ".join(f"{h.get('label')} (pid {h.get('pid')})" for h in queue.holders()) or "none"
                )
                on_wait(
                    f"waiting for one of {queue.count} training slot(s) on this machine "
                    f"({queue.folder}): running {running}; {len(ahead)} queued ahead"
                )
            time.sleep(queue.poll)

    def release(self) -> None:
        """Leave the queue and free the slot (also done by the kernel if the process dies)."""
        self._leave_queue()
        if self._slot_fd is not None:
            os.ftruncate(self._slot_fd, 0)  # no longer names this process as its holder
            os.close(self._slot_fd)  # closing the last descriptor of a flock releases it
            self._slot_fd = None

    def _leave_queue(self) -> None:
        if self._fd is not None:
            self._path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None


def _lock_is_free(path: Path) -> bool:
    """Whether nobody holds the flock of `path` (taken and given back at once to find out)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

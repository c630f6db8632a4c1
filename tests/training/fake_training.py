"""A fake training for the slot tests: it queues as `train_model` does, records when it held its slot.

    python fake_training.py FOLDER COUNT PRIORITY LABEL SECONDS RECORD [SETTLE]

Prints "queued" once it holds its ticket, then waits for a slot, appends {"label", "event": "start"|"end",
"at", "threads"} lines to RECORD around SECONDS of sleep, and leaves (or is killed meanwhile).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from training.slots import SlotQueue


def record(path: Path, **event: object) -> None:
    with path.open("a") as file:  # one short append per line: lines of several writers do not mix
        file.write(json.dumps({**event, "at": time.time()}) + "\n")
        file.flush()
        os.fsync(file.fileno())


def main(
    folder: str, count: str, priority: str, label: str, seconds: str, path: str, settle: str = "0"
) -> None:
    queue = SlotQueue(int(count), Path(folder), cores=8, settle=float(settle), poll=0.05)
    with queue.ticket(int(priority), label) as ticket:
        print("queued", flush=True)
        slot = ticket.wait()
        record(Path(path), label=label, event="start", threads=slot.threads)
        time.sleep(float(seconds))
        record(Path(path), label=label, event="end", threads=slot.threads)


if __name__ == "__main__":
    main(*sys.argv[1:])

"""The local stack's training job: `mnistctl train` in a subprocess, its output streamed to the Pulumi log.

The job trains into a folder of its own, `<localRoot>/models/<id>/`, so that a replacement can be
trained before the old artifact is deleted. Its inputs include a hash of the training code, the
dataset's content hash and the hyperparameters: any change trains a new model, and the endpoint
serving it is replaced after it.

The id is the framework and the job's identity (infra/dynamic.py: the resource and those inputs), so
a create that `pulumi up` gave up on (Ctrl-C, a killed CLI) is found again by the next one: the trainer
runs detached (its own session, its output to `<localRoot>/logs/train-<id>.log`, its pid in
`<localRoot>/run/train-<id>.json`), so it survives the interruption, and the next create waits for a
trainer still running, adopts a finished model (artifact and metrics.json), and removes anything else
before training anew. A model removed behind the stack's back is trained again in place (an update:
same id, same folder), so what follows it does not move.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, log, state_of, tail
from infra.hashing import tree_sha256
from infra.local.support import (
    LocalProviderError,
    forget_record,
    is_recorded_process,
    process_cmdline,
    process_start,
    read_record,
    reap,
    record_path,
    remove_tree,
    size_bytes,
    start_detached,
    stop_process_group,
    write_record,
)
from training.hyperparameters import METRICS_FILE
from training.run import ARTIFACTS, parse_framework
from training.slots import default_slot_count

PROGRESS_INTERVAL_SECONDS = 2.0
LOG_POLL_SECONDS = 0.2
STOP_TIMEOUT_SECONDS = 10.0
# rich draws its progress bar only on a terminal: the trainer is told it has one (without colours, at a
# fixed width), and its redraws are thinned out to a line every PROGRESS_INTERVAL_SECONDS.
TRAINER_ENV = {
    "PYTHONUNBUFFERED": "1",
    "TTY_COMPATIBLE": "1",
    "TTY_INTERACTIVE": "1",
    "NO_COLOR": "1",
    "COLUMNS": "120",
}
_LINE_END = re.compile(rb"\r\n|\r|\n")
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]")
# What the trainer's result depends on: a change to any of them trains again (replaces the job).
TRAINER_INPUTS = (
    "framework",
    "dataset",
    "data_dir",
    "data_hash",
    "code_hash",
    "hyperparameters",
    "preset",
    "dry_run",
    "root",
    "tuning",
)


@dataclass
class LocalTrainingJobArgs:
    """Inputs of a LocalTrainingJob."""

    framework: pulumi.Input[str]
    """xgboost, tensorflow or pytorch."""
    dataset: pulumi.Input[str]
    """Dataset name, as `mnistctl train --dataset` takes it."""
    data_dir: pulumi.Input[str]
    """The prepared dataset's folder (a LocalDataset's path)."""
    data_hash: pulumi.Input[str]
    """The prepared dataset's content hash: new data, new job."""
    code_hash: pulumi.Input[str]
    """Hash of the training package's sources: new code, new job."""
    root: pulumi.Input[str]
    """The stack's localRoot; the model goes to <root>/models/<id>/, the log to <root>/logs/."""
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    """Overrides as the trainer takes them (`--hp name=value`)."""
    preset: pulumi.Input[str] = "standard"
    """The dataset's hyperparameter preset (`--preset`, training/presets.py), under the overrides."""
    dry_run: pulumi.Input[bool] = False
    """Train on a tiny subset (tests and quick looks)."""
    training_slots: pulumi.Input[int] | None = None
    """How many trainings this machine runs at once (config localTrainingSlots; training/slots.py); one
    per 4 cores when None. Not part of the job's identity: it changes when the model trains, not what."""
    tuning: pulumi.Input[str] | None = None
    """The model's search (config `tuning`, as JSON): the job tunes (`mnistctl train --tune`,
    training/tuning.py) and its output is the best trial's; None trains once."""


class LocalTrainingJobProvider(ResourceProvider):
    """Runs one trainer to completion; the artifact folder is the resource."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        job_id = f"{props['framework']}-{identity(props, TRAINER_INPUTS)}"
        out = Path(props["root"]) / "models" / job_id
        return CreateResult(id_=job_id, outs={**state_of(props), **train_once(job_id, props, out)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, TRAINER_INPUTS)
        # Removed behind the stack's back: trained again in place (same id, same folder; a replacement
        # would share its identity and folder with the job it replaces, whose delete would remove it).
        changes = bool(replaces) or not _artifact_intact(olds)
        return DiffResult(changes=changes, replaces=replaces, delete_before_replace=False)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**state_of(news), **train_once(id_, news, Path(olds["out_dir"]))})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not _artifact_intact(props):
            return ReadResult(None, {})  # refresh drops it; the next `pulumi up` trains it again
        return ReadResult(id_, state_of(props))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        record = record_path(Path(props["root"]), f"train-{id_}")
        found = read_record(record)
        if found is not None and is_recorded_process(found, "train", (str(props.get("out_dir")),)):
            stop_process_group(int(found["pid"]), STOP_TIMEOUT_SECONDS)  # not to write into a removed folder
        forget_record(record)
        if props.get("out_dir"):
            remove_tree(Path(props["out_dir"]))


def train_once(job_id: str, props: dict[str, Any], out: Path) -> dict[str, Any]:
    """The job's outputs, training only when no earlier create of the same job (an interrupted one) left
    a trainer running (waited for) or a finished model (adopted); anything else it left is removed first."""
    framework = str(props["framework"])
    root = Path(props["root"])
    record_file = record_path(root, f"train-{job_id}")
    log_path = root / "logs" / f"train-{job_id}.log"
    record = read_record(record_file)
    if record is not None and is_recorded_process(record, "train", (str(out),)):
        pid = int(record["pid"])
        log(f"training {framework}: waiting for the trainer (pid {pid}) an interrupted create started")
        try:
            follow_trainer(framework, log_path, lambda: None if process_cmdline(pid) else "unknown")
        except Exception:
            _abandon(pid, out, record_file)
            raise
        forget_record(record_file)
        if not _finished(out):
            remove_tree(out)
            raise LocalProviderError(
                f"training {framework} (pid {pid}, started by an interrupted `pulumi up`) ended without "
                f"writing its model; its log: {log_path}. Run `pulumi up` again to train anew."
            )
        return _collect(framework, out, log_path)
    forget_record(record_file)
    if _finished(out):
        log(f"training {framework}: adopting the model an interrupted create trained in {out}")
        return _collect(framework, out, log_path)
    if out.exists():
        log(f"training {framework}: removing what an interrupted or failed create left in {out}")
        remove_tree(out)
    return _train_detached(framework, props, out, log_path, record_file)


def _train_detached(
    framework: str, props: dict[str, Any], out: Path, log_path: Path, record_file: Path
) -> dict[str, Any]:
    out.parent.mkdir(parents=True, exist_ok=True)
    log_path.unlink(missing_ok=True)  # this job's log is this run's alone
    command = trainer_command(props, out)
    log(f"training {framework}: {' '.join(command[1:])}")
    process = start_detached(
        command, log_path, Path.cwd(), f"the {framework} trainer", {**os.environ, **TRAINER_ENV}
    )
    write_record(record_file, {"pid": process.pid, "started": process_start(process.pid)})
    try:
        last_lines = follow_trainer(framework, log_path, process.poll)
    except Exception:
        _abandon(process.pid, out, record_file)
        raise
    # An interruption (a BaseException: the provider stopped, Ctrl-C) leaves the trainer running and
    # recorded on purpose: the next create waits for it.
    returncode = process.wait()
    forget_record(record_file)
    if returncode != 0:
        remove_tree(out)  # a failed job leaves only its log behind
        raise LocalProviderError(
            f"training {framework} failed (exit code {returncode}). The trainer's last lines:\n"
            f"{tail(chr(10).join(last_lines))}\n"
            f"Full log: {log_path}. Fix the cause (a hyperparameter in mnist-platform:hyperparameters, the "
            "dataset, the training code) and run `pulumi up` again."
        )
    return _collect(framework, out, log_path)


def follow_trainer(
    framework: str, log_path: Path, exit_code: Callable[[], int | str | None]
) -> collections.deque[str]:
    """Stream the trainer's log to the Pulumi log until it exits (`exit_code` not None); its last lines."""
    last_lines: collections.deque[str] = collections.deque(maxlen=40)

    def emit(line: str) -> None:
        last_lines.append(line)
        log(f"[{framework}] {line}")

    lines = TerminalLines(emit)
    with log_path.open("rb") as reader:
        while True:
            chunk = reader.read(1 << 16)
            if chunk:
                lines.feed(chunk)
            elif exit_code() is not None:
                while chunk := reader.read(1 << 16):  # what it wrote before exiting
                    lines.feed(chunk)
                break
            else:
                time.sleep(LOG_POLL_SECONDS)
    lines.close()
    return last_lines


def _abandon(pid: int, out: Path, record_file: Path) -> None:
    """A create that fails while its trainer runs: stop the trainer, remove its folder and record."""
    with contextlib.suppress(LocalProviderError):
        stop_process_group(pid, STOP_TIMEOUT_SECONDS)
    reap(pid)
    remove_tree(out)
    forget_record(record_file)


def _finished(out: Path) -> bool:
    """Whether `out` holds a finished training: an artifact and a whole metrics.json (written last)."""
    try:
        metrics = json.loads((out / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return False
    artifact = out / str(metrics.get("artifact") or "") if isinstance(metrics, dict) else out
    return isinstance(metrics, dict) and artifact != out and artifact.exists()


def trainer_command(props: Mapping[str, Any], out: Path) -> list[str]:
    """The `mnistctl train` command line of a job (the same one a user would type)."""
    command = [
        sys.executable,
        "-m",
        "mnistctl",
        "train",
        "--framework",
        str(props["framework"]),
        "--dataset",
        str(props["dataset"]),
        "--data-dir",
        str(props["data_dir"]),
        "--out",
        str(out),
    ]
    command += ["--preset", str(props.get("preset") or "standard")]
    # Every stack's training queues for the machine's slots, so that trainings share the cores in turn.
    command += ["--slots", str(int(props.get("training_slots") or 0) or default_slot_count())]
    for name, value in sorted((props.get("hyperparameters") or {}).items()):
        command += ["--hp", f"{name}={value}"]
    if props.get("dry_run"):
        command.append("--dry-run")
    if props.get("tuning"):
        command += ["--tune", str(props["tuning"])]
    return command


def run_trainer(job_id: str, props: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run `mnistctl train` for the job in a subprocess, its output to the Pulumi log and a log file;
    return the outputs (artifact, metrics). Shared with the ibm stack, which trains on this machine too."""
    framework = str(props["framework"])
    log_path = Path(props["root"]) / "logs" / f"train-{job_id}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    command = trainer_command(props, out)
    log(f"training {framework}: {' '.join(command[1:])}")
    last_lines: collections.deque[str] = collections.deque(maxlen=40)
    with log_path.open("w") as log_file:

        def emit(line: str) -> None:
            log_file.write(line + "\n")
            log_file.flush()
            last_lines.append(line)
            log(f"[{framework}] {line}")

        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                bufsize=0,  # unbuffered: each read returns what the trainer has written so far
                env={**os.environ, **TRAINER_ENV},
            )
        except OSError as error:
            raise LocalProviderError(
                f"could not start the {framework} trainer ({command[0]}): {error}"
            ) from error
        try:
            assert process.stdout is not None
            lines = TerminalLines(emit)
            while chunk := process.stdout.read(1 << 16):
                lines.feed(chunk)
            lines.close()
            returncode = process.wait()
        finally:
            if process.poll() is None:  # interrupted (Ctrl-C, cancelled update): do not leave it running
                process.kill()
                process.wait()
    if returncode != 0:
        raise LocalProviderError(
            f"training {framework} failed (exit code {returncode}). The trainer's last lines:\n"
            f"{tail(chr(10).join(last_lines))}\n"
            f"Full log: {log_path}. Fix the cause (a hyperparameter in mnist-platform:hyperparameters, the "
            "dataset, the training code) and run `pulumi up` again."
        )
    return _collect(framework, out, log_path)


class TerminalLines:
    """A terminal-style byte stream as log lines: every finished line, and progress-bar redraws
    (text ended by a carriage return) at most once per `interval` seconds, the last one always."""

    def __init__(self, emit: Callable[[str], None], interval: float = PROGRESS_INTERVAL_SECONDS) -> None:
        self._sink = emit
        self._last_line: str | None = None
        self._interval = interval
        self._buffer = b""
        self._pending: str | None = None
        self._last_redraw = -interval

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while match := _LINE_END.search(self._buffer):
            segment, self._buffer = self._buffer[: match.start()], self._buffer[match.end() :]
            self._segment(segment, redraw=match.group() == b"\r")

    def close(self) -> None:
        if self._buffer:
            self._segment(self._buffer, redraw=False)
            self._buffer = b""
        if self._pending is not None:
            self._emit(self._pending)
            self._pending = None

    def _emit(self, line: str) -> None:
        if line != self._last_line:  # a bar redrawn unchanged, or its final redraw repeated on exit
            self._last_line = line
            self._sink(line)

    def _segment(self, raw: bytes, redraw: bool) -> None:
        text = _ANSI_ESCAPE.sub("", raw.decode(errors="replace")).rstrip()
        if not text.strip():
            return
        if not redraw:
            self._pending = None
            self._emit(text)
            return
        now = time.monotonic()
        if now - self._last_redraw >= self._interval:
            self._last_redraw = now
            self._pending = None
            self._emit(text)
        else:
            self._pending = text


def _collect(framework: str, out: Path, log_path: Path) -> dict[str, Any]:
    artifact = out / ARTIFACTS[parse_framework(framework)]  # the file or folder its server loads
    metrics_path = out / METRICS_FILE
    if not artifact.exists() or not metrics_path.is_file():
        raise LocalProviderError(
            f"the {framework} trainer succeeded but did not write {artifact.name} and {METRICS_FILE} into "
            f"{out}; see {log_path}. This is a bug in the training package: report it with that log."
        )
    metrics = json.loads(metrics_path.read_text())
    log(f"trained {framework}: accuracy {metrics.get('accuracy')} in {metrics.get('train_seconds')}s")
    return {
        "out_dir": str(out),
        "artifact": str(artifact),
        "artifact_hash": tree_sha256(out),
        "artifact_bytes": size_bytes(artifact),
        "metrics": metrics,
        "log_path": str(log_path),
    }


def _artifact_intact(state: Mapping[str, Any]) -> bool:
    artifact, out = state.get("artifact"), state.get("out_dir")
    if not artifact or not out:
        return False
    return Path(artifact).exists() and (Path(out) / METRICS_FILE).is_file()


class LocalTrainingJob(pulumi.dynamic.Resource, module="local", name="TrainingJob"):
    """A model trained on this machine by the training package."""

    out_dir: pulumi.Output[str]
    artifact: pulumi.Output[str]
    artifact_hash: pulumi.Output[str]
    artifact_bytes: pulumi.Output[int]
    metrics: pulumi.Output[dict]
    log_path: pulumi.Output[str]

    def __init__(
        self, name: str, args: LocalTrainingJobArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "framework": args.framework,
            "dataset": args.dataset,
            "data_dir": args.data_dir,
            "data_hash": args.data_hash,
            "code_hash": args.code_hash,
            "root": args.root,
            "hyperparameters": dict(args.hyperparameters),
            "preset": args.preset,
            "dry_run": args.dry_run,
            "training_slots": args.training_slots,
            "tuning": args.tuning,
            IDENTITY_SEED: identity_seed("local:TrainingJob", name),
            "out_dir": None,
            "artifact": None,
            "artifact_hash": None,
            "artifact_bytes": None,
            "metrics": None,
            "log_path": None,
        }
        super().__init__(LocalTrainingJobProvider(), name, props, opts)

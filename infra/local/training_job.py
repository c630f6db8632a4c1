"""The local stack's training job: `mnistctl train` in a subprocess, its output streamed to the Pulumi log.

The job trains into a folder of its own, `<localRoot>/models/<id>/`, so that a replacement can be
trained before the old artifact is deleted. Its inputs include a hash of the training code, the
dataset's content hash and the hyperparameters: any change trains a new model, and the endpoint
serving it is replaced after it.
"""

from __future__ import annotations

import collections
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.dynamic import changed_keys, log, state_of, tail
from infra.hashing import tree_sha256
from infra.local.support import LocalProviderError, remove_tree, size_bytes
from training.hyperparameters import METRICS_FILE
from training.run import ARTIFACTS, parse_framework

PROGRESS_INTERVAL_SECONDS = 2.0
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


class LocalTrainingJobProvider(ResourceProvider):
    """Runs one trainer to completion; the artifact folder is the resource."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        job_id = f"{props['framework']}-{secrets.token_hex(4)}"
        out = Path(props["root"]) / "models" / job_id
        try:
            outs = run_trainer(job_id, props, out)
        except BaseException:
            remove_tree(out)  # a failed job leaves only its log behind
            raise
        return CreateResult(id_=job_id, outs={**state_of(props), **outs})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, TRAINER_INPUTS)
        if not replaces and not _artifact_intact(olds):
            replaces = ["artifact"]  # removed behind the stack's back: train again
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not _artifact_intact(props):
            return ReadResult(None, {})
        return ReadResult(id_, state_of(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if props.get("out_dir"):
            remove_tree(Path(props["out_dir"]))


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
    for name, value in sorted((props.get("hyperparameters") or {}).items()):
        command += ["--hp", f"{name}={value}"]
    if props.get("dry_run"):
        command.append("--dry-run")
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
            "dry_run": args.dry_run,
            "out_dir": None,
            "artifact": None,
            "artifact_hash": None,
            "artifact_bytes": None,
            "metrics": None,
            "log_path": None,
        }
        super().__init__(LocalTrainingJobProvider(), name, props, opts)

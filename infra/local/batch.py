"""The local stack's batch scoring: one model's champion scores a whole input, `mnistctl batch` in a
subprocess, its predictions and report under `<localRoot>/batch/<model>/<run>/`.

Each run has a folder of its own, named from what it scores (the champion's hash and the input's), so
that a new champion or a new input is an update that scores into a new folder and then removes the old
one; a second `pulumi up` with neither changed scores nothing. The folder holds predictions.csv,
report.json (written last: a folder without it is unfinished), and with labels confusion.csv and .png.

Crash-safety (docs/reliability.md): the resource's id carries its identity (infra/dynamic.py: its seed,
model and localRoot), and every folder it scores into is listed in its record, `<localRoot>/run/<id>.json`,
before the scorer starts. A create or an update first removes whatever listed folder is not the run it
is about to make (left by an interrupted create or update) and adopts that run's folder when its report
is whole; a failed run removes its folder. `read` reports the resource gone when its report is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, log, state_of, tail
from infra.hashing import content_hash, file_sha256, tree_sha256
from infra.local.support import (
    LocalProviderError,
    forget_record,
    read_record,
    record_path,
    remove_tree,
    write_record,
)
from mnistctl.batch import (
    CONFUSION_CSV,
    CONFUSION_PNG,
    IDX_IMAGES_MARK,
    IDX_LABELS_MARK,
    PREDICTIONS_FILE,
    REPORT_FILE,
)

BATCH_FOLDER = "batch"
# What a new value of these means: another resource (another model's runs, another place).
_REPLACE_KEYS = ("model", "root")
# What a new value of these means: score again, into a new folder (the champion, the input, the scorer).
_RESCORE_KEYS = ("champion_dir", "champion_hash", "flavor", "input", "input_hash", "dataset", "data_dir")
SCORE_TIMEOUT_SECONDS = 3600


@dataclass
class LocalBatchJobArgs:
    """Inputs of a LocalBatchJob."""

    model: pulumi.Input[str]
    """The framework whose champion scores (xgboost, tensorflow, pytorch)."""
    flavor: pulumi.Input[str]
    """The champion's serving flavor (sagemaker, vertex, watsonx): which model class loads it."""
    champion_dir: pulumi.Input[str]
    """The champion's folder (the gate's copy), as `mnistctl batch --model-dir` takes it."""
    champion_hash: pulumi.Input[str]
    """A hash of the champion's folder: a new champion scores again."""
    input: pulumi.Input[str]
    """`test` (the dataset's held-out split) or a path on this machine (mnistctl/batch.py: the formats)."""
    input_hash: pulumi.Input[str]
    """A hash of the input's content (for `test`, the dataset's): new content scores again."""
    dataset: pulumi.Input[str]
    """The stack's dataset, for input `test`."""
    data_dir: pulumi.Input[str]
    """Where the stack's dataset files are (the LocalDataset's folder), for input `test`."""
    root: pulumi.Input[str]
    """The stack's localRoot; runs go to <root>/batch/<model>/."""


class LocalBatchJobProvider(ResourceProvider):
    """Scores with `mnistctl batch` into a folder per (champion, input)."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        id_ = batch_id(props)
        return CreateResult(id_=id_, outs={**state_of(props), **_run(id_, props)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        rescore = changed_keys(olds, news, _RESCORE_KEYS)
        if not replaces and not rescore and not _finished(Path(str(olds.get("out_dir") or ""))):
            rescore = ["report"]  # removed behind the stack's back: scored again (same id, its record)
        return DiffResult(changes=bool(replaces or rescore), replaces=replaces, delete_before_replace=False)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        outs = _run(id_, news)
        return UpdateResult(outs={**state_of(news), **outs})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not _finished(Path(str(props.get("out_dir") or ""))):
            return ReadResult(None, {})  # its report is gone: the next up scores again
        return ReadResult(id_, state_of(props))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        record = record_path(Path(str(props["root"])), id_)
        folders = {*(read_record(record) or {}).get("runs", []), str(props.get("out_dir") or "")}
        for folder in sorted(f for f in folders if f):
            remove_tree(Path(folder))
        forget_record(record)
        log(f"batch {props['model']}: removed {', '.join(sorted(f for f in folders if f))}")


def input_content_hash(source: str) -> str:
    """A hash of what a batch input holds (a folder's files; an IDX file with its labels file beside it),
    taken when the program runs: new content, a new run."""
    path = Path(source)
    if path.is_dir():
        return tree_sha256(path)
    labels = path.with_name(path.name.replace(IDX_IMAGES_MARK, IDX_LABELS_MARK))
    parts = [file_sha256(path)]
    if labels != path and labels.is_file():
        parts.append(file_sha256(labels))
    return content_hash(parts, length=64)


def batch_id(props: Mapping[str, Any]) -> str:
    return f"{props['model']}-batch-{identity(props, _REPLACE_KEYS)}"


def run_folder(props: Mapping[str, Any]) -> Path:
    """The folder of the run scoring this champion on this input: named from what it scores."""
    key = content_hash({k: str(props.get(k) or "") for k in _RESCORE_KEYS})
    return Path(str(props["root"])) / BATCH_FOLDER / str(props["model"]) / key


def _finished(folder: Path) -> bool:
    try:
        report = json.loads((folder / REPORT_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(report, dict) and (folder / PREDICTIONS_FILE).is_file()


def _run(id_: str, props: Mapping[str, Any]) -> dict[str, Any]:
    """Score into this run's folder (or adopt it when an interrupted run finished it); then remove every
    other folder the record lists (the previous run's, or one an interrupted run left)."""
    record = record_path(Path(str(props["root"])), id_)
    target = run_folder(props)
    listed = [f for f in (read_record(record) or {}).get("runs", []) if f != str(target)]
    write_record(record, {"runs": [*listed, str(target)]})  # listed before it exists
    if _finished(target):
        log(f"batch {props['model']}: adopting the run an interrupted update finished in {target}")
    else:
        remove_tree(target)  # half-written by an interrupted run
        try:
            _score(id_, props, target)
        except BaseException:
            remove_tree(target)  # a failed run leaves no folder behind
            raise
    for folder in listed:
        remove_tree(Path(folder))
    write_record(record, {"runs": [str(target)]})
    return _outputs(target)


def batch_command(props: Mapping[str, Any], out: Path) -> list[str]:
    """The `mnistctl batch` command line of a run (the same one a user would type)."""
    return [
        sys.executable,
        "-m",
        "mnistctl",
        "batch",
        str(props["input"]),
        "--model-dir",
        str(props["champion_dir"]),
        "--flavor",
        str(props["flavor"]),
        "--model",
        str(props["model"]),
        "--dataset",
        str(props["dataset"]),
        "--data-dir",
        str(props["data_dir"]),
        "--out",
        str(out),
    ]


def _score(id_: str, props: Mapping[str, Any], target: Path) -> None:
    log_path = Path(str(props["root"])) / "logs" / f"{id_}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = batch_command(props, target)
    log(f"batch {props['model']}: {' '.join(command[1:])}")
    try:
        result = subprocess.run(
            command,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=SCORE_TIMEOUT_SECONDS,
            check=False,
            env={**os.environ, "COLUMNS": "160"},
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise LocalProviderError(
            f"batch {props['model']}: `mnistctl batch` did not finish: {error}"
        ) from error
    log_path.write_text(result.stdout + result.stderr)
    if result.returncode != 0 or not _finished(target):
        raise LocalProviderError(
            f"batch scoring with the {props['model']} champion failed (exit code {result.returncode}):\n"
            f"{tail(result.stdout + result.stderr)}\nFull log: {log_path}. Fix the input "
            "(mnist-platform:batch) or the model, then run `pulumi up` again."
        )
    for line in result.stdout.splitlines():
        if line.strip():
            log(f"[batch {props['model']}] {line.rstrip()}")


def _outputs(folder: Path) -> dict[str, Any]:
    report = json.loads((folder / REPORT_FILE).read_text())
    return {
        "out_dir": str(folder),
        "predictions": str(folder / PREDICTIONS_FILE),
        "report": str(folder / REPORT_FILE),
        "confusion_png": str(folder / CONFUSION_PNG) if (folder / CONFUSION_PNG).is_file() else "",
        "confusion_csv": str(folder / CONFUSION_CSV) if (folder / CONFUSION_CSV).is_file() else "",
        "accuracy": report.get("accuracy"),
        "images": report.get("images"),
        "images_per_second": report.get("images_per_second"),
    }


class LocalBatchJob(pulumi.dynamic.Resource, module="local", name="BatchJob"):
    """One model's batch scoring run under the local stack's root."""

    out_dir: pulumi.Output[str]
    predictions: pulumi.Output[str]
    report: pulumi.Output[str]
    confusion_png: pulumi.Output[str]
    confusion_csv: pulumi.Output[str]
    accuracy: pulumi.Output[float | None]
    images: pulumi.Output[int]
    images_per_second: pulumi.Output[float]

    def __init__(
        self, name: str, args: LocalBatchJobArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "model": args.model,
            "flavor": args.flavor,
            "champion_dir": args.champion_dir,
            "champion_hash": args.champion_hash,
            "input": args.input,
            "input_hash": args.input_hash,
            "dataset": args.dataset,
            "data_dir": args.data_dir,
            "root": args.root,
            IDENTITY_SEED: identity_seed("local:BatchJob", name),
            **dict.fromkeys(
                (
                    "out_dir",
                    "predictions",
                    "report",
                    "confusion_png",
                    "confusion_csv",
                    "accuracy",
                    "images",
                    "images_per_second",
                )
            ),
        }
        super().__init__(LocalBatchJobProvider(), name, props, opts)

    def entry(self) -> pulumi.Output[dict[str, Any]]:
        """The `batch.<model>` output: the predictions, report and confusion matrix, and the accuracy."""
        return pulumi.Output.all(
            self.predictions, self.report, self.confusion_png, self.confusion_csv, self.accuracy, self.images
        ).apply(
            lambda v: {
                "predictions": v[0],
                "report": v[1],
                "confusion_png": v[2],
                "confusion_csv": v[3],
                "accuracy": v[4],
                "images": v[5],
            }
        )

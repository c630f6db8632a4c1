"""The local stack's champion gate: between a LocalTrainingJob and the LocalEndpoint serving its model.

The challenger is the job's output folder; its accuracy is the `accuracy` of the folder's metrics.json
(measured by the trainer on the dataset's held-out test set). A promoted challenger's whole folder
(artifact, metrics.json, hyperparameters.json) is copied to `<localRoot>/champions/<model>/<job id>/`,
which is what the endpoint serves: the champion outlives its training job's replacement.

The gate's id carries its identity (infra/dynamic.py: the resource, its model and localRoot), and every
copy it makes is listed in its record, `<localRoot>/run/<id>.json`, before it is made. A create starts
without a champion, so whatever copies its record lists were left by an earlier create that never reached
the state (an interrupted `pulumi up`) or by a gate that `pulumi refresh` dropped: it removes them first,
and the round leaves exactly one champion copy. A champion's copy removed behind the stack's back keeps the
gate in the state: the next `pulumi up` copies it again from its training job's folder (gate_provider.py).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult

from infra.dynamic import IDENTITY_SEED, identity, identity_seed, log
from infra.gate import PromotionRule
from infra.gate_provider import Candidate, ChampionGateProvider, gate_inputs, scored
from infra.hashing import tree_sha256
from infra.local.support import (
    LocalProviderError,
    forget_record,
    process_cmdline,
    read_record,
    record_path,
    remove_tree,
    write_record,
)
from training.hyperparameters import METRICS_FILE

TRIALS_FOLDER = "trials"  # training/tuning.py's: every trial of a tuned challenger (not imported: optuna)

CHAMPIONS_FOLDER = "champions"


@dataclass
class LocalGateArgs:
    """Inputs of a LocalGate."""

    model: pulumi.Input[str]
    """The framework whose models are gated (xgboost, tensorflow, pytorch)."""
    challenger_id: pulumi.Input[str]
    """The training job's id: a new id is a new challenger."""
    challenger_artifact: pulumi.Input[str]
    """The artifact the job wrote (inside its output folder, next to metrics.json)."""
    root: pulumi.Input[str]
    """The stack's localRoot; champions are copied to <root>/champions/<model>/."""
    rule: PromotionRule
    """minAccuracy, promotionTolerance and forcePromotion for this model."""


class LocalGateProvider(ChampionGateProvider):
    """Champion copies are folders under <localRoot>/champions/<model>/."""

    location_keys = ("root",)

    def create(self, props: dict[str, Any]) -> CreateResult:
        record = _record(props)
        for copy in (read_record(record) or {}).get("copies", []):
            log(f"gate {props['model']}: removing {copy}, copied by a create that never reached the state")
            remove_tree(Path(copy))
        forget_record(record)
        result = super().create(props)
        return CreateResult(id_=gate_id(props), outs=result.outs)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        super().delete(id_, props)
        forget_record(_record(props))

    def evaluate(self, props: Mapping[str, Any]) -> Candidate:
        artifact = Path(str(props["challenger_artifact"]))
        metrics_path = artifact.parent / METRICS_FILE
        source = str(props["challenger_id"])
        try:
            text = metrics_path.read_text()
            modified = metrics_path.stat().st_mtime
        except OSError as error:
            return Candidate(source, str(artifact), None, unreadable_because=f"{metrics_path}: {error}")
        trained = datetime.fromtimestamp(modified, UTC).isoformat(timespec="seconds")
        return scored(source, str(artifact), text, str(metrics_path), trained)

    def keep(self, props: Mapping[str, Any], candidate: Candidate) -> str:
        artifact = Path(candidate.artifact)
        folder = champion_folder(props, candidate.source)
        _list_copy(props, folder, keep=True)  # listed before it exists: an interrupted copy is found again
        remove_tree(folder)  # a copy left half-written by an interrupted update
        folder.parent.mkdir(parents=True, exist_ok=True)
        try:
            # A tuned challenger's folder also holds every trial (training/tuning.py): the champion is the
            # best one alone, the trials stay with their training job.
            shutil.copytree(artifact.parent, folder, ignore=_trials_at_top(artifact.parent))
        except OSError as error:
            remove_tree(folder)
            raise LocalProviderError(
                f"could not copy the {props['model']} challenger {artifact.parent} to {folder}: {error}. "
                "Free disk space or fix the folder's permissions, then run `pulumi up` again."
            ) from error
        return str(folder / artifact.name)

    def discard(self, props: Mapping[str, Any], artifact: str) -> None:
        remove_tree(Path(artifact).parent)
        _list_copy(props, Path(artifact).parent, keep=False)

    def kept(self, props: Mapping[str, Any], artifact: str) -> bool:
        return Path(artifact).exists() and (Path(artifact).parent / METRICS_FILE).is_file()

    def serving(self, props: Mapping[str, Any], artifact: str) -> bool:
        """Whether a model server on this machine runs on the copy (asked of the process table: an endpoint
        whose update did not take still runs on the retired copy, which must not be removed under it)."""
        folder = str(Path(artifact).parent)
        processes = Path("/proc")
        if not processes.is_dir():
            return False  # no process table to ask (not Linux): the copy is removed as before
        for entry in processes.iterdir():
            command = process_cmdline(int(entry.name)) if entry.name.isdigit() else None
            if command and "serve" in command and "--model" in command and folder in command:
                return True
        return False


def gate_id(props: Mapping[str, Any]) -> str:
    """The gate's id: its model and identity (what replaces a gate: its model, where its copies live)."""
    return f"{props['model']}-gate-{identity(props, ('model', *LocalGateProvider.location_keys))}"


def _record(props: Mapping[str, Any]) -> Path:
    return record_path(Path(str(props["root"])), gate_id(props))


def _list_copy(props: Mapping[str, Any], folder: Path, keep: bool) -> None:
    """Add the champion copy `folder` to the gate's record (keep) or take it off (once removed)."""
    record = _record(props)
    copies = [c for c in (read_record(record) or {}).get("copies", []) if c != str(folder)]
    if keep:
        copies.append(str(folder))
    write_record(record, {"copies": copies})


def champion_folder(props: Mapping[str, Any], source: str) -> Path:
    return Path(str(props["root"])) / CHAMPIONS_FOLDER / str(props["model"]) / source


class LocalGate(pulumi.dynamic.Resource, module="local", name="ChampionGate"):
    """Holds the champion of one model; the endpoint serves `champion_dir`."""

    champion: pulumi.Output[dict]
    challenger: pulumi.Output[dict]
    champion_artifact: pulumi.Output[str]
    retired: pulumi.Output[dict]

    def __init__(self, name: str, args: LocalGateArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            **gate_inputs(args.model, args.challenger_id, args.challenger_artifact, args.rule),
            "root": args.root,
            IDENTITY_SEED: identity_seed("local:ChampionGate", name),
        }
        super().__init__(LocalGateProvider(), name, props, opts)

    @property
    def champion_dir(self) -> pulumi.Output[str]:
        """The champion's folder, as `mnistctl serve --model` takes it."""
        return self.champion_artifact.apply(lambda artifact: str(Path(artifact).parent) if artifact else "")

    @property
    def champion_hash(self) -> pulumi.Output[str]:
        """A hash of the champion's folder: a new champion, a new endpoint."""
        return self.champion_artifact.apply(_folder_hash)


def _folder_hash(artifact: str | None) -> str:
    if not artifact:
        return ""
    folder = Path(artifact).parent
    # The copy is made by the gate on this machine; if it is not there (yet), its name identifies it.
    return tree_sha256(folder) if folder.is_dir() else folder.name


def _trials_at_top(top: Path) -> Callable[[str, list[str]], set[str]]:
    """copytree's `ignore`: the `trials` folder of a tuned output, only at its top."""
    return lambda folder, names: {TRIALS_FOLDER} & set(names) if Path(folder) == top else set()

"""The local stack's data: the chosen dataset, verified and copied under localRoot.

The training package's loader reads (and, for full MNIST, downloads and verifies) the dataset from
the user's data folder or cache; the provider copies the files the dataset needs into a folder of
its own, `<localRoot>/data/<id>/`, where the trainers read them, and records their sha256 and one content
hash, so that other data means new training jobs. Deleting it, last of all, removes localRoot.

The id is the dataset's name and the resource's identity (infra/dynamic.py); once every file is copied,
the outputs are written to `<localRoot>/run/<id>.json`, so a create interrupted before its result
reached the state is adopted by the next one when its files are intact (prepared anew otherwise). Files
removed or edited behind the stack's back are prepared again in place (an update: same id, same folder).
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, log, state_of
from infra.hashing import file_sha256
from infra.local.support import (
    ROOT_MARKER,
    LocalProviderError,
    claim_root,
    forget_record,
    read_record,
    record_path,
    remove_tree,
    write_record,
)

# What a new value of these inputs means: another dataset or another place, so a new resource.
_REPLACE_KEYS = ("dataset", "root")
# A new source folder holding the same files changes nothing downstream: updated in place.
_UPDATE_KEYS = ("source_dir", "stack")


@dataclass
class LocalDatasetArgs:
    """Inputs of a LocalDataset."""

    dataset: pulumi.Input[str]
    """Dataset name (training.datasets.DatasetName value), e.g. mnist or mnist-t10k."""
    root: pulumi.Input[str]
    """The stack's localRoot; the dataset goes to <root>/data/<id>/."""
    stack: pulumi.Input[str]
    """Stack name, written into the root's marker file."""
    source_dir: pulumi.Input[str] | None = None
    """Where the loader reads (or caches downloads of) the dataset; the user cache dir when None."""


class LocalDatasetProvider(ResourceProvider):
    """Prepares a dataset under localRoot; the files' hashes are its identity."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        root = Path(props["root"])
        claim_root(root, props["stack"])
        # A folder per identity: a replacement (new inputs) is created beside the old one, deleted after.
        id_ = f"{props['dataset']}-{identity(props, _REPLACE_KEYS)}"
        target = root / "data" / id_
        record = record_path(root, id_)
        left = read_record(record)
        if left is not None and _files_intact(left) and Path(str(left.get("path"))) == target:
            log(f"dataset {props['dataset']}: adopting the files an interrupted create prepared in {target}")
            outs = {key: left[key] for key in _OUTPUT_KEYS}
        else:
            if target.exists():
                log(f"dataset {props['dataset']}: removing what an interrupted create left in {target}")
            remove_tree(target)
            outs = _prepare_recorded(props, target, record)
        return CreateResult(id_=id_, outs={**state_of(props), **outs})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        updates = changed_keys(olds, news, _UPDATE_KEYS)
        if not replaces and not _files_intact(olds):
            # Removed or edited behind the stack's back: prepared again in place (a replacement would
            # share its identity and folder with the resource it replaces, whose delete would remove it).
            updates = [*updates, "files"]
        return DiffResult(changes=bool(replaces or updates), replaces=replaces, delete_before_replace=False)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        target = Path(olds["path"])
        outs = _prepare_recorded(news, target, record_path(Path(news["root"]), id_))
        return UpdateResult(outs={**state_of(news), **outs})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        if not _files_intact(props):
            return ReadResult(None, {})  # gone: refresh drops it and the next `pulumi up` prepares it again
        return ReadResult(id_, state_of(props))

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        root = Path(props["root"])
        forget_record(record_path(root, _id))
        if props.get("path"):
            remove_tree(Path(props["path"]))
        leftovers = _stack_contents(root)
        if leftovers:
            # Another dataset (a replacement being created) or models still live here: keep the root.
            log(f"kept {root}: it still holds {', '.join(leftovers)}")
            return
        if (root / ROOT_MARKER).exists():
            remove_tree(root)
            log(f"removed {root}")
        elif root.exists():
            log(f"left {root} in place: without a {ROOT_MARKER} marker it may hold files that are not ours")


_OUTPUT_KEYS = ("path", "files", "content_hash", "n_train", "n_test")


def _prepare_recorded(props: dict[str, Any], target: Path, record: Path) -> dict[str, Any]:
    """Prepare the files into target and record the outputs once all are there; a failure leaves nothing."""
    forget_record(record)
    try:
        outs = _prepare(props, target)
    except Exception:
        remove_tree(target)  # a failed create leaves nothing behind
        raise
    write_record(record, outs)
    return outs


def _prepare(props: dict[str, Any], target: Path) -> dict[str, Any]:
    """Load (download and verify where needed) the dataset, copy its files into target, hash them."""
    from training.datasets import DatasetError, DatasetName, dataset_dir, load_dataset

    name = DatasetName(props["dataset"])
    source = Path(props["source_dir"]).expanduser() if props.get("source_dir") else None
    log(f"preparing dataset {name.value} from {source or 'the user cache dir'}")
    try:
        split = load_dataset(name, source)
    except DatasetError as error:
        raise LocalProviderError(
            f"dataset {name.value} could not be loaded: {error}\n"
            "Set mnist-platform:dataDir to a folder holding its files (for offline use: dataset mnist-t10k "
            "and a folder with the MNIST t10k IDX files)."
        ) from error
    origin = dataset_dir(name, source)
    target.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    for file_name in _files_of(name):
        destination = target / file_name
        if origin.resolve() != target.resolve():
            shutil.copyfile(origin / file_name, destination)
        files[file_name] = file_sha256(destination)
    content = hashlib.sha256(name.value.encode())
    for file_name, digest in sorted(files.items()):
        content.update(f"\0{file_name}\0{digest}".encode())
    log(f"dataset {name.value}: {split.n_train} training and {split.n_test} test images in {target}")
    return {
        "path": str(target),
        "files": files,
        "content_hash": content.hexdigest(),
        "n_train": split.n_train,
        "n_test": split.n_test,
    }


def _files_of(name: Any) -> list[str]:
    from training.datasets import SOURCES, DatasetName

    source = SOURCES[name]
    if name is DatasetName.MNIST_T10K:  # the offline protocol reads the two official test files only
        return [source.test_images.name, source.test_labels.name]
    return [remote.name for remote in source.files]


def _files_intact(state: dict[str, Any]) -> bool:
    path = Path(state.get("path") or "")
    recorded: dict[str, str] = state.get("files") or {}
    if not recorded:
        return False
    try:
        return all(file_sha256(path / name) == digest for name, digest in recorded.items())
    except OSError:
        return False


def _stack_contents(root: Path) -> list[str]:
    """What of the stack is still under root: datasets and trained models (logs do not count)."""
    found = []
    for part in ("data", "models"):
        folder = root / part
        if folder.is_dir():
            found += [f"{part}/{child.name}" for child in sorted(folder.iterdir())]
    return found


class LocalDataset(pulumi.dynamic.Resource, module="local", name="Dataset"):
    """A dataset prepared under the local stack's root."""

    path: pulumi.Output[str]
    files: pulumi.Output[dict]
    content_hash: pulumi.Output[str]
    n_train: pulumi.Output[int]
    n_test: pulumi.Output[int]

    def __init__(self, name: str, args: LocalDatasetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "dataset": args.dataset,
            "root": args.root,
            "stack": args.stack,
            "source_dir": args.source_dir,
            IDENTITY_SEED: identity_seed("local:Dataset", name),
            "path": None,
            "files": None,
            "content_hash": None,
            "n_train": None,
            "n_test": None,
        }
        super().__init__(LocalDatasetProvider(), name, props, opts)

"""The dataset as SageMaker's built-in XGBoost reads it, staged on the deploying machine before upload.

The CSV files are a pure function of the dataset's published files, the converter and the shard
count, so they are cached under a key made of exactly those: a second `pulumi preview` or `up`
reuses the cached bytes (and their hashes) instead of converting again, and identical bytes mean
the stack's S3 objects and training job stay unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.hashing import content_hash
from training import formats
from training.datasets import SOURCES, DatasetName, default_data_dir, load_dataset

# Bumped by hand when the staging layout itself changes (the converter's own source is hashed below).
_STAGING_VERSION = "1"
_MANIFEST = "manifest.json"
CSV_CONTENT_TYPE = "text/csv"
# Every dataset version is uploaded under `datasets/<content hash>/`, and the job's channels point there.
DATASETS_PREFIX = "datasets"
DATASET_DIGEST_LENGTH = 16


@dataclass(frozen=True)
class StagedFile:
    """One file of a channel, ready to upload as `key` into the stack's bucket."""

    channel: str
    """`train` or `validation`: the training job channel (and S3 prefix) the file belongs to."""
    key: str
    """Object key in the bucket, `<channel>/<file name>`."""
    path: Path
    """The local file (inside the staging cache)."""
    sha256: str
    """Hex digest of the file's bytes: the upload's change trigger and part of the job name."""
    size: int
    """Bytes."""
    rows: int
    """Lines, one labelled image each."""


def dataset_prefix(files: Sequence[StagedFile]) -> str:
    """`datasets/<hash>`: the S3 prefix of exactly these files, the hash covering every file's key (so
    the shard layout) and content. A training job reads only its own dataset version: objects that
    another version left behind (Pulumi deletes them only at the end of the update, after the new job
    has trained) are under another prefix. The same files give the same prefix, so nothing is uploaded
    again and the job keeps its name."""
    material = sorted((f.key, f.sha256) for f in files)
    return f"{DATASETS_PREFIX}/{content_hash(material, DATASET_DIGEST_LENGTH)}"


def staging_root(dataset: DatasetName | str) -> Path:
    """Where staged channels are cached: the user cache dir, never the dataset's own folder, which
    may be read-only or shared (the key already ties the cache to the verified source files)."""
    return default_data_dir() / "staging" / DatasetName(dataset).value / "sagemaker-csv"


def staging_key(dataset: DatasetName | str, shards: int) -> str:
    """What the staged bytes depend on: the dataset's published checksums, the converter and the shards."""
    source = SOURCES[DatasetName(dataset)]
    converter = Path(formats.__file__).read_bytes()
    material = {
        "version": _STAGING_VERSION,
        "dataset": DatasetName(dataset).value,
        "files": [remote.md5 for remote in source.files],
        "converter": hashlib.sha256(converter).hexdigest(),
        "shards": shards,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def stage_sagemaker_csv(
    dataset: DatasetName | str, data_dir: Path | None, shards: int, cache_root: Path | None = None
) -> list[StagedFile]:
    """The `train` (`shards` files) and `validation` channels as label-first CSV, cached when possible."""
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    name = DatasetName(dataset)
    root = cache_root if cache_root is not None else staging_root(name)
    key = staging_key(name, shards)
    folder = root / f"{name.value}-{shards}x-{key[:16]}"
    cached = _read_manifest(folder, key)
    if cached is not None:
        return cached

    split = load_dataset(name, data_dir)  # first: a dataset that cannot be loaded leaves no cache folder
    root.mkdir(parents=True, exist_ok=True)
    # Convert into a scratch folder and move it into place whole: an interrupted run leaves no half cache.
    scratch = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
    try:
        written = formats.write_sagemaker_csv(split, scratch, shards=shards)
        entries = []
        for channel in (formats.TRAIN_CHANNEL, formats.VALIDATION_CHANNEL):
            for path in sorted(written[channel]):
                digest, rows = _digest_and_rows(path)
                entries.append(
                    {
                        "channel": channel,
                        "file": f"{channel}/{path.name}",
                        "sha256": digest,
                        "size": path.stat().st_size,
                        "rows": rows,
                    }
                )
        (scratch / _MANIFEST).write_text(json.dumps({"key": key, "files": entries}, indent=2) + "\n")
        if folder.exists():  # a stale or partial cache under the same key
            shutil.rmtree(folder)
        os.replace(scratch, folder)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    staged = _read_manifest(folder, key)
    if staged is None:
        raise RuntimeError(f"the staged dataset in {folder} did not verify right after it was written")
    return staged


def _read_manifest(folder: Path, key: str) -> list[StagedFile] | None:
    """The cached files when the manifest matches `key` and every file has its recorded size."""
    manifest_path = folder / _MANIFEST
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if manifest.get("key") != key:
        return None
    fields = {"channel", "file", "sha256", "size", "rows"}
    if not all(fields <= set(entry) for entry in manifest.get("files", [])):
        return None
    staged = []
    for entry in manifest.get("files", []):
        path = folder / entry["file"]
        # Sizes are checked on every run (cheap); a full re-hash would cost seconds for full MNIST.
        if not path.is_file() or path.stat().st_size != entry["size"]:
            return None
        staged.append(
            StagedFile(
                channel=entry["channel"],
                key=entry["file"],
                path=path,
                sha256=entry["sha256"],
                size=entry["size"],
                rows=entry["rows"],
            )
        )
    return staged or None


def _digest_and_rows(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    rows = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
            rows += chunk.count(b"\n")
    return digest.hexdigest(), rows

"""The dataset as the TF trainer reads it on Vertex AI (`train.npz`, `test.npz`), staged before upload.

`training.formats.write_npz` writes the same bytes for the same data, so the staged files are cached
under a key of the dataset's published checksums and the converter's source: a second `pulumi up`
reuses them, their hashes are unchanged, and so are the objects and the training job.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from infra.hashing import content_hash, file_sha256
from training import formats
from training.datasets import SOURCES, DatasetName, default_data_dir, load_dataset

NPZ_CONTENT_TYPE = "application/octet-stream"
_STAGING_VERSION = "1"


@dataclass(frozen=True)
class StagedNpz:
    """One file the trainer reads, ready to upload."""

    name: str
    """`train.npz` or `test.npz`."""
    path: Path
    sha256: str
    size: int


def staging_key(dataset: DatasetName | str) -> str:
    source = SOURCES[DatasetName(dataset)]
    converter = hashlib.sha256(Path(formats.__file__).read_bytes()).hexdigest()
    material = {
        "version": _STAGING_VERSION,
        "dataset": DatasetName(dataset).value,
        "files": [remote.md5 for remote in source.files],
        "converter": converter,
    }
    return content_hash(material, 16)


def stage_npz(
    dataset: DatasetName | str, data_dir: Path | None, cache_root: Path | None = None
) -> list[StagedNpz]:
    """`train.npz` and `test.npz` of `dataset` (loaded and verified by the training package), cached."""
    name = DatasetName(dataset)
    root = (
        cache_root if cache_root is not None else default_data_dir() / "staging" / name.value / "vertex-npz"
    )
    folder = root / staging_key(name)
    names = (formats.NPZ_TRAIN, formats.NPZ_TEST)
    if not all((folder / n).is_file() for n in names):
        split = load_dataset(name, data_dir)  # first: a dataset that cannot be loaded leaves no cache
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=root, prefix=".staging-"))
        try:
            formats.write_npz(split, scratch)
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(scratch, folder)  # whole or not at all: an interrupted run leaves no half cache
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return [StagedNpz(n, folder / n, file_sha256(folder / n), (folder / n).stat().st_size) for n in names]


def data_hash(staged: list[StagedNpz]) -> str:
    """One hash of every staged file: the data's part of the object prefix and of the job's identity."""
    return content_hash({f.name: f.sha256 for f in staged})

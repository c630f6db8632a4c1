"""Converters from a Split to what each platform's trainer reads.

Both writers produce the same bytes for the same data on every run: the cloud stacks decide from
content hashes whether an object must be uploaded again.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from training.datasets import Split

TRAIN_CHANNEL = "train"
VALIDATION_CHANNEL = "validation"
NPZ_TRAIN = "train.npz"
NPZ_TEST = "test.npz"
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry


def _pixel_strings() -> list[str]:
    # The shortest decimal that parses back to exactly float32(k / 255): a client that sends k / 255 and
    # the CSV that trained the model then give XGBoost identical float32 values, so tree splits agree.
    return [np.format_float_positional(np.float32(k / 255.0), unique=True, trim="-") for k in range(256)]


_PIXEL_TEXT = np.array(_pixel_strings(), dtype=object)


def csv_lines(images: np.ndarray, labels: np.ndarray) -> str:
    """Label-first CSV rows, no header: ``label,p0,...,p783`` with pixels scaled to [0, 1]."""
    flat = images.reshape(len(images), -1)
    rows = [f"{int(label)},{','.join(_PIXEL_TEXT[row])}\n" for label, row in zip(labels, flat, strict=True)]
    return "".join(rows)


def write_sagemaker_csv(split: Split, out_dir: Path, shards: int = 1) -> dict[str, list[Path]]:
    """Write the ``train`` and ``validation`` channels that SageMaker's built-in XGBoost reads.

    ``shards > 1`` cuts the training rows into that many contiguous files, so that a multi-instance job
    with ``ShardedByS3Key`` gives each instance its own part. Returns the files of each channel.
    """
    if shards < 1:
        raise ValueError(f"shards must be at least 1, got {shards}")
    out_dir = Path(out_dir)
    written: dict[str, list[Path]] = {}
    parts = [
        (TRAIN_CHANNEL, split.x_train, split.y_train, shards),
        (VALIDATION_CHANNEL, split.x_test, split.y_test, 1),
    ]
    for channel, images, labels, n_files in parts:
        folder = out_dir / channel
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f"{channel}*.csv"):  # an earlier run with another shard count
            stale.unlink()
        paths = []
        bounds = np.linspace(0, len(labels), n_files + 1).astype(int)
        for i in range(n_files):
            name = f"{channel}.csv" if n_files == 1 else f"{channel}-{i:03d}-of-{n_files:03d}.csv"
            path = folder / name
            lo, hi = bounds[i], bounds[i + 1]
            path.write_bytes(csv_lines(images[lo:hi], labels[lo:hi]).encode("ascii"))
            paths.append(path)
        written[channel] = paths
    return written


def read_csv_channel(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features float32 [N, 784] and labels float32 [N] from all ``*.csv`` of a channel folder, by name."""
    files = sorted(Path(folder).glob("*.csv"))
    if not files:
        raise FileNotFoundError(f"no .csv files in channel folder {folder}")
    blocks = [np.loadtxt(f, delimiter=",", dtype=np.float32, ndmin=2) for f in files]
    table = np.concatenate(blocks)
    return table[:, 1:], table[:, 0]


def write_npz(split: Split, out_dir: Path) -> dict[str, Path]:
    """Write ``train.npz`` and ``test.npz`` for the TF trainer (``x`` uint8 [N,28,28], ``y`` uint8 [N])."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"train": out_dir / NPZ_TRAIN, "test": out_dir / NPZ_TEST}
    _write_npz_file(paths["train"], x=split.x_train, y=split.y_train)
    _write_npz_file(paths["test"], x=split.x_test, y=split.y_test)
    return paths


def _write_npz_file(path: Path, **arrays: np.ndarray) -> None:
    # np.savez stamps each member with the current time; a fixed stamp keeps the bytes reproducible.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_FIXED_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def read_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` from an npz written by ``write_npz``; ``path`` may be local or ``gs://``."""
    raw = _read_bytes(str(path))
    with np.load(io.BytesIO(raw), allow_pickle=False) as data:
        return data["x"], data["y"]


def read_npz_split(data: str | Path) -> Split:
    """The Split stored by ``write_npz`` in folder ``data`` (local or ``gs://``)."""
    base = str(data).rstrip("/")
    x_train, y_train = read_npz(f"{base}/{NPZ_TRAIN}")
    x_test, y_test = read_npz(f"{base}/{NPZ_TEST}")
    return Split(x_train, y_train, x_test, y_test)


def _read_bytes(path: str) -> bytes:
    if path.startswith("gs://"):
        # tf.io.gfile speaks gs:// inside Vertex AI's TF containers without another dependency.
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    return Path(path).read_bytes()

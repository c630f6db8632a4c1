"""The datasets the platform trains on: download, verify, cache and parse the IDX files.

Every file is checked against its published size and md5 before it is used. A download goes to a
temporary file beside its destination and is moved into place only once verified, so the cache never
holds a partial file; a cached file that fails verification is reported, never silently replaced.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np
import platformdirs
import requests

log = logging.getLogger(__name__)

APP_NAME = "mnist-platform"
DOWNLOAD_TIMEOUT_SECONDS = 60.0
# The offline protocol: train on the first 8,000 images of the official MNIST test set, evaluate on the rest.
T10K_TRAIN_SIZE = 8_000
IMAGE_SHAPE = (28, 28)
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


# (str, Enum) rather than StrEnum: the trainers also run in Vertex AI's Python 3.10 containers.
class DatasetName(str, Enum):  # noqa: UP042
    MNIST = "mnist"
    MNIST_T10K = "mnist-t10k"
    KMNIST = "kmnist"
    FASHION_MNIST = "fashion-mnist"

    def __str__(self) -> str:
        return self.value


class DatasetError(Exception):
    """A dataset cannot be used; the message says which file, where, and what to do."""


class ChecksumError(DatasetError):
    """A file's size or md5 differs from the published value (corrupt, truncated or the wrong file)."""


class DatasetNotFoundError(DatasetError):
    """A file the dataset needs is not in the data folder and this dataset is never downloaded."""


class DownloadError(DatasetError):
    """No mirror delivered a file that passed verification."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str
    size: int | None = None  # bytes; None where the publisher gives no size


@dataclass(frozen=True)
class DatasetSource:
    folder: str  # sub-folder of a data root that holds this dataset's files
    mirrors: tuple[str, ...]  # base URLs, tried in order
    train_images: RemoteFile
    train_labels: RemoteFile
    test_images: RemoteFile
    test_labels: RemoteFile

    @property
    def files(self) -> tuple[RemoteFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


# Plain-http mirrors are safe to use here: nothing is kept unless its md5 and size match.
# md5 values as published with each dataset and used by torchvision's MNIST, FashionMNIST and KMNIST.
# (The train-images md5 printed in shared/data/README.md, f68b3c2dcbeed95a..., is a typo for this one.)
MNIST_T10K_IMAGES = RemoteFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1_648_877)
MNIST_T10K_LABELS = RemoteFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4_542)

SOURCES: dict[DatasetName, DatasetSource] = {
    DatasetName.MNIST: DatasetSource(
        folder="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",  # the original; often refuses robots
        ),
        train_images=RemoteFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9_912_422),
        train_labels=RemoteFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28_881),
        test_images=MNIST_T10K_IMAGES,
        test_labels=MNIST_T10K_LABELS,
    ),
    DatasetName.FASHION_MNIST: DatasetSource(
        folder="fashion-mnist",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # S3 website: http only
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        train_images=RemoteFile("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26_421_880),
        train_labels=RemoteFile("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29_515),
        test_images=RemoteFile("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4_422_102),
        test_labels=RemoteFile("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5_148),
    ),
    DatasetName.KMNIST: DatasetSource(
        folder="kmnist",
        mirrors=(
            "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        ),
        train_images=RemoteFile("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7"),
        train_labels=RemoteFile("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344"),
        test_images=RemoteFile("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7"),
        test_labels=RemoteFile("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134"),
    ),
}
# mnist-t10k reads the two official MNIST test files (same folder as the full set) and never downloads.
SOURCES[DatasetName.MNIST_T10K] = SOURCES[DatasetName.MNIST]


@dataclass(frozen=True, eq=False)
class Split:
    """Images uint8 [N, 28, 28] and labels uint8 [N] for training and for evaluation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self) -> None:
        for images, labels, part in (
            (self.x_train, self.y_train, "train"),
            (self.x_test, self.y_test, "test"),
        ):
            if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != IMAGE_SHAPE:
                raise ValueError(
                    f"{part} images must be uint8 [N, 28, 28], got {images.dtype} {images.shape}"
                )
            if labels.dtype != np.uint8 or labels.shape != (images.shape[0],):
                raise ValueError(
                    f"{part} labels must be uint8 [{images.shape[0]}], got {labels.dtype} {labels.shape}"
                )

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.x_test.shape[0])

    def head(self, n_train: int, n_test: int) -> Split:
        """The first images of each part: what a dry run trains and evaluates on."""
        return Split(
            self.x_train[:n_train], self.y_train[:n_train], self.x_test[:n_test], self.y_test[:n_test]
        )


def default_data_dir() -> Path:
    """The user cache folder where downloaded datasets are kept (one sub-folder per dataset)."""
    return Path(platformdirs.user_cache_dir(APP_NAME))


def dataset_dir(name: DatasetName | str, data_dir: Path | None) -> Path:
    """The folder that holds (or will hold) the dataset's files.

    ``data_dir`` may be the folder holding the IDX files themselves (``--data-dir shared/data/mnist``) or a
    root with one sub-folder per dataset (the cache layout, ``--data-dir shared/data``): the files are
    looked for directly in ``data_dir`` first, then in its sub-folder for the dataset.
    """
    source = SOURCES[DatasetName(name)]
    if data_dir is None:
        return default_data_dir() / source.folder
    data_dir = Path(data_dir)
    if any((data_dir / remote.name).exists() for remote in source.files):
        return data_dir
    return data_dir / source.folder


def load_dataset(name: DatasetName | str, data_dir: Path | None = None) -> Split:
    """Load a dataset as a Split, downloading and verifying its files first where that applies.

    Raises a ``DatasetError`` subclass with a message fit to show a user as it is.
    """
    try:
        dataset = DatasetName(name)
    except ValueError:
        allowed = ", ".join(d.value for d in DatasetName)
        raise ValueError(f"unknown dataset {name!r}: choose one of {allowed}") from None
    folder = dataset_dir(dataset, data_dir)
    source = SOURCES[dataset]
    if dataset is DatasetName.MNIST_T10K:
        images = read_idx_images(_require_local(folder, source.test_images))
        labels = read_idx_labels(_require_local(folder, source.test_labels))
        _check_counts(images, labels, folder / source.test_images.name)
        n = T10K_TRAIN_SIZE
        return Split(images[:n], labels[:n], images[n:], labels[n:])
    paths = [ensure_file(folder, remote, source.mirrors) for remote in source.files]
    x_train, y_train = read_idx_images(paths[0]), read_idx_labels(paths[1])
    x_test, y_test = read_idx_images(paths[2]), read_idx_labels(paths[3])
    _check_counts(x_train, y_train, paths[0])
    _check_counts(x_test, y_test, paths[2])
    return Split(x_train, y_train, x_test, y_test)


def _require_local(folder: Path, remote: RemoteFile) -> Path:
    path = folder / remote.name
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{remote.name} not found in {folder}. mnist-t10k reads the official MNIST test files from "
            f"the data folder: point --data-dir at a folder that holds {MNIST_T10K_IMAGES.name} and "
            f"{MNIST_T10K_LABELS.name}, or load the full 'mnist' dataset once to download them into it."
        )
    verify_file(path, remote)
    return path


def ensure_file(folder: Path, remote: RemoteFile, mirrors: Sequence[str]) -> Path:
    """The verified path of ``remote`` in ``folder``, downloading it from the first mirror that works."""
    path = folder / remote.name
    if path.exists():
        verify_file(path, remote)
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DownloadError(f"cannot create the data folder {folder} for {remote.name}: {error}") from error
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror + remote.name
        # The temporary file sits beside the destination so the final rename is atomic (same filesystem).
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{remote.name}.", suffix=".part")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            log.info("downloading %s", url)
            fetch_url(url, tmp)
            verify_file(tmp, remote, shown_as=url)
            os.replace(tmp, path)
            return path
        except (requests.RequestException, OSError, ChecksumError) as error:
            failures.append(f"  {url}: {error}")
        finally:
            tmp.unlink(missing_ok=True)
    tried = "\n".join(failures)
    raise DownloadError(
        f"could not download {remote.name} into {folder}; every mirror failed:\n{tried}\n"
        f"Check the network connection, or copy a good {remote.name} (md5 {remote.md5}) into {folder}."
    )


def fetch_url(url: str, dest: Path, timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> None:
    """Stream ``url`` into ``dest``; HTTP errors raise ``requests.RequestException``."""
    with requests.get(url, stream=True, timeout=timeout) as response:
        response.raise_for_status()
        with dest.open("wb") as out:
            for chunk in response.iter_content(chunk_size=1 << 20):
                out.write(chunk)


def file_md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_file(path: Path, remote: RemoteFile, shown_as: str | None = None) -> None:
    """Raise ``ChecksumError`` unless ``path`` has the published size and md5 of ``remote``."""
    size = path.stat().st_size
    md5 = file_md5(path)
    if md5 == remote.md5 and (remote.size is None or size == remote.size):
        return
    expected = f"md5 {remote.md5}" + (f", {remote.size:,} bytes" if remote.size is not None else "")
    problem = "truncated" if remote.size is not None and size < remote.size else "corrupt"
    if shown_as is not None:  # a fresh download: nothing was written to the cache
        raise ChecksumError(
            f"{shown_as} delivered a {problem} {remote.name}: "
            f"expected {expected}, got md5 {md5}, {size:,} bytes"
        )
    raise ChecksumError(
        f"{path} is {problem} or not the expected file: expected {expected}, got md5 {md5}, {size:,} bytes. "
        f"Delete it so that it is downloaded again, or replace it with a good copy."
    )


def read_idx_images(path: Path) -> np.ndarray:
    """Images uint8 [N, rows, cols] from a gzipped IDX3 file."""
    data = _read_gz(path)
    header = np.frombuffer(data, dtype=">u4", count=4) if len(data) >= 16 else None
    if header is None or int(header[0]) != _IDX_IMAGES_MAGIC:
        raise DatasetError(f"{path} is not an IDX image file (bad header)")
    n, rows, cols = (int(v) for v in header[1:])
    if len(data) - 16 != n * rows * cols:
        raise DatasetError(
            f"{path} holds {len(data) - 16} pixel bytes, its header announces {n}x{rows}x{cols}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols).copy()


def read_idx_labels(path: Path) -> np.ndarray:
    """Labels uint8 [N] from a gzipped IDX1 file."""
    data = _read_gz(path)
    header = np.frombuffer(data, dtype=">u4", count=2) if len(data) >= 8 else None
    if header is None or int(header[0]) != _IDX_LABELS_MAGIC:
        raise DatasetError(f"{path} is not an IDX label file (bad header)")
    n = int(header[1])
    if len(data) - 8 != n:
        raise DatasetError(f"{path} holds {len(data) - 8} labels, its header announces {n}")
    return np.frombuffer(data, dtype=np.uint8, offset=8).copy()


def _read_gz(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError) as error:
        raise DatasetError(
            f"{path} cannot be decompressed ({error}); delete it and load the dataset again"
        ) from error


def _check_counts(images: np.ndarray, labels: np.ndarray, path: Path) -> None:
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{path}: {images.shape[0]} images but {labels.shape[0]} labels")

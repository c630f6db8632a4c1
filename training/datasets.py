"""The datasets the platform trains on: download, verify, cache and parse the IDX files.

A file is judged by its content: the sha256 of its decompressed IDX bytes, whatever the gzip wrapping
(Debian's ``dataset-fashion-mnist`` re-compressed the files, so their .gz md5 differs from the
publisher's). A fresh download must also match the published md5 and size of the .gz. A download goes
to a temporary file beside its destination and is moved into place only once verified, so the cache
never holds a partial file; a file that fails verification is reported, never silently replaced.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import tempfile
import zlib
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
    """A file's content or checksum differs from the recorded one (corrupt, truncated or the wrong file)."""


class DatasetNotFoundError(DatasetError):
    """A file the dataset needs is not in the data folder and this dataset is never downloaded."""


class DownloadError(DatasetError):
    """No mirror delivered a file that passed verification."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    md5: str  # of the .gz as published: what a fresh download must match
    size: int | None = None  # bytes of the .gz; None where the publisher gives no size
    content_sha256: str | None = None  # of the decompressed IDX bytes; None where no trusted value is known


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
# content_sha256 (decompressed IDX bytes), where each value comes from (docs/training.md has the table):
# - MNIST t10k and all of Fashion-MNIST: computed here from files whose content is the published one (the
#   repository's MNIST test files match the published md5; Debian's Fashion-MNIST files decompress to the
#   publisher's content), and equal to the values several independent public projects record.
# - MNIST train: the values those projects record (the files are not on our machines).
# - KMNIST t10k: computed from the CODH NumPy release of the test set (same arrays, IDX header added);
#   KMNIST train: no published value found, so only its .gz md5 vouches for it.
MNIST_T10K_IMAGES = RemoteFile(
    "t10k-images-idx3-ubyte.gz",
    "9fb629c4189551a2d022fa330f9573f3",
    1_648_877,
    "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
)
MNIST_T10K_LABELS = RemoteFile(
    "t10k-labels-idx1-ubyte.gz",
    "ec29112dd5afa0611ce80d1b7f02629c",
    4_542,
    "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
)

SOURCES: dict[DatasetName, DatasetSource] = {
    DatasetName.MNIST: DatasetSource(
        folder="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",  # the original; often refuses robots
        ),
        train_images=RemoteFile(
            "train-images-idx3-ubyte.gz",
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            9_912_422,
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        ),
        train_labels=RemoteFile(
            "train-labels-idx1-ubyte.gz",
            "d53e105ee54ea40749a09fcbcd1e9432",
            28_881,
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        ),
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
        train_images=RemoteFile(
            "train-images-idx3-ubyte.gz",
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            26_421_880,
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        ),
        train_labels=RemoteFile(
            "train-labels-idx1-ubyte.gz",
            "25c81989df183df01b3e8a0aad5dffbe",
            29_515,
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        ),
        test_images=RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            "bef4ecab320f06d8554ea6380940ec79",
            4_422_102,
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        ),
        test_labels=RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            "bb300cfdad3c16e7a12a480ee83cd310",
            5_148,
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
    ),
    DatasetName.KMNIST: DatasetSource(
        folder="kmnist",
        mirrors=(
            "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
            "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        ),
        train_images=RemoteFile("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7"),
        train_labels=RemoteFile("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344"),
        test_images=RemoteFile(
            "t10k-images-idx3-ubyte.gz",
            "5c965bf0a639b31b8f53240b1b52f4d7",
            content_sha256="76fbd229ce87db80dd281af5e6670de4ad0e42fb30a7bd643972994c47c1f42e",
        ),
        test_labels=RemoteFile(
            "t10k-labels-idx1-ubyte.gz",
            "7320c461ea6c1c855c0b718fb2a4b134",
            content_sha256="a11dc742be8e781a40a92f53d6a4957e7b7d36df2faa097659131ebfd8fd60c6",
        ),
    ),
}
# mnist-t10k reads the two official MNIST test files (same folder as the full set) and never downloads.
SOURCES[DatasetName.MNIST_T10K] = SOURCES[DatasetName.MNIST]

# Where a system package installs a complete dataset: used when no data folder is given, before any
# download. Debian's `apt-get install dataset-fashion-mnist` puts the 60,000 + 10,000 images here.
SYSTEM_DATASET_DIRS: dict[DatasetName, Path] = {
    DatasetName.FASHION_MNIST: Path("/usr/share/datasets/fashion-mnist"),
}
SYSTEM_PACKAGES: dict[DatasetName, str] = {DatasetName.FASHION_MNIST: "dataset-fashion-mnist"}


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


def system_dataset_dir(name: DatasetName | str) -> Path | None:
    """The folder where a system package installed all of the dataset's files, if it did."""
    dataset = DatasetName(name)
    folder = SYSTEM_DATASET_DIRS.get(dataset)
    if folder is None or not all((folder / remote.name).is_file() for remote in SOURCES[dataset].files):
        return None
    return folder


def dataset_dir(name: DatasetName | str, data_dir: Path | None) -> Path:
    """The folder that holds (or will hold) the dataset's files.

    ``data_dir`` may be the folder holding the IDX files themselves (``--data-dir tests/data/mnist``) or a
    root with one sub-folder per dataset (the cache layout, ``--data-dir tests/data``): the files are
    looked for directly in ``data_dir`` first, then in its sub-folder for the dataset. Without
    ``data_dir``: the system package's folder when it is installed (``system_dataset_dir``), else the
    user cache.
    """
    source = SOURCES[DatasetName(name)]
    if data_dir is None:
        return system_dataset_dir(name) or default_data_dir() / source.folder
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
        images_path = _require_local(folder, source.test_images)
        labels_path = _require_local(folder, source.test_labels)
        images = parse_idx_images(verify_file(images_path, source.test_images), images_path)
        labels = parse_idx_labels(verify_file(labels_path, source.test_labels), labels_path)
        _check_counts(images, labels, images_path)
        n = T10K_TRAIN_SIZE
        return Split(images[:n], labels[:n], images[n:], labels[n:])
    loaded = [_ensure_content(folder, remote, source.mirrors) for remote in source.files]
    (train_images, x_train_bytes), (train_labels, y_train_bytes) = loaded[0], loaded[1]
    (test_images, x_test_bytes), (test_labels, y_test_bytes) = loaded[2], loaded[3]
    x_train = parse_idx_images(x_train_bytes, train_images)
    y_train = parse_idx_labels(y_train_bytes, train_labels)
    x_test = parse_idx_images(x_test_bytes, test_images)
    y_test = parse_idx_labels(y_test_bytes, test_labels)
    _check_counts(x_train, y_train, train_images)
    _check_counts(x_test, y_test, test_images)
    return Split(x_train, y_train, x_test, y_test)


def _require_local(folder: Path, remote: RemoteFile) -> Path:
    path = folder / remote.name
    if not path.is_file():
        raise DatasetNotFoundError(
            f"{remote.name} not found in {folder}. mnist-t10k reads the official MNIST test files from "
            f"the data folder: point --data-dir at a folder that holds {MNIST_T10K_IMAGES.name} and "
            f"{MNIST_T10K_LABELS.name}, or load the full 'mnist' dataset once to download them into it."
        )
    return path


def ensure_file(folder: Path, remote: RemoteFile, mirrors: Sequence[str]) -> Path:
    """The verified path of ``remote`` in ``folder``, downloading it from the first mirror that works."""
    return _ensure_content(folder, remote, mirrors)[0]


def _ensure_content(folder: Path, remote: RemoteFile, mirrors: Sequence[str]) -> tuple[Path, bytes]:
    """``ensure_file``, also returning the decompressed content it verified (so it is read only once)."""
    path = folder / remote.name
    if path.exists():
        return path, verify_file(path, remote)
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
            content = verify_file(tmp, remote, shown_as=url)
            os.replace(tmp, path)
            return path, content
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


def verify_file(path: Path, remote: RemoteFile, shown_as: str | None = None) -> bytes:
    """The decompressed content of ``path`` once it is known to be ``remote``; else ``ChecksumError``.

    A file on disk is accepted when its decompressed bytes have the recorded ``content_sha256``, however it
    was compressed, or when it is the publisher's .gz byte for byte (md5 and size). A fresh download
    (``shown_as`` is its URL) must be the publisher's .gz: the published md5 is what vouches for a mirror.
    """
    raw = path.read_bytes()
    size = len(raw)
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    content, gzip_problem = _gunzip(raw)
    published_gz = md5 == remote.md5 and (remote.size is None or size == remote.size)
    if shown_as is not None:
        if published_gz and content is not None:
            return content
        truncated = remote.size is not None and size < remote.size
        undecompressable = f" ({gzip_problem})" if published_gz else ""
        raise ChecksumError(
            f"{shown_as} delivered a {'truncated' if truncated else 'corrupt'} {remote.name}: "
            f"expected {_published(remote)}, got md5 {md5}, {size:,} bytes{undecompressable}"
        )
    sha256 = hashlib.sha256(content).hexdigest() if content is not None else None
    if content is not None and (published_gz or (sha256 is not None and sha256 == remote.content_sha256)):
        return content
    truncated = content is None and remote.size is not None and size < remote.size
    expected = (
        f"decompressed content sha256 {remote.content_sha256} (however it is compressed) "
        f"or the published .gz ({_published(remote)})"
        if remote.content_sha256 is not None
        else f"the published .gz ({_published(remote)}; no content hash is recorded for this file)"
    )
    got = f"content sha256 {sha256}" if sha256 is not None else f"no content ({gzip_problem})"
    raise ChecksumError(
        f"{path} is {'truncated' if truncated else 'corrupt'} or not the expected file: "
        f"expected {expected}; got {got}, md5 {md5}, {size:,} bytes. {_remedy(path)}"
    )


def _published(remote: RemoteFile) -> str:
    return f"md5 {remote.md5}" + (f", {remote.size:,} bytes" if remote.size is not None else "")


def _gunzip(raw: bytes) -> tuple[bytes | None, str]:
    """The decompressed bytes, or None and why not."""
    try:
        return gzip.decompress(raw), ""
    except (OSError, EOFError, zlib.error) as error:
        return None, f"not a complete gzip stream: {error}"


def _is_inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _remedy(path: Path) -> str:
    """What to do about a bad file; deleting is advised only inside the project's own cache."""
    cache = default_data_dir()
    if _is_inside(path, cache):
        return "Delete it so that it is downloaded again, or replace it with a good copy."
    for dataset, folder in SYSTEM_DATASET_DIRS.items():
        if _is_inside(path, folder):
            package = SYSTEM_PACKAGES[dataset]
            return (
                f"It belongs to the system package {package}: reinstall it "
                f"(apt-get install --reinstall {package}), or set --data-dir (config mnist-platform:dataDir) "
                f"to a folder that holds good copies."
            )
    return (
        f"It is outside the project's cache ({cache}) and is left as it is: replace it with a good copy, "
        f"or point --data-dir (config mnist-platform:dataDir) at a folder that holds one."
    )


def read_idx_images(path: Path) -> np.ndarray:
    """Images uint8 [N, rows, cols] from a gzipped IDX3 file (not verified: ``load_dataset`` verifies)."""
    return parse_idx_images(_read_gz(path), path)


def read_idx_labels(path: Path) -> np.ndarray:
    """Labels uint8 [N] from a gzipped IDX1 file (not verified: ``load_dataset`` verifies)."""
    return parse_idx_labels(_read_gz(path), path)


def parse_idx_images(data: bytes, path: Path) -> np.ndarray:
    """Images uint8 [N, rows, cols] from the decompressed bytes of an IDX3 file (``path`` for messages)."""
    header = np.frombuffer(data, dtype=">u4", count=4) if len(data) >= 16 else None
    if header is None or int(header[0]) != _IDX_IMAGES_MAGIC:
        raise DatasetError(f"{path} is not an IDX image file (bad header)")
    n, rows, cols = (int(v) for v in header[1:])
    if len(data) - 16 != n * rows * cols:
        raise DatasetError(
            f"{path} holds {len(data) - 16} pixel bytes, its header announces {n}x{rows}x{cols}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, rows, cols).copy()


def parse_idx_labels(data: bytes, path: Path) -> np.ndarray:
    """Labels uint8 [N] from the decompressed bytes of an IDX1 file (``path`` for messages)."""
    header = np.frombuffer(data, dtype=">u4", count=2) if len(data) >= 8 else None
    if header is None or int(header[0]) != _IDX_LABELS_MAGIC:
        raise DatasetError(f"{path} is not an IDX label file (bad header)")
    n = int(header[1])
    if len(data) - 8 != n:
        raise DatasetError(f"{path} holds {len(data) - 8} labels, its header announces {n}")
    return np.frombuffer(data, dtype=np.uint8, offset=8).copy()


def _read_gz(path: Path) -> bytes:
    content, problem = _gunzip(Path(path).read_bytes())
    if content is None:
        raise DatasetError(f"{path} cannot be decompressed ({problem}). {_remedy(Path(path))}")
    return content


def _check_counts(images: np.ndarray, labels: np.ndarray, path: Path) -> None:
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{path}: {images.shape[0]} images but {labels.shape[0]} labels")

"""Loading, verifying and caching the datasets; every download is mocked (no network)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import requests

from training import datasets
from training.datasets import (
    ChecksumError,
    DatasetName,
    DatasetNotFoundError,
    DatasetSource,
    DownloadError,
    RemoteFile,
    dataset_dir,
    ensure_file,
    load_dataset,
)

T10K_IMAGES = "t10k-images-idx3-ubyte.gz"
T10K_LABELS = "t10k-labels-idx1-ubyte.gz"


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def t10k_copy(t10k_dir: Path, tmp_path: Path) -> Path:
    """A scratch data folder holding copies of the two t10k files, safe to damage."""
    folder = tmp_path / "data"
    folder.mkdir()
    for name in (T10K_IMAGES, T10K_LABELS):
        shutil.copy(t10k_dir / name, folder / name)
    return folder


def test_t10k_split_is_first_8000_for_training_and_last_2000_for_evaluation(t10k_dir: Path) -> None:
    split = load_dataset("mnist-t10k", t10k_dir)
    with gzip.open(t10k_dir / T10K_IMAGES) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(t10k_dir / T10K_LABELS) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)

    assert (split.n_train, split.n_test) == (8_000, 2_000)
    assert split.x_train.dtype == np.uint8 and split.x_train.shape == (8_000, 28, 28)
    assert split.y_test.dtype == np.uint8 and split.y_test.shape == (2_000,)
    np.testing.assert_array_equal(split.x_train, images[:8_000])
    np.testing.assert_array_equal(split.y_train, labels[:8_000])
    np.testing.assert_array_equal(split.x_test, images[8_000:])
    np.testing.assert_array_equal(split.y_test, labels[8_000:])


def test_t10k_split_is_the_same_on_every_load(t10k_dir: Path) -> None:
    first, second = load_dataset(DatasetName.MNIST_T10K, t10k_dir), load_dataset("mnist-t10k", t10k_dir)
    for a, b in [(first.x_train, second.x_train), (first.y_test, second.y_test)]:
        np.testing.assert_array_equal(a, b)


def test_data_dir_may_be_a_root_with_one_folder_per_dataset(data_root: Path, t10k_dir: Path) -> None:
    assert dataset_dir("mnist-t10k", data_root) == t10k_dir
    assert dataset_dir("mnist-t10k", t10k_dir) == t10k_dir
    assert load_dataset("mnist-t10k", data_root).n_train == 8_000


def _recompress(content: bytes) -> bytes:
    """The same content in a different gzip wrapping: no file name, no timestamp, another level."""
    return gzip.compress(content, compresslevel=6, mtime=0)


def test_recompressed_copy_is_accepted_by_its_content(t10k_copy: Path, t10k_dir: Path) -> None:
    # What Debian did to Fashion-MNIST: same IDX bytes, another gzip header, so another md5.
    for name in (T10K_IMAGES, T10K_LABELS):
        path = t10k_copy / name
        path.write_bytes(_recompress(gzip.decompress(path.read_bytes())))
        assert _md5(path.read_bytes()) != _md5((t10k_dir / name).read_bytes())

    split = load_dataset("mnist-t10k", t10k_copy)

    original = load_dataset("mnist-t10k", t10k_dir)
    np.testing.assert_array_equal(split.x_train, original.x_train)
    np.testing.assert_array_equal(split.y_test, original.y_test)


def test_one_changed_byte_of_content_is_rejected_naming_both_hashes(t10k_copy: Path) -> None:
    path = t10k_copy / T10K_IMAGES
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[5_000] ^= 0x01
    path.write_bytes(_recompress(bytes(content)))

    with pytest.raises(ChecksumError) as error:
        load_dataset("mnist-t10k", t10k_copy)
    message = str(error.value)
    assert str(path) in message
    assert datasets.MNIST_T10K_IMAGES.content_sha256 in message  # expected content
    assert hashlib.sha256(bytes(content)).hexdigest() in message  # actual content
    assert "9fb629c4189551a2d022fa330f9573f3" in message  # the published .gz, also acceptable
    assert _md5(path.read_bytes()) in message


def test_bad_file_outside_the_cache_is_never_to_be_deleted(t10k_copy: Path) -> None:
    path = t10k_copy / T10K_IMAGES
    data = bytearray(path.read_bytes())
    data[5_000] ^= 0xFF
    path.write_bytes(bytes(data))

    with pytest.raises(ChecksumError) as error:
        load_dataset("mnist-t10k", t10k_copy)
    message = str(error.value)
    assert _md5(bytes(data)) in message
    assert "delete" not in message.lower()
    assert "--data-dir" in message and "left as it is" in message


def test_truncated_file_is_rejected(t10k_copy: Path) -> None:
    path = t10k_copy / T10K_LABELS
    path.write_bytes(path.read_bytes()[:1_000])

    with pytest.raises(ChecksumError, match="truncated") as error:
        load_dataset("mnist-t10k", t10k_copy)
    assert "1,000 bytes" in str(error.value) and T10K_LABELS in str(error.value)


def test_missing_t10k_file_names_the_file_and_the_folder(t10k_copy: Path) -> None:
    (t10k_copy / T10K_LABELS).unlink()

    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset("mnist-t10k", t10k_copy)
    assert T10K_LABELS in str(error.value) and str(t10k_copy) in str(error.value)


def test_unknown_dataset_lists_the_allowed_names(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mnist, mnist-t10k, kmnist, fashion-mnist"):
        load_dataset("cifar", tmp_path)


class FakeMirrors:
    """Stands in for ``fetch_url``: serves bytes per URL, raises for unknown ones, records every call."""

    def __init__(self, content: dict[str, bytes]) -> None:
        self.content = content
        self.calls: list[str] = []

    def __call__(self, url: str, dest: Path, timeout: float = 0) -> None:
        self.calls.append(url)
        if url not in self.content:
            raise requests.ConnectionError(f"cannot reach {url}")
        dest.write_bytes(self.content[url])


def test_download_is_verified_and_cached_then_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = gzip.compress(b"digits" * 1000)
    remote = RemoteFile("file.gz", _md5(payload), len(payload))
    mirrors = FakeMirrors({"https://a/file.gz": payload})
    monkeypatch.setattr(datasets, "fetch_url", mirrors)

    first = ensure_file(tmp_path, remote, ["https://a/"])
    second = ensure_file(tmp_path, remote, ["https://a/"])

    assert first == second == tmp_path / "file.gz"
    assert first.read_bytes() == payload
    assert mirrors.calls == ["https://a/file.gz"]  # the cached copy was verified, not fetched again
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.gz"]  # no temporary file left


def test_bad_mirrors_fall_through_to_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = gzip.compress(b"digits" * 1000)
    remote = RemoteFile("file.gz", _md5(payload), len(payload))
    # The first mirror is unreachable, the second serves a corrupt copy, the third a good one.
    mirrors = FakeMirrors({"https://b/file.gz": b"garbage" * 10, "https://c/file.gz": payload})
    monkeypatch.setattr(datasets, "fetch_url", mirrors)

    path = ensure_file(tmp_path, remote, ["https://a/", "https://b/", "https://c/"])

    assert path.read_bytes() == payload
    assert mirrors.calls == ["https://a/file.gz", "https://b/file.gz", "https://c/file.gz"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.gz"]


def test_corrupted_download_is_rejected_and_nothing_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote = RemoteFile("file.gz", _md5(b"the real file"), 13)
    monkeypatch.setattr(datasets, "fetch_url", FakeMirrors({"https://a/file.gz": b"the real fil"}))

    with pytest.raises(DownloadError) as error:
        ensure_file(tmp_path, remote, ["https://a/", "https://b/"])
    message = str(error.value)
    assert "https://a/file.gz" in message and "truncated" in message
    assert "https://b/file.gz" in message and "cannot reach" in message
    assert str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []


def test_cached_corrupt_file_is_reported_never_silently_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    payload = b"digits" * 1000
    remote = RemoteFile("file.gz", _md5(payload), len(payload))
    cache = datasets.default_data_dir() / "corrupt-test"  # the project's own cache (per test run)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "file.gz").write_bytes(b"something else")
    mirrors = FakeMirrors({"https://a/file.gz": payload})
    monkeypatch.setattr(datasets, "fetch_url", mirrors)

    with pytest.raises(ChecksumError, match="Delete it so that it is downloaded again"):
        ensure_file(cache, remote, ["https://a/"])
    assert mirrors.calls == []
    assert (cache / "file.gz").read_bytes() == b"something else"


def test_download_must_be_the_published_gz_even_with_the_right_content(
    t10k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mirror is vouched for by the publisher's md5: a re-compressed copy is refused there.
    original = (t10k_dir / T10K_LABELS).read_bytes()
    recompressed = _recompress(gzip.decompress(original))
    served = {f"https://a/{T10K_LABELS}": recompressed, f"https://b/{T10K_LABELS}": original}
    monkeypatch.setattr(datasets, "fetch_url", FakeMirrors(served))

    path = ensure_file(tmp_path, datasets.MNIST_T10K_LABELS, ["https://a/", "https://b/"])

    assert path.read_bytes() == original


def _fashion_stand_in(t10k_dir: Path, folder: Path) -> DatasetSource:
    """A Fashion-MNIST source whose four files are the t10k ones, written into ``folder``."""
    images, labels = (t10k_dir / T10K_IMAGES).read_bytes(), (t10k_dir / T10K_LABELS).read_bytes()
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in [
        ("train-images-idx3-ubyte.gz", images),
        ("train-labels-idx1-ubyte.gz", labels),
        (T10K_IMAGES, images),
        (T10K_LABELS, labels),
    ]:
        (folder / name).write_bytes(_recompress(gzip.decompress(data)))  # re-compressed, as Debian ships
    return DatasetSource(
        folder="fashion-mnist",
        mirrors=("https://unreachable/",),
        train_images=RemoteFile("train-images-idx3-ubyte.gz", "0" * 32, None, _content_sha256(images)),
        train_labels=RemoteFile("train-labels-idx1-ubyte.gz", "0" * 32, None, _content_sha256(labels)),
        test_images=RemoteFile(T10K_IMAGES, "0" * 32, None, _content_sha256(images)),
        test_labels=RemoteFile(T10K_LABELS, "0" * 32, None, _content_sha256(labels)),
    )


def _content_sha256(gz: bytes) -> str:
    return hashlib.sha256(gzip.decompress(gz)).hexdigest()


@pytest.fixture
def system_fashion(
    t10k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, FakeMirrors]:
    """A temporary folder standing in for Debian's /usr/share/datasets/fashion-mnist; no network."""
    folder = tmp_path / "usr-share-datasets-fashion-mnist"
    monkeypatch.setitem(datasets.SOURCES, DatasetName.FASHION_MNIST, _fashion_stand_in(t10k_dir, folder))
    monkeypatch.setitem(datasets.SYSTEM_DATASET_DIRS, DatasetName.FASHION_MNIST, folder)
    mirrors = FakeMirrors({})
    monkeypatch.setattr(datasets, "fetch_url", mirrors)
    return folder, mirrors


def test_debian_location_is_used_when_no_data_dir_is_set(system_fashion: tuple[Path, FakeMirrors]) -> None:
    folder, mirrors = system_fashion

    split = load_dataset("fashion-mnist")

    assert dataset_dir("fashion-mnist", None) == folder
    assert (split.n_train, split.n_test) == (10_000, 10_000)
    assert mirrors.calls == []  # read from the package's folder, nothing downloaded
    assert not (datasets.default_data_dir() / "fashion-mnist").exists()


def test_debian_location_is_ignored_when_data_dir_is_set(
    system_fashion: tuple[Path, FakeMirrors], tmp_path: Path
) -> None:
    _, mirrors = system_fashion
    chosen = tmp_path / "chosen"

    assert dataset_dir("fashion-mnist", chosen) == chosen / "fashion-mnist"
    with pytest.raises(DownloadError) as error:
        load_dataset("fashion-mnist", chosen)
    assert str(chosen / "fashion-mnist") in str(error.value)
    assert mirrors.calls == ["https://unreachable/train-images-idx3-ubyte.gz"]


def test_incomplete_debian_location_is_not_used(system_fashion: tuple[Path, FakeMirrors]) -> None:
    folder, _ = system_fashion
    (folder / T10K_LABELS).unlink()

    assert dataset_dir("fashion-mnist", None) == datasets.default_data_dir() / "fashion-mnist"


def test_bad_file_of_the_system_package_says_reinstall_it_not_delete_it(
    system_fashion: tuple[Path, FakeMirrors],
) -> None:
    folder, _ = system_fashion
    (folder / T10K_LABELS).write_bytes(_recompress(b"not the labels"))

    with pytest.raises(ChecksumError) as error:
        load_dataset("fashion-mnist")
    message = str(error.value)
    assert "apt-get install --reinstall dataset-fashion-mnist" in message
    assert "delete" not in message.lower()


def test_full_dataset_download_goes_through_the_mirrors_into_the_cache(
    t10k_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real training files are not on this machine: the fake "train" files are the t10k ones,
    # declared with their checksums, which is enough to drive the whole download-verify-parse path.
    images, labels = (t10k_dir / T10K_IMAGES).read_bytes(), (t10k_dir / T10K_LABELS).read_bytes()
    source = DatasetSource(
        folder="mnist",
        mirrors=("https://down/", "https://up/"),
        train_images=RemoteFile("train-images-idx3-ubyte.gz", _md5(images), len(images)),
        train_labels=RemoteFile("train-labels-idx1-ubyte.gz", _md5(labels), len(labels)),
        test_images=datasets.MNIST_T10K_IMAGES,
        test_labels=datasets.MNIST_T10K_LABELS,
    )
    monkeypatch.setitem(datasets.SOURCES, DatasetName.MNIST, source)
    served = {
        "https://up/train-images-idx3-ubyte.gz": images,
        "https://up/train-labels-idx1-ubyte.gz": labels,
        f"https://up/{T10K_IMAGES}": images,
        f"https://up/{T10K_LABELS}": labels,
    }
    monkeypatch.setattr(datasets, "fetch_url", FakeMirrors(served))

    split = load_dataset("mnist", tmp_path)

    assert (split.n_train, split.n_test) == (10_000, 10_000)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(
        ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", T10K_IMAGES, T10K_LABELS]
    )


def test_published_checksums_are_well_formed() -> None:
    for name, source in datasets.SOURCES.items():
        assert source.mirrors, name
        for remote in source.files:
            assert len(remote.md5) == 32 and int(remote.md5, 16) >= 0, (name, remote.name)
            if remote.content_sha256 is not None:
                assert len(remote.content_sha256) == 64 and int(remote.content_sha256, 16) >= 0


def test_content_hash_is_recorded_for_every_file_but_kmnist_training_files() -> None:
    # No trusted value of KMNIST's training content is published (docs/training.md says where each came from).
    missing = {
        (name.value, remote.name)
        for name, source in datasets.SOURCES.items()
        for remote in source.files
        if remote.content_sha256 is None
    }
    assert missing == {("kmnist", "train-images-idx3-ubyte.gz"), ("kmnist", "train-labels-idx1-ubyte.gz")}


def test_repository_t10k_files_match_their_recorded_content_hash(t10k_dir: Path) -> None:
    for remote in (datasets.MNIST_T10K_IMAGES, datasets.MNIST_T10K_LABELS):
        assert _content_sha256((t10k_dir / remote.name).read_bytes()) == remote.content_sha256

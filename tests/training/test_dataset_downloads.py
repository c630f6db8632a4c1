"""How a dataset file reaches the cache (training/datasets.py): streamed over HTTP, written to a temporary
file beside its destination and renamed into place, each attempt logged and each failure named; and the
first images of a split, which a dry run trains on."""

from __future__ import annotations

import gzip
import hashlib
import logging
import struct
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from training import datasets
from training.datasets import (
    ChecksumError,
    DatasetError,
    DownloadError,
    RemoteFile,
    Split,
    ensure_file,
    fetch_url,
    parse_idx_images,
    parse_idx_labels,
    verify_file,
)

PAYLOAD = gzip.compress(b"digits" * 1000)
REMOTE = RemoteFile("file.gz", hashlib.md5(PAYLOAD, usedforsecurity=False).hexdigest(), len(PAYLOAD))


def test_a_file_is_streamed_into_its_destination_whole(httpserver: HTTPServer, tmp_path: Path) -> None:
    body = np.random.default_rng(0).bytes(3 << 20)  # three of the 1 MiB chunks it writes at a time
    httpserver.expect_request("/file.gz").respond_with_data(body)
    fetch_url(httpserver.url_for("/file.gz"), tmp_path / "file.gz")
    assert (tmp_path / "file.gz").read_bytes() == body


def test_an_http_error_is_raised_not_written(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/file.gz").respond_with_data("gone", status=404)
    with pytest.raises(requests.HTTPError, match="404"):
        fetch_url(httpserver.url_for("/file.gz"), tmp_path / "file.gz")
    assert not (tmp_path / "file.gz").exists()


def test_a_download_goes_to_a_hidden_part_file_beside_its_destination_and_is_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    written_to: list[Path] = []

    def fetch(url: str, dest: Path, timeout: float = 0) -> None:
        written_to.append(dest)
        dest.write_bytes(PAYLOAD)

    monkeypatch.setattr(datasets, "fetch_url", fetch)
    with caplog.at_level(logging.INFO, logger=datasets.__name__):
        path = ensure_file(tmp_path, REMOTE, ["https://a/"])
    (part,) = written_to
    # Beside it (the rename into place is atomic only on the same filesystem), hidden, and named as partial.
    assert part.parent == tmp_path
    assert part.name.startswith(".file.gz.") and part.name.endswith(".part")
    assert path.read_bytes() == PAYLOAD
    assert "downloading https://a/file.gz" in [record.getMessage() for record in caplog.records]


def test_when_every_mirror_fails_each_failure_has_its_own_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(url: str, dest: Path, timeout: float = 0) -> None:
        raise requests.ConnectionError(f"cannot reach {url}")

    monkeypatch.setattr(datasets, "fetch_url", unreachable)
    with pytest.raises(DownloadError) as error:
        ensure_file(tmp_path, REMOTE, ["https://a/", "https://b/"])
    lines = str(error.value).splitlines()
    assert lines[:3] == [
        f"could not download file.gz into {tmp_path}; every mirror failed:",
        "  https://a/file.gz: cannot reach https://a/file.gz",
        "  https://b/file.gz: cannot reach https://b/file.gz",
    ]


def test_a_data_folder_that_cannot_be_made_is_named_with_the_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("a file where the folder should be")
    folder = tmp_path / "taken" / "mnist"
    with pytest.raises(DownloadError, match=f"^cannot create the data folder {folder} for file.gz: "):
        ensure_file(folder, REMOTE, ["https://a/"])


def test_a_bad_file_in_the_cache_may_be_deleted_and_says_so() -> None:
    inside = datasets.default_data_dir() / "mnist" / "file.gz"
    assert (
        datasets._remedy(inside)
        == "Delete it so that it is downloaded again, or replace it with a good copy."
    )


def test_the_head_of_a_split_is_its_first_images_of_each_part() -> None:
    images = np.arange(10 * 28 * 28, dtype=np.uint8).reshape(10, 28, 28)
    labels = np.arange(10, dtype=np.uint8)
    head = Split(images, labels, images[::-1].copy(), labels[::-1].copy()).head(3, 2)
    assert (head.n_train, head.n_test) == (3, 2)
    np.testing.assert_array_equal(head.x_train, images[:3])
    assert head.y_train.tolist() == [0, 1, 2]
    np.testing.assert_array_equal(head.x_test, images[::-1][:2])
    assert head.y_test.tolist() == [9, 8]


def test_a_download_that_stalls_times_out(httpserver: HTTPServer, tmp_path: Path) -> None:
    def stall(request: Request) -> Response:
        time.sleep(1.5)
        return Response("late")

    httpserver.expect_request("/file.gz").respond_with_handler(stall)
    with pytest.raises(requests.Timeout):
        fetch_url(httpserver.url_for("/file.gz"), tmp_path / "file.gz", timeout=0.3)


def idx_images(n: int, rows: int = 28, cols: int = 28, magic: int = 0x803) -> bytes:
    return struct.pack(">4I", magic, n, rows, cols)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (idx_images(1)[:15], "f.idx is not an IDX image file (bad header)"),
        (idx_images(1, magic=0x801) + bytes(784), "f.idx is not an IDX image file (bad header)"),
        (idx_images(2) + bytes(784), "f.idx holds 784 pixel bytes, its header announces 2x28x28"),
    ],
)
def test_an_idx_image_file_that_is_not_one_is_refused_saying_why(data: bytes, message: str) -> None:
    with pytest.raises(DatasetError) as refused:
        parse_idx_images(data, Path("f.idx"))
    assert str(refused.value) == message


def test_an_idx_image_file_of_exactly_its_header_holds_no_images() -> None:
    assert parse_idx_images(idx_images(0), Path("f.idx")).shape == (0, 28, 28)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (struct.pack(">2I", 0x801, 1)[:7], "f.idx is not an IDX label file (bad header)"),
        (struct.pack(">2I", 0x803, 1) + b"\x07", "f.idx is not an IDX label file (bad header)"),
        (struct.pack(">2I", 0x801, 3) + b"\x07\x02", "f.idx holds 2 labels, its header announces 3"),
    ],
)
def test_an_idx_label_file_that_is_not_one_is_refused_saying_why(data: bytes, message: str) -> None:
    with pytest.raises(DatasetError) as refused:
        parse_idx_labels(data, Path("f.idx"))
    assert str(refused.value) == message


def test_labels_are_read_from_exactly_their_header_on() -> None:
    assert parse_idx_labels(struct.pack(">2I", 0x801, 2) + b"\x07\x02", Path("f.idx")).tolist() == [7, 2]
    assert parse_idx_labels(struct.pack(">2I", 0x801, 0), Path("f.idx")).tolist() == []


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (
            {"x_train": np.zeros((2, 28, 28), np.float32)},
            "train images must be uint8 [N, 28, 28], got float32 (2, 28, 28)",
        ),
        (
            {"x_test": np.zeros((2, 28, 27), np.uint8)},
            "test images must be uint8 [N, 28, 28], got uint8 (2, 28, 27)",
        ),
        ({"y_test": np.zeros(3, np.uint8)}, "test labels must be uint8 [2], got uint8 (3,)"),
        ({"y_train": np.zeros(2, np.int64)}, "train labels must be uint8 [2], got int64 (2,)"),
    ],
)
def test_a_split_of_the_wrong_shapes_or_types_is_refused_naming_the_part(parts: dict, message: str) -> None:
    good = {"x_train": np.zeros((2, 28, 28), np.uint8), "y_train": np.zeros(2, np.uint8)}
    good |= {"x_test": np.zeros((2, 28, 28), np.uint8), "y_test": np.zeros(2, np.uint8)}
    with pytest.raises(ValueError) as refused:
        Split(**(good | parts))
    assert str(refused.value) == message


def test_images_and_labels_of_different_counts_are_refused_with_both_counts() -> None:
    with pytest.raises(DatasetError, match=r"^f.idx: 3 images but 2 labels$"):
        datasets._check_counts(np.zeros((3, 28, 28), np.uint8), np.zeros(2, np.uint8), Path("f.idx"))


def test_the_published_checksum_is_quoted_with_the_size_when_it_is_known() -> None:
    assert datasets._published(RemoteFile("f.gz", "abc", 1234567)) == "md5 abc, 1,234,567 bytes"
    assert datasets._published(RemoteFile("f.gz", "abc", None)) == "md5 abc"


def test_the_cache_is_a_folder_of_the_project_s_own_name() -> None:
    assert datasets.default_data_dir().name == "mnist-platform"


def md5_of(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.mark.parametrize(
    ("delivered", "kind"), [(b"x" * 1000, "corrupt"), (b"x" * 999, "truncated"), (b"x" * 1001, "corrupt")]
)
def test_a_download_that_is_not_the_published_file_is_refused_word_for_word(
    tmp_path: Path, delivered: bytes, kind: str
) -> None:
    remote = RemoteFile("file.gz", md5_of(PAYLOAD[:1000]), 1000)
    (tmp_path / "part").write_bytes(delivered)
    with pytest.raises(ChecksumError) as refused:
        verify_file(tmp_path / "part", remote, shown_as="https://a/file.gz")
    assert str(refused.value) == (
        f"https://a/file.gz delivered a {kind} file.gz: expected md5 {remote.md5}, 1,000 bytes, "
        f"got md5 {md5_of(delivered)}, {len(delivered):,} bytes"
    )


def test_the_published_file_that_does_not_decompress_is_refused_saying_so(tmp_path: Path) -> None:
    not_gzip = b"the publisher's bytes, but no gzip stream"
    (tmp_path / "part").write_bytes(not_gzip)
    remote = RemoteFile("file.gz", md5_of(not_gzip), len(not_gzip))
    with pytest.raises(ChecksumError, match=r", 41 bytes \(not a complete gzip stream: .+\)$"):
        verify_file(tmp_path / "part", remote, shown_as="https://a/file.gz")


@pytest.mark.parametrize(("kept", "kind"), [(999, "truncated"), (1000, "corrupt")])
def test_a_bad_file_on_disk_is_refused_saying_what_was_expected_and_what_is_there(
    tmp_path: Path, kept: int, kind: str
) -> None:
    on_disk = (b"y" * 2000)[:kept]  # no gzip stream at all
    (tmp_path / "file.gz").write_bytes(on_disk)
    remote = RemoteFile("file.gz", md5_of(PAYLOAD), 1000)
    with pytest.raises(ChecksumError) as refused:
        verify_file(tmp_path / "file.gz", remote)
    assert str(refused.value).startswith(
        f"{tmp_path / 'file.gz'} is {kind} or not the expected file: expected the published .gz "
        f"(md5 {remote.md5}, 1,000 bytes; no content hash is recorded for this file); got no content "
        "(not a complete gzip stream: "
    )
    assert str(refused.value).endswith(
        f"), md5 {md5_of(on_disk)}, {kept:,} bytes. {datasets._remedy(tmp_path)}"
    )


def test_a_recompressed_file_on_disk_with_other_content_names_its_content_hash(tmp_path: Path) -> None:
    other = gzip.compress(b"other digits")
    (tmp_path / "file.gz").write_bytes(other)
    remote = RemoteFile("file.gz", md5_of(PAYLOAD), len(PAYLOAD), content_sha256="ab" * 32)
    with pytest.raises(ChecksumError) as refused:
        verify_file(tmp_path / "file.gz", remote)
    message = str(refused.value)
    assert (
        f"expected decompressed content sha256 {'ab' * 32} (however it is compressed) or the published"
        in message
    )
    assert (
        f"; got content sha256 {hashlib.sha256(b'other digits').hexdigest()}, md5 {md5_of(other)}" in message
    )


def test_a_download_is_accepted_on_its_md5_where_the_publisher_gives_no_size(tmp_path: Path) -> None:
    (tmp_path / "part").write_bytes(PAYLOAD)
    remote = RemoteFile("file.gz", md5_of(PAYLOAD), None)
    assert verify_file(tmp_path / "part", remote, shown_as="https://a/file.gz") == b"digits" * 1000


def test_a_download_holds_a_bounded_part_of_the_file_in_memory(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    # Streamed in 1 MiB chunks: a 32 MiB file never sits whole in memory (a GET without stream=True reads
    # it all first: 64 MiB measured). The bound is loose: the loopback server thread is traced too (~10 MiB).
    body = np.random.default_rng(1).bytes(32 << 20)
    httpserver.expect_request("/file.gz").respond_with_data(body)
    httpserver.expect_request("/warm-up").respond_with_data(b"x")
    fetch_url(httpserver.url_for("/warm-up"), tmp_path / "warm-up")  # one-time costs (imports, pools) first
    tracemalloc.start()
    try:
        fetch_url(httpserver.url_for("/file.gz"), tmp_path / "file.gz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (tmp_path / "file.gz").read_bytes() == body
    assert peak < 16 << 20, f"peak {peak / (1 << 20):.1f} MiB held while downloading 32 MiB"


def test_a_gzipped_idx_pair_is_read_as_images_and_labels(tmp_path: Path) -> None:
    pixels = np.arange(2 * 784, dtype=np.uint64).astype(np.uint8).reshape(2, 28, 28)
    (tmp_path / "images.gz").write_bytes(gzip.compress(idx_images(2) + pixels.tobytes()))
    (tmp_path / "labels.gz").write_bytes(gzip.compress(struct.pack(">2I", 0x801, 2) + b"\x03\x09"))

    np.testing.assert_array_equal(datasets.read_idx_images(tmp_path / "images.gz"), pixels)
    assert datasets.read_idx_labels(tmp_path / "labels.gz").tolist() == [3, 9]


@pytest.mark.parametrize("reader", [datasets.read_idx_images, datasets.read_idx_labels])
def test_an_idx_file_that_does_not_decompress_is_refused_naming_it(reader, tmp_path: Path) -> None:
    path = tmp_path / "broken.gz"
    path.write_bytes(b"\x1f\x8b not gzip after all")
    expected = r"broken\.gz cannot be decompressed \(not a complete gzip stream: "
    with pytest.raises(DatasetError, match=expected):
        reader(path)


def _verified_as(content: bytes, name: str) -> tuple[bytes, RemoteFile]:
    """A gzipped file and the RemoteFile that vouches for its content: it passes verification."""
    raw = gzip.compress(content, mtime=0)
    md5 = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    return raw, RemoteFile(name, md5, len(raw), hashlib.sha256(content).hexdigest())


# Verified files whose IDX content is still wrong (a bad header, or counts that disagree): the error names
# the file at fault, so a user knows which one to replace. (full: the four files of a downloaded dataset;
# t10k: the two test files split 8,000/2,000.)
GOOD_IMAGES = idx_images(2) + bytes(2 * 784)
GOOD_LABELS = struct.pack(">2I", 0x801, 2) + b"\x01\x02"
BAD_IMAGES = idx_images(2, magic=0x801) + bytes(2 * 784)
BAD_LABELS = struct.pack(">2I", 0x803, 2) + b"\x01\x02"
ONE_LABEL = struct.pack(">2I", 0x801, 1) + b"\x01"


@pytest.mark.parametrize(
    ("dataset", "contents", "at_fault"),
    [
        ("mnist", [BAD_IMAGES, GOOD_LABELS, GOOD_IMAGES, GOOD_LABELS], "train-images"),
        ("mnist", [GOOD_IMAGES, BAD_LABELS, GOOD_IMAGES, GOOD_LABELS], "train-labels"),
        ("mnist", [GOOD_IMAGES, GOOD_LABELS, BAD_IMAGES, GOOD_LABELS], "test-images"),
        ("mnist", [GOOD_IMAGES, GOOD_LABELS, GOOD_IMAGES, BAD_LABELS], "test-labels"),
        ("mnist", [GOOD_IMAGES, ONE_LABEL, GOOD_IMAGES, GOOD_LABELS], "train-images"),
        ("mnist", [GOOD_IMAGES, GOOD_LABELS, GOOD_IMAGES, ONE_LABEL], "test-images"),
        ("mnist-t10k", [BAD_IMAGES, GOOD_LABELS], "test-images"),
        ("mnist-t10k", [GOOD_IMAGES, BAD_LABELS], "test-labels"),
        ("mnist-t10k", [GOOD_IMAGES, ONE_LABEL], "test-images"),
    ],
)
def test_a_verified_file_with_bad_idx_content_is_named_in_the_error(
    dataset: str, contents: list[bytes], at_fault: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["train-images", "train-labels", "test-images", "test-labels"][-len(contents) :]
    files = []
    for name, content in zip(names, contents, strict=True):
        raw, remote = _verified_as(content, f"{name}.gz")
        (tmp_path / remote.name).write_bytes(raw)
        files.append(remote)
    full = files if len(files) == 4 else [files[0], files[1], *files]
    monkeypatch.setitem(
        datasets.SOURCES, datasets.DatasetName(dataset), datasets.DatasetSource("d", (), *full)
    )

    with pytest.raises(DatasetError) as refused:
        datasets.load_dataset(dataset, tmp_path)
    assert str(refused.value).startswith(f"{tmp_path / at_fault}.gz"), refused.value


@pytest.mark.parametrize("reader", [datasets.read_idx_images, datasets.read_idx_labels])
def test_a_gzipped_file_that_is_not_idx_is_refused_naming_it(reader, tmp_path: Path) -> None:
    path = tmp_path / "not-idx.gz"
    path.write_bytes(gzip.compress(b"PK\x03\x04 a zip, not an IDX file"))
    with pytest.raises(DatasetError, match=r"not-idx\.gz is not an IDX (image|label) file \(bad header\)"):
        reader(path)

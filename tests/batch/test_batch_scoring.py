"""The batch scorer every stack shares (mnistctl/batch.py): each input format read to the same digits,
scored in batches by the served model classes, written with its report and confusion matrix."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnistctl import batch
from serving.constants import Flavor
from serving.models import model_for

DIGITS = 40


@pytest.fixture(scope="module")
def digits(t10k) -> tuple[np.ndarray, np.ndarray]:
    """Held-out digits as uint8 [N, 28, 28] and their labels."""
    return t10k.x_test[:DIGITS], t10k.y_test[:DIGITS]


def _idx_images(images: np.ndarray) -> bytes:
    header = np.array([0x803, len(images), 28, 28], dtype=">u4").tobytes()
    return header + images.astype(np.uint8).tobytes()


def _idx_labels(labels: np.ndarray) -> bytes:
    return np.array([0x801, len(labels)], dtype=">u4").tobytes() + labels.astype(np.uint8).tobytes()


def _csv(rows: np.ndarray, path: Path) -> Path:
    np.savetxt(path, rows, delimiter=",", fmt="%.8g")
    return path


def test_every_file_format_reads_the_same_digits_and_labels(digits, tmp_path: Path):
    images, labels = digits
    expected = images.reshape(DIGITS, 784).astype(np.float32) / 255.0
    (tmp_path / "t-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_images(images)))
    (tmp_path / "t-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_labels(labels)))
    (tmp_path / "raw-images-idx3-ubyte").write_bytes(_idx_images(images))  # no labels beside it
    np.savez(tmp_path / "digits.npz", x=images, y=labels)
    np.savez(tmp_path / "test_only.npz", x_test=images)
    labelled = _csv(np.column_stack([labels, expected]), tmp_path / "labelled.csv")
    pixels_only = _csv(expected, tmp_path / "pixels.csv")

    for path, has_labels in [
        (tmp_path / "t-images-idx3-ubyte.gz", True),
        (tmp_path / "raw-images-idx3-ubyte", False),
        (tmp_path / "digits.npz", True),
        (tmp_path / "test_only.npz", False),
        (labelled, True),
        (pixels_only, False),
    ]:
        read = batch.read_input(path)
        np.testing.assert_allclose(read.pixels, expected, atol=1e-6, err_msg=str(path))
        assert read.pixels.dtype == np.float32
        if has_labels:
            assert read.labels is not None and read.labels.tolist() == labels.tolist(), path
        else:
            assert read.labels is None, path
        assert len(read.names) == DIGITS


def test_a_folder_of_pngs_is_read_as_mnistctl_predict_reads_it(digits, tmp_path: Path):
    from mnistctl.images import read_image

    images, _ = digits
    for index in (2, 0, 1):  # written out of order: read sorted by name
        Image.fromarray(255 - images[index]).resize((84, 84)).save(tmp_path / f"digit-{index}.png")
    (tmp_path / "notes.txt").write_text("not a picture")
    read = batch.read_input(tmp_path)
    assert read.names == ["digit-0.png", "digit-1.png", "digit-2.png"]
    assert read.labels is None
    np.testing.assert_array_equal(read.pixels[1], read_image(tmp_path / "digit-1.png"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("0.5,0.5\n", "2 columns; expected 784 pixels in [0, 1] a row, or 785 (a label first)"),
        ("12," + ",".join(["0"] * 784) + "\n", "785 columns but the first is not a digit label 0-9"),
        (",".join(["255"] * 784) + "\n", "pixel values from 255 to 255; expected [0, 1]"),
        ("label," + ",".join(["0"] * 784) + "\n", "not a CSV of numbers without a header"),
    ],
)
def test_a_csv_of_another_shape_is_refused_saying_what_was_expected(content, message, tmp_path: Path):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(batch.BatchInputError) as error:
        batch.read_input(path)
    assert message in str(error.value)


def test_an_unknown_file_and_an_empty_folder_are_refused(tmp_path: Path):
    (tmp_path / "digits.json").write_text("[]")
    with pytest.raises(batch.BatchInputError, match="not a format batch scoring reads"):
        batch.read_input(tmp_path / "digits.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(batch.BatchInputError, match=r"a folder without \.png files"):
        batch.read_input(tmp_path / "empty")
    with pytest.raises(batch.BatchInputError, match="does not exist"):
        batch.read_input(tmp_path / "missing.csv")


@pytest.mark.parametrize("flavor", list(Flavor))
def test_scoring_in_batches_gives_what_one_model_call_gives(flavor, model_dir, digits):
    images, _ = digits
    served = model_for(flavor, model_dir(flavor), name="m")
    served.load()
    pixels = images.reshape(DIGITS, 784).astype(np.float32) / 255.0
    in_batches, seconds = batch.score(served, pixels, batch_size=7)  # 6 batches, the last of 5
    assert in_batches.shape == (DIGITS, 10) and seconds > 0
    np.testing.assert_allclose(in_batches, served.predict(pixels), atol=1e-5)


def test_the_report_holds_accuracy_confusion_matrix_throughput_and_cost(digits, tmp_path: Path):
    images, labels = digits
    read = batch.from_images(images, labels, "held-out")
    probabilities = np.full((DIGITS, 10), 0.01, dtype=np.float32)
    predicted = labels.astype(np.int64).copy()
    predicted[:4] = (predicted[:4] + 1) % 10  # four wrong answers
    probabilities[np.arange(DIGITS), predicted] = 0.91
    cost = batch.Cost("ml.m5.large", 2, 0.36, "a test price")
    report = batch.write_results(tmp_path, read, probabilities, 2.0, "xgboost", cost)

    assert report.accuracy == pytest.approx((DIGITS - 4) / DIGITS) and report.correct == DIGITS - 4
    assert report.images_per_second == pytest.approx(DIGITS / 2.0)
    assert report.cost["estimate"] == pytest.approx(0.36 * 2 * 2.0 / 3600, abs=1e-6)
    saved = json.loads((tmp_path / batch.REPORT_FILE).read_text())
    assert saved["accuracy"] == report.accuracy and saved["images"] == DIGITS
    matrix = batch.read_confusion_csv(tmp_path / batch.CONFUSION_CSV)
    assert matrix.sum() == DIGITS and np.trace(matrix) == DIGITS - 4
    for label, guess in zip(labels[:4], predicted[:4], strict=True):
        assert matrix[label, guess] >= 1
    with Image.open(tmp_path / batch.CONFUSION_PNG) as png:
        assert png.format == "PNG" and png.size[0] > 300
    rows = (tmp_path / batch.PREDICTIONS_FILE).read_text().splitlines()
    assert rows[0].startswith("row,input,label,digit,probability,p0")
    assert len(rows) == DIGITS + 1
    assert rows[1].split(",")[3] == str(predicted[0])


def test_without_labels_or_price_the_report_says_unknown(digits, tmp_path: Path):
    images, _ = digits
    read = batch.from_images(images, None, "unlabelled")
    probabilities = np.eye(10, dtype=np.float32)[np.arange(DIGITS) % 10]
    report = batch.write_results(
        tmp_path, read, probabilities, 1.0, "xgboost", batch.Cost("n1-standard-2", 1, None, "no price table")
    )
    assert report.accuracy is None and report.cost["estimate"] == "unknown"
    assert not (tmp_path / batch.CONFUSION_PNG).exists()
    assert "accuracy unknown (no labels)" in batch.summary_lines(report)[1]

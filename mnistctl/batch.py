"""Batch scoring: a whole input read at once, scored in large batches, written with its report.

Shared by every path that scores offline: `mnistctl batch`, the local stack's batch resource, the cloud
fakes that stand in for SageMaker batch transform, Vertex batch prediction and watsonx.ai deployment
jobs, and the cloud stacks' providers once a job's predictions are back (the report is written on the
deploying machine, where the labels are).

Inputs (`read_input`), each to float32 [N, 784] pixels in [0, 1] and labels when the input has them:
- `test` is not a file: `read_test_split` gives the stack dataset's held-out test split, labelled.
- an IDX image file (`*-images-idx3-ubyte`, gzipped or not); its labels are read from the IDX label
  file beside it (`images-idx3` -> `labels-idx1` in the name) when that exists.
- an `.npz` holding `x` (uint8 [N, 28, 28], what training/formats.py writes) or `x_test`, and `y` or
  `y_test` for labels when present.
- a `.csv` without a header: 784 columns are pixels in [0, 1] (what the SageMaker endpoint takes); 785
  columns are a label first and then the pixels (the label-first CSV SageMaker's XGBoost trains on and
  training/formats.py writes). Any other width is refused naming it.
- a folder of PNGs (`*.png`, sorted by name), each read as `mnistctl predict` reads it (mnistctl/images.py).

Outputs, in one folder: `predictions.csv` (one row per image: row, input, label, digit, its probability
and the ten), `report.json` (images, accuracy when labels are known, seconds, images/s, cost), and, when
labels are known, `confusion.csv` and `confusion.png` (rows the true digit, columns the predicted one).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from serving.constants import CLASSES, IMAGE_SIDE, PIXELS

PREDICTIONS_FILE = "predictions.csv"
REPORT_FILE = "report.json"
CONFUSION_CSV = "confusion.csv"
CONFUSION_PNG = "confusion.png"
# Images per model call: large enough that the runtimes' per-call overhead vanishes (bench/batch.py
# measures it), small enough that a call's buffers stay a few MB (1024 x 784 float32 = 3.2 MB).
DEFAULT_BATCH_SIZE = 1024
IDX_IMAGES_MARK = "images-idx3"
IDX_LABELS_MARK = "labels-idx1"


class BatchInputError(ValueError):
    """An input that cannot be read as digits; the message says what was expected."""


@dataclass(frozen=True)
class BatchInput:
    """Digits to score: float32 [N, 784] in [0, 1], a name per row, and labels when the input has them."""

    source: str
    pixels: np.ndarray
    names: list[str]
    labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.pixels.ndim != 2 or self.pixels.shape[1] != PIXELS or len(self.pixels) == 0:
            raise BatchInputError(f"{self.source}: no digits to score (got shape {list(self.pixels.shape)})")
        if len(self.names) != len(self.pixels):
            raise BatchInputError(f"{self.source}: {len(self.names)} names for {len(self.pixels)} images")
        if self.labels is not None and len(self.labels) != len(self.pixels):
            raise BatchInputError(f"{self.source}: {len(self.labels)} labels for {len(self.pixels)} images")


@dataclass(frozen=True)
class Cost:
    """Instance price x time. `price_per_hour` None means unknown, and the estimate is unknown too."""

    instance_type: str
    instance_count: int
    price_per_hour: float | None
    price_source: str

    def estimate(self, seconds: float) -> float | None:
        if self.price_per_hour is None:
            return None
        return round(self.price_per_hour * self.instance_count * seconds / 3600.0, 6)


LOCAL_COST = Cost("local", 1, 0.0, "this machine: no instance is billed (power not counted)")


@dataclass
class BatchReport:
    """What `report.json` holds."""

    model: str
    input: str
    images: int
    labelled: bool
    accuracy: float | None
    correct: int | None
    seconds: float
    images_per_second: float | None
    """None when the run's time is not known (a job whose start and end are the same second)."""
    batch_size: int
    cost: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def _images_to_pixels(images: np.ndarray, source: str) -> np.ndarray:
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise BatchInputError(f"{source}: images of shape {list(images.shape)}; expected [N, 28, 28]")
    if images.dtype != np.uint8:
        raise BatchInputError(f"{source}: images of type {images.dtype}; expected uint8 (0-255)")
    return images.reshape(len(images), PIXELS).astype(np.float32) / 255.0


def from_images(images: np.ndarray, labels: np.ndarray | None, source: str) -> BatchInput:
    """uint8 [N, 28, 28] images (a dataset split) as a BatchInput, rows named by index."""
    pixels = _images_to_pixels(images, source)
    names = [f"{source}#{i}" for i in range(len(pixels))]
    return BatchInput(source, pixels, names, None if labels is None else labels.astype(np.int64))


def read_test_split(dataset: str, data_dir: Path | None) -> BatchInput:
    """The held-out test split of `dataset` (what the gate scores challengers on), with its labels."""
    from training.datasets import load_dataset

    split = load_dataset(dataset, data_dir)
    return from_images(split.x_test, split.y_test, f"{dataset}-test")


def read_input(path: Path | str) -> BatchInput:
    """A dataset file, a CSV or a folder of PNGs -> BatchInput (module docstring: the formats)."""
    path = Path(path)
    if path.is_dir():
        return _read_png_folder(path)
    if not path.is_file():
        raise BatchInputError(f"{path} does not exist")
    name = path.name.lower()
    if name.endswith(".npz"):
        return _read_npz(path)
    if name.endswith(".csv"):
        return _read_csv(path)
    if IDX_IMAGES_MARK in name:
        return _read_idx(path)
    raise BatchInputError(
        f"{path}: not a format batch scoring reads; give an IDX image file (*-{IDX_IMAGES_MARK}-ubyte[.gz]), "
        "an .npz (x, y), a .csv (784 pixels in [0, 1] a row, or a label then 784) or a folder of PNGs"
    )


def _read_idx(path: Path) -> BatchInput:
    from training.datasets import DatasetError, parse_idx_images, parse_idx_labels

    def raw(file: Path) -> bytes:
        data = file.read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data

    labels_path = path.with_name(path.name.replace(IDX_IMAGES_MARK, IDX_LABELS_MARK))
    try:
        images = parse_idx_images(raw(path), path)
        labels = parse_idx_labels(raw(labels_path), labels_path) if labels_path.is_file() else None
    except (DatasetError, OSError, gzip.BadGzipFile) as error:
        raise BatchInputError(str(error)) from error
    if labels is not None and len(labels) != len(images):
        raise BatchInputError(
            f"{path}: {len(images)} images but {labels_path.name} holds {len(labels)} labels"
        )
    return from_images(images, labels, path.name)


def _read_npz(path: Path) -> BatchInput:
    try:
        with np.load(path, allow_pickle=False) as archive:
            members = dict(archive.items())
    except (OSError, ValueError) as error:
        raise BatchInputError(f"{path}: not a readable .npz ({error})") from error
    images_key = next((k for k in ("x", "x_test") if k in members), None)
    if images_key is None:
        raise BatchInputError(f"{path}: holds {sorted(members)}; expected images as 'x' (or 'x_test')")
    labels_key = next((k for k in ("y", "y_test") if k in members), None)
    return from_images(members[images_key], members.get(labels_key) if labels_key else None, path.name)


def _read_csv(path: Path) -> BatchInput:
    try:
        rows = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as error:
        raise BatchInputError(f"{path}: not a CSV of numbers without a header ({error})") from error
    if rows.shape[1] == PIXELS + 1:
        labels, pixels = rows[:, 0], rows[:, 1:]
        if not np.all((labels == np.round(labels)) & (labels >= 0) & (labels < CLASSES)):
            raise BatchInputError(f"{path}: 785 columns but the first is not a digit label 0-9 on every row")
    elif rows.shape[1] == PIXELS:
        labels, pixels = None, rows
    else:
        raise BatchInputError(
            f"{path}: {rows.shape[1]} columns; expected {PIXELS} pixels in [0, 1] a row, "
            f"or {PIXELS + 1} (a label first)"
        )
    if pixels.min() < 0.0 or pixels.max() > 1.0:
        raise BatchInputError(
            f"{path}: pixel values from {pixels.min():g} to {pixels.max():g}; expected [0, 1]"
        )
    names = [f"{path.name}:{line}" for line in range(1, len(rows) + 1)]
    return BatchInput(
        path.name, pixels.astype(np.float32), names, None if labels is None else labels.astype(np.int64)
    )


def _read_png_folder(folder: Path) -> BatchInput:
    from mnistctl.images import read_image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise BatchInputError(f"{folder}: a folder without .png files")
    try:
        pixels = np.stack([read_image(file) for file in files]).astype(np.float32)
    except ValueError as error:
        raise BatchInputError(str(error)) from error
    return BatchInput(folder.name, pixels, [file.name for file in files])


def score(model: Any, pixels: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE) -> tuple[np.ndarray, float]:
    """float32 [N, 10] probabilities of a loaded serving model (serving/models.py), in batches of
    `batch_size`, and the seconds the model calls took."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    started = time.perf_counter()
    parts = [model.predict(pixels[start : start + batch_size]) for start in range(0, len(pixels), batch_size)]
    return np.concatenate(parts).astype(np.float32), time.perf_counter() - started


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """int64 [10, 10]: row the true digit, column the predicted one."""
    matrix = np.zeros((CLASSES, CLASSES), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predicted.astype(np.int64)), 1)
    return matrix


def write_results(
    out_dir: Path,
    batch: BatchInput,
    probabilities: np.ndarray,
    seconds: float,
    model: str,
    cost: Cost = LOCAL_COST,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BatchReport:
    """Write predictions, the report and (with labels) the confusion matrix into `out_dir`."""
    if probabilities.shape != (len(batch.pixels), CLASSES):
        raise ValueError(
            f"{len(batch.pixels)} images but probabilities of shape {list(probabilities.shape)}; "
            f"expected [{len(batch.pixels)}, {CLASSES}]"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    predicted = probabilities.argmax(axis=1)
    files = {"predictions": str(out_dir / PREDICTIONS_FILE)}
    _write_predictions(out_dir / PREDICTIONS_FILE, batch, probabilities)
    accuracy = correct = None
    if batch.labels is not None:
        correct = int((predicted == batch.labels).sum())
        accuracy = correct / len(batch.labels)
        matrix = confusion_matrix(batch.labels, predicted)
        _write_confusion_csv(out_dir / CONFUSION_CSV, matrix)
        _write_confusion_png(out_dir / CONFUSION_PNG, matrix, f"{model} on {batch.source}: {accuracy:.2%}")
        files |= {
            "confusion_csv": str(out_dir / CONFUSION_CSV),
            "confusion_png": str(out_dir / CONFUSION_PNG),
        }
    files["report"] = str(out_dir / REPORT_FILE)
    report = BatchReport(
        model=model,
        input=batch.source,
        images=len(batch.pixels),
        labelled=batch.labels is not None,
        accuracy=accuracy,
        correct=correct,
        seconds=round(seconds, 6),
        images_per_second=round(len(batch.pixels) / seconds, 1) if seconds > 0 else None,
        batch_size=batch_size,
        cost={
            **asdict(cost),
            "estimate": cost.estimate(seconds) if cost.estimate(seconds) is not None else "unknown",
        },
        files=files,
    )
    (out_dir / REPORT_FILE).write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def _write_predictions(path: Path, batch: BatchInput, probabilities: np.ndarray) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["row", "input", "label", "digit", "probability", *(f"p{d}" for d in range(CLASSES))])
    for row, (name, probs) in enumerate(zip(batch.names, probabilities, strict=True)):
        label = "" if batch.labels is None else int(batch.labels[row])
        digit = int(probs.argmax())
        writer.writerow([row, name, label, digit, f"{probs[digit]:.6f}", *(f"{p:.6f}" for p in probs)])
    path.write_text(buffer.getvalue())


def _write_confusion_csv(path: Path, matrix: np.ndarray) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["true\\predicted", *range(CLASSES)])
    for digit, row in enumerate(matrix):
        writer.writerow([digit, *row.tolist()])
    path.write_text(buffer.getvalue())


def read_confusion_csv(path: Path) -> np.ndarray:
    """The matrix `confusion.csv` holds (tests and the cloud stacks' checks read it back)."""
    rows = list(csv.reader(path.read_text().splitlines()))[1:]
    return np.array([[int(cell) for cell in row[1:]] for row in rows], dtype=np.int64)


def _write_confusion_png(path: Path, matrix: np.ndarray, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in a provider
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    try:
        image = axes.imshow(matrix, cmap="Blues")
        figure.colorbar(image, ax=axes)
        axes.set(
            xticks=range(CLASSES),
            yticks=range(CLASSES),
            xlabel="predicted digit",
            ylabel="true digit",
            title=title,
        )
        threshold = matrix.max() / 2 if matrix.size else 0
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                colour = "white" if count > threshold else "black"
                axes.text(col, row, str(count), ha="center", va="center", color=colour, fontsize=7)
        figure.tight_layout()
        figure.savefig(path, format="png")
    finally:
        plt.close(figure)


def score_folder(
    model_dir: Path,
    flavor: str,
    batch: BatchInput,
    out_dir: Path,
    model: str,
    cost: Cost = LOCAL_COST,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> BatchReport:
    """Load the served model of `flavor` from `model_dir` and score `batch` into `out_dir`."""
    from serving.models import model_for

    served = model_for(flavor, model_dir, name=model)
    served.load()
    probabilities, seconds = score(served, batch.pixels, batch_size)
    return write_results(out_dir, batch, probabilities, seconds, model, cost, batch_size)


def summary_lines(report: BatchReport) -> Sequence[str]:
    """The report in a few lines, for the CLI and the Pulumi log."""
    accuracy = (
        "unknown (no labels)"
        if report.accuracy is None
        else f"{report.accuracy:.4f} ({report.correct}/{report.images})"
    )
    estimate = report.cost.get("estimate")
    cost = estimate if isinstance(estimate, str) else f"{estimate:.6f} USD"
    rate = "unknown" if report.images_per_second is None else f"{report.images_per_second:,.0f}"
    return [
        f"{report.model}: {report.images} images from {report.input} in {report.seconds:.2f} s "
        f"({rate} images/s)",
        f"accuracy {accuracy}",
        f"cost {cost} ({report.cost.get('price_source')})",
    ]

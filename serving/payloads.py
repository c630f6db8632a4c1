"""Decoding and checking request bodies: CSV and JSON to a float32 [N, 784] array, with messages that say
what was expected. Shared by the three flavors; every failure is a `UserError`."""

from __future__ import annotations

import io
import json
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from serving.constants import IMAGE_SIDE, PIXELS
from serving.errors import NotAcceptable, UnsupportedMediaType, UserError

# Shapes of one image that a contract may accept.
FLAT = (PIXELS,)
SQUARE = (IMAGE_SIDE, IMAGE_SIDE)
CHANNEL_FIRST = (1, IMAGE_SIDE, IMAGE_SIDE)


def media_type(header: str | None) -> str:
    """`text/csv; charset=utf-8` -> `text/csv` (empty string for a missing header)."""
    return (header or "").split(";", 1)[0].strip().lower()


def require_media_type(header: str | None, accepted: Sequence[str]) -> str:
    """The request's media type if the contract accepts it, else 415 naming the accepted ones."""
    found = media_type(header)
    if found not in accepted:
        raise UnsupportedMediaType(
            f"Content-Type {found or '(none)'!r} is not supported; send {' or '.join(accepted)}"
        )
    return found


def negotiate(accept: str | None, offered: Sequence[str], default: str) -> str:
    """The first media type of the Accept header that is offered; `default` for none or a wildcard."""
    if not accept:
        return default
    for part in accept.split(","):
        wanted = media_type(part)
        if wanted in offered:
            return wanted
        if wanted in ("*/*", "text/*", "application/*", ""):
            return default
    raise NotAcceptable(f"Accept {accept!r} cannot be produced; ask for {' or '.join(offered)}")


def parse_csv(body: bytes) -> np.ndarray:
    """One image per line, comma-separated, no header -> float32 [lines, columns].

    NumPy's `loadtxt` defines what is accepted and how each value is read. A body of plain numbers (what
    every client sends) takes a faster path with the same result, bit for bit: `_plain_csv_rows`."""
    if not body.strip():
        raise UserError(f"empty body: send one line of {PIXELS} comma-separated pixel values per image")
    rows = _plain_csv_rows(body)
    if rows is not None:
        return rows
    try:
        return loadtxt_rows(body)
    except (ValueError, UserWarning) as error:
        raise UserError(
            f"malformed CSV ({error}): send one line of {PIXELS} comma-separated numbers per image, no header"
        ) from error


def loadtxt_rows(body: bytes) -> np.ndarray:
    """NumPy's reading of a CSV body, which defines what `parse_csv` accepts and the bits of each value;
    raises ValueError, or UserWarning for what numpy only warns about."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy only warns on some malformed input; make it an error
        return np.loadtxt(io.BytesIO(body), delimiter=",", dtype=np.float32, ndmin=2)


# The bytes of a body that `_plain_csv_rows` reads itself: JSON numbers, commas, newlines.
_PLAIN_CSV_BYTES = b"0123456789.-+eE,\n"
# "-0" is the one number that JSON reads as an integer and loadtxt as a float with a sign: -0.0.
_INTEGER_MINUS_ZERO = re.compile(rb"-0(?=[,\n]|$)")
_NEWLINE = ord("\n")
_CHECK_CHUNK_BYTES = 64 * 1024


def _plain_csv_rows(body: bytes) -> np.ndarray | None:
    """The rows of a body made only of numbers, commas and newlines, in lines of equal length; None for
    any other body, which `loadtxt` then reads (or words what is wrong with it).

    `loadtxt` took 190-200 us of a single-image SageMaker request, about a third of the event loop's time
    under load (docs/serving.md, "Load benchmark"); this takes 90-95. orjson reads each line as a JSON
    array, one line at a time so that only one line's Python floats exist at once (the whole of a 1.5 MB
    body as one document peaked at 21 MiB), and the values go through float64 to float32 as `loadtxt`
    converts them: the same bits. Bytes other than those (spaces, "#", letters) or a line that is not a
    list of JSON numbers (".5", "1.", "+1", a blank line between rows, a ragged line) leave the body to
    `loadtxt`."""
    # bytes.translate allocates its output at the input's size first: 64 KiB at a time, not the whole body.
    chunks = range(0, len(body), _CHECK_CHUNK_BYTES)
    if any(body[i : i + _CHECK_CHUNK_BYTES].translate(None, _PLAIN_CSV_BYTES) for i in chunks):
        return None
    if _INTEGER_MINUS_ZERO.search(body):
        return None
    end = len(body)
    while end and body[end - 1] == _NEWLINE:
        end -= 1
    if not end:  # empty, or newlines only: loadtxt's message says what is expected
        return None
    lines = body.count(b"\n", 0, end) + 1
    rows: np.ndarray | None = None
    start = 0
    try:
        with np.errstate(over="ignore"):  # past float32: inf, as loadtxt gives; check_pixels refuses it
            for index in range(lines):
                stop = body.find(b"\n", start, end)
                stop = end if stop < 0 else stop
                values = np.array(orjson.loads(b"[" + body[start:stop] + b"]"), dtype=np.float64)
                if rows is None:
                    rows = np.empty((lines, len(values)), dtype=np.float32)
                if values.shape != rows.shape[1:]:  # a ragged or empty line
                    return None
                rows[index] = values
                start = stop + 1
    except (orjson.JSONDecodeError, ValueError, OverflowError):  # not JSON numbers
        return None
    return rows


_NON_FINITE = re.compile(rb"\b(NaN|Infinity)\b")


def parse_json(body: bytes) -> Any:
    """The JSON document of the body, or 400 saying it is not JSON (RFC 8259: no NaN or Infinity).

    orjson, not the standard library: decoding one image's 784 floats took 28 us instead of 200, and the
    standard decoder had been a fifth of a request's CPU on the event loop (docs/serving.md, "Load
    benchmark")."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        if _NON_FINITE.search(body):  # what Python's json.dumps writes for float("nan") and float("inf")
            raise UserError(
                "body is not valid JSON: NaN and Infinity are not JSON numbers, and pixel values must be "
                "finite numbers in [0, 1]"
            ) from error
        raise UserError(f"body is not valid JSON: {error}") from error


def field(document: Any, key: str, expected: str) -> Any:
    """`document[key]` of a JSON object, or 400 describing the expected document."""
    if not isinstance(document, dict) or key not in document:
        raise UserError(f"missing {key!r}: expected {expected}")
    return document[key]


def to_images(values: Any, shapes: Sequence[tuple[int, ...]], expected: str) -> np.ndarray:
    """A list of images (each of one of `shapes`) -> float32 [N, 784], checked to be pixels in [0, 1]."""
    if not isinstance(values, list) or not values:
        raise UserError(f"expected a non-empty list of images, each {expected}")
    try:
        array = np.asarray(values)
    except ValueError as error:  # ragged nesting
        raise UserError(f"images have inconsistent shapes: each must be {expected}") from error
    if array.dtype.kind not in "iuf":
        raise UserError(f"pixel values must be numbers: each image must be {expected}")
    if array.shape[1:] not in shapes:
        got = "x".join(map(str, array.shape[1:])) or "a single number"
        raise UserError(f"each image must be {expected}; got images of shape {got}")
    return check_pixels(array.reshape(len(array), PIXELS).astype(np.float32, copy=False))


def check_pixels(images: np.ndarray) -> np.ndarray:
    """Reject NaN, infinities and values outside [0, 1]; returns `images` unchanged."""
    if images.ndim != 2 or images.shape[1] != PIXELS:
        raise UserError(f"each image must have {PIXELS} values (28x28, row-major); got {images.shape[-1]}")
    if not np.isfinite(images).all():
        raise UserError("pixel values must be finite numbers (no NaN or infinity)")
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        raise UserError(
            f"pixel values must be in [0, 1] (scale 0..255 by 1/255); got min {low:g}, max {high:g}"
        )
    return images


def csv_lines(probabilities: np.ndarray) -> bytes:
    """One line of comma-separated probabilities per image, newline-terminated.

    What the built-in XGBoost container answers without SAGEMAKER_INFERENCE_OUTPUT: sagemaker-containers'
    `array_to_csv` (`np.savetxt(fmt="%s")` of the float32 predictions widened to float64), whose `%s` of a
    float64 is Python's shortest repr, as here.
    """
    return "".join(",".join(map(repr, row)) + "\n" for row in probabilities.tolist()).encode()


def sagemaker_scores_json(probabilities: np.ndarray) -> bytes:
    """`{"predictions": [{"score": [10 probabilities]}, ...]}`: the container's JSON answer without
    SAGEMAKER_INFERENCE_OUTPUT (`serve_utils.encode_predictions_as_json`, `json.dumps` defaults)."""
    return json.dumps({"predictions": [{"score": row} for row in probabilities.tolist()]}).encode()


# SAGEMAKER_INFERENCE_OUTPUT keys of a multi:softprob model, in the order the container fills each
# prediction (serve_utils.get_selected_predictions); raw_score(s) need margins, which we do not serve.
SAGEMAKER_SELECTABLE_KEYS = ("predicted_label", "labels", "probability", "probabilities")


def sagemaker_selected_keys(value: str | None) -> tuple[str, ...] | None:
    """The keys of SAGEMAKER_INFERENCE_OUTPUT as the container reads them (`"a, B"` -> `("a", "b")`),
    None when the variable is absent (the container's plain mode)."""
    if value is None:
        return None
    keys = tuple(value.replace(" ", "").lower().split(","))
    unsupported = [k for k in keys if k not in SAGEMAKER_SELECTABLE_KEYS]
    if unsupported:
        raise ValueError(
            f"SAGEMAKER_INFERENCE_OUTPUT keys {unsupported} are not served here; "
            f"use any of {', '.join(SAGEMAKER_SELECTABLE_KEYS)}"
        )
    return keys


def sagemaker_selected_predictions(probabilities: np.ndarray, keys: Sequence[str]) -> list[dict[str, Any]]:
    """One dict per image with the selected keys, as the container builds them for multi:softprob."""
    wanted = set(keys)
    predictions = []
    for row in probabilities:
        prediction: dict[str, Any] = {}
        if "predicted_label" in wanted:
            prediction["predicted_label"] = int(np.argmax(row))
        if "labels" in wanted:
            prediction["labels"] = list(range(len(row)))
        if "probability" in wanted:
            prediction["probability"] = float(row.max())
        if "probabilities" in wanted:
            prediction["probabilities"] = row.tolist()
        predictions.append(prediction)
    return predictions


def sagemaker_selected_json(predictions: list[dict[str, Any]]) -> bytes:
    """`{"predictions": [...]}` (serve_utils.encode_selected_predictions for application/json)."""
    return json.dumps({"predictions": predictions}).encode()


def sagemaker_selected_csv(predictions: list[dict[str, Any]], keys: Sequence[str]) -> bytes:
    """One line per image, the cells in the order of `keys`; a list is one quoted cell holding its
    Python repr (`"[0.01, 0.9, ...]"`); lines joined by newlines with none at the end
    (serve_utils._encode_selected_predictions_csv, outside batch transform)."""
    lines = []
    for prediction in predictions:
        values = [prediction[key] for key in keys]
        cells = [f'"{value}"' if isinstance(value, list) else str(value) for value in values]
        lines.append(",".join(cells))
    return "\n".join(lines).encode()

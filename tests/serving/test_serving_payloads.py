"""Decoding request bodies: what is accepted, and that every rejection says what was expected."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mnistctl.client import csv_payload
from serving import payloads
from serving.errors import NotAcceptable, UnsupportedMediaType, UserError


def test_csv_lines_become_one_row_of_784_floats_per_image() -> None:
    # Distinct values everywhere, so that a transposed, reordered or truncated parse shows.
    expected = (np.arange(3 * 784, dtype=np.float32) / (3 * 784)).reshape(3, 784)
    body = b"\n".join(",".join(repr(float(v)) for v in row).encode() for row in expected) + b"\n"
    rows = payloads.parse_csv(body)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, expected)


@pytest.mark.parametrize("writer", ["mnistctl", "repr"])
def test_a_clients_csv_body_takes_the_fast_path_and_reads_as_loadtxt_reads_it(writer: str) -> None:
    # mnistctl's client (and so bench/load.py) writes each float32 as its shortest decimal; Python's
    # str() of a float, as in most hand-written clients, is the float64 repr.
    images = np.random.default_rng(0).random((3, 784), dtype=np.float32)
    images[0, :200] = 0.0
    if writer == "mnistctl":
        body = csv_payload(images)
    else:
        body = b"\n".join(",".join(map(repr, row)).encode() for row in images.tolist())
    fast = payloads._plain_csv_rows(body)
    assert fast is not None, "a plain CSV body fell back to loadtxt: the fast path is lost"
    assert fast.tobytes() == payloads.loadtxt_rows(body).tobytes()


_NUMBER_TEXTS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.floats(width=32, allow_nan=False, allow_infinity=False).map(lambda v: f"{v:.9g}"),
    st.floats(-1e6, 1e6).map(lambda v: f"{v:e}"),
    st.integers(-(10**25), 10**25).map(str),
    st.from_regex(r"-?0\.[0-9]{17,40}", fullmatch=True),  # more digits than a double holds: rounding
    st.decimals(allow_nan=False, allow_infinity=False).map(str),  # "1.5E+7", "0E-12", ...
    st.sampled_from(["-0", "0", "-0.0", "1E5", "1e-400", "1e400", ".5", "5.", "+1", " 1", "nan", "-inf", ""]),
)
_CSV_ROWS = st.integers(1, 4).flatmap(
    lambda columns: st.lists(
        st.lists(_NUMBER_TEXTS, min_size=columns, max_size=columns), min_size=1, max_size=4
    )
)


@given(rows=_CSV_ROWS, ending=st.sampled_from(["", "\n", "\n\n"]))
@example(rows=[["-0", "0.5"]], ending="\n")  # JSON reads "-0" as the integer 0; loadtxt as -0.0
@example(rows=[["0.1", "0.2"], ["3"]], ending="")  # ragged
def test_the_csv_fast_path_reads_every_number_to_the_bit_as_loadtxt_or_leaves_it_to_loadtxt(
    rows: list[list[str]], ending: str
) -> None:
    body = ("\n".join(",".join(row) for row in rows) + ending).encode()
    fast = payloads._plain_csv_rows(body)
    if fast is None:
        return  # loadtxt reads it (test above and below: its values, or its error)
    expected = payloads.loadtxt_rows(body)
    assert fast.dtype == np.float32
    assert fast.shape == expected.shape
    assert fast.tobytes() == expected.tobytes()  # -0.0 and every rounding included


@pytest.mark.parametrize("body", [b"", b"\n\n", b"1,2\n3", b"0.1,zero"])
def test_malformed_csv_is_a_user_error_naming_the_expected_format(body: bytes) -> None:
    with pytest.raises(UserError, match="784"):
        payloads.parse_csv(body)


@pytest.mark.parametrize(
    ("header", "expected"),
    [("text/csv", "text/csv"), ("text/csv; charset=utf-8", "text/csv"), ("TEXT/CSV", "text/csv")],
)
def test_media_type_ignores_parameters_and_case(header: str, expected: str) -> None:
    assert payloads.require_media_type(header, ("text/csv",)) == expected


def test_unsupported_media_type_names_the_accepted_one() -> None:
    with pytest.raises(UnsupportedMediaType, match="text/csv"):
        payloads.require_media_type("application/json", ("text/csv",))


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "text/csv"),
        ("*/*", "text/csv"),
        ("application/json", "application/json"),
        ("text/html, application/json;q=0.9", "application/json"),
    ],
)
def test_accept_negotiation_picks_the_first_offered_type(accept: str | None, chosen: str) -> None:
    assert payloads.negotiate(accept, ("text/csv", "application/json"), default="text/csv") == chosen


def test_accept_that_cannot_be_met_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable, match="application/json"):
        payloads.negotiate("application/xml", ("text/csv", "application/json"), default="text/csv")


@pytest.mark.parametrize(
    ("images", "shapes"),
    [
        ([[0.0] * 784, [1.0] * 784], [payloads.FLAT]),
        ([[[0.5] * 28] * 28], [payloads.SQUARE]),
        ([[[[0.5] * 28] * 28]], [payloads.CHANNEL_FIRST]),
        ([[0] * 784], [payloads.FLAT]),  # integers 0 and 1 are valid intensities
    ],
)
def test_images_of_an_accepted_shape_are_flattened_to_784(images: list, shapes: list) -> None:
    array = payloads.to_images(images, shapes, "as described")
    assert array.shape == (len(images), 784)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, np.asarray(images, dtype=np.float32).reshape(len(images), 784))


@pytest.mark.parametrize("shape", [payloads.SQUARE, payloads.CHANNEL_FIRST])
def test_a_28x28_image_is_flattened_row_major(shape) -> None:
    image = (np.arange(784, dtype=np.float32) / 784).reshape(28, 28)  # pixel (r, c) = (28r + c) / 784
    nested = image.tolist() if shape == payloads.SQUARE else [image.tolist()]
    (flat,) = payloads.to_images([nested], [shape], "as described")
    np.testing.assert_array_equal(flat, np.arange(784, dtype=np.float32) / 784)
    assert flat[28] == image[1, 0]  # the first pixel of the second row follows the first row


@pytest.mark.parametrize(
    ("images", "message"),
    [
        ([], "non-empty"),
        ({"a": 1}, "non-empty"),
        ([[0.0] * 783], "shape 783"),
        ([[0.0] * 784, [0.0] * 10], "inconsistent"),
        ([["0.5"] * 784], "numbers"),
        ([[True] * 784], "numbers"),
        ([[None] * 784], "numbers"),
        ([[float("nan")] * 784], "finite"),
        ([[float("inf")] * 784], "finite"),
        ([[255.0] * 784], r"\[0, 1\]"),
        ([[-0.1] * 784], r"\[0, 1\]"),
    ],
)
def test_bad_images_are_user_errors_that_say_what_is_wrong(images: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        payloads.to_images(images, [payloads.FLAT], "784 floats")


def test_json_field_missing_names_the_expected_document() -> None:
    with pytest.raises(UserError, match=r"instances.*expected"):
        payloads.field({"inputs": []}, "instances", '{"instances": [...]}')


def test_probabilities_are_written_one_csv_line_per_image() -> None:
    lines = payloads.csv_lines(np.array([[0.25] * 4, [0.5] * 4], dtype=np.float32)).decode().splitlines()
    assert lines == ["0.25,0.25,0.25,0.25", "0.5,0.5,0.5,0.5"]

"""Decoding request bodies: what is accepted, and that every rejection says what was expected."""

from __future__ import annotations

import warnings

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
# 2**60 + 2**36 + 1: to float32 directly it rounds up; through float64 (as loadtxt reads it) to 2**60.
@example(rows=[["1152921573326323713"]], ending="")
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
    [
        ("text/csv", "text/csv"),
        ("text/csv; charset=utf-8", "text/csv"),
        ("TEXT/CSV", "text/csv"),
        ("text/csv; charset=utf-8; header=absent", "text/csv"),
    ],
)
def test_media_type_ignores_parameters_and_case(header: str, expected: str) -> None:
    assert payloads.require_media_type(header, ("text/csv",)) == expected


def test_unsupported_media_type_names_the_accepted_one() -> None:
    with pytest.raises(UnsupportedMediaType, match="text/csv"):
        payloads.require_media_type("application/json", ("text/csv",))


def test_a_missing_content_type_is_refused_in_words_naming_every_accepted_type() -> None:
    assert payloads.media_type(None) == ""
    with pytest.raises(UnsupportedMediaType) as refused:
        payloads.require_media_type(None, ("text/csv", "application/json"))
    assert (
        refused.value.message == "Content-Type '(none)' is not supported; send text/csv or application/json"
    )


@pytest.mark.parametrize(
    ("accept", "chosen"),
    [
        (None, "text/csv"),
        ("*/*", "text/csv"),
        ("application/json", "application/json"),
        ("text/html, application/json;q=0.9", "application/json"),
        ("text/html,application/json", "application/json"),  # no space after the comma
        ("text/*", "text/csv"),
        ("application/*", "text/csv"),
        ("text/html, ;q=0.5", "text/csv"),  # an empty media range is a wildcard too
    ],
)
def test_accept_negotiation_picks_the_first_offered_type(accept: str | None, chosen: str) -> None:
    assert payloads.negotiate(accept, ("text/csv", "application/json"), default="text/csv") == chosen


def test_accept_that_cannot_be_met_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable) as refused:
        payloads.negotiate("application/xml", ("text/csv", "application/json"), default="text/csv")
    assert refused.value.message == (
        "Accept 'application/xml' cannot be produced; ask for text/csv or application/json"
    )


def test_a_plain_csv_body_is_read_by_the_fast_path_not_by_loadtxt(monkeypatch: pytest.MonkeyPatch) -> None:
    # loadtxt took a third of a single-image request's time on the event loop (docs/serving.md).
    def no_loadtxt(body: bytes) -> np.ndarray:
        raise AssertionError("parse_csv fell back to loadtxt for a plain body")

    monkeypatch.setattr(payloads, "loadtxt_rows", no_loadtxt)
    np.testing.assert_array_equal(payloads.parse_csv(b"0.5,0.25\n1,0\n"), [[0.5, 0.25], [1.0, 0.0]])


@pytest.mark.parametrize(
    ("body", "rows"),
    [
        (b"0.5 , 0.25\n", [[0.5, 0.25]]),  # spaces: what loadtxt reads, not the fast path
        (b"\n0.5,0.25", [[0.5, 0.25]]),  # a blank first line, which loadtxt skips
    ],
)
def test_a_csv_body_off_the_fast_path_is_read_as_loadtxt_reads_it(body: bytes, rows: list) -> None:
    np.testing.assert_array_equal(payloads.parse_csv(body), rows)


def test_a_body_over_128_kib_with_a_json_literal_at_its_end_is_left_to_loadtxt() -> None:
    # The bytes are checked 64 KiB at a time; orjson would read `true` as 1.0, loadtxt refuses it.
    body = b"0.5,0.5\n" * 20_000 + b"0.5,true\n"
    assert len(body) > 2 * 64 * 1024  # past the first two chunks
    assert payloads._plain_csv_rows(body) is None
    with pytest.raises(UserError, match="malformed CSV"):
        payloads.parse_csv(body)


def test_a_value_past_float32_reads_as_infinity_quietly_as_loadtxt_reads_it() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy warns of an overflow unless told not to
        rows = payloads.parse_csv(b"1e39,0.5\n")
    assert rows.tolist() == [[float("inf"), 0.5]]


def test_a_json_body_is_decoded_or_refused_saying_why() -> None:
    assert payloads.parse_json(b'{"instances": [[0.5]]}') == {"instances": [[0.5]]}
    with pytest.raises(UserError) as non_finite:
        payloads.parse_json(b'{"instances": [[NaN]]}')
    assert non_finite.value.message == (
        "body is not valid JSON: NaN and Infinity are not JSON numbers, and pixel values must be "
        "finite numbers in [0, 1]"
    )
    with pytest.raises(UserError, match=r"^body is not valid JSON: \S"):
        payloads.parse_json(b'{"instances": ')


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
        ([[0.0] * 783], "784 floats; got images of shape 783$"),
        ([[[0.0] * 27] * 28], "784 floats; got images of shape 28x27$"),
        ([0.5, 0.5], "784 floats; got images of shape a single number$"),
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
    with pytest.raises(UserError, match=r"instances.*expected"):
        payloads.field([{"instances": []}], "instances", '{"instances": [...]}')  # not an object
    assert payloads.field({"instances": [[0.5]]}, "instances", "") == [[0.5]]


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((1, 783), dtype=np.float32), "each image must have 784 values (28x28, row-major); got 783"),
        (np.zeros(10, dtype=np.float32), "each image must have 784 values (28x28, row-major); got 10"),
        (
            np.full((1, 784), np.nan, dtype=np.float32),
            "pixel values must be finite numbers (no NaN or infinity)",
        ),
        (
            np.full((1, 784), 1.5, dtype=np.float32),
            "pixel values must be in [0, 1] (scale 0..255 by 1/255); got min 1.5, max 1.5",
        ),
    ],
)
def test_pixels_that_are_not_images_in_zero_to_one_are_refused_saying_what_was_wrong(
    images: np.ndarray, message: str
) -> None:
    with pytest.raises(UserError) as refused:
        payloads.check_pixels(images)
    assert refused.value.message == message


def test_probabilities_are_written_one_csv_line_per_image() -> None:
    lines = payloads.csv_lines(np.array([[0.25] * 4, [0.5] * 4], dtype=np.float32)).decode().splitlines()
    assert lines == ["0.25,0.25,0.25,0.25", "0.5,0.5,0.5,0.5"]

"""Property-based fuzzing of every flavor's parser and app (Hypothesis): whatever arrives, the answer is a
4xx in the flavor's own error shape, never a 5xx, and the server answers a good request afterwards."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from serving.constants import PIXELS, Flavor
from serving.errors import UserError
from serving.models import InferenceRequest

pytestmark = pytest.mark.slow

ROUTES = {
    Flavor.SAGEMAKER: "/endpoints/mnist-test/invocations",
    Flavor.VERTEX: "/v1/projects/p/locations/l/endpoints/mnist-test:predict",
    Flavor.WATSONX: "/ml/v4/deployments/mnist-test/predictions?version=2024-05-01",
}
MEDIA_TYPE = {
    Flavor.SAGEMAKER: "text/csv",
    Flavor.VERTEX: "application/json",
    Flavor.WATSONX: "application/json",
}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# --- what a hostile or broken client sends --------------------------------------------------------------

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(min_value=-1.0, max_value=0.0, exclude_max=True),  # negative pixels
    st.floats(min_value=1.0, max_value=255.0, exclude_min=True),  # 0..255 scale
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=40,
)
ragged_images = st.lists(st.lists(st.floats(0, 1), min_size=0, max_size=790), min_size=1, max_size=4)
bad_images = st.one_of(
    json_values,
    ragged_images,
    st.just([]),
    st.just([[0.0] * PIXELS, [0.5]]),
    st.just([[0.0] * (PIXELS - 1) + [float("nan")]]),
    st.just([[0.0] * (PIXELS - 1) + [-0.1]]),
    st.just([[0.0] * (PIXELS - 1) + [1.5]]),
    st.just([[0]] * 100_000),  # 100,000 instances (of the wrong shape, so the body stays under the limits)
    st.just([0] * 100_000),
    st.just([["\u00e9\u4e2d\U0001f600"] * PIXELS]),
)


def document_for(flavor: Flavor, images: Any) -> Any:
    if flavor is Flavor.VERTEX:
        return {"instances": images}
    if flavor is Flavor.WATSONX:
        return {"input_data": [{"values": as_declared_by_the_onnx_model(images)}]}
    return images


def as_declared_by_the_onnx_model(images: Any) -> Any:
    """Each 784-value image as [1][28][28], the shape the ONNX model declares (watsonx.ai does not
    reshape; a flat image is refused for its shape before its values are looked at). Anything else as
    it is."""
    if isinstance(images, list) and images and all(isinstance(i, list) and len(i) == PIXELS for i in images):
        return [[[image[row * 28 : (row + 1) * 28] for row in range(28)]] for image in images]
    return images


def encoded(flavor: Flavor, images: Any) -> bytes:
    """The body a client would write for `images`: CSV rows for SageMaker, JSON otherwise."""
    if flavor is Flavor.SAGEMAKER:
        rows = images if isinstance(images, list) else [images]
        lines = (",".join(map(str, row)) if isinstance(row, list) else str(row) for row in rows)
        return "\n".join(lines).encode("utf-8", "surrogatepass")
    return json.dumps(document_for(flavor, images)).encode("utf-8", "surrogatepass")


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


bodies = st.one_of(
    st.binary(max_size=3000),
    st.text(max_size=500).map(lambda t: t.encode("utf-8", "surrogatepass")),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 200_000).map(deep),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b'{"instances": [NaN]}', b"\xff\xfe\x00", b""]),
)
content_types = st.one_of(
    st.sampled_from(
        [
            None,
            "text/csv",
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=utf-8",
            "multipart/form-data; boundary=x",
            "*/*",
            "application/octet-stream",
        ]
    ),
    # Leading white space is what HTTP strips from a field value anyway, and requests refuses to send
    # it (InvalidHeader, on the client): any other printable value goes to the server as it is.
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40).map(str.lstrip),
)


def good_body(flavor: Flavor, images: np.ndarray) -> bytes:
    return encoded(flavor, [[float(v) for v in row] for row in images])


def assert_flavor_error(flavor: Flavor, reply: requests.Response) -> None:
    """A 4xx whose JSON body is shaped as the platform's own clients read errors."""
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.text[:300])
    document = reply.json()
    if flavor is Flavor.SAGEMAKER:
        assert document["message"]
        assert reply.headers["x-amzn-ErrorType"] == "ValidationError"
    elif flavor is Flavor.VERTEX:
        assert document["error"]["code"] == reply.status_code
        assert document["error"]["message"]
    else:
        assert document["status_code"] == str(reply.status_code)
        assert document["errors"][0]["message"]


def sent_pixels(flavor: Flavor, body: bytes) -> np.ndarray:
    """The numbers a body carries as images, read with the standard library (not the server's parsers):
    float64 [N, values per image]. Raises ValueError, KeyError, TypeError or IndexError if it holds none."""
    if flavor is Flavor.SAGEMAKER:
        lines = body.decode().splitlines()
        rows = [[float(value) for value in line.split(",")] for line in lines if line.strip()]
    else:
        document = json.loads(body)
        rows = document["instances"] if flavor is Flavor.VERTEX else document["input_data"][0]["values"]
    pixels = np.asarray(rows, dtype=np.float64)
    return pixels.reshape(len(pixels), -1)


def assert_valid_request(flavor: Flavor, body: bytes) -> None:
    """A body the server answered 200 must hold whole images of pixels in [0, 1]: an out-of-range value
    must be refused, never clipped and served."""
    try:
        pixels = sent_pixels(flavor, body)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        raise AssertionError(f"200 to a body that holds no images ({error}): {body[:300]!r}") from error
    assert pixels.size and pixels.shape[1] == PIXELS, f"200 to images of shape {pixels.shape}"
    assert np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0, (
        f"200 to pixels out of [0, 1]: min {pixels.min()}, max {pixels.max()}"
    )


# Images that are invalid only by their values, in a well-formed request: what a clipping parser would
# serve. Given as explicit examples so that every run tries them, not only when Hypothesis draws them.
BRIGHTER_THAN_WHITE = [[0.0] * (PIXELS - 1) + [1.5]]
DARKER_THAN_BLACK = [[0.0] * (PIXELS - 1) + [-0.1]]


@pytest.fixture(scope="module")
def session() -> requests.Session:
    return requests.Session()


def fuzz_request(
    served_app: Callable[[Flavor], tuple[str, Starlette]],
    session: requests.Session,
    held_out: tuple[np.ndarray, np.ndarray],
    flavor: Flavor,
    body: bytes,
    content_type: str | None,
) -> None:
    url, _ = served_app(flavor)
    headers = {} if content_type is None else {"Content-Type": content_type}
    reply = session.post(url + ROUTES[flavor], data=body, headers=headers, timeout=60)
    if reply.status_code == 200:  # random bytes (or a cut body) can, rarely, be a valid request
        assert_valid_request(flavor, body)
        return
    assert_flavor_error(flavor, reply)
    images, _ = held_out
    good = session.post(
        url + ROUTES[flavor],
        data=good_body(flavor, images[:2]),
        headers={"Content-Type": MEDIA_TYPE[flavor]},
        timeout=60,
    )
    assert good.status_code == 200, good.text[:300]


@pytest.mark.parametrize("flavor", list(Flavor))
@FUZZ
@given(body=bodies, content_type=content_types)
@example(body=deep(100_000), content_type="application/json")
@example(body=b'{"instances": [[0.5, 0.5], [0.5]]', content_type="application/json")  # truncated
def test_any_body_with_any_content_type_is_a_4xx_never_a_5xx(
    served_app, session, held_out, flavor: Flavor, body: bytes, content_type: str | None
) -> None:
    fuzz_request(served_app, session, held_out, flavor, body, content_type)


@pytest.mark.parametrize("flavor", list(Flavor))
@FUZZ
@given(images=bad_images, cut=st.one_of(st.none(), st.integers(0, 5000)))
@example(images=BRIGHTER_THAN_WHITE, cut=None)
@example(images=DARKER_THAN_BLACK, cut=None)
def test_wrong_images_in_the_right_envelope_are_a_4xx_never_a_5xx(
    served_app, session, held_out, flavor: Flavor, images: Any, cut: int | None
) -> None:
    try:
        body = encoded(flavor, images)
    except (ValueError, OverflowError):  # json.dumps refuses nothing here, but a float repr may overflow
        return
    if cut is not None:
        body = body[:cut]  # a truncated body
    fuzz_request(served_app, session, held_out, flavor, body, MEDIA_TYPE[flavor])


@pytest.mark.parametrize("flavor", list(Flavor))
@FUZZ
@given(images=bad_images)
@example(images=BRIGHTER_THAN_WHITE)
@example(images=DARKER_THAN_BLACK)
def test_each_parser_returns_exactly_the_pixels_sent_or_raises_a_user_error(
    served_app, flavor: Flavor, images: Any
) -> None:
    _, app = served_app(flavor)
    model = app.state.model
    request = InferenceRequest(
        body=encoded(flavor, images),
        content_type=MEDIA_TYPE[flavor],
        accept=None,
        query={"version": "2024-05-01"},
        path={"name": "mnist-test"},
    )
    try:
        pixels = model.preprocess(request)
    except UserError:
        return
    assert pixels.dtype == np.float32
    assert pixels.ndim == 2 and pixels.shape[1] == PIXELS
    assert math.isfinite(float(pixels.sum()))
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    # Not valid pixels of its own making (clipped, rescaled): the very values the client sent.
    np.testing.assert_array_equal(pixels, sent_pixels(flavor, request.body).astype(np.float32))

"""The endpoint clients when things go wrong or differ by place: which errors are retried and how long the
client waits between tries, how each request is signed (placeholder keys for a local server, `execute-api`
through the aws stack's HTTP API, none for an open one), how the IBM Cloud IAM token is fetched and
renewed, and how an error body of any of the three platforms is worded. Written to kill what mutation
testing (`make mutate MODULES=mnistctl/client.py`) showed no other test noticed."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import parse_qs

import numpy as np
import pytest
import requests
import responses
from botocore.awsrequest import AWSResponse
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from google.api_core import exceptions as google_errors

from mnistctl import client as client_module
from mnistctl.client import (
    RETRY_ATTEMPTS,
    Endpoint,
    SageMakerEndpointClient,
    VertexEndpointClient,
    WatsonxEndpointClient,
    _BatchingClient,
    _error_text,
    as_probabilities,
    check_images,
    client_for,
    csv_payload,
    resolve_endpoint,
    sagemaker_reply_scores,
)
from serving.constants import Flavor

ONE_IMAGE = np.full((1, 784), 0.5, dtype=np.float32)
ONE_REPLY = {"predictions": [{"score": [0.1] * 10}]}


def _client_error(code: str | None, status: int | None) -> ClientError:
    response: dict[str, Any] = {}
    if code is not None:
        response["Error"] = {"Code": code, "Message": "m"}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "InvokeEndpoint")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (EndpointConnectionError(endpoint_url="https://runtime"), True),
        (ConnectionClosedError(endpoint_url="https://runtime"), True),
        (ConnectTimeoutError(endpoint_url="https://runtime"), True),
        # A read timeout is a model call of over 60 s: sent again it would take as long.
        (ReadTimeoutError(endpoint_url="https://runtime"), False),
        (_client_error("ServiceUnavailable", 400), True),
        (_client_error("ModelNotReadyException", 400), True),
        (_client_error("ThrottlingException", 400), True),
        (_client_error("InternalFailure", 400), True),
        (_client_error("", 429), True),
        (_client_error("", 502), True),
        (_client_error("", 503), True),
        (_client_error("", 504), True),
        (_client_error(None, 503), True),  # API Gateway's own answers carry no error code
        (_client_error("ThrottlingException", None), True),
        (_client_error("ValidationError", 400), False),
        (_client_error("ModelError", 424), False),
        (_client_error("InternalServerError", 500), False),
        (_client_error(None, None), False),
        (ValueError("not an AWS error"), False),
    ],
)
def test_sagemaker_retries_only_what_may_pass(error: BaseException, transient: bool) -> None:
    client = SageMakerEndpointClient(Endpoint(flavor=Flavor.SAGEMAKER, name="ep", region="eu-west-1"))
    assert client._is_transient(error) is transient


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (google_errors.ServiceUnavailable("busy"), True),
        (google_errors.TooManyRequests("slow down"), True),
        (google_errors.DeadlineExceeded("late"), True),
        (requests.ConnectionError("refused"), True),
        (requests.Timeout("late"), True),
        (google_errors.InvalidArgument("bad instances"), False),
        (google_errors.NotFound("no endpoint"), False),
    ],
)
def test_vertex_retries_only_what_may_pass(error: BaseException, transient: bool) -> None:
    client = VertexEndpointClient(Endpoint(flavor=Flavor.VERTEX, name="1", url="http://127.0.0.1:1"))
    assert client._is_transient(error) is transient


def _http_error(status: int) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status}", response=response)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_http_error(429), True),
        (_http_error(502), True),
        (_http_error(503), True),
        (_http_error(504), True),
        (_http_error(500), False),
        (_http_error(400), False),
        (requests.HTTPError("no response"), False),
        (requests.ConnectionError("refused"), True),
    ],
)
def test_watsonx_retries_only_what_may_pass(error: BaseException, transient: bool) -> None:
    client = WatsonxEndpointClient(Endpoint(flavor=Flavor.WATSONX, name="d", url="http://127.0.0.1:1"))
    assert client._is_transient(error) is transient


class _Scripted(_BatchingClient):
    """A client whose model call fails as told and records the batches it was given."""

    max_images_per_request: ClassVar[int] = 3

    def __init__(self, failures: list[BaseException]) -> None:
        super().__init__(Endpoint(flavor=Flavor.WATSONX, name="d", url="http://127.0.0.1:1"))
        self.failures = failures
        self.batches: list[np.ndarray] = []

    def _predict_batch(self, images: np.ndarray) -> np.ndarray:
        self.batches.append(images)
        if self.failures:
            raise self.failures.pop(0)
        return np.repeat(images[:, :1], 10, axis=1)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses between attempts (tenacity sleeps through time.sleep), recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    return slept


def test_a_transient_error_is_tried_four_times_with_growing_pauses_then_raised(waits: list[float]) -> None:
    client = _Scripted([requests.ConnectionError(f"refused {i}") for i in range(RETRY_ATTEMPTS)])
    with pytest.raises(requests.ConnectionError, match="refused 3"):
        client.predict(ONE_IMAGE)
    assert len(client.batches) == RETRY_ATTEMPTS == 4
    assert waits == [0.25, 0.5, 1.0]


def test_a_lasting_error_is_not_retried(waits: list[float]) -> None:
    client = _Scripted([ValueError("bad reply")])
    with pytest.raises(ValueError, match="bad reply"):
        client.predict(ONE_IMAGE)
    assert len(client.batches) == 1 and waits == []


def test_large_inputs_go_in_requests_of_at_most_the_limit_and_come_back_in_order(waits: list[float]) -> None:
    images = np.linspace(0, 1, 7, dtype=np.float32)[:, None] * np.ones((7, 784), np.float32)
    client = _Scripted([])
    result = client.predict(images)
    assert [len(batch) for batch in client.batches] == [3, 3, 1]
    np.testing.assert_array_equal(result[:, 0], images[:, 0])


class _RawBody(io.BytesIO):
    """What botocore reads a response from: `stream()` for parsed bodies, `read()` for a streaming one."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


JSON_REPLY = (200, {"Content-Type": "application/json"}, json.dumps(ONE_REPLY).encode())


class _Captured:
    """Answers every SageMaker runtime call from inside botocore (before-send) with one reply (status,
    headers, body), keeping the signed request."""

    def __init__(self, reply: tuple[int, dict[str, str], bytes]) -> None:
        self.reply = reply
        self.requests: list[Any] = []

    def __call__(self, request: Any, **_: Any) -> AWSResponse:
        self.requests.append(request)
        status, headers, body = self.reply
        return AWSResponse(request.url, status, headers, _RawBody(body))


def _captured(
    entry: dict[str, Any], reply: tuple[int, dict[str, str], bytes] = JSON_REPLY
) -> tuple[SageMakerEndpointClient, _Captured]:
    client = client_for(entry)
    assert isinstance(client, SageMakerEndpointClient)
    captured = _Captured(reply)
    client._runtime.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", captured)
    return client, captured


@pytest.fixture
def aws_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's keys in the environment, read afresh: boto3's default session keeps the credentials it
    first resolved, which may be an earlier test's (moto's `testing` keys)."""
    import boto3

    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUSERSOWNKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "user-secret")
    for name in ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("aws_keys")
def test_a_local_sagemaker_server_gets_placeholder_keys_never_the_users() -> None:
    client, captured = _captured({"flavor": "sagemaker", "name": "ep", "url": "http://127.0.0.1:9"})
    client.predict(ONE_IMAGE)
    (request,) = captured.requests
    authorization = request.headers["Authorization"].decode()
    assert "Credential=local/" in authorization and "AKIAUSERSOWNKEY" not in authorization
    assert "/us-east-1/sagemaker/aws4_request" in authorization
    assert request.url == "http://127.0.0.1:9/endpoints/ep/invocations"


@pytest.mark.usefixtures("aws_keys")
def test_the_cloud_endpoint_is_signed_for_sagemaker_in_its_region_with_the_users_keys() -> None:
    client, captured = _captured({"flavor": "sagemaker", "name": "ep", "region": "eu-west-1"})
    client.predict(ONE_IMAGE)
    (request,) = captured.requests
    authorization = request.headers["Authorization"].decode()
    assert "Credential=AKIAUSERSOWNKEY/" in authorization
    assert "/eu-west-1/sagemaker/aws4_request" in authorization
    assert request.url == "https://runtime.sagemaker.eu-west-1.amazonaws.com/endpoints/ep/invocations"


@pytest.mark.usefixtures("aws_keys")
def test_the_stacks_http_api_is_signed_for_execute_api() -> None:
    api = "https://abc123.execute-api.eu-west-1.amazonaws.com"
    client, captured = _captured(
        {"flavor": "sagemaker", "name": "ep", "url": api, "region": "eu-west-1", "auth": "iam"}
    )
    client.predict(ONE_IMAGE)
    (request,) = captured.requests
    authorization = request.headers["Authorization"].decode()
    assert "Credential=AKIAUSERSOWNKEY/" in authorization
    assert "/eu-west-1/execute-api/aws4_request" in authorization
    assert request.url == f"{api}/endpoints/ep/invocations"


@pytest.mark.usefixtures("aws_keys")
def test_an_open_http_api_gets_no_signature_and_an_api_without_region_is_us_east_1() -> None:
    api = "https://abc123.execute-api.us-east-1.amazonaws.com"
    client, captured = _captured({"flavor": "sagemaker", "name": "ep", "url": api, "auth": "none"})
    client.predict(ONE_IMAGE)
    (request,) = captured.requests
    assert "Authorization" not in request.headers
    assert client._runtime.meta.region_name == "us-east-1"


def test_botocore_makes_one_attempt_per_call_within_the_clients_timeouts() -> None:
    # Retries are the client's own (four, transient errors only); botocore's would multiply them.
    client = SageMakerEndpointClient(Endpoint(flavor=Flavor.SAGEMAKER, name="ep", url="http://127.0.0.1:9"))
    config = client._runtime.meta.config
    assert config.retries["total_max_attempts"] == 1
    assert (config.connect_timeout, config.read_timeout) == (5.0, 60.0)


def test_sagemaker_errors_are_retried_by_the_client_alone(
    monkeypatch: pytest.MonkeyPatch, waits: list[float]
) -> None:
    unavailable = (503, {"x-amzn-ErrorType": "ServiceUnavailable"}, b'{"message": "busy"}')
    client, captured = _captured(
        {"flavor": "sagemaker", "name": "ep", "url": "http://127.0.0.1:9"}, unavailable
    )
    with pytest.raises(ClientError, match="ServiceUnavailable"):
        client.predict(ONE_IMAGE)
    assert len(captured.requests) == RETRY_ATTEMPTS  # not 4 x botocore's own attempts


def test_the_vertex_client_addresses_the_regional_api_and_the_endpoints_full_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from google.auth.credentials import AnonymousCredentials

    # The cloud client asks Application Default Credentials; none exist here.
    monkeypatch.setattr("google.auth.default", lambda *_, **__: (AnonymousCredentials(), "p"))
    cloud = VertexEndpointClient(
        Endpoint(flavor=Flavor.VERTEX, name="42", region="europe-west4", project="p")
    )
    assert cloud._client.api_endpoint == "europe-west4-aiplatform.googleapis.com"
    assert cloud._path == "projects/p/locations/europe-west4/endpoints/42"
    local = VertexEndpointClient(Endpoint(flavor=Flavor.VERTEX, name="42", url="http://127.0.0.1:9"))
    assert local._client.api_endpoint == "http://127.0.0.1:9"
    assert local._path == "projects/local/locations/us-central1/endpoints/42"


# --- watsonx.ai: the IBM Cloud IAM token ---

SCORING = "https://us-south.ml.cloud.ibm.com/ml/v4/deployments/dep/predictions"
IAM = "https://iam.cloud.ibm.com/identity/token"
SCORES = {"predictions": [{"id": "out", "values": [[0.1] * 10]}]}


@pytest.fixture
def ibm_key(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IBMCLOUD_API_KEY", "IC_API_KEY", "WATSONX_APIKEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IC_API_KEY", "the-key")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    monkeypatch.setattr(client_module.time, "monotonic", clock)
    return clock


@responses.activate
@pytest.mark.usefixtures("ibm_key")
def test_the_api_key_is_exchanged_as_ibm_iam_expects() -> None:
    iam = responses.post(IAM, json={"access_token": "tok", "expires_in": 3600})
    responses.post(SCORING, json=SCORES)
    client_for({"flavor": "watsonx", "name": "dep", "region": "us-south"}).predict(ONE_IMAGE)

    (call,) = iam.calls
    assert parse_qs(str(call.request.body)) == {
        "grant_type": ["urn:ibm:params:oauth:grant-type:apikey"],
        "apikey": ["the-key"],
    }
    assert call.request.headers["Accept"] == "application/json"


@responses.activate
def test_an_empty_key_variable_is_skipped_for_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBMCLOUD_API_KEY", "")
    monkeypatch.setenv("IC_API_KEY", "second")
    monkeypatch.setenv("WATSONX_APIKEY", "third")
    iam = responses.post(IAM, json={"access_token": "tok"})
    responses.post(SCORING, json=SCORES)
    client_for({"flavor": "watsonx", "name": "dep", "region": "us-south"}).predict(ONE_IMAGE)
    assert parse_qs(str(iam.calls[0].request.body))["apikey"] == ["second"]


@responses.activate
@pytest.mark.usefixtures("ibm_key")
def test_another_iam_is_asked_at_its_own_token_route() -> None:
    iam = responses.post("https://private.iam.test/VPX/identity/token", json={"access_token": "tok"})
    responses.post(SCORING, json=SCORES)
    entry = {
        "flavor": "watsonx",
        "name": "dep",
        "region": "us-south",
        "iam_url": "https://private.iam.test/VPX/",
    }
    client_for(entry).predict(ONE_IMAGE)
    assert iam.call_count == 1


@responses.activate
@pytest.mark.usefixtures("ibm_key")
def test_a_refused_key_is_a_clear_error_that_does_not_show_the_key() -> None:
    responses.post(IAM, json={"errorCode": "BXNIM0415E"}, status=400)
    client = client_for({"flavor": "watsonx", "name": "dep", "region": "us-south"})
    with pytest.raises(requests.HTTPError) as refused:
        client.predict(ONE_IMAGE)
    assert str(refused.value) == "IBM Cloud IAM refused the API key (400)"


@responses.activate
@pytest.mark.usefixtures("ibm_key")
@pytest.mark.parametrize(
    ("token", "kept_until"),
    [({"access_token": "tok", "expires_in": 1200}, 1140.0), ({"access_token": "tok"}, 3540.0)],
)
def test_the_token_is_renewed_a_minute_before_it_expires(
    clock: _Clock, token: dict[str, Any], kept_until: float
) -> None:
    iam = responses.post(IAM, json=token)
    responses.post(SCORING, json=SCORES)
    client = client_for({"flavor": "watsonx", "name": "dep", "region": "us-south"})

    client.predict(ONE_IMAGE)
    clock.now += kept_until
    client.predict(ONE_IMAGE)
    assert iam.call_count == 1
    clock.now += 0.5
    client.predict(ONE_IMAGE)
    assert iam.call_count == 2


# --- error bodies and replies ---


def _response(body: str, status: int = 400) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body.encode()
    return response


@pytest.mark.parametrize(
    ("body", "text"),
    [
        # watsonx.ai: a trace and a list of errors
        (
            '{"trace": "t", "errors": [{"code": "a", "message": "first"}, {"message": "second"}]}',
            "first; second",
        ),
        ('{"errors": [{"code": "no_message"}]}', "{'code': 'no_message'}"),
        # Vertex / Google APIs: one error object
        (
            '{"error": {"code": 400, "message": "bad instances", "status": "INVALID_ARGUMENT"}}',
            "bad instances",
        ),
        ('{"error": {"code": 400}}', "{'code': 400}"),
        # SageMaker and API Gateway: a message
        ('{"message": "Too Many Requests"}', "Too Many Requests"),
        # anything else: the body as it is
        ('{"errors": [], "detail": "x"}', '{"errors": [], "detail": "x"}'),
        ('{"error": "plain"}', '{"error": "plain"}'),
        ('["a", "list"]', '["a", "list"]'),
        ("upstream connect error", "upstream connect error"),
    ],
)
def test_an_error_body_is_worded_by_its_message(body: str, text: str) -> None:
    assert _error_text(_response(body)) == text


def test_a_long_error_body_that_is_not_json_is_cut_at_500_characters() -> None:
    assert _error_text(_response("x" * 600)) == "x" * 500
    assert _error_text(_response('["' + "y" * 600 + '"]')) == ('["' + "y" * 600)[:500]


def test_scores_that_are_not_a_distribution_go_through_a_stable_softmax() -> None:
    huge_logits = as_probabilities([[1000.0] + [0.0] * 9], 1)
    assert np.isfinite(huge_logits).all() and huge_logits[0, 0] == pytest.approx(1.0)
    # A row that sums to 1 but holds a negative value is not probabilities either.
    negative = as_probabilities([[1.5, -0.5] + [0.0] * 8], 1)
    assert (negative > 0).all() and negative.sum() == pytest.approx(1.0)
    # Within 1e-3 of a distribution: kept as it is; further: made one.
    near = [[0.1] * 9 + [0.1009]]
    np.testing.assert_array_equal(as_probabilities(near, 1), np.asarray(near, np.float32))
    far = as_probabilities([[0.1] * 9 + [0.102]], 1)
    assert far.sum() == pytest.approx(1.0) and far[0, 9] < 0.11
    assert as_probabilities([[0.1] * 10], 1).dtype == np.float32


def test_a_reply_of_the_wrong_shape_says_what_came_and_what_was_expected() -> None:
    with pytest.raises(ValueError) as wrong:
        as_probabilities(np.zeros((2, 10)), 3)
    assert str(wrong.value) == "the endpoint returned scores of shape [2, 10]; expected [3, 10]"


def test_resolve_endpoint_keeps_every_option_given_and_drops_the_empty_ones() -> None:
    assert resolve_endpoint(
        "watsonx",
        "dep",
        url="http://127.0.0.1:9/prefix-X//",
        region="us-south",
        project="p",
        version="2025-01-01",
    ) == {
        "flavor": "watsonx",
        "name": "dep",
        "url": "http://127.0.0.1:9/prefix-X",
        "region": "us-south",
        "project": "p",
        "version": "2025-01-01",
    }
    assert resolve_endpoint("sagemaker", "ep", url="", region="", project=None) == {
        "flavor": "sagemaker",
        "name": "ep",
    }


def test_images_become_float32_whatever_they_came_as() -> None:
    # float64 thirds would be written with 16 digits and read back as other float32 pixels.
    thirds = np.full((1, 784), 1 / 3, dtype=np.float64)
    checked = check_images(thirds)
    assert checked.dtype == np.float32
    assert csv_payload(checked).decode().split(",")[0] == "0.33333334"


@pytest.mark.parametrize("shape", [(2, 27, 28), (2, 28, 27), (28, 28)])
def test_only_28x28_images_are_flattened_the_rest_is_refused_by_its_shape(
    shape: tuple[int, ...],
) -> None:
    with pytest.raises(ValueError) as refused:
        check_images(np.zeros(shape))
    assert str(refused.value) == (
        f"images must be a non-empty float array [N, 784] or [N, 28, 28]; got {shape}"
    )


def test_pixels_out_of_range_are_refused_in_these_words() -> None:
    with pytest.raises(ValueError) as refused:
        check_images(np.full((1, 784), -0.1))
    assert str(refused.value) == "pixel values must be finite and in [0, 1]"


def test_a_sagemaker_reply_without_a_content_type_is_read_as_json() -> None:
    untyped = (200, {}, json.dumps(ONE_REPLY).encode())
    client, _ = _captured({"flavor": "sagemaker", "name": "ep", "url": "http://127.0.0.1:9"}, untyped)
    np.testing.assert_allclose(client.predict(ONE_IMAGE), [[0.1] * 10])


def test_logits_of_several_images_are_made_probabilities_row_by_row() -> None:
    logits = np.array([[2.0, 1.0] + [0.0] * 8, [0.0] * 9 + [5.0], [-1.0] * 10], dtype=np.float32)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(as_probabilities(logits, 3), expected, rtol=1e-6)
    # Each row shifted by its own maximum: rows of very different scale both stay finite.
    apart = as_probabilities([[1000.0] + [0.0] * 9, [-1000.0] * 9 + [-999.0]], 2)
    assert np.isfinite(apart).all() and apart[1, 9] > apart[1, 0]


def test_blank_lines_anywhere_in_a_csv_reply_are_skipped() -> None:
    body = b"0.1,0.9\n\n0.7,0.3\n\n"
    assert sagemaker_reply_scores(body, "text/csv; charset=utf-8; header=absent") == [[0.1, 0.9], [0.7, 0.3]]


@pytest.mark.usefixtures("aws_keys")
def test_a_csv_reply_is_read_as_csv_through_the_client() -> None:
    csv_reply = (200, {"Content-Type": "text/csv"}, b",".join([b"0.1"] * 10))
    client, _ = _captured({"flavor": "sagemaker", "name": "ep", "url": "http://127.0.0.1:9"}, csv_reply)
    np.testing.assert_allclose(client.predict(ONE_IMAGE), [[0.1] * 10])


def test_a_cloud_sagemaker_endpoint_without_a_region_takes_the_users_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    client = SageMakerEndpointClient(Endpoint(flavor=Flavor.SAGEMAKER, name="ep"))
    assert client._runtime.meta.region_name == "eu-central-1"


@pytest.mark.parametrize(
    "entry",
    [
        {"flavor": "sagemaker", "name": "ep", "url": "http://127.0.0.1:9"},
        {"flavor": "vertex", "name": "1", "url": "http://127.0.0.1:9"},
        {"flavor": "watsonx", "name": "d", "url": "http://127.0.0.1:9"},
    ],
)
def test_every_client_keeps_the_endpoint_it_was_made_for(entry: dict[str, Any]) -> None:
    assert client_for(entry).endpoint == Endpoint.model_validate(entry)


def test_a_cloud_vertex_client_calls_with_the_users_credentials_and_a_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from google.auth.credentials import AnonymousCredentials

    users = AnonymousCredentials()  # stands for the credentials Application Default Credentials finds
    monkeypatch.setattr("google.auth.default", lambda *_, **__: (users, "p"))
    client = VertexEndpointClient(
        Endpoint(flavor=Flavor.VERTEX, name="42", region="us-central1", project="p")
    )
    assert client._client._transport._credentials is users

    calls: list[dict[str, Any]] = []

    def predict(**kwargs: Any) -> Any:
        calls.append(kwargs)
        return type("Reply", (), {"predictions": [{"probabilities": [0.1] * 10}]})()

    monkeypatch.setattr(client._client, "predict", predict)
    client.predict(ONE_IMAGE)
    assert (
        calls[0]["timeout"] == 60.0
        and calls[0]["endpoint"] == "projects/p/locations/us-central1/endpoints/42"
    )


def test_a_missing_api_key_names_every_variable_read(ibm_key: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IC_API_KEY")
    client = client_for({"flavor": "watsonx", "name": "dep", "region": "us-south"})
    with pytest.raises(ValueError) as missing:
        client.predict(ONE_IMAGE)
    assert str(missing.value) == (
        "set IBMCLOUD_API_KEY or IC_API_KEY or WATSONX_APIKEY to an IBM Cloud API key to call watsonx.ai"
    )


@responses.activate
@pytest.mark.usefixtures("ibm_key")
def test_an_iam_that_is_briefly_unavailable_is_asked_again(waits: list[float]) -> None:
    iam = responses.post(IAM, json={"errorCode": "BXNIM0001E"}, status=503)
    responses.post(IAM, json={"access_token": "tok"})
    responses.post(SCORING, json=SCORES)
    client_for({"flavor": "watsonx", "name": "dep", "region": "us-south"}).predict(ONE_IMAGE)
    assert iam.call_count == 1 and len(responses.calls) == 3 and waits == [0.25]


@pytest.mark.usefixtures("ibm_key")
def test_every_watsonx_call_has_the_clients_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    client = client_for({"flavor": "watsonx", "name": "dep", "region": "us-south"})
    assert isinstance(client, WatsonxEndpointClient)
    timeouts: list[Any] = []

    def post(url: str, **kwargs: Any) -> requests.Response:
        timeouts.append(kwargs.get("timeout"))
        body = {"access_token": "tok"} if url == IAM else SCORES
        return _response(json.dumps(body), status=200)

    monkeypatch.setattr(client._session, "post", post)
    client.predict(ONE_IMAGE)
    assert timeouts == [(5.0, 60.0), (5.0, 60.0)]


def test_watsonx_images_go_in_the_shape_the_stored_model_declares(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = {"flavor": "watsonx", "name": "d", "url": "http://127.0.0.1:9", "input_shape": [784]}
    client = client_for(entry)
    assert isinstance(client, WatsonxEndpointClient)
    bodies: list[Any] = []

    def post(url: str, **kwargs: Any) -> requests.Response:
        bodies.append(kwargs["json"])
        return _response(json.dumps(SCORES), status=200)

    monkeypatch.setattr(client._session, "post", post)
    client.predict(ONE_IMAGE)
    assert np.asarray(bodies[0]["input_data"][0]["values"]).shape == (1, 784)

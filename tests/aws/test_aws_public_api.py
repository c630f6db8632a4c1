"""The public API's Lambda handler: checks requests, forwards them with InvokeEndpoint, maps errors.

The sagemaker-runtime client is a real boto3 client under botocore's Stubber, so the request the
handler would send to SageMaker is checked parameter by parameter.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from infra.aws.predict_lambda import handler

ENDPOINT = "mnist-aws-xgboost-8758b747"
SCORES = {"predictions": [{"score": [0.1] * 10}]}


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    client = boto3.client(
        "sagemaker-runtime", region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test"
    )
    monkeypatch.setattr(handler, "_runtime_client", client)
    monkeypatch.setenv(handler.ENDPOINT_NAME_ENV, ENDPOINT)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def _row(value: float = 0.5) -> str:
    return ",".join([str(value)] * handler.N_PIXELS)


def _event(
    body: str, path: str = "/predict", content_type: str = "text/csv", **headers: str
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "rawPath": path,
        "headers": {"Content-Type": content_type, **headers},
        "body": body,
        "isBase64Encoded": False,
    }
    if path.startswith("/endpoints/"):
        event["pathParameters"] = {"name": path.split("/")[2]}
    return event


def _body(payload: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(payload), len(payload))


def test_forwards_csv_to_the_endpoint_and_returns_its_answer(stubbed: Stubber) -> None:
    body = f"{_row()}\n{_row(0.25)}\n"
    stubbed.add_response(
        "invoke_endpoint",
        {"Body": _body(json.dumps(SCORES).encode()), "ContentType": "application/json"},
        {"EndpointName": ENDPOINT, "ContentType": "text/csv", "Accept": "application/json", "Body": body},
    )
    response = handler.handler(_event(body, Accept="application/json"), None)
    assert response["statusCode"] == 200
    assert response["headers"]["content-type"] == "application/json"
    assert json.loads(response["body"]) == SCORES


def test_speaks_the_sagemaker_runtime_path_and_defaults_to_csv_answers(stubbed: Stubber) -> None:
    stubbed.add_response(
        "invoke_endpoint",
        {"Body": _body(b"0.1,0.9\n"), "ContentType": "text/csv"},
        {"EndpointName": ENDPOINT, "ContentType": "text/csv", "Accept": "text/csv", "Body": f"{_row()}\n"},
    )
    response = handler.handler(_event(_row(), path=f"/endpoints/{ENDPOINT}/invocations"), None)
    assert response["statusCode"] == 200 and response["body"] == "0.1,0.9\n"


def test_accepts_base64_bodies(stubbed: Stubber) -> None:
    stubbed.add_response(
        "invoke_endpoint",
        {"Body": _body(b"{}"), "ContentType": "application/json"},
        {"EndpointName": ENDPOINT, "ContentType": "text/csv", "Accept": "text/csv", "Body": f"{_row()}\n"},
    )
    event = _event(base64.b64encode(_row().encode()).decode())
    event["isBase64Encoded"] = True
    assert handler.handler(event, None)["statusCode"] == 200


def test_unknown_endpoint_name_is_a_404_and_nothing_is_invoked(stubbed: Stubber) -> None:
    response = handler.handler(_event(_row(), path="/endpoints/someone-else/invocations"), None)
    assert response["statusCode"] == 404
    assert "someone-else" in json.loads(response["body"])["message"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "says"),
    [
        ("", "text/csv", 400, "empty"),
        (",".join(["0.5"] * 783), "text/csv", 400, "expected 784 values"),
        (_row(1.5), "text/csv", 400, "[0, 1]"),
        (_row().replace("0.5", "x", 1), "text/csv", 400, "number"),
        ("\n".join([_row()] * (handler.MAX_IMAGES_PER_REQUEST + 1)), "text/csv", 400, "at most"),
        (json.dumps({"instances": [[0.5] * 784]}), "application/json", 415, "Content-Type"),
    ],
)
def test_malformed_requests_get_a_json_message_and_never_reach_the_endpoint(
    stubbed: Stubber, body: str, content_type: str, status: int, says: str
) -> None:
    response = handler.handler(_event(body, content_type=content_type), None)
    assert response["statusCode"] == status
    assert says in json.loads(response["body"])["message"]


def test_unsupported_accept_is_a_415(stubbed: Stubber) -> None:
    response = handler.handler(_event(_row(), Accept="text/html"), None)
    assert response["statusCode"] == 415


@pytest.mark.parametrize(
    ("code", "extra", "status"),
    [
        ("ModelError", {"OriginalStatusCode": 415}, 415),
        ("ModelError", {"OriginalStatusCode": 500}, 502),
        ("ThrottlingException", {}, 429),
        ("ServiceUnavailable", {}, 503),
        ("ValidationError", {}, 502),
    ],
)
def test_endpoint_errors_map_to_a_status_that_says_whose_fault_it_is(
    stubbed: Stubber, code: str, extra: dict[str, Any], status: int
) -> None:
    stubbed.add_client_error(
        "invoke_endpoint",
        service_error_code=code,
        service_message="boom",
        http_status_code=400,
        response_meta=None,
    )
    if extra:  # Stubber cannot put top-level fields in the error response; patch them in.
        stubbed.client.meta.events.register_first(
            "after-call.sagemaker-runtime.InvokeEndpoint",
            lambda http_response, parsed, **_: parsed.update(extra),
        )
    response = handler.handler(_event(_row()), None)
    assert response["statusCode"] == status
    assert json.loads(response["body"])["message"]


LONG_LINE = _row(0.003921568859368563) + "\n"  # 784 values written at full double precision: ~16 KB


def _within(limit: int) -> str:
    """CSV lines of long decimals, as many as stay within `limit` bytes (fewer than 500 images)."""
    return LONG_LINE * (limit // len(LONG_LINE))


@pytest.mark.parametrize("base64_encoded", [False, True])
def test_a_body_over_the_bound_gets_413_in_the_documented_error_shape(
    stubbed: Stubber, base64_encoded: bool
) -> None:
    body = _within(handler.MAX_BODY_BYTES) + LONG_LINE  # over the bound by one line
    assert len(body) > handler.MAX_BODY_BYTES
    event = _event(base64.b64encode(body.encode()).decode() if base64_encoded else body)
    event["isBase64Encoded"] = base64_encoded
    response = handler.handler(event, None)  # the stub would fail on any InvokeEndpoint
    assert response["statusCode"] == 413
    assert response["headers"][handler.ERROR_TYPE_HEADER] == "ValidationError"
    message = json.loads(response["body"])
    assert message["__type"] == "ValidationError"
    assert f"at most {handler.MAX_BODY_BYTES} bytes of CSV per request" in message["message"]


def test_every_body_within_the_bound_fits_lambdas_6_mb_even_base64_encoded() -> None:
    """The largest body the function takes, base64-encoded by API Gateway, in an event with 10 KB of headers
    (an HTTP API's maximum) and a request context, stays under Lambda's synchronous payload limit."""
    body = "x" * handler.MAX_BODY_BYTES
    event = _event(base64.b64encode(body.encode()).decode(), **{"x-padding": "p" * 10 * 1024})
    event["isBase64Encoded"] = True
    event["requestContext"] = {"http": {"method": "POST", "path": "/predict"}, "requestId": "r" * 64}
    assert len(json.dumps(event).encode()) < 6 * 1024 * 1024


def test_the_largest_accepted_body_is_forwarded(stubbed: Stubber) -> None:
    body = _within(handler.MAX_BODY_BYTES)
    lines = body.count("\n")
    assert lines <= handler.MAX_IMAGES_PER_REQUEST
    stubbed.add_response(
        "invoke_endpoint",
        {"Body": _body(b"{}"), "ContentType": "application/json"},
        {"EndpointName": ENDPOINT, "ContentType": "text/csv", "Accept": "text/csv", "Body": body},
    )
    assert handler.handler(_event(body), None)["statusCode"] == 200

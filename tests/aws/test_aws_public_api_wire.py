"""The public API as boto3 sees it: errors in the shape botocore's rest-json parser reads, throttling
retried by mnistctl's client, requests signed for API Gateway's IAM authorization, and time limits
that fit inside API Gateway's.

API Gateway is emulated inside botocore (a `before-send` hook turns the signed HTTP request into the
payload-2.0 event the Lambda receives and its answer into the HTTP response), so the real client code
path runs from signing to parsing; the SageMaker runtime behind the handler is a stubbed boto3 client.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import boto3
import numpy as np
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ClientError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from infra.aws.predict_lambda import handler
from infra.settings import PublicApi, load_settings
from mnistctl.client import SageMakerEndpointClient, client_for

ENDPOINT = "mnist-aws-xgboost-8758b747"
API_URL = "https://a1b2c3d4e5.execute-api.us-east-1.amazonaws.com"
REGION = "us-east-1"


class _RawBody(io.BytesIO):
    """What botocore reads a response body from (urllib3's interface: `stream` and `read`)."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.getvalue()


class ApiGateway:
    """Sends each request to the Lambda handler as API Gateway (HTTP API, payload 2.0) would."""

    def __init__(self) -> None:
        self.requests: list[AWSPreparedRequest] = []

    def __call__(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        self.requests.append(request)
        path = urlsplit(request.url).path
        body = request.body if isinstance(request.body, bytes) else (request.body or b"")
        event = {
            "rawPath": path,
            "headers": {
                k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()
            },
            "body": body.decode() if isinstance(body, bytes) else body.read().decode(),
            "isBase64Encoded": False,
            "pathParameters": {"name": path.split("/")[2]},
        }
        reply = handler.handler(event, None)
        raw = _RawBody(reply["body"].encode())
        return AWSResponse(request.url, reply["statusCode"], reply["headers"], raw)


@pytest.fixture
def sagemaker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    """The handler's sagemaker-runtime client, stubbed."""
    client = boto3.client(
        "sagemaker-runtime", region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test"
    )
    monkeypatch.setattr(handler, "_runtime_client", client)
    monkeypatch.setenv(handler.ENDPOINT_NAME_ENV, ENDPOINT)
    with Stubber(client) as stubber:
        yield stubber


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def _caller(gateway: ApiGateway) -> Any:
    """A plain boto3 sagemaker-runtime client whose requests reach `gateway`, one attempt each."""
    from botocore.config import Config

    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=API_URL,
        region_name=REGION,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"total_max_attempts": 1}),
    )
    client.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", gateway)
    return client


def _row() -> str:
    return ",".join(["0.5"] * handler.N_PIXELS)


def _reply(payload: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"Body": StreamingBody(io.BytesIO(payload), len(payload)), "ContentType": content_type}


@pytest.mark.parametrize(
    ("sagemaker_code", "status", "code", "says"),
    [
        ("ThrottlingException", 429, "ThrottlingException", "throttling"),
        ("ServiceUnavailable", 503, "ServiceUnavailable", "not available"),
        ("ValidationError", 502, "InternalDependencyException", "boom"),
    ],
)
def test_botocore_reads_the_code_and_message_of_endpoint_errors(
    sagemaker: Stubber, sagemaker_code: str, status: int, code: str, says: str
) -> None:
    sagemaker.add_client_error("invoke_endpoint", service_error_code=sagemaker_code, service_message="boom")
    with pytest.raises(ClientError) as raised:
        _caller(ApiGateway()).invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Body=_row())
    error = raised.value.response
    assert error["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error["Error"]["Code"] == code
    assert says in error["Error"]["Message"]


def test_botocore_reads_the_code_and_message_of_a_rejected_request(sagemaker: Stubber) -> None:
    with pytest.raises(ClientError) as raised:
        _caller(ApiGateway()).invoke_endpoint(EndpointName=ENDPOINT, ContentType="text/csv", Body="0.5,2\n")
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert "expected 784 values" in raised.value.response["Error"]["Message"]
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_throttling_is_retried_by_mnistctl_and_every_request_is_signed_for_api_gateway(
    sagemaker: Stubber, credentials: None
) -> None:
    sagemaker.add_client_error(
        "invoke_endpoint", service_error_code="ThrottlingException", http_status_code=400
    )
    probabilities = [[0.1] * 10]
    sagemaker.add_response(
        "invoke_endpoint",
        _reply(json.dumps({"predictions": [{"probabilities": p} for p in probabilities]}).encode()),
    )
    client = client_for(
        {"flavor": "sagemaker", "name": ENDPOINT, "region": REGION, "url": API_URL, "auth": "iam"}
    )
    assert isinstance(client, SageMakerEndpointClient)
    gateway = ApiGateway()
    client._runtime.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", gateway)

    scores = client.predict(np.full((1, handler.N_PIXELS), 0.5, dtype=np.float32))

    np.testing.assert_allclose(scores, np.asarray(probabilities, dtype=np.float32))
    assert len(gateway.requests) == 2, "one throttled attempt, one retry"
    for request in gateway.requests:
        authorization = request.headers["Authorization"]
        authorization = authorization.decode() if isinstance(authorization, bytes) else authorization
        assert f"/{REGION}/execute-api/aws4_request" in authorization


def test_an_open_api_is_called_without_a_signature(sagemaker: Stubber) -> None:
    sagemaker.add_response(
        "invoke_endpoint",
        _reply(b'{"predictions": [{"probabilities": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]}]}'),
    )
    client = client_for(
        {"flavor": "sagemaker", "name": ENDPOINT, "region": REGION, "url": API_URL, "auth": "none"}
    )
    assert isinstance(client, SageMakerEndpointClient)
    gateway = ApiGateway()
    client._runtime.meta.events.register("before-send.sagemaker-runtime.InvokeEndpoint", gateway)
    client.predict(np.full((1, handler.N_PIXELS), 0.5, dtype=np.float32))
    assert "Authorization" not in gateway.requests[0].headers


def test_the_function_gives_up_on_sagemaker_before_api_gateway_gives_up_on_it() -> None:
    config = handler.runtime_config()
    attempts = config.retries["total_max_attempts"]
    worst_case = (
        attempts * (config.connect_timeout + config.read_timeout)
        + (attempts - 1) * handler.MAX_BACKOFF_SECONDS
    )
    assert worst_case < handler.API_GATEWAY_TIMEOUT_SECONDS
    assert config.retries["mode"] == "standard", "standard mode retries ThrottlingException with backoff"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, PublicApi.OFF),
        ("off", PublicApi.OFF),
        ("iam", PublicApi.IAM),
        ("open", PublicApi.OPEN),
        ("true", PublicApi.IAM),
        ("false", PublicApi.OFF),
    ],
)
def test_public_api_setting(raw: str | None, expected: PublicApi) -> None:
    config = {"publicApi": raw} if raw is not None else {}
    settings = load_settings("aws", _Config(config), aws_config=_Config({"region": REGION}))
    assert settings.aws is not None and settings.aws.public_api is expected


def test_an_unknown_public_api_value_names_the_key_and_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r"mnist-platform:publicApi.*'off', 'iam' or 'open'"):
        load_settings("aws", _Config({"publicApi": "anonymous"}), aws_config=_Config({"region": REGION}))


class _Config(dict):
    def get(self, key: str) -> str | None:  # type: ignore[override]
        return dict.get(self, key)

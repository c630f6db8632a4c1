"""The public API's function: check a request, forward it to the SageMaker endpoint, map errors.

Runs in AWS Lambda (Python 3.12 runtime, which ships boto3) as a single file, so it imports only the
standard library and boto3. Two routes reach it through an API Gateway HTTP API (payload format 2.0):

- `POST /endpoints/{name}/invocations`: the SageMaker runtime wire contract, so the same boto3
  `sagemaker-runtime` client works with `endpoint_url=<API URL>` (by default the routes use IAM
  authorization: the client signs with SigV4 for `execute-api`; `publicApi: open` drops that);
- `POST /predict`: the same, for plain HTTP clients.

Bodies are `text/csv`, one image per line, 784 pixel values in [0, 1], no header; `Accept` is
`text/csv` (default) or `application/json`. Malformed input gets a 400/415 and is never sent to the
endpoint. Every error is answered in the shape botocore's rest-json parser reads (the one SageMaker
runtime uses): the code in the `x-amzn-ErrorType` header and as `__type`, the text as `message`, so a
boto3 caller sees `ThrottlingException` and its message, and its retry logic can act on them.
"""

from __future__ import annotations

import base64
import json
import math
import os
from typing import Any

ENDPOINT_NAME_ENV = "ENDPOINT_NAME"
N_PIXELS = 784
# mnistctl's SageMaker client sends up to 500 images (~2 MB of CSV, under Lambda's 6 MB request limit).
MAX_IMAGES_PER_REQUEST = 500
# Lambda refuses a synchronous invocation whose event is over 6 MB, and API Gateway then answers its own
# generic error, not this function's. So the function takes at most MAX_BODY_BYTES of CSV: with API
# Gateway's base64 encoding of the body (4 bytes for every 3) and the rest of the event (headers, at most
# 10 KB on an HTTP API, and the request context) a body under the bound always reaches the function, and
# one over it gets this API's 413 while it still can (docs/aws.md says what happens past 6 MB).
LAMBDA_SYNC_PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024
EVENT_ENVELOPE_ALLOWANCE_BYTES = 64 * 1024
MAX_BODY_BYTES = (LAMBDA_SYNC_PAYLOAD_LIMIT_BYTES - EVENT_ENVELOPE_ALLOWANCE_BYTES) * 3 // 4
CSV = "text/csv"
JSON = "application/json"
ACCEPTED_RESPONSE_TYPES = (CSV, JSON)
ERROR_TYPE_HEADER = "x-amzn-ErrorType"
# SageMaker runtime's own error codes, so boto3 callers handle them as they would SageMaker's.
VALIDATION_ERROR = "ValidationError"
MODEL_ERROR = "ModelError"
THROTTLING = "ThrottlingException"  # in botocore's throttling codes: retried with backoff
SERVICE_UNAVAILABLE = "ServiceUnavailable"
INTERNAL_DEPENDENCY = "InternalDependencyException"

# Time limits: API Gateway gives the integration API_GATEWAY_TIMEOUT_SECONDS, so every InvokeEndpoint
# attempt, its retry and the backoff between them must end before (botocore's default would wait 60 s
# for one read and try up to 3 times, long after API Gateway has answered 503 to the caller).
API_GATEWAY_TIMEOUT_SECONDS = 29
CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 11
MAX_ATTEMPTS = 2
MAX_BACKOFF_SECONDS = 1  # botocore standard mode: the first retry waits up to 1 s (random * 2**0)

_runtime_client: Any = None


class RequestError(Exception):
    """The caller sent something the endpoint cannot score; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def runtime_config() -> Any:
    """Timeouts and retries that fit inside API Gateway's integration timeout (see the constants)."""
    from botocore.config import Config

    return Config(
        connect_timeout=CONNECT_TIMEOUT_SECONDS,
        read_timeout=READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
    )


def _client() -> Any:
    # Created on first use and kept for the life of the Lambda execution environment.
    global _runtime_client
    if _runtime_client is None:
        import boto3

        _runtime_client = boto3.client("sagemaker-runtime", config=runtime_config())
    return _runtime_client


def _header(event: dict[str, Any], name: str) -> str | None:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    return headers.get(name)


def _media_type(value: str | None) -> str | None:
    return value.split(";")[0].strip().lower() if value else None


def parse_body(event: dict[str, Any]) -> str:
    """The request's CSV body, checked: 1..MAX images, 784 numbers in [0, 1] each."""
    content_type = _media_type(_header(event, "content-type"))
    if content_type != CSV:
        raise RequestError(
            415, f"Content-Type must be {CSV} (one image per line, {N_PIXELS} values), got {content_type}"
        )
    raw = event.get("body") or ""
    # Checked before decoding or splitting anything: base64 text is 4/3 of the bytes it encodes.
    encoded_limit = 4 * -(-MAX_BODY_BYTES // 3) if event.get("isBase64Encoded") else MAX_BODY_BYTES
    if len(raw) > encoded_limit:
        raise _too_large(len(raw) * 3 // 4 if event.get("isBase64Encoded") else len(raw))
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(raw).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise RequestError(400, "the body is not valid base64-encoded UTF-8 text") from None
    if len(raw.encode("utf-8")) > MAX_BODY_BYTES:
        raise _too_large(len(raw.encode("utf-8")))
    lines = [line for line in raw.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines:
        raise RequestError(400, f"the body is empty: send one line of {N_PIXELS} comma-separated values each")
    if len(lines) > MAX_IMAGES_PER_REQUEST:
        raise RequestError(400, f"at most {MAX_IMAGES_PER_REQUEST} images per request, got {len(lines)}")
    for number, line in enumerate(lines, start=1):
        cells = line.split(",")
        if len(cells) != N_PIXELS:
            raise RequestError(400, f"line {number}: expected {N_PIXELS} values, got {len(cells)}")
        try:
            values = [float(cell) for cell in cells]
        except ValueError:
            raise RequestError(400, f"line {number}: every value must be a number") from None
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise RequestError(400, f"line {number}: pixel values must lie in [0, 1]")
    return "\n".join(lines) + "\n"


def _too_large(size: int) -> RequestError:
    return RequestError(
        413,
        f"the body is {size} bytes; at most {MAX_BODY_BYTES} bytes of CSV per request (Lambda takes 6 MB "
        "per invocation, base64 included): send fewer images per request",
    )


def parse_accept(event: dict[str, Any]) -> str:
    accept = _media_type(_header(event, "accept"))
    if accept in (None, "*/*"):
        return CSV
    if accept not in ACCEPTED_RESPONSE_TYPES:
        raise RequestError(415, f"Accept must be one of {', '.join(ACCEPTED_RESPONSE_TYPES)}, got {accept}")
    return accept


def error_response(status: int, code: str, message: str) -> dict[str, Any]:
    """An error as AWS JSON services answer it: botocore reads the code from `x-amzn-ErrorType` (or
    `__type`) and the text from `message`."""
    return {
        "statusCode": status,
        "headers": {"content-type": JSON, ERROR_TYPE_HEADER: code},
        "body": json.dumps({"__type": code, "message": message}),
    }


def _error_for(error: Any) -> tuple[int, str, str]:
    """Map a botocore ClientError from InvokeEndpoint to this API's status, error code and message."""
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", str(error))
    if code == MODEL_ERROR:
        original = int(error.response.get("OriginalStatusCode") or 0)
        # The container rejected the input (4xx): the caller's problem; anything else is the model's.
        status = original if 400 <= original < 500 else 502
        return status, MODEL_ERROR, f"the model could not score the request: {message}"
    if code in {"ThrottlingException", "TooManyRequestsException", "Throttling"}:
        return 429, THROTTLING, "the endpoint is throttling requests; retry with backoff"
    if code in {SERVICE_UNAVAILABLE, "ModelNotReadyException"}:
        return 503, code, f"the endpoint is not available: {message}"
    return 502, INTERNAL_DEPENDENCY, f"the endpoint call failed ({code}): {message}"


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    endpoint_name = os.environ[ENDPOINT_NAME_ENV]
    requested = (event.get("pathParameters") or {}).get("name")
    if requested is not None and requested != endpoint_name:
        message = f"no endpoint named {requested!r} here; this API serves {endpoint_name!r}"
        return error_response(404, VALIDATION_ERROR, message)
    try:
        body = parse_body(event)
        accept = parse_accept(event)
    except RequestError as error:
        return error_response(error.status, VALIDATION_ERROR, str(error))

    from botocore.exceptions import ClientError, ConnectionError, ConnectTimeoutError, ReadTimeoutError

    try:
        response = _client().invoke_endpoint(
            EndpointName=endpoint_name, ContentType=CSV, Accept=accept, Body=body
        )
    except ClientError as error:
        return error_response(*_error_for(error))
    except (ConnectTimeoutError, ReadTimeoutError, ConnectionError) as error:
        return error_response(503, SERVICE_UNAVAILABLE, f"the endpoint did not answer in time: {error}")
    return {
        "statusCode": 200,
        "headers": {"content-type": response.get("ContentType", accept)},
        "body": response["Body"].read().decode("utf-8"),
    }

"""The public API's function: check a request, forward it to the SageMaker endpoint, map errors.

Runs in AWS Lambda (Python 3.12 runtime, which ships boto3) as a single file, so it imports only the
standard library and boto3. Two routes reach it through an API Gateway HTTP API (payload format 2.0):

- `POST /endpoints/{name}/invocations`: the SageMaker runtime wire contract, so the same boto3
  `sagemaker-runtime` client works with `endpoint_url=<API URL>` (the API has no authorizer, so the
  client's signature is not checked; the API is throttled instead);
- `POST /predict`: the same, for plain HTTP clients.

Bodies are `text/csv`, one image per line, 784 pixel values in [0, 1], no header; `Accept` is
`text/csv` (default) or `application/json`. Malformed input gets a 400/415 with a JSON message and is
never sent to the endpoint.
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
CSV = "text/csv"
JSON = "application/json"
ACCEPTED_RESPONSE_TYPES = (CSV, JSON)

_runtime_client: Any = None


class RequestError(Exception):
    """The caller sent something the endpoint cannot score; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _client() -> Any:
    # Created on first use and kept for the life of the Lambda execution environment.
    global _runtime_client
    if _runtime_client is None:
        import boto3

        _runtime_client = boto3.client("sagemaker-runtime")
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
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(raw).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            raise RequestError(400, "the body is not valid base64-encoded UTF-8 text") from None
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


def parse_accept(event: dict[str, Any]) -> str:
    accept = _media_type(_header(event, "accept"))
    if accept in (None, "*/*"):
        return CSV
    if accept not in ACCEPTED_RESPONSE_TYPES:
        raise RequestError(415, f"Accept must be one of {', '.join(ACCEPTED_RESPONSE_TYPES)}, got {accept}")
    return accept


def _json_response(status: int, payload: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": JSON}, "body": json.dumps(payload)}


def _status_for(error: Any) -> tuple[int, str]:
    """Map a botocore ClientError from InvokeEndpoint to the status this API answers with."""
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", str(error))
    if code == "ModelError":
        original = int(error.response.get("OriginalStatusCode") or 0)
        # The container rejected the input (4xx): the caller's problem; anything else is the model's.
        status = original if 400 <= original < 500 else 502
        return status, f"the model could not score the request: {message}"
    if code in {"ThrottlingException", "TooManyRequestsException"}:
        return 429, "the endpoint is throttling requests; retry with backoff"
    if code in {"ServiceUnavailable", "ModelNotReadyException"}:
        return 503, f"the endpoint is not available: {message}"
    return 502, f"the endpoint call failed ({code}): {message}"


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    endpoint_name = os.environ[ENDPOINT_NAME_ENV]
    requested = (event.get("pathParameters") or {}).get("name")
    if requested is not None and requested != endpoint_name:
        message = f"no endpoint named {requested!r} here; this API serves {endpoint_name!r}"
        return _json_response(404, {"error": message})
    try:
        body = parse_body(event)
        accept = parse_accept(event)
    except RequestError as error:
        return _json_response(error.status, {"error": str(error)})

    from botocore.exceptions import ClientError

    try:
        response = _client().invoke_endpoint(
            EndpointName=endpoint_name, ContentType=CSV, Accept=accept, Body=body
        )
    except ClientError as error:
        status, message = _status_for(error)
        return _json_response(status, {"error": message})
    return {
        "statusCode": 200,
        "headers": {"content-type": response.get("ContentType", accept)},
        "body": response["Body"].read().decode("utf-8"),
    }

"""The plumbing every fake service shares: a Flask app served over HTTPS on 127.0.0.1 in a thread,
with the request log, the failure injection and IBM's error shapes.

One port per service, as IBM Cloud has one host per service (iam.cloud.ibm.com,
resource-controller.cloud.ibm.com, s3.<region>.cloud-object-storage.appdomain.cloud, ...), so a client
that calls the wrong service URL gets a 404 instead of a lucky answer.
"""

from __future__ import annotations

import logging
import re
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, make_server

from .state import CloudState

LOOPBACK = "127.0.0.1"
# werkzeug logs every request at INFO; the fakes' own request log (`requests`) is what tests read.
logging.getLogger("werkzeug").setLevel(logging.WARNING)


@dataclass
class RecordedRequest:
    """One request a fake received, as the tests inspect it."""

    service: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class InjectedFailure:
    """`times` more requests matching `method` and `path` (a regex searched in the path) get `status`."""

    method: str
    path: re.Pattern[str]
    status: int
    times: int
    service: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    after_commit: bool = False
    """Answer `status` only after the request was carried out (a 5xx from a proxy or a timeout after the
    service committed): what makes a blind retry of a create make a second copy."""


class IbmApiError(Exception):
    """An error a fake answers with IBM's API error model (the API Handbook's `trace`/`errors` shape,
    which ibm-cloud-sdk-core reads `errors[0].message` from, and the watsonx.ai services answer)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def ibm_error_body(status: int, code: str, message: str) -> dict[str, Any]:
    return {
        "trace": uuid.uuid4().hex,
        "errors": [{"code": code, "message": message, "more_info": "https://cloud.ibm.com/apidocs"}],
        "status_code": status,
    }


class FakeService:
    """One IBM Cloud service: subclasses add routes to `self.app` in `routes()`."""

    name = "service"

    def __init__(self, state: CloudState, ssl_context: ssl.SSLContext) -> None:
        self.state = state
        self.app = Flask(f"ibm-fake-{self.name}")
        self.app.before_request(self._record_and_inject)
        self.app.after_request(self._fail_after_commit)
        self.app.register_error_handler(IbmApiError, self.error_response)
        self.app.register_error_handler(HTTPException, self._http_error)
        self.routes()
        self._server: BaseWSGIServer = make_server(
            LOOPBACK, 0, self.app, threaded=True, ssl_context=ssl_context
        )
        # Handler threads die with the test process; closing the server does not wait for idle clients.
        self._server.daemon_threads = True  # type: ignore[attr-defined]
        self._server.block_on_close = False  # type: ignore[attr-defined]
        self.url = f"https://{LOOPBACK}:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-{self.name}",
            daemon=True,
        )

    def routes(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # Errors -----------------------------------------------------------------------------------------
    def error_response(self, error: IbmApiError) -> Response:
        response = jsonify(ibm_error_body(error.status, error.code, error.message))
        response.status_code = error.status
        return response

    def _http_error(self, error: HTTPException) -> Response:
        status = error.code or 500
        return self.error_response(
            IbmApiError(status, error.name.lower().replace(" ", "_"), str(error.description))
        )

    # Request log and failure injection ---------------------------------------------------------------
    def _record_and_inject(self) -> Response | None:
        body = request.get_data(cache=True)
        self.state.record(
            RecordedRequest(
                service=self.name,
                method=request.method,
                path=request.path,
                query=dict(request.args),
                headers=dict(request.headers),
                body=body,
            )
        )
        failure = self.state.take_failure(self.name, request.method, request.path, after_commit=False)
        return None if failure is None else self._injected(failure)

    def _fail_after_commit(self, response: Response) -> Response:
        if response.status_code >= 400:
            return response
        failure = self.state.take_failure(self.name, request.method, request.path, after_commit=True)
        return response if failure is None else self._injected(failure)

    def _injected(self, failure: InjectedFailure) -> Response:
        response = self.error_response(
            IbmApiError(
                failure.status, _status_code_name(failure.status), f"injected failure {failure.status}"
            )
        )
        response.headers.update(failure.headers)
        return response

    # Helpers for subclasses -------------------------------------------------------------------------
    def require_token(self) -> dict[str, Any]:
        """The claims of the request's IAM bearer token; 401 as IBM services answer without a valid one."""
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            raise IbmApiError(
                401, "authentication_token_not_valid", "missing 'Authorization: Bearer <IAM token>'"
            )
        claims = self.state.iam.claims_of(header.removeprefix("Bearer ").strip())
        if claims is None:
            raise IbmApiError(
                401, "authentication_token_not_valid", "the IAM access token is not valid or has expired"
            )
        return claims

    @staticmethod
    def json_body() -> dict[str, Any]:
        document = request.get_json(silent=True)
        if not isinstance(document, dict):
            raise IbmApiError(400, "invalid_request_body", "the request body must be a JSON object")
        return document


def _status_code_name(status: int) -> str:
    return {
        404: "not_found",
        409: "conflict",
        429: "too_many_requests",
        500: "internal_server_error",
        502: "bad_gateway",
        503: "service_unavailable",
        504: "gateway_timeout",
    }.get(status, f"http_{status}")

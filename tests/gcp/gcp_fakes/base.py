"""What the loopback fakes of Google Cloud APIs share: an HTTP server on 127.0.0.1 in a thread, the
request log, injected failures, Google's error body, enum encoding, timestamps and long-running
operations.

The fakes speak the documented REST shapes (google.rpc.Status errors, google.longrunning.Operation),
so the vendors' own clients (`transport="rest"`, `api_endpoint="http://127.0.0.1:P"`) accept them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# google.rpc.Code names by HTTP status, as Google's front ends pair them.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# google.rpc.Code numbers, for `error` inside an Operation or a job.
RPC_CODES = {
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "FAILED_PRECONDITION": 9,
    "INTERNAL": 13,
}


class ApiError(Exception):
    """Raised by a handler: becomes Google's JSON error body with this HTTP status."""

    def __init__(self, status: int, message: str, status_name: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.status_name = status_name or STATUS_NAMES.get(status, "UNKNOWN")


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found.")


def failed_precondition(message: str) -> ApiError:
    return ApiError(400, message, "FAILED_PRECONDITION")


def invalid_argument(message: str) -> ApiError:
    return ApiError(400, message, "INVALID_ARGUMENT")


def now() -> str:
    """An RFC 3339 timestamp, as the APIs write them."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON, or the raw bytes

    @property
    def json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}


@dataclass
class _Injected:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    message: str


@dataclass
class Call:
    """One request as a handler sees it."""

    method: str
    path: str
    query: Mapping[str, str]
    body: Any
    headers: Mapping[str, str]

    @property
    def ints_for_enums(self) -> bool:
        # The REST clients ask `$alt=json;enum-encoding=int` and then expect enums as numbers.
        return "enum-encoding=int" in self.query.get("$alt", "")

    @property
    def json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}


@dataclass
class Operation:
    """A google.longrunning.Operation; `done` is set by the fake when its work is over."""

    name: str
    metadata: dict[str, Any]
    done: bool = False
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    polls_before_done: int = 0  # injected slowness: report done=false this many more times

    def finish(self, response: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> None:
        self.response, self.error, self.done = response, error, True

    def document(self, count_poll: bool) -> dict[str, Any]:
        done = self.done and self.polls_before_done <= 0
        if count_poll and self.done and self.polls_before_done > 0:
            self.polls_before_done -= 1
        reply: dict[str, Any] = {"name": self.name, "metadata": self.metadata, "done": done}
        if done and self.error is not None:
            reply["error"] = self.error
        elif done:
            reply["response"] = self.response or {"@type": "type.googleapis.com/google.protobuf.Empty"}
        return reply


Handler = Callable[[Call, re.Match[str]], Any]


class FakeServer:
    """Serves `routes` (method, regex over the path after the host, handler) on 127.0.0.1.

    A handler returns a JSON-able reply (200), a `Response`, or raises `ApiError`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[RecordedRequest] = []
        self.lock = threading.RLock()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._injected: list[_Injected] = []
        self._operations: dict[str, Operation] = {}
        self._ids = itertools.count(int(time.time()) % 100000 * 1000 + 1)
        self._slow_polls = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- setup -------------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern + r"\Z"), handler))

    def start(self) -> FakeServer:
        app = Starlette(
            routes=[Route("/{path:path}", self._handle_http, methods=["GET", "POST", "DELETE", "PATCH"])]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.name} fake did not start")
            time.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    @property
    def api_endpoint(self) -> str:
        return self.url

    # -- failure injection -------------------------------------------------------------------------
    def fail_next(
        self, method: str, path_regex: str, status: int, times: int = 1, message: str | None = None
    ) -> None:
        """The next `times` requests of `method` whose path matches `path_regex` (re.search) get `status`
        (e.g. 429, 503, 404) with Google's error body, before any handler runs."""
        text = message or f"injected {status} {STATUS_NAMES.get(status, '')}".strip()
        with self.lock:
            self._injected.append(_Injected(method.upper(), re.compile(path_regex), status, times, text))

    def slow_operations(self, polls: int) -> None:
        """Every operation started from now on answers `done: false` to `polls` more polls after its
        work is over (as real operations lag)."""
        self._slow_polls = polls

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r.method == method.upper() and pattern.search(r.path)]

    # -- operations --------------------------------------------------------------------------------
    def new_id(self) -> str:
        return str(next(self._ids))

    def new_operation(self, name: str, metadata: dict[str, Any]) -> Operation:
        operation = Operation(name=name, metadata=metadata, polls_before_done=self._slow_polls)
        with self.lock:
            self._operations[name] = operation
        return operation

    def operation_reply(self, name: str, count_poll: bool = True) -> dict[str, Any]:
        with self.lock:
            operation = self._operations.get(name)
            if operation is None:
                raise not_found(f"Operation {name}")
            return operation.document(count_poll)

    # -- dispatch ----------------------------------------------------------------------------------
    async def _handle_http(self, request: Request) -> Response:
        raw = await request.body()
        body: Any = raw
        if raw and "json" in request.headers.get("content-type", "json"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        call = Call(
            request.method, _decode_path(raw_path), dict(request.query_params), body, dict(request.headers)
        )
        return await run_in_threadpool(self._dispatch, call)

    def _dispatch(self, call: Call) -> Response:
        with self.lock:
            self.requests.append(RecordedRequest(call.method, call.path, dict(call.query), call.body))
            for injected in self._injected:
                if injected.times > 0 and injected.method == call.method and injected.path.search(call.path):
                    injected.times -= 1
                    return error_response(ApiError(injected.status, injected.message))
        for method, pattern, handler in self._routes:
            match = pattern.match(call.path)
            if match and method == call.method:
                try:
                    reply = handler(call, match)
                except ApiError as error:
                    return error_response(error)
                return reply if isinstance(reply, Response) else JSONResponse(reply)
        return error_response(ApiError(404, f"{self.name} fake: no method {call.method} {call.path}"))


def _decode_path(raw: str) -> str:
    """The request path with percent-escapes decoded, except %2F: resource names use it inside one segment
    (Artifact Registry packages, Cloud Storage objects), and a decoded "/" would split that segment."""
    return "%2F".join(unquote(part) for part in re.split("%2[Ff]", raw))


def error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"code": error.status, "message": error.message, "status": error.status_name}}
    return JSONResponse(body, status_code=error.status)


def enum_value(call: Call, names: list[str], name: str) -> int | str:
    """An enum field as the client asked for it: its number (`enum-encoding=int`) or its name."""
    return names.index(name) if call.ints_for_enums else name


def int64(value: Any, default: int = 0) -> int:
    """proto3 JSON writes int64 as a string and int32 as a number; accept both."""
    if value is None or value == "":
        return default
    return int(value)


def seconds(duration: Any, default: float) -> float:
    """A google.protobuf.Duration in JSON ("3600s", "1.5s")."""
    if not duration:
        return default
    return float(str(duration).removesuffix("s"))

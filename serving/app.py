"""The HTTP app: one Starlette app per served model, speaking its flavor's wire contract on 127.0.0.1.

Errors become status codes here and only here (`STATUS_BY_ERROR`); the flavor words the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from types import FrameType

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import Headers, QueryParams
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.batching import BatchingConfig, MicroBatcher
from serving.constants import (
    AIP_HEALTH_ROUTE_ENV,
    AIP_PREDICT_ROUTE_ENV,
    BODY_BYTES_IN_FLIGHT,
    BODY_READ_TIMEOUT_SECONDS,
    DRAIN_TIMEOUT_SECONDS,
    LOOPBACK_HOST,
    PING_ROUTE,
    SLOW_BODY_SECONDS,
    Flavor,
)
from serving.errors import (
    EndpointNotFound,
    ModelError,
    ModelNotReady,
    NotAcceptable,
    PayloadTooLarge,
    PlatformError,
    RequestTimeout,
    ServingError,
    UnsupportedMediaType,
    UserError,
)
from serving.identity import model_identity
from serving.models import InferenceRequest, ServedModel, model_for
from serving.vertex_container import may_bind

log = logging.getLogger(__name__)

# The one mapping from error type to HTTP status; the most specific class in an error's MRO wins.
STATUS_BY_ERROR: dict[type[ServingError], int] = {
    EndpointNotFound: 404,
    NotAcceptable: 406,
    PayloadTooLarge: 413,
    RequestTimeout: 408,
    UnsupportedMediaType: 415,
    UserError: 400,
    ModelError: 500,
    ModelNotReady: 503,
    PlatformError: 500,
    ServingError: 500,
}

# Starlette's own HTTP errors (unknown route, wrong method) become typed errors with the same status.
_ERROR_FOR_HTTP_STATUS: dict[int, type[ServingError]] = {404: EndpointNotFound}


def status_for(error: ServingError) -> int:
    """The HTTP status of a serving error."""
    for kind in type(error).__mro__:
        if kind in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[kind]  # type: ignore[index]
    return 500


def create_app(
    flavor: Flavor | str, model_dir: Path | str, name: str, batching: BatchingConfig | None = None
) -> Starlette:
    """Load the model of `flavor` from `model_dir` and return the app serving it as endpoint `name`."""
    model = model_for(flavor, model_dir, name)
    # Hashed before loading: the identity names the bytes the model was loaded from (serving/identity.py).
    identity = model_identity(model_dir)
    model.load()
    app = app_for(model, batching)
    app.state.model_identity = identity
    return app


def app_for(
    model: ServedModel,
    batching: BatchingConfig | None = None,
    body_timeout: float = BODY_READ_TIMEOUT_SECONDS,
    body_budget: int = BODY_BYTES_IN_FLIGHT,
    slow_body_seconds: float = SLOW_BODY_SECONDS,
) -> Starlette:
    """The Starlette app around an already loaded model; concurrent requests share model calls as
    `batching` says (default: on). `app.state.batcher` is the `MicroBatcher` (its `stats`, `close()`).
    At most `body_budget` bytes of request bodies are admitted at once (`app.state.body_budget`, with its
    `peak`); a body still arriving `slow_body_seconds` after admission stops counting."""
    batcher = MicroBatcher(model, batching)

    def error_response(status: int, error: ServingError) -> JSONResponse:
        reply = model.error_reply(status, error)
        headers = dict(reply.headers)
        if isinstance(error, RequestTimeout):
            headers["Connection"] = "close"  # the rest of that body may never come: free the connection
        return JSONResponse(reply.document, status_code=status, headers=headers)

    async def on_serving_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServingError)
        status = status_for(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc.message)
        return error_response(status, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kind = _ERROR_FOR_HTTP_STATUS.get(exc.status_code, UserError)
        return error_response(exc.status_code, kind(f"{request.method} {request.url.path}: {exc.detail}"))

    async def on_unexpected_error(request: Request, exc: Exception) -> Response:
        # A bug, not a bad request: say what broke; Starlette re-raises it so uvicorn logs the traceback.
        return error_response(500, PlatformError(f"internal error: {type(exc).__name__}: {exc}"))

    async def ping(request: Request) -> Response:
        if not model.ready:
            raise ModelNotReady(f"model {model.name!r} is still loading")
        answer = {"status": "ready", "flavor": model.flavor.value, "name": model.name}
        # What is served, so that a deployment can be verified by the server's own word (docs/gate.md).
        if identity := getattr(request.app.state, "model_identity", None):
            answer["model_sha256"] = identity
        return JSONResponse(answer)

    predict = _PredictEndpoint(
        model, batcher, body_timeout, error_response, _BodyBudget(body_budget, slow_body_seconds)
    )

    routes = [Route(PING_ROUTE, ping, methods=["GET"])]
    routes += [Route(path, predict, methods=["POST"]) for path in model.routes]
    if model.flavor is Flavor.VERTEX:
        # Inside a Vertex AI custom container the platform chooses the routes through the environment.
        if health_route := os.environ.get(AIP_HEALTH_ROUTE_ENV):
            routes.append(Route(health_route, ping, methods=["GET"]))
        if predict_route := os.environ.get(AIP_PREDICT_ROUTE_ENV):
            routes.append(Route(predict_route, predict, methods=["POST"]))
    app = Starlette(
        routes=routes,
        exception_handlers={
            ServingError: on_serving_error,
            HTTPException: on_http_error,
            Exception: on_unexpected_error,
        },
    )
    app.state.model = model
    app.state.batcher = batcher
    app.state.body_budget = predict.budget
    return app


class _ClientGone(Exception):
    """The client closed the connection before its body was complete: there is nobody to answer."""


class _BodyBudget:
    """Request bodies admitted at once, in bytes: FIFO, and a body larger than the limit is admitted alone.

    A ticket is held from before the body is read until the reply is sent, so requests that wait leave
    their bodies unread in uvicorn's paused connections (the kernel's buffers, not the server's memory).
    A body still arriving `slow_body_seconds` after admission gives its ticket back: a slow client costs
    only the bytes it has sent, and cannot hold the budget for the 20 s it has to finish.
    """

    def __init__(self, limit: int, slow_body_seconds: float) -> None:
        self.limit = limit
        self.slow_body_seconds = slow_body_seconds
        self.used = 0
        self.peak = 0
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def admit(self, size: int) -> _Ticket:
        if not self._waiting and self._fits(size):
            self._take(size)
            return _Ticket(self, size)
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((size, granted))
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():  # granted just as the request was cancelled
                self.give_back(size)
            raise
        return _Ticket(self, size)

    def give_back(self, size: int) -> None:
        self.used -= size
        while self._waiting:
            waiting, granted = self._waiting[0]
            if granted.done():  # cancelled while it waited: it must not hold back those behind it
                self._waiting.popleft()
                continue
            if not self._fits(waiting):
                return
            self._waiting.popleft()
            self._take(waiting)
            granted.set_result(None)

    def _fits(self, size: int) -> bool:
        return self.used == 0 or self.used + size <= self.limit

    def _take(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)


class _Ticket:
    """One request's share of the body budget; `release` is idempotent."""

    def __init__(self, budget: _BodyBudget, size: int) -> None:
        self._budget = budget
        self._size = size

    def release(self) -> None:
        if self._size:
            self._budget.give_back(self._size)
            self._size = 0


class _PredictEndpoint:
    """The predict routes, as a plain ASGI endpoint.

    The hot path of every flavor: at 32 concurrent single-image clients the event loop, not the model, is
    what limits a server (docs/serving.md, "Load benchmark"). Starlette's `Request`, its exception
    middleware and the send wrappers around a function endpoint were about a fifth of a watsonx request's
    CPU; as a plain ASGI endpoint the route reads the body and answers itself, errors included, and
    Starlette still routes it (404/405 stay Starlette's, worded by the flavor).
    """

    def __init__(
        self,
        model: ServedModel,
        batcher: MicroBatcher,
        body_timeout: float,
        error_response: Callable[[int, ServingError], Response],
        budget: _BodyBudget,
    ) -> None:
        self._model = model
        self._batcher = batcher
        self._body_timeout = body_timeout
        self._error_response = error_response
        self.budget = budget

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        length = int(declared) if declared.isdigit() else None
        limit = self._model.max_payload_bytes
        # A chunked body is counted at the flavor's limit: that is what it may grow to. A body declared
        # over the limit is refused before it is read, so it holds nothing.
        size = limit if length is None else (length if length <= limit else 0)
        ticket = await self.budget.admit(size)
        try:
            await self._respond(scope, receive, send, headers, length, ticket)
        finally:
            ticket.release()

    async def _respond(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: Headers,
        length: int | None,
        ticket: _Ticket,
    ) -> None:
        try:
            response = await self._answer(scope, receive, headers, length, ticket)
        except _ClientGone:
            return
        except ServingError as error:
            status = status_for(error)
            if status >= 500:
                log.error("POST %s failed: %s", scope["path"], error.message)
            response = self._error_response(status, error)
        except Exception as error:  # a bug, not a bad request: say what broke, keep the traceback in the log
            log.exception("POST %s failed", scope["path"])
            response = self._error_response(
                500, PlatformError(f"internal error: {type(error).__name__}: {error}")
            )
        await response(scope, receive, send)

    async def _answer(
        self, scope: Scope, receive: Receive, headers: Headers, length: int | None, ticket: _Ticket
    ) -> Response:
        model = self._model
        path = scope.get("path_params", {})
        name = path.get("name")
        if name is not None and name != model.name:
            raise EndpointNotFound(f"no endpoint named {name!r} here; this server serves {model.name!r}")
        slow = asyncio.get_running_loop().call_later(self.budget.slow_body_seconds, ticket.release)
        try:
            with self._batcher.receiving():
                body = await _read_body(receive, length, model.max_payload_bytes, self._body_timeout)
        finally:
            slow.cancel()
        reply = await self._batcher.infer(
            InferenceRequest(
                body=body,
                content_type=headers.get("content-type"),
                accept=headers.get("accept"),
                query=QueryParams(scope.get("query_string", b"")),
                path=path,
            )
        )
        return Response(reply.body, media_type=reply.media_type)


async def _read_body(receive: Receive, length: int | None, limit: int, timeout: float) -> bytes:
    """The body; `PayloadTooLarge` before any of it is read when its Content-Length (`length`) is over
    `limit` (uvicorn then discards the bytes as they come, so the client still reads the 413 on its
    keep-alive connection), or as soon as a chunked body passes `limit`; `RequestTimeout` after `timeout`
    seconds."""
    if length is not None and length > limit:
        raise _too_large(f"{length} bytes", limit)
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout(timeout):
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                chunk = message.get("body", b"")
                received += len(chunk)
                if received > limit:
                    raise _too_large(f"over {limit} bytes", limit)
                chunks.append(chunk)
                more = message.get("more_body", False)
    except TimeoutError:
        raise RequestTimeout(
            f"the request body was not complete after {timeout:g} s ({received} bytes received): "
            "send the whole body at once"
        ) from None
    return b"".join(chunks)


def _too_large(size: str, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"request body is {size}; the limit is {limit} bytes: send fewer images per request"
    )


class LocalServer(uvicorn.Server):
    """uvicorn, plus a callback once the socket listens, and a clean exit (status 0) on SIGTERM/SIGINT."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[str], None] | None = None) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port actually bound> (the port may have been 0)."""
        host, port = self.servers[0].sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._on_ready is not None:
            self._on_ready(self.url)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # uvicorn re-raises the captured signal after shutting down, so the process would end "killed by
        # SIGTERM"; the local stack stops servers with SIGTERM and expects a clean exit instead.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self._stop) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _stop(self, sig: int, frame: FrameType | None) -> None:
        self.should_exit = True


class BoundedReadsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, reading a connection at most `HIGH_WATER_LIMIT` (64 KiB) at a time.

    A request waiting for the body budget has not read its body yet, but uvicorn already holds what has
    arrived: it stops reading a connection only once it holds more than `HIGH_WATER_LIMIT` of body, and
    asyncio's socket transport reads up to 256 KiB at once. So each waiting connection held up to ~320
    KiB, and 128 clients of 100-image bodies took the watsonx server from 106 MB idle to 161 MB (1.52x).
    Reads of 64 KiB bound it to 128 KiB: 134-140 MB (docs/serving.md, "Memory under load").
    """

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # `max_size` is what asyncio's selector transport passes to recv() (a class attribute, 256 KiB, since
        # Python 3.4); a loop without it (uvloop) keeps its own read size.
        if hasattr(transport, "max_size"):
            transport.max_size = HIGH_WATER_LIMIT  # type: ignore[attr-defined]
        super().connection_made(transport)


def _config(app: Starlette, host: str, port: int) -> uvicorn.Config:
    if not may_bind(host, os.environ):
        raise ValueError(
            f"the local server binds to loopback only ({LOOPBACK_HOST}); got host {host!r} "
            "(all interfaces only inside a Vertex AI container: serving/vertex_container.py)"
        )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        http=BoundedReadsProtocol,
        # SIGTERM: stop accepting, let requests in flight finish (bounded), then exit.
        timeout_graceful_shutdown=DRAIN_TIMEOUT_SECONDS,
    )


def serve(
    flavor: Flavor | str,
    model_dir: Path | str,
    host: str = LOOPBACK_HOST,
    *,
    port: int,
    name: str,
    on_ready: Callable[[str], None] | None = None,
    batching: BatchingConfig | None = None,
) -> None:
    """Load the model and serve it until SIGTERM or SIGINT. `port=0` picks a free port; `on_ready` gets
    the base URL once the socket listens."""
    serve_app(create_app(flavor, model_dir, name, batching), host, port=port, on_ready=on_ready)


def serve_app(
    app: Starlette,
    host: str = LOOPBACK_HOST,
    *,
    port: int,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve a model's app (`create_app`, `app_for`) until SIGTERM or SIGINT, as `serve` does."""
    freeze_what_is_loaded()
    try:
        LocalServer(_config(app, host, port), on_ready=on_ready).run()
    finally:
        app.state.batcher.close()


def freeze_what_is_loaded() -> None:
    """Move every object alive now (the runtime, the model, the app: they live as long as the server) out
    of the garbage collector's reach. Its full passes walked all of them and stopped the event loop for
    50-65 ms each under load, which was the p99 of a batching server (docs/serving.md)."""
    gc.collect()
    gc.freeze()


@contextlib.contextmanager
def serve_in_thread(app: Starlette, port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Run `app` (a model's, or any Starlette app such as the ui page) on 127.0.0.1 in a background
    thread; yields its base URL; stops it on exit."""
    with server_in_thread(app, port, timeout) as server:
        yield server.url


@contextlib.contextmanager
def server_in_thread(app: Starlette, port: int = 0, timeout: float = 30.0) -> Iterator[LocalServer]:
    """`serve_in_thread`, yielding the running server itself (its URL, its open connections)."""
    server = LocalServer(_config(app, LOOPBACK_HOST, port))
    thread = threading.Thread(target=server.run, name="mnist-serving", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the server did not start within {timeout:.0f} s")
        time.sleep(0.01)
    try:
        yield server
    finally:
        server.should_exit = True
        thread.join(timeout)
        batcher = getattr(app.state, "batcher", None)  # apps other than a model's (the ui page) have none
        if batcher is not None:
            batcher.close()

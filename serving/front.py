"""A traffic-splitting front for the local stack's canary rollouts: one loopback port, two model servers.

The local stack's endpoint URL is this front when `rollout` is set (docs/gate.md "Rollout"). It forwards
every request, whatever its route, to the `stable` server, or to the `canary` server for `percent` of the
requests while a rollout bakes, and answers with the server's reply (status, body, content type) plus
a header naming which one answered. What to forward to is a JSON routes file the local endpoint provider
writes (atomically) and the front re-reads when it changes:

    {"stable": "http://127.0.0.1:P1", "canary": "http://127.0.0.1:P2" | null, "percent": 10}

Per server URL it counts requests and failures (a 5xx answer, or no answer: then it replies 502 in its
own words), served on `GET /-/front`: the provider judges the canary's error rate from these counts.
A request carrying `X-Mnist-Front-Route: canary` (or `stable`) goes to that server: the provider's
labelled probe digits use it to measure the canary's live accuracy through the front.

The split is deterministic (request n goes to the canary when floor(n * percent / 100) steps), so a test
of 10 % sees exactly one request in ten on the canary.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from serving.constants import LOOPBACK_HOST

STATS_ROUTE = "/-/front"
ROUTE_HEADER = "X-Mnist-Front-Route"
BACKEND_HEADER = "X-Mnist-Front-Backend"
STABLE, CANARY = "stable", "canary"
FORWARD_TIMEOUT_SECONDS = 60.0
# Request headers that describe the body or the caller and so go to the server; hop-by-hop ones do not.
_FORWARDED_REQUEST_HEADERS = ("content-type", "accept", "authorization", "content-encoding")
_METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]


@dataclass(frozen=True)
class Routes:
    stable: str | None = None
    canary: str | None = None
    percent: int = 0

    @classmethod
    def read(cls, path: Path) -> Routes:
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        return cls(
            stable=document.get("stable") or None,
            canary=document.get("canary") or None,
            percent=int(document.get("percent") or 0),
        )

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(
            json.dumps({"stable": self.stable, "canary": self.canary, "percent": self.percent})
        )
        partial.replace(path)  # atomic: the front never reads half a file


@dataclass
class _Counts:
    requests: int = 0
    errors: int = 0


@dataclass
class Front:
    """The routing state: the routes file as last read, the split counter, the counts per server."""

    routes_path: Path
    _seen: tuple[int, int] | None = None
    _routes: Routes = field(default_factory=Routes)
    _requests: int = 0
    _counts: dict[str, _Counts] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def routes(self) -> Routes:
        try:
            stat = os.stat(self.routes_path)
            seen = (stat.st_mtime_ns, stat.st_ino)  # replaced, not rewritten: a new inode each time
        except OSError:
            seen = None
        if seen != self._seen:
            self._routes, self._seen = Routes.read(self.routes_path), seen
        return self._routes

    def choose(self, forced: str | None) -> tuple[str, str | None]:
        """Which server takes the next request: (stable|canary, its URL or None when there is none)."""
        routes = self.routes()
        with self._lock:
            self._requests += 1
            n, percent = self._requests, routes.percent
        if routes.canary and forced in (STABLE, CANARY):
            role = forced
        elif routes.canary and (n * percent) // 100 != ((n - 1) * percent) // 100:
            role = CANARY
        else:
            role = STABLE
        return role, routes.canary if role == CANARY else routes.stable

    def count(self, url: str, failed: bool) -> None:
        with self._lock:
            counts = self._counts.setdefault(url, _Counts())
            counts.requests += 1
            counts.errors += int(failed)

    def stats(self) -> dict[str, object]:
        routes = self.routes()
        with self._lock:
            per_server = {
                url: {"requests": c.requests, "errors": c.errors} for url, c in self._counts.items()
            }
        return {
            "routes": {"stable": routes.stable, "canary": routes.canary, "percent": routes.percent},
            "servers": per_server,
        }


def front_app(routes_path: Path | str) -> Starlette:
    front = Front(Path(routes_path))
    client = httpx.AsyncClient(timeout=FORWARD_TIMEOUT_SECONDS)

    async def stats(request: Request) -> Response:
        return JSONResponse(front.stats())

    async def forward(request: Request) -> Response:
        role, url = front.choose(request.headers.get(ROUTE_HEADER, "").lower() or None)
        if url is None:
            return JSONResponse(
                {"error": "no model server behind the front yet (the endpoint is being created)"},
                status_code=503,
                headers={BACKEND_HEADER: role},
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED_REQUEST_HEADERS}
        try:
            answer = await client.request(
                request.method,
                url + request.url.path,
                params=tuple(request.query_params.multi_items()),
                content=await request.body(),
                headers=headers,
            )
        except httpx.HTTPError as error:
            front.count(url, failed=True)
            return JSONResponse(
                {"error": f"the {role} model server {url} did not answer: {type(error).__name__}: {error}"},
                status_code=502,
                headers={BACKEND_HEADER: role},
            )
        front.count(url, failed=answer.status_code >= 500)
        kept = {k: v for k, v in answer.headers.items() if k.lower() in ("content-type",)}
        return Response(
            answer.content, status_code=answer.status_code, headers={**kept, BACKEND_HEADER: role}
        )

    app = Starlette(
        routes=[
            Route(STATS_ROUTE, stats, methods=["GET"]),
            Route("/{path:path}", forward, methods=_METHODS),
        ]
    )
    app.state.front = front
    return app


def front_command(routes_path: Path | str, port: int) -> list[str]:
    """The command line that runs the front as a child process of this interpreter."""
    import sys

    return [sys.executable, "-m", "serving.front", "--routes", str(routes_path), "--port", str(port)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="The local stack's traffic-splitting front (serving/front.py)."
    )
    parser.add_argument("--routes", required=True, type=Path, help="the JSON routes file to follow")
    parser.add_argument("--port", required=True, type=int, help="the loopback port to listen on")
    args = parser.parse_args(argv)
    uvicorn.run(
        front_app(args.routes), host=LOOPBACK_HOST, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()

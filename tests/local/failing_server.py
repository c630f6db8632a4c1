"""A fault for canary tests: the real model server of `mnistctl serve`, loaded from the real folder (so its
health route names the real model), except that it answers every prediction with a 500.

Run as `python tests/local/failing_server.py serve --flavor F --model DIR --port P --name N` (the
arguments `mnistctl serve` takes, so the local stack recognises the process as its server).
"""

from __future__ import annotations

import argparse

from starlette.types import Receive, Scope, Send

from serving.app import create_app, serve_app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--flavor", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", required=True)
    args, _ = parser.parse_known_args()
    app = create_app(args.flavor, args.model, args.name)
    real = app.router

    async def failing(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            await send(
                {"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]}
            )
            await send({"type": "http.response.body", "body": b"injected fault: the model crashed"})
            return
        await real(scope, receive, send)

    app.router = failing  # type: ignore[assignment]
    app.middleware_stack = None  # rebuilt around the failing router on the first request
    serve_app(app, port=args.port)


if __name__ == "__main__":
    main()

"""The local front (infra/local/front.py, serving/front.py) as a real process: it forwards to what its
routes file names, splits by the canary's percent, counts errors per server, is found gone once killed,
and stops on delete."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from infra.local.front import LocalFrontProvider
from infra.local.support import port_open, wait_gone
from serving.app import serve_in_thread
from serving.front import BACKEND_HEADER, ROUTE_HEADER, Routes

pytestmark = pytest.mark.slow


def answering(status: int, text: str) -> Starlette:
    async def reply(request: Any) -> PlainTextResponse:
        return PlainTextResponse(f"{text} {request.url.path}", status_code=status)

    return Starlette(routes=[Route("/{path:path}", reply, methods=["GET", "POST"])])


@pytest.fixture
def front(tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    provider = LocalFrontProvider()
    props = {"name": "mnist-xgboost", "root": str(tmp_path / "root"), "code_hash": "c1", "requested_port": 0}
    result = provider.create(props)
    state = {**props, **(result.outs or {})}
    yield result.id, state
    provider.delete(result.id, state)


def test_the_front_splits_by_the_routes_file_and_counts_errors_per_server(front: tuple[str, dict[str, Any]]):
    _, state = front
    url = state["url"]
    assert requests.post(f"{url}/x", timeout=5).status_code == 503  # nothing behind it yet
    with serve_in_thread(answering(200, "old")) as old, serve_in_thread(answering(500, "new")) as new:
        Routes(stable=old, canary=new, percent=25).write(Path(state["routes"]))
        answers = [requests.post(f"{url}/endpoints/e/invocations", timeout=5) for _ in range(40)]
        canary = [a for a in answers if a.headers[BACKEND_HEADER] == "canary"]
        assert len(canary) == 10 and all(a.status_code == 500 and a.text.startswith("new") for a in canary)
        stable = [a for a in answers if a.headers[BACKEND_HEADER] == "stable"]
        assert all(a.status_code == 200 and a.text == "old /endpoints/e/invocations" for a in stable)
        forced = requests.post(f"{url}/y", headers={ROUTE_HEADER: "canary"}, timeout=5)
        assert forced.status_code == 500 and forced.headers[BACKEND_HEADER] == "canary"
        stats = requests.get(f"{url}/-/front", timeout=5).json()
        assert stats["servers"][new] == {"requests": 11, "errors": 11}
        assert stats["servers"][old] == {"requests": 30, "errors": 0}
        Routes(stable=old).write(Path(state["routes"]))  # rolled back: everything to the old server
        assert {requests.post(f"{url}/z", timeout=5).text for _ in range(8)} == {"old /z"}
    gone = requests.post(f"{url}/z", timeout=5)  # the server behind it stopped: the front says so
    assert gone.status_code == 502 and "did not answer" in gone.json()["error"]


def test_a_killed_front_is_found_gone_and_delete_stops_a_running_one(front: tuple[str, dict[str, Any]]):
    id_, state = front
    provider = LocalFrontProvider()
    assert provider.read(id_, state).id == id_
    assert not provider.diff(id_, state, state).changes
    os.killpg(int(state["pid"]), signal.SIGKILL)
    assert wait_gone(int(state["pid"]), 5)
    assert provider.read(id_, state).id is None
    assert provider.diff(id_, state, state).replaces == ["pid"]
    again = provider.create({k: state[k] for k in ("name", "root", "code_hash", "requested_port")})
    assert again.id == id_ and again.outs is not None and again.outs["pid"] != state["pid"]
    provider.delete(id_, {**state, **again.outs})
    assert wait_gone(int(again.outs["pid"]), 5) and not port_open(int(again.outs["port"]))

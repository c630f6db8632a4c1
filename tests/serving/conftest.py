"""Fixtures of the serving tests: a server per flavor for the small real models of `model_dir`
(tests/conftest.py) on a free loopback port, stopped when the session ends."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.applications import Starlette

from serving.app import create_app, serve_in_thread
from serving.constants import Flavor

ENDPOINT = "mnist-test"


@pytest.fixture(scope="session")
def held_out(t10k) -> tuple[np.ndarray, np.ndarray]:
    """50 digits of the evaluation part (never trained on): float32 [50, 784] in [0, 1] and labels."""
    return t10k.x_test[:50].reshape(50, 784).astype(np.float32) / 255.0, t10k.y_test[:50].astype(np.int64)


@pytest.fixture(scope="session")
def served_app(model_dir: Callable[[Flavor], Path]) -> Iterator[Callable[[Flavor], tuple[str, Starlette]]]:
    """flavor -> (base URL, app) of a running server for that flavor's small model (endpoint name
    `mnist-test`, batching on by default); `app.state.model` and `app.state.batcher` are its model and
    batcher. Servers start on first use and all stop when the session ends."""
    running: dict[Flavor, tuple[str, Starlette]] = {}
    with contextlib.ExitStack() as servers:

        def get(flavor: Flavor) -> tuple[str, Starlette]:
            if flavor not in running:
                app = create_app(flavor, model_dir(flavor), ENDPOINT)
                running[flavor] = (servers.enter_context(serve_in_thread(app)), app)
            return running[flavor]

        yield get


@pytest.fixture(scope="session")
def server_url(served_app: Callable[[Flavor], tuple[str, Starlette]]) -> Callable[[Flavor], str]:
    """flavor -> base URL of a running server for that flavor's small model (see `served_app`)."""
    return lambda flavor: served_app(flavor)[0]

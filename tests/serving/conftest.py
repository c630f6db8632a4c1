"""Fixtures of the serving tests: small but real models trained on real MNIST digits, and a server per
flavor on a free loopback port, stopped when the session ends."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from tiny_models import train_small_model

from serving.app import create_app, serve_in_thread
from serving.constants import Flavor

ENDPOINT = "mnist-test"
TRAIN_IMAGES = 3000  # of the mnist-t10k training part: enough for >= 90 % with the small models below


@pytest.fixture(scope="session")
def t10k(t10k_dir: Path):
    from training.datasets import load_dataset

    return load_dataset("mnist-t10k", t10k_dir)


@pytest.fixture(scope="session")
def held_out(t10k) -> tuple[np.ndarray, np.ndarray]:
    """50 digits of the evaluation part (never trained on): float32 [50, 784] in [0, 1] and labels."""
    return t10k.x_test[:50].reshape(50, 784).astype(np.float32) / 255.0, t10k.y_test[:50].astype(np.int64)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, t10k) -> Callable[[Flavor], Path]:
    """flavor -> an OUT folder holding that flavor's small model (trained once, on first use)."""
    built: dict[Flavor, Path] = {}
    x = t10k.x_train[:TRAIN_IMAGES].reshape(TRAIN_IMAGES, 784).astype(np.float32) / 255.0
    y = t10k.y_train[:TRAIN_IMAGES]

    def get(flavor: Flavor) -> Path:
        if flavor not in built:
            out = tmp_path_factory.mktemp(f"small-{flavor.value}")
            train_small_model(flavor, x, y, out)
            built[flavor] = out
        return built[flavor]

    return get


@pytest.fixture(scope="session")
def server_url(model_dir: Callable[[Flavor], Path]) -> Iterator[Callable[[Flavor], str]]:
    """flavor -> base URL of a running server for that flavor's small model (endpoint name `mnist-test`).
    Servers start on first use and all stop when the session ends."""
    running: dict[Flavor, str] = {}
    with contextlib.ExitStack() as servers:

        def get(flavor: Flavor) -> str:
            if flavor not in running:
                app = create_app(flavor, model_dir(flavor), ENDPOINT)
                running[flavor] = servers.enter_context(serve_in_thread(app))
            return running[flavor]

        yield get

"""Fixtures for the local providers' fault tests: a stack root, a tiny served model, and cleanup."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tiny_models import train_tiny_xgboost

from infra.local.endpoint import LocalEndpointProvider


@pytest.fixture(scope="session")
def tiny_xgboost_model(tmp_path_factory: pytest.TempPathFactory, t10k_dir: Path) -> Path:
    """An OUT folder as `mnistctl train --framework xgboost` writes it, trained in a second."""
    return train_tiny_xgboost(tmp_path_factory.mktemp("xgboost-out"), t10k_dir)


@pytest.fixture
def endpoints(tmp_path: Path) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Endpoints a test created as (id, state); every one still running is stopped afterwards."""
    created: list[tuple[str, dict[str, Any]]] = []
    yield created
    provider = LocalEndpointProvider()
    for id_, state in reversed(created):
        provider.delete(id_, state)


@pytest.fixture
def endpoint_props(tmp_path: Path, tiny_xgboost_model: Path) -> Callable[..., dict[str, Any]]:
    """The inputs of a LocalEndpoint serving the tiny model under tmp_path, as the engine passes them."""

    def make(port: int = 0, name: str = "mnist-xgboost", artifact_hash: str = "hash-1") -> dict[str, Any]:
        return {
            "model": "xgboost",
            "flavor": "sagemaker",
            "name": name,
            "model_dir": str(tiny_xgboost_model),
            "artifact_hash": artifact_hash,
            "root": str(tmp_path / "root"),
            "requested_port": port,
        }

    return make

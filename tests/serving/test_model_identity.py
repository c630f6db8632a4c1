"""The identity a server reports on its health route: the content hash of the folder it loaded, in the
scheme the stacks hash champion folders with (infra/hashing.py), so the two can be compared."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from starlette.testclient import TestClient
from tiny_models import train_tiny_xgboost

from infra.hashing import tree_sha256
from serving.app import create_app
from serving.identity import model_identity


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, t10k_dir: Path) -> Path:
    return train_tiny_xgboost(tmp_path_factory.mktemp("xgboost-out"), t10k_dir, images=500, rounds=2)


def test_the_identity_is_the_stacks_folder_hash_and_changes_with_any_byte(model_dir: Path, tmp_path: Path):
    assert model_identity(model_dir) == tree_sha256(model_dir)
    copy = shutil.copytree(model_dir, tmp_path / "copy")
    assert model_identity(copy) == model_identity(model_dir)  # content, not location
    artifact = copy / "model.tar.gz"
    artifact.write_bytes(artifact.read_bytes() + b"\0")
    assert model_identity(copy) != model_identity(model_dir)
    assert model_identity(copy) == tree_sha256(copy)


def test_the_health_route_names_the_model_the_server_loaded(model_dir: Path):
    with TestClient(create_app("sagemaker", model_dir, "mnist-xgboost")) as client:
        answer = client.get("/ping").json()
    assert answer == {
        "status": "ready",
        "flavor": "sagemaker",
        "name": "mnist-xgboost",
        "model_sha256": model_identity(model_dir),
    }

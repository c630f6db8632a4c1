"""Fixtures of the page's tests: the three flavors' servers of small real models, as a stack's outputs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import train_small_model

from serving.app import create_app, serve_in_thread
from serving.constants import Flavor

TRAIN_IMAGES = 3000  # of the mnist-t10k training part, as the serving tests use
# The local stack's pairing of model and wire contract (infra/local/platform.py FLAVOR_BY_MODEL).
FLAVOR_BY_MODEL = {"xgboost": Flavor.SAGEMAKER, "tensorflow": Flavor.VERTEX, "pytorch": Flavor.WATSONX}


@pytest.fixture(scope="session")
def three_endpoint_outputs(
    tmp_path_factory: pytest.TempPathFactory, t10k_dir: Path
) -> Iterator[dict[str, Any]]:
    """The outputs of a local stack with its three endpoints (`endpoints`, `dataset`), served by small real
    models in this process, in the shape `infra/local/platform.py` exports; all stop at the session's end."""
    from training.datasets import load_dataset

    split = load_dataset("mnist-t10k", t10k_dir)
    x = split.x_train[:TRAIN_IMAGES].reshape(TRAIN_IMAGES, 784).astype(np.float32) / 255.0
    y = split.y_train[:TRAIN_IMAGES]
    entries: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as servers:
        for model, flavor in FLAVOR_BY_MODEL.items():
            out = train_small_model(flavor, x, y, tmp_path_factory.mktemp(f"ui-{model}"))
            name = f"ui-test-{model}"
            url = servers.enter_context(serve_in_thread(create_app(flavor, out, name)))
            entries[model] = {"flavor": flavor.value, "name": name, "url": url, "region": "local"}
            if flavor is Flavor.VERTEX:
                entries[model]["project"] = "local"
        yield {"endpoints": entries, "dataset": "mnist-t10k"}

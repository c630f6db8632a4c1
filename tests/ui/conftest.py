"""Fixtures of the page's tests: the three flavors' servers of small real models, as a stack's outputs."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from serving.app import create_app, serve_in_thread
from serving.constants import Flavor

# The local stack's pairing of model and wire contract (infra/local/platform.py FLAVOR_BY_MODEL).
FLAVOR_BY_MODEL = {"xgboost": Flavor.SAGEMAKER, "tensorflow": Flavor.VERTEX, "pytorch": Flavor.WATSONX}


@pytest.fixture(scope="session")
def three_endpoint_outputs(model_dir: Callable[[Flavor], Path]) -> Iterator[dict[str, Any]]:
    """The outputs of a local stack with its three endpoints (`endpoints`, `dataset`) in the shape
    infra/local/platform.py exports, served by the session's small real models (`model_dir`) in this
    process rather than by `pulumi up` (seconds instead of minutes); all stop at the session's end."""
    entries: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as servers:
        for model, flavor in FLAVOR_BY_MODEL.items():
            name = f"ui-test-{model}"
            url = servers.enter_context(
                serve_in_thread(create_app(flavor, model_dir(flavor), name), timeout=120)
            )
            entries[model] = {"flavor": flavor.value, "name": name, "url": url, "region": "local"}
            if flavor is Flavor.VERTEX:
                entries[model]["project"] = "local"
        yield {"endpoints": entries, "dataset": "mnist-t10k"}

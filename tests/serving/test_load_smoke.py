"""A short load smoke: a few hundred concurrent requests per flavor through the load generator of
bench/load.py, not one error, and every reply the one its request gets alone. The throughput figures
live in the benchmark, not here."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pytest

from bench.load import Target, run_load, target_for
from serving.constants import Flavor
from serving.models import InferenceRequest, ServedModel

pytestmark = pytest.mark.slow

REQUESTS = 300
CLIENTS = 16
DIGITS = 8  # distinct held-out images, two clients each: a reply given to the wrong request shows


def alone(model: ServedModel, target: Target) -> bytes:
    """The reply to the target's request from the model itself, in this process: no HTTP, no batching."""
    address = urlsplit(target.path)
    request = InferenceRequest(
        target.body,
        target.headers["Content-Type"],
        target.headers.get("Accept"),
        dict(parse_qsl(address.query)),
        {"project": "bench", "location": "local", "name": "mnist-test"},
    )
    return model.infer(request).body


def same_answer(flavor: Flavor, reply: bytes, expected: bytes) -> bool:
    """Byte for byte, but TensorFlow's probabilities, which may differ in a float32's last bits with the
    batch they were computed in (tests/serving/test_batching.py)."""
    if flavor is not Flavor.VERTEX:
        return reply == expected
    got, want = json.loads(reply)["predictions"], json.loads(expected)["predictions"]
    return [p["classes"] for p in got] == [p["classes"] for p in want] and np.allclose(
        [p["probabilities"] for p in got], [p["probabilities"] for p in want], rtol=1e-5, atol=1e-7
    )


@pytest.mark.parametrize("flavor", list(Flavor))
def test_a_few_hundred_concurrent_requests_get_no_error_and_each_its_own_answer(
    served_app, held_out, flavor: Flavor
) -> None:
    url, app = served_app(flavor)
    images = held_out[0]
    targets = [target_for(flavor.value, url, images[i : i + 1], name="mnist-test") for i in range(DIGITS)]
    calls_before = app.state.batcher.stats.model_calls

    result = run_load(targets, clients=CLIENTS, requests=REQUESTS, seconds=120)

    assert result.errors == dict.fromkeys(result.errors, 0)
    assert result.requests == REQUESTS
    assert app.state.batcher.stats.model_calls - calls_before <= REQUESTS
    assert sum(sum(bodies.values()) for bodies in result.replies.values()) == REQUESTS
    for index, target in enumerate(targets):
        expected = alone(app.state.model, target)
        wrong = [body[:200] for body in result.replies[index] if not same_answer(flavor, body, expected)]
        assert not wrong, f"image {index}: {len(wrong)} other replies than its own, e.g. {wrong[0]!r}"

"""A short load smoke: a few hundred concurrent requests per flavor through the load generator of
bench/load.py, and not one error. The throughput figures live in the benchmark, not here."""

from __future__ import annotations

import pytest

from bench.load import run_load, target_for
from serving.constants import Flavor

pytestmark = pytest.mark.slow

REQUESTS = 300
CLIENTS = 16


@pytest.mark.parametrize("flavor", list(Flavor))
def test_a_few_hundred_concurrent_requests_get_no_error(served_app, held_out, flavor: Flavor) -> None:
    url, app = served_app(flavor)
    target = target_for(flavor.value, url, held_out[0][:1], name="mnist-test")
    calls_before = app.state.batcher.stats.model_calls

    result = run_load(target, clients=CLIENTS, requests=REQUESTS, seconds=120)

    assert result.errors == dict.fromkeys(result.errors, 0)
    assert result.requests == REQUESTS
    assert app.state.batcher.stats.model_calls - calls_before <= REQUESTS

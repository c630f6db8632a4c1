"""The local stack's canary: a new model server takes `canaryPercent` of the front's requests for
`bakeMinutes`, watched, then all of them, or none (rolled back). docs/gate.md "Rollout".

Called by the new endpoint's create (endpoint.py) once its server is verified, while the endpoint it
replaces still runs (a create-before-delete replacement): the front's routes file gets the new server as
`canary` beside the old `stable` one. While the canary bakes, labelled held-out digits are sent through
the front to the canary (the front's route header), one every `PROBE_INTERVAL_SECONDS`; users' requests
keep being split. At the end (or as soon as the error budget is spent) the canary is judged on

- its error rate: the 5xx answers and failed connections the front counted for it, over all requests it
  took (users' and probes'), against `maxErrorRate`;
- its live accuracy: correct answers to the probe digits, against `minLiveAccuracy` (0: not judged).

Passed: the routes file names the new server `stable` alone, and Pulumi then deletes the old endpoint.
Failed: the routes file names the old server `stable` alone again, and the caller stops the new server
and fails `pulumi up` with the reason: the old endpoint stays in the state, serving, as it did throughout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import requests

from infra.dynamic import log
from mnistctl.client import (
    DEFAULT_WATSONX_VERSION,
    LOCAL_VERTEX_PROJECT,
    as_probabilities,
    csv_payload,
    json_pixels,
    sagemaker_reply_scores,
    watsonx_payload,
)
from serving.constants import (
    CSV,
    JSON,
    SAGEMAKER_ENDPOINT_ROUTE,
    VERTEX_PREDICT_ROUTE,
    WATSONX_PREDICT_ROUTE,
    WATSONX_VERSION_PARAM,
    Flavor,
)
from serving.front import CANARY, ROUTE_HEADER, STATS_ROUTE, Routes

PROBE_INTERVAL_SECONDS = 0.1
MIN_PROBES = 20  # a canary is never judged on fewer labelled digits, however short the bake
PROBE_DIGITS = 200  # held-out digits cycled through while baking
PROBE_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class CanaryVerdict:
    passed: bool
    reason: str
    requests: int
    errors: int
    probes: int
    correct: int


Probe = Callable[[np.ndarray], np.ndarray]
"""Send images through the front to the canary; their probabilities, or an exception."""


def probe_for(front_url: str, flavor: str, name: str) -> Probe:
    """Labelled digits to the canary through the front, in the flavor's wire contract, without retries
    (a retry would hide the very errors the canary is judged on)."""
    session = requests.Session()
    headers = {ROUTE_HEADER: CANARY}

    def probe(images: np.ndarray) -> np.ndarray:
        if flavor == Flavor.SAGEMAKER.value:
            answer = session.post(
                front_url + SAGEMAKER_ENDPOINT_ROUTE.format(name=name),
                data=csv_payload(images),
                headers={**headers, "Content-Type": CSV, "Accept": JSON},
                timeout=PROBE_TIMEOUT_SECONDS,
            )
            _refused(answer)
            rows = sagemaker_reply_scores(answer.content, answer.headers.get("Content-Type", JSON))
        elif flavor == Flavor.VERTEX.value:
            route = VERTEX_PREDICT_ROUTE.format(project=LOCAL_VERTEX_PROJECT, location="local", name=name)
            answer = session.post(
                front_url + route,
                json={"instances": json_pixels(images)},
                headers=headers,
                timeout=PROBE_TIMEOUT_SECONDS,
            )
            _refused(answer)
            rows = [p["probabilities"] for p in answer.json()["predictions"]]
        else:
            answer = session.post(
                front_url + WATSONX_PREDICT_ROUTE.format(name=name),
                params={WATSONX_VERSION_PARAM: DEFAULT_WATSONX_VERSION},
                json=watsonx_payload(images),
                headers=headers,
                timeout=PROBE_TIMEOUT_SECONDS,
            )
            _refused(answer)
            rows = answer.json()["predictions"][0]["values"]
        return as_probabilities(rows, len(images))

    return probe


def _refused(answer: requests.Response) -> None:
    """Raise with the server's own words when it refused or failed (a probe is never retried)."""
    if answer.status_code >= 400:
        raise requests.HTTPError(
            f"{answer.status_code} from {answer.url}: {answer.text[:300]}", response=answer
        )


def front_counts(front_url: str, server_url: str) -> tuple[int, int]:
    """(requests, errors) the front counted for `server_url`."""
    stats = requests.get(front_url + STATS_ROUTE, timeout=10).json()
    counts: Mapping[str, Any] = stats.get("servers", {}).get(server_url) or {}
    return int(counts.get("requests") or 0), int(counts.get("errors") or 0)


def run_canary(
    *,
    routes: Path,
    front_url: str,
    stable_url: str,
    canary_url: str,
    rollout: Mapping[str, Any],
    probe: Probe,
    images: np.ndarray,
    labels: np.ndarray,
    what: str,
) -> CanaryVerdict:
    """Bake `canary_url` beside `stable_url` behind the front; leave the routes file naming the winner."""
    percent = int(rollout["canary_percent"])
    bake = float(rollout["bake_minutes"]) * 60.0
    max_error_rate = float(rollout["max_error_rate"])
    min_accuracy = float(rollout["min_live_accuracy"])
    Routes(stable=stable_url, canary=canary_url, percent=percent).write(routes)
    log(f"{what}: canary {canary_url} takes {percent} % of the requests for {bake:.0f} s beside {stable_url}")
    start_requests, start_errors = front_counts(front_url, canary_url)
    deadline = time.monotonic() + bake
    probes = correct = 0
    failures: list[str] = []
    while True:
        index = probes % len(images)
        try:
            answer = probe(images[index : index + 1])
            correct += int(int(np.argmax(answer[0])) == int(labels[index]))
        except Exception as error:  # noqa: BLE001 (every failed probe is counted; the first few are quoted)
            if len(failures) < 3:
                failures.append(f"{type(error).__name__}: {error}")
        probes += 1
        now_requests, now_errors = front_counts(front_url, canary_url)
        requests_seen, errors = now_requests - start_requests, now_errors - start_errors
        spent = errors > max_error_rate * max(requests_seen, MIN_PROBES)  # more errors than the budget allows
        if spent or (probes >= MIN_PROBES and time.monotonic() >= deadline):
            break
        time.sleep(PROBE_INTERVAL_SECONDS)
    error_rate = errors / requests_seen if requests_seen else 0.0
    accuracy = correct / probes
    problems = []
    if error_rate > max_error_rate:
        problems.append(
            f"error rate {error_rate:.3f} ({errors} of {requests_seen} requests answered 5xx or not at all) "
            f"> maxErrorRate {max_error_rate:.3f}"
        )
    if min_accuracy > 0 and accuracy < min_accuracy:
        problems.append(
            f"live accuracy {accuracy:.3f} ({correct} of {probes} labelled digits) "
            f"< minLiveAccuracy {min_accuracy:.3f}"
        )
    summary = (
        f"canary {canary_url} at {percent} %: {requests_seen} requests, {errors} errors, "
        f"{correct}/{probes} labelled digits right"
    )
    if not problems:
        Routes(stable=canary_url).write(routes)
        return CanaryVerdict(True, f"{summary}: promoted to 100 %", requests_seen, errors, probes, correct)
    Routes(stable=stable_url).write(routes)
    quoted = f" (first failed probes: {'; '.join(failures)})" if failures else ""
    reason = f"{summary}: rolled back: {'; '.join(problems)}{quoted}"
    return CanaryVerdict(False, reason, requests_seen, errors, probes, correct)

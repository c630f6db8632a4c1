"""Adaptive micro-batching (serving/batching.py): concurrent requests share model calls, each reply is the
one the request gets alone, a request that breaks a batch fails alone, and nobody waits for nothing.

A stub model with a controllable delay makes the batches deterministic: a first "blocker" request holds
the model while the others arrive, so they must queue and form the next batch. The real runtimes then
show that their replies are byte-identical batched and alone."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from starlette.applications import Starlette

from serving.app import app_for, serve_in_thread
from serving.batching import BatchingConfig, BatchStats, MicroBatcher
from serving.constants import INLINE_CALL_MAX_MS, Flavor
from serving.errors import ModelError, ModelNotReady
from serving.models import InferenceReply, InferenceRequest, SageMakerXGBoostModel

CSV = {"Content-Type": "text/csv", "Accept": "application/json"}
BLOCK_SECONDS = 0.6
BLOCKER_MARK = 0.9  # first pixel of an image that makes the stub hold the model for BLOCK_SECONDS
POISON_MARK = 0.5  # first pixel of an image that makes the stub fail the whole model call


class ScriptedModel(SageMakerXGBoostModel):
    """The SageMaker contract around a fake runtime: probabilities computed from the pixels (so every
    image has its own answer), a blocker image that holds the call, a poison image that fails it."""

    def __init__(self) -> None:
        super().__init__(name="stub", model_dir=Path("."))
        self.batch_sizes: list[int] = []
        self.threads: list[str] = []

    def load(self) -> None:
        self.ready = True

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(images))
        self.threads.append(threading.current_thread().name)
        if (images[:, 0] == POISON_MARK).any():
            raise ModelError("the poisoned image broke the model call")
        if (images[:, 0] == BLOCKER_MARK).any():
            time.sleep(BLOCK_SECONDS)
        scores = images[:, 1:11] + 0.01
        return self._checked(scores / scores.sum(axis=1, keepdims=True), images)


def csv_of(images: np.ndarray) -> bytes:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in images).encode()


def image_batch(seed: int, count: int, first_pixel: float = 0.0) -> np.ndarray:
    images = np.random.default_rng(seed).random((count, 784), dtype=np.float32)
    images[:, 0] = first_pixel
    return images


@contextlib.contextmanager
def serving(model: ScriptedModel, config: BatchingConfig | None = None) -> Iterator[tuple[str, Starlette]]:
    model.load()
    app = app_for(model, config)
    with serve_in_thread(app) as url:
        yield url, app


def post_all(url: str, bodies: list[bytes]) -> list[requests.Response]:
    """All CSV bodies at once to the SageMaker container route, one thread each, released together."""
    return send_together(url, [("/invocations", body, CSV) for body in bodies])


def send_together(url: str, wires: list[tuple[str, bytes, dict[str, str]]]) -> list[requests.Response]:
    """All (path, body, headers) requests at once, one thread each, released together."""
    replies: list[requests.Response | None] = [None] * len(wires)
    start = threading.Barrier(len(wires))

    def send(index: int) -> None:
        path, body, headers = wires[index]
        start.wait()
        replies[index] = requests.post(url + path, data=body, headers=headers, timeout=60)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(wires))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r is not None for r in replies)
    return replies  # type: ignore[return-value]


@contextlib.contextmanager
def model_held(url: str) -> Iterator[None]:
    """A blocker request holds the model for BLOCK_SECONDS; requests sent meanwhile queue together."""
    blocker = threading.Thread(
        target=requests.post,
        args=(url + "/invocations",),
        kwargs={"data": csv_of(image_batch(0, 1, BLOCKER_MARK)), "headers": CSV, "timeout": 30},
    )
    blocker.start()
    time.sleep(BLOCK_SECONDS / 4)
    try:
        yield
    finally:
        blocker.join()


def alone(model: ScriptedModel, body: bytes) -> bytes:
    """The reply the request gets without batching: the model's own infer, in this process."""
    return model.infer(InferenceRequest(body, CSV["Content-Type"], CSV["Accept"])).body


def test_requests_arriving_during_a_model_call_share_the_next_one_and_each_gets_its_own_reply() -> None:
    model = ScriptedModel()
    bodies = [csv_of(image_batch(seed, 1 + seed % 5)) for seed in range(1, 21)]
    with serving(model) as (url, app), model_held(url):
        replies = post_all(url, bodies)
    assert [r.status_code for r in replies] == [200] * len(bodies)
    assert [r.content for r in replies] == [alone(model, body) for body in bodies]
    stats = app.state.batcher.stats
    assert stats.requests == len(bodies) + 1
    assert stats.model_calls < len(bodies) // 2, f"{stats.model_calls} calls for {len(bodies)} requests"
    assert stats.largest_batch > 1


def test_a_request_that_breaks_the_batched_call_fails_alone_and_its_batch_mates_succeed() -> None:
    model = ScriptedModel()
    good = [csv_of(image_batch(seed, 2)) for seed in range(1, 9)]
    poisoned = csv_of(image_batch(99, 1, POISON_MARK))
    malformed = b"0.5,0.5,0.5"  # 3 values: rejected while parsing, never enters a batch
    with serving(model) as (url, app), model_held(url):
        replies = post_all(url, [*good, poisoned, malformed])
    assert [r.status_code for r in replies[: len(good)]] == [200] * len(good)
    assert [r.content for r in replies[: len(good)]] == [alone(model, body) for body in good]
    assert replies[-2].status_code == 500
    assert replies[-2].headers["x-amzn-ErrorType"] == "ModelError"
    assert "poisoned" in replies[-2].json()["message"]
    assert replies[-1].status_code == 400
    assert "784" in replies[-1].json()["message"]
    assert app.state.batcher.stats.batches_retried_alone >= 1  # the poisoned request did share a batch


# A single image may take the inline path, which never reaches the batch's wait; several images always
# go through the queue, where a wait for requests that are not coming would show.
@pytest.mark.parametrize("images", [1, 3], ids=["one-image", "three-images"])
def test_a_lone_request_goes_to_the_model_at_once_even_with_a_long_max_wait(images: int) -> None:
    model = ScriptedModel()
    with serving(model, BatchingConfig(max_wait_ms=1000)) as (url, _):
        requests.post(url + "/invocations", data=csv_of(image_batch(1, 1)), headers=CSV, timeout=30)
        started = time.perf_counter()
        body = csv_of(image_batch(2, images))
        reply = requests.post(url + "/invocations", data=body, headers=CSV, timeout=30)
        took = time.perf_counter() - started
    assert reply.status_code == 200
    assert model.batch_sizes[-1] == images
    assert took < 0.5, f"a lone request took {took:.3f} s: it waited for a batch that could not come"


def test_a_lone_single_image_request_to_a_fast_model_runs_on_the_loop_thread() -> None:
    model = ScriptedModel()  # its calls take microseconds, far under INLINE_CALL_MAX_MS
    bodies = [csv_of(image_batch(seed, 1)) for seed in range(1, 5)]
    with serving(model) as (url, app):
        replies = [requests.post(url + "/invocations", data=b, headers=CSV, timeout=30) for b in bodies]
        stats = app.state.batcher.stats
    assert [r.content for r in replies] == [alone(model, body) for body in bodies]
    # The first call is measured on the worker thread; the later lone ones skip the hop.
    assert model.threads[0].startswith("mnist-sagemaker-model")
    assert model.threads[1:4] == ["mnist-serving"] * 3
    assert stats.inline_calls == 3


def test_a_lone_request_to_a_slow_model_never_holds_the_event_loop() -> None:
    model = ScriptedModel()
    with serving(model) as (url, app):
        with model_held(url):  # measured on the worker: 0.6 s, over INLINE_CALL_MAX_MS
            pass
        with model_held(url):  # so this lone blocker goes to the worker too, and /ping answers meanwhile
            started = time.perf_counter()
            ping = requests.get(url + "/ping", timeout=30)
            took = time.perf_counter() - started
        stats = app.state.batcher.stats
    assert ping.status_code == 200
    assert took < BLOCK_SECONDS / 2, f"/ping took {took:.3f} s behind a slow lone request"
    assert stats.inline_calls == 0
    assert all(name.startswith("mnist-sagemaker-model") for name in model.threads)


def test_bodies_in_flight_stay_within_the_budget_and_every_request_is_answered() -> None:
    bodies = [csv_of(image_batch(seed, 1)) for seed in range(1, 17)]
    budget = 3 * max(len(body) for body in bodies)
    model = ScriptedModel()
    model.load()
    app = app_for(model, body_budget=budget)
    with serve_in_thread(app) as url:
        with model_held(url):  # the model is busy: without the budget all 16 bodies would be read and queued
            replies = post_all(url, bodies)
        peak = app.state.body_budget.peak
    assert [r.status_code for r in replies] == [200] * len(bodies)
    assert len({r.content for r in replies}) == len(bodies)  # each got its own answer
    assert 2 * len(bodies[0]) <= peak <= budget, f"peak {peak} bytes of bodies in flight, budget {budget}"


def test_max_batch_bounds_the_images_in_one_model_call() -> None:
    model = ScriptedModel()
    bodies = [csv_of(image_batch(seed, 1)) for seed in range(1, 13)]
    with serving(model, BatchingConfig(max_batch=4)) as (url, _), model_held(url):
        replies = post_all(url, bodies)
    assert all(r.status_code == 200 for r in replies)
    after_blocker = model.batch_sizes[1:]
    assert max(after_blocker) == 4
    assert sum(after_blocker) == len(bodies)


def test_max_batch_1_switches_batching_off_one_model_call_per_request() -> None:
    model = ScriptedModel()
    bodies = [csv_of(image_batch(seed, 2)) for seed in range(1, 9)]
    with serving(model, BatchingConfig(max_batch=1)) as (url, app):
        replies = post_all(url, bodies)
    assert model.batch_sizes == [2] * len(bodies)
    assert [r.content for r in replies] == [alone(model, body) for body in bodies]
    assert app.state.batcher.stats.model_calls == len(bodies)


def test_ping_and_parsing_stay_responsive_while_a_model_call_runs() -> None:
    model = ScriptedModel()
    with serving(model) as (url, _), model_held(url):
        started = time.perf_counter()
        ping = requests.get(url + "/ping", timeout=30)
        bad = requests.post(url + "/invocations", data=b"not,a,number", headers=CSV, timeout=30)
        took = time.perf_counter() - started
    assert ping.status_code == 200
    assert bad.status_code == 400
    assert took < BLOCK_SECONDS / 2, f"/ping and a 400 took {took:.3f} s while the model was busy"


@pytest.mark.parametrize(
    "settings", [{"max_batch": 0}, {"max_wait_ms": -1}, {"max_wait_ms": 5000}, {"max_wait_ms": 1000.5}]
)
def test_batching_settings_out_of_range_are_refused_with_their_name(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(settings))):
        BatchingConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("max_wait_ms", [0, 0.5, 1000])
def test_a_wait_from_none_to_a_second_is_a_batching_setting(max_wait_ms: float) -> None:
    assert BatchingConfig(max_wait_ms=max_wait_ms).max_wait_ms == max_wait_ms


def test_closing_the_batcher_does_not_wait_for_the_model_call_in_progress() -> None:
    async def scenario(model: ScriptedModel) -> float:
        batcher = MicroBatcher(model)
        blocker = asyncio.create_task(batcher.infer(csv_request(image_batch(0, 2, BLOCKER_MARK))))
        await asyncio.sleep(0.1)  # the model call (BLOCK_SECONDS) is running
        started = time.perf_counter()
        batcher.close()
        took = time.perf_counter() - started
        await blocker
        return took

    model = ScriptedModel()
    model.load()
    took = asyncio.run(scenario(model))
    assert took < BLOCK_SECONDS / 2, f"close took {took:.3f} s: it waited for the model call"


# --- the real runtimes -----------------------------------------------------------------------------

PATH_PARAMS = {"project": "p", "location": "l", "name": "mnist-test"}


def wire(flavor: Flavor, images: np.ndarray) -> tuple[str, bytes, dict[str, str]]:
    """(path, body, headers) of a request for `images`, pixels written exactly (repr of float32)."""
    rows = "[" + ",".join("[" + ",".join(repr(float(v)) for v in row) + "]" for row in images) + "]"
    if flavor is Flavor.SAGEMAKER:
        return "/endpoints/mnist-test/invocations", csv_of(images), CSV
    if flavor is Flavor.VERTEX:
        path = "/v1/projects/p/locations/l/endpoints/mnist-test:predict"
        return path, f'{{"instances": {rows}}}'.encode(), {"Content-Type": "application/json"}
    path = "/ml/v4/deployments/mnist-test/predictions?version=2024-05-01"
    # Each image as the ONNX model declares its input, [1][28][28]: watsonx.ai does not reshape.
    images_1x28x28 = "[" + ",".join(_channel_first(image) for image in images) + "]"
    body = f'{{"input_data": [{{"values": {images_1x28x28}}}]}}'.encode()
    return path, body, {"Content-Type": "application/json"}


def _channel_first(image: np.ndarray) -> str:
    """One image as JSON of shape [1][28][28], pixels written exactly."""
    rows = (",".join(repr(float(v)) for v in image[i : i + 28]) for i in range(0, len(image), 28))
    return "[[[" + "],[".join(rows) + "]]]"


def assert_same_up_to_float32_rounding(batched: dict, alone: dict) -> None:
    """TensorFlow's kernels block their loops by batch shape, so an image's probabilities can differ in
    the last bits of a float32 with the batch it was computed in (onnxruntime and XGBoost do not)."""
    assert [p["classes"] for p in batched["predictions"]] == [p["classes"] for p in alone["predictions"]]
    np.testing.assert_allclose(
        [p["probabilities"] for p in batched["predictions"]],
        [p["probabilities"] for p in alone["predictions"]],
        rtol=1e-5,
        atol=1e-7,
    )
    assert {k: v for k, v in batched.items() if k != "predictions"} == {
        k: v for k, v in alone.items() if k != "predictions"
    }


@pytest.mark.slow
@pytest.mark.parametrize("flavor", list(Flavor))
def test_real_runtimes_answer_batched_requests_as_alone_byte_for_byte_but_tensorflow(
    served_app: Callable[[Flavor], tuple[str, Starlette]], held_out, flavor: Flavor
) -> None:
    url, app = served_app(flavor)
    model, stats = app.state.model, app.state.batcher.stats
    images = held_out[0]
    # Different sizes and contents: request i holds 1 + i % 4 consecutive held-out digits.
    wires = [wire(flavor, images[i : i + 1 + i % 4]) for i in range(24)]
    for _ in range(5):  # until concurrency actually produced a shared call (it nearly always does at once)
        calls_before, requests_before = stats.model_calls, stats.requests
        replies = send_together(url, wires)
        for (_, body, headers), reply in zip(wires, replies, strict=True):
            assert reply.status_code == 200, reply.text
            query = {"version": "2024-05-01"} if flavor is Flavor.WATSONX else {}
            expected = model.infer(
                InferenceRequest(body, headers["Content-Type"], headers.get("Accept"), query, PATH_PARAMS)
            )
            if flavor is Flavor.VERTEX:
                assert_same_up_to_float32_rounding(reply.json(), json.loads(expected.body))
            else:
                assert reply.content == expected.body
        if stats.model_calls - calls_before < stats.requests - requests_before:
            break
    else:
        pytest.fail("24 concurrent requests never shared a model call in 5 rounds")


def test_an_unexpected_failure_is_a_500_naming_it_and_the_server_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Buggy(ScriptedModel):
        def postprocess(self, probabilities: np.ndarray, request: InferenceRequest):  # type: ignore[override]
            if len(probabilities) == 2:
                raise KeyError("a bug in the reply")
            return super().postprocess(probabilities, request)

    model = Buggy()
    with serving(model) as (url, _):
        broken = requests.post(url + "/invocations", data=csv_of(image_batch(1, 2)), headers=CSV, timeout=30)
        fine = requests.post(url + "/invocations", data=csv_of(image_batch(2, 1)), headers=CSV, timeout=30)
    assert broken.status_code == 500
    assert broken.headers["x-amzn-ErrorType"] == "InternalFailure"
    assert "internal error: KeyError" in broken.json()["message"]
    assert fine.status_code == 200
    assert any(
        record.exc_info and "a bug in the reply" in str(record.exc_info[1]) for record in caplog.records
    )


# --- the batcher on its own event loop, without HTTP: the waits and the shutdown, step by step ------------


def csv_request(images: np.ndarray) -> InferenceRequest:
    return InferenceRequest(csv_of(images), CSV["Content-Type"], CSV["Accept"])


def test_a_batch_waits_for_a_request_still_receiving_its_body_and_shares_the_call_with_it() -> None:
    async def scenario(model: ScriptedModel) -> float:
        batcher = MicroBatcher(model, BatchingConfig(max_wait_ms=1000))
        straggler = batcher.receiving()  # a client is still sending its body (as the app marks it)
        straggler.__enter__()
        started = time.perf_counter()
        first = asyncio.create_task(batcher.infer(csv_request(image_batch(1, 2))))
        await asyncio.sleep(0.05)  # the batch is waiting for the straggler
        straggler.__exit__(None, None, None)  # its body has arrived: it joins the queue
        second = asyncio.create_task(batcher.infer(csv_request(image_batch(2, 2))))
        await asyncio.wait_for(asyncio.gather(first, second), 5)
        batcher.close()
        return time.perf_counter() - started

    model = ScriptedModel()
    model.load()
    took = asyncio.run(scenario(model))
    assert model.batch_sizes == [4], "the two requests did not share one model call"
    assert took < 0.5, f"{took:.3f} s: the batch waited on after the straggler had arrived"


def test_requests_waiting_for_a_model_call_get_an_error_when_the_loop_stops_not_a_hang() -> None:
    async def scenario(model: ScriptedModel) -> BaseException | None:
        batcher = MicroBatcher(model)
        waiting = asyncio.create_task(batcher.infer(csv_request(image_batch(0, 2, BLOCKER_MARK))))
        await asyncio.sleep(0.1)  # its model call is running on the worker thread
        assert batcher._runner is not None
        batcher._runner.cancel()  # what stopping the server does to the batcher's task
        try:
            await asyncio.wait_for(waiting, 5)
        except BaseException as error:  # noqa: BLE001  (which error it is is the point)
            return error
        finally:
            batcher.close()
        return None

    model = ScriptedModel()
    model.load()
    error = asyncio.run(scenario(model))
    # A RuntimeError, which the app answers as an error; not the runner's CancelledError, not a timeout.
    assert type(error) is RuntimeError, repr(error)


@pytest.mark.parametrize(("fraction", "inline"), [(0.9995, True), (1.0, False), (1.001, False)])
def test_a_lone_request_runs_inline_only_if_the_models_last_single_image_call_was_under_the_limit(
    fraction: float, inline: bool
) -> None:
    batcher = MicroBatcher(ScriptedModel())
    assert not batcher._single_image_is_fast()  # never measured: the worker thread measures it first
    batcher._single_image_seconds = fraction * INLINE_CALL_MAX_MS / 1000.0
    assert batcher._single_image_is_fast() is inline
    batcher.close()


def seconds_to_answer_beside_a_straggler(config: BatchingConfig, images: int) -> float:
    """How long a request of `images` images takes while another client is still sending its body, and
    never finishes."""

    async def scenario(model: ScriptedModel) -> float:
        batcher = MicroBatcher(model, config)
        with batcher.receiving():
            started = time.perf_counter()
            await asyncio.wait_for(batcher.infer(csv_request(image_batch(1, images))), 5)
            took = time.perf_counter() - started
        batcher.close()
        return took

    model = ScriptedModel()
    model.load()
    return asyncio.run(scenario(model))


def test_a_batch_waits_for_a_straggler_at_most_max_wait_ms() -> None:
    took = seconds_to_answer_beside_a_straggler(BatchingConfig(max_wait_ms=200), images=2)
    assert 0.15 < took < 1.0, f"answered after {took:.3f} s; max_wait_ms is 200"


def test_a_full_batch_goes_to_the_model_without_waiting_for_stragglers() -> None:
    # The straggler could not fit in a batch of max_batch images anyway.
    took = seconds_to_answer_beside_a_straggler(BatchingConfig(max_batch=4, max_wait_ms=1000), images=4)
    assert took < 0.5, f"a batch of max_batch images waited {took:.3f} s for a request it had no room for"


def test_a_request_cancelled_while_its_batch_runs_holds_back_none_of_its_batch_mates() -> None:
    async def scenario(model: ScriptedModel) -> list[bytes]:
        batcher = MicroBatcher(model)
        blocker = asyncio.create_task(batcher.infer(csv_request(image_batch(0, 2, BLOCKER_MARK))))
        await asyncio.sleep(0.1)  # the model is busy: the next three queue together
        gone, *mates = [asyncio.create_task(batcher.infer(csv_request(image_batch(s, 2)))) for s in (1, 2, 3)]
        await asyncio.sleep(0.05)
        gone.cancel()  # its client went away; it is first in the batch
        replies = await asyncio.wait_for(asyncio.gather(*mates), 5)
        await blocker
        batcher.close()
        return [reply.body for reply in replies]

    model = ScriptedModel()
    model.load()
    bodies = asyncio.run(scenario(model))
    assert bodies == [alone(model, csv_of(image_batch(s, 2))) for s in (2, 3)]


def test_the_stats_count_every_model_call_and_image_including_a_failed_batch_run_again_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario(model: ScriptedModel) -> BatchStats:
        batcher = MicroBatcher(model)
        for _ in range(2):  # twice: each failed batch counts
            blocker = asyncio.create_task(batcher.infer(csv_request(image_batch(0, 2, BLOCKER_MARK))))
            await asyncio.sleep(0.1)  # the model is busy: the next two share a call, which the poison breaks
            good = asyncio.create_task(batcher.infer(csv_request(image_batch(1, 3))))
            poisoned = asyncio.create_task(batcher.infer(csv_request(image_batch(2, 1, POISON_MARK))))
            await asyncio.wait_for(asyncio.gather(blocker, good, poisoned, return_exceptions=True), 5)
        batcher.close()
        return batcher.stats

    model = ScriptedModel()
    model.load()
    stats = asyncio.run(scenario(model))
    # The model's own record of its calls: the blocker (2), the shared call (3 + 1), then each alone; twice.
    assert model.batch_sizes == [2, 4, 3, 1] * 2
    assert (stats.requests, stats.model_calls, stats.images) == (6, 8, 12)
    assert (stats.largest_batch, stats.batches_retried_alone) == (2, 2)
    assert (
        "a batch of 2 requests failed (the poisoned image broke the model call); running them one by one"
        in [record.getMessage() for record in caplog.records]
    )


def test_a_request_whose_reply_cannot_be_made_fails_alone_in_its_batch() -> None:
    class BuggyReplies(ScriptedModel):
        def postprocess(self, probabilities: np.ndarray, request: InferenceRequest):  # type: ignore[override]
            if len(probabilities) == 2:
                raise KeyError("a bug in the reply")
            return super().postprocess(probabilities, request)

    async def scenario(model: ScriptedModel) -> list[object]:
        batcher = MicroBatcher(model)
        blocker = asyncio.create_task(batcher.infer(csv_request(image_batch(0, 1, BLOCKER_MARK))))
        await asyncio.sleep(0.1)
        mates = [
            asyncio.create_task(batcher.infer(csv_request(image_batch(s, n)))) for s, n in ((1, 2), (2, 3))
        ]
        outcomes = await asyncio.wait_for(asyncio.gather(*mates, return_exceptions=True), 5)
        await blocker
        batcher.close()
        return outcomes

    model = BuggyReplies()
    model.load()
    broken, fine = asyncio.run(scenario(model))
    assert model.batch_sizes[1] == 5  # the two did share the call
    assert isinstance(broken, KeyError)
    assert isinstance(fine, InferenceReply) and fine.body == alone(model, csv_of(image_batch(2, 3)))


def test_a_request_to_a_model_still_loading_is_refused_naming_the_model() -> None:
    batcher = MicroBatcher(ScriptedModel())  # never loaded
    with pytest.raises(ModelNotReady, match=r"^model 'stub' is still loading$"):
        asyncio.run(batcher.infer(csv_request(image_batch(1, 1))))
    batcher.close()


def test_single_images_arriving_together_share_one_call_instead_of_each_running_inline() -> None:
    async def scenario(model: ScriptedModel) -> None:
        batcher = MicroBatcher(model)
        await batcher.infer(
            csv_request(image_batch(1, 1))
        )  # measured fast: a lone single image may go inline
        together = [batcher.infer(csv_request(image_batch(seed, 1))) for seed in (2, 3)]
        await asyncio.wait_for(asyncio.gather(*together), 5)  # neither is alone
        batcher.close()

    model = ScriptedModel()
    model.load()
    asyncio.run(scenario(model))
    assert model.batch_sizes == [1, 2]
    assert all(name.startswith("mnist-sagemaker-model") for name in model.threads), model.threads


def test_with_batching_off_the_stats_count_each_request_s_call_and_images() -> None:
    async def scenario(model: ScriptedModel) -> BatchStats:
        batcher = MicroBatcher(model, BatchingConfig(max_batch=1))
        for seed, images in ((1, 2), (2, 3)):
            await batcher.infer(csv_request(image_batch(seed, images)))
        batcher.close()
        return batcher.stats

    model = ScriptedModel()
    model.load()
    stats = asyncio.run(scenario(model))
    assert (stats.requests, stats.model_calls, stats.images) == (2, 2, 5)

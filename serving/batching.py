"""Adaptive micro-batching: the one place between the HTTP app and the model, for every flavor.

As TF Serving's batching session and Triton's dynamic batcher sit between the front end and the model,
`MicroBatcher` sits between `serving.app` and a `ServedModel`. Each request is parsed on the event loop
(`preprocess`, so a bad request fails alone and never enters a batch); its images then join a queue.
One worker thread runs the model: it takes everything queued (up to `max_batch` images) as one
`predict` call, and each request gets `postprocess` of its own rows, the same bytes it would get alone.

Adaptive: nothing waits on a timer when the model is idle. A lone request goes to the model at once; the
requests that arrive while a model call runs form the next batch. Only if more requests are still
receiving their bodies does a batch wait for them, at most `max_wait_ms`. `max_batch=1` switches
batching off: the model is then called on the event loop per request, as the servers did before.

A single-image request that is alone (nothing queued, no model call running, nothing else arrived when
the loop had its turn) runs on the event loop's own thread if the model's last single-image call took
under `INLINE_CALL_MAX_MS`: with nothing to batch it with, the hop to the worker thread and back would
be the request's only extra cost. Batches always run on the worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from serving.constants import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS, INLINE_CALL_MAX_MS
from serving.errors import ModelNotReady
from serving.models import InferenceReply, InferenceRequest, ServedModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchingConfig:
    """How requests are gathered into model calls (`mnistctl serve --max-batch --max-wait-ms`)."""

    max_batch: int = DEFAULT_MAX_BATCH
    """Most images in one model call; 1 = off. A request with more images is never split: it runs alone."""
    max_wait_ms: float = DEFAULT_MAX_WAIT_MS
    """Longest a batch waits for requests whose bodies are still arriving; never spent when none are."""

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be a positive number of images (1 = off); got {self.max_batch}")
        if not 0 <= self.max_wait_ms <= 1000:
            raise ValueError(f"max_wait_ms must be between 0 and 1000 ms; got {self.max_wait_ms}")

    @property
    def enabled(self) -> bool:
        return self.max_batch > 1


@dataclass
class BatchStats:
    """What the batcher did, for tests and logs: requests answered, model calls, the largest batch."""

    requests: int = 0
    model_calls: int = 0
    images: int = 0
    largest_batch: int = 0
    """Most requests served by one model call."""
    batches_retried_alone: int = 0
    """Batches whose model call failed and whose requests were then run one by one."""
    inline_calls: int = 0
    """Lone single-image requests run on the event loop's thread (fast model, nothing to batch with)."""


@dataclass
class _Queued:
    images: np.ndarray
    request: InferenceRequest
    reply: asyncio.Future[InferenceReply]


_Outcome = InferenceReply | Exception


class MicroBatcher:
    """Gathers concurrent requests to one model into batched model calls on a worker thread."""

    def __init__(self, model: ServedModel, config: BatchingConfig | None = None) -> None:
        self.model = model
        self.config = config or BatchingConfig()
        self.stats = BatchStats()
        self._queue: deque[_Queued] = deque()
        self._receiving = 0
        self._arrived = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        # One thread: the runtimes are set to one intra-op thread each, and one model call at a time is what
        # makes concurrent requests wait together for the next call.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"mnist-{model.flavor}-model")
        # How long the model's last single-image call took; None until one ran (then the worker is used).
        self._single_image_seconds: float | None = None

    @contextlib.contextmanager
    def receiving(self) -> Iterator[None]:
        """Marks a request whose body is being read: a batch about to start may wait for it (briefly)."""
        self._receiving += 1
        try:
            yield
        finally:
            self._receiving -= 1

    async def infer(self, request: InferenceRequest) -> InferenceReply:
        """The reply to one request: exactly what `model.infer(request)` returns, or raises."""
        if not self.model.ready:
            raise ModelNotReady(f"model {self.model.name!r} is still loading")
        images = self.model.preprocess(request)  # a UserError here is this request's alone
        self.stats.requests += 1
        if not self.config.enabled:
            self.stats.model_calls += 1
            self.stats.images += len(images)
            return self.model.postprocess(self.model.predict(images), request)
        reply: asyncio.Future[InferenceReply] = asyncio.get_running_loop().create_future()
        queued = _Queued(images, request, reply)
        self._queue.append(queued)
        self._arrived.set()
        if len(images) == 1 and self._model_idle() and self._single_image_is_fast():
            # Two turns of the loop: the first reads what has arrived, the second lets those requests parse
            # and queue. Only then is this request known to be alone.
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            if self._model_idle() and len(self._queue) == 1 and self._queue[0] is queued:
                self._queue.popleft()
                self.stats.inline_calls += 1
                (outcome,) = self._call_model([queued])
                if isinstance(outcome, Exception):
                    raise outcome
                return outcome
        if self._model_idle():
            self._runner = asyncio.create_task(self._run_queue(), name="mnist-batcher")
        return await reply

    def _model_idle(self) -> bool:
        return self._runner is None or self._runner.done()

    def _single_image_is_fast(self) -> bool:
        last = self._single_image_seconds
        return last is not None and last * 1000.0 < INLINE_CALL_MAX_MS

    def close(self) -> None:
        """Let the worker thread end once the model call in progress (if any) returns."""
        self._executor.shutdown(wait=False)

    async def _run_queue(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            await self._wait_for_stragglers()
            batch = self._take_batch()
            try:
                outcomes = await loop.run_in_executor(self._executor, self._call_model, batch)
            except BaseException as error:  # the loop is shutting down: nobody may wait forever
                for queued in batch:
                    if not queued.reply.done():
                        queued.reply.set_exception(error if isinstance(error, Exception) else RuntimeError())
                raise
            for queued, outcome in zip(batch, outcomes, strict=True):
                if queued.reply.done():  # the request was cancelled meanwhile
                    continue
                if isinstance(outcome, Exception):
                    queued.reply.set_exception(outcome)
                else:
                    queued.reply.set_result(outcome)

    async def _wait_for_stragglers(self) -> None:
        """Up to `max_wait_ms` for requests still receiving their bodies, while the batch has room."""
        if self._receiving == 0 or self.config.max_wait_ms <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.max_wait_ms / 1000.0
        while self._receiving > 0 and self._queued_images() < self.config.max_batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return

    def _queued_images(self) -> int:
        return sum(len(queued.images) for queued in self._queue)

    def _take_batch(self) -> list[_Queued]:
        """The oldest request, and those after it while the images fit in `max_batch`."""
        batch = [self._queue.popleft()]
        size = len(batch[0].images)
        while self._queue and size + len(self._queue[0].images) <= self.config.max_batch:
            queued = self._queue.popleft()
            size += len(queued.images)
            batch.append(queued)
        return batch

    # --- on the worker thread (or, for a lone fast request, on the loop's) ---

    def _call_model(self, batch: list[_Queued]) -> list[_Outcome]:
        """One model call for the whole batch, split back per request. If the call fails, each request runs
        alone, so only the request that made it fail gets the error."""
        stats = self.stats
        stats.model_calls += 1
        stats.images += sum(len(queued.images) for queued in batch)
        stats.largest_batch = max(stats.largest_batch, len(batch))
        if len(batch) == 1:
            return [self._alone(batch[0])]
        try:
            probabilities = self.model.predict(np.concatenate([queued.images for queued in batch]))
        except Exception as error:  # noqa: BLE001  (whose request broke the batch is found by running each alone)
            log.warning("a batch of %d requests failed (%s); running them one by one", len(batch), error)
            stats.batches_retried_alone += 1
            stats.model_calls += len(batch)
            return [self._alone(queued) for queued in batch]
        outcomes: list[_Outcome] = []
        start = 0
        for queued in batch:
            rows = probabilities[start : start + len(queued.images)]
            start += len(queued.images)
            try:
                outcomes.append(self.model.postprocess(rows, queued.request))
            except Exception as error:  # noqa: BLE001  (it belongs to that request alone)
                outcomes.append(error)
        return outcomes

    def _alone(self, queued: _Queued) -> _Outcome:
        try:
            started = time.perf_counter()
            probabilities = self.model.predict(queued.images)
            if len(queued.images) == 1:
                self._single_image_seconds = time.perf_counter() - started
            return self.model.postprocess(probabilities, queued.request)
        except Exception as error:  # noqa: BLE001  (handed to the request's own coroutine, which raises it)
            return error

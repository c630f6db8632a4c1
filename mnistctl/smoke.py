"""`mnistctl smoke`: send held-out test digits to every endpoint of a stack; accuracy and latency.

As the notebooks did after a deployment (ten test images, look at the answers), but for every
endpoint of a stack through the same clients `mnistctl predict` uses. One image per request, so the
latency percentiles are per-request figures; one unmeasured warm-up request goes first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from mnistctl.client import EndpointClient, client_for
from mnistctl.stacks import endpoints as stack_endpoints

DEFAULT_COUNT = 10
# Datasets whose held-out digits are the last 2,000 of the MNIST test set (mnistctl.samples).
MNIST_DATASETS = frozenset({"mnist", "mnist-t10k"})

ClientFactory = Callable[[Mapping[str, Any]], EndpointClient]


@dataclass
class EndpointResult:
    """What one endpoint answered."""

    model: str
    flavor: str
    name: str
    count: int
    correct: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.count if self.ok and self.count else None

    def latency_ms(self, percentile: float) -> float | None:
        return float(np.percentile(self.latencies_ms, percentile)) if self.latencies_ms else None


@dataclass
class SmokeResult:
    """One smoke run over a stack's endpoints."""

    label: str
    results: list[EndpointResult]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    def for_model(self, model: str) -> EndpointResult:
        for result in self.results:
            if result.model == model:
                return result
        raise KeyError(f"no endpoint for model {model!r} in {self.label}")


def held_out_digits(
    count: int, dataset: str | None = None, data_dir: Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """`count` test digits no model of the stack trained on: float32 [count, 784] in [0, 1], labels.

    MNIST stacks (mnist, mnist-t10k) get the last 2,000 of the official test set (the offline
    protocol's evaluation part); other datasets their own test set.
    """
    if dataset is None or dataset in MNIST_DATASETS:
        from mnistctl.samples import sample_digits

        return sample_digits(count, data_dir)
    from training.datasets import load_dataset

    split = load_dataset(dataset, data_dir)
    if not 1 <= count <= split.n_test:
        raise ValueError(f"count must be between 1 and {split.n_test}; got {count}")
    images = split.x_test[:count].reshape(count, -1).astype(np.float32) / 255.0
    return images, split.y_test[:count].astype(np.int64)


def stack_dataset(outputs: Mapping[str, Any]) -> str | None:
    """The dataset the stack trained on, when its `dataset` output names one (local stacks do)."""
    from training.datasets import DatasetName

    value = outputs.get("dataset")
    return value if value in {d.value for d in DatasetName} else None


def data_dir_for(outputs: Mapping[str, Any], data_dir: Path | None) -> Path | None:
    """Where to read test digits: the given folder, else a local stack's data folder, else the cache."""
    if data_dir is not None:
        return data_dir
    bucket = outputs.get("bucket")
    if isinstance(bucket, str) and Path(bucket).is_dir():
        return Path(bucket)
    return None


def smoke(
    outputs: Mapping[str, Any],
    count: int = DEFAULT_COUNT,
    data_dir: Path | None = None,
    label: str = "stack",
    models: list[str] | None = None,
    client_factory: ClientFactory | None = None,
) -> SmokeResult:
    """Send `count` held-out digits, one per request, to each endpoint in `outputs`."""
    entries = stack_endpoints(outputs)
    if models:
        unknown = sorted(set(models) - set(entries))
        if unknown:
            raise ValueError(
                f"no endpoint for {', '.join(unknown)}; the stack has {', '.join(sorted(entries))}"
            )
        entries = {m: e for m, e in entries.items() if m in models}
    images, labels = held_out_digits(count, stack_dataset(outputs), data_dir_for(outputs, data_dir))
    factory = client_factory or client_for
    results = [_smoke_one(model, entry, images, labels, factory) for model, entry in entries.items()]
    return SmokeResult(label=label, results=results)


def _smoke_one(
    model: str,
    entry: Mapping[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    client_factory: ClientFactory,
) -> EndpointResult:
    result = EndpointResult(
        model=model, flavor=str(entry["flavor"]), name=str(entry["name"]), count=len(images)
    )
    try:
        client = client_factory(entry)
        client.predict(images[:1])  # warm-up: connection set-up and lazy initialisation are not latency
        for image, label in zip(images, labels, strict=True):
            started = time.perf_counter()
            probabilities = client.predict(image[np.newaxis, :])
            result.latencies_ms.append((time.perf_counter() - started) * 1000.0)
            result.correct += int(int(np.argmax(probabilities[0])) == int(label))
    except Exception as error:  # noqa: BLE001 (any failure of one endpoint is reported, the others still run)
        result.error = f"{type(error).__name__}: {error}"
    return result


def smoke_table(result: SmokeResult) -> Table:
    """One row per endpoint: accuracy and latency percentiles, or what went wrong."""
    table = Table(title=f"smoke: {result.label}")
    for column, justify in (("model", "left"), ("flavor", "left"), ("endpoint", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for column in ("correct", "accuracy", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for r in result.results:
        if not r.ok:
            table.add_row(r.model, r.flavor, r.name, "-", f"[red]{r.error}[/]", "-", "-", "-")
            continue
        table.add_row(
            r.model,
            r.flavor,
            r.name,
            f"{r.correct}/{r.count}",
            f"{r.accuracy:.0%}",
            *(f"{r.latency_ms(p):.1f}" for p in (50, 90, 99)),
        )
    return table

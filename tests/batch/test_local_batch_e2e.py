"""The local stack's batch scoring end to end: the program under mocks, its providers run for real
(tests/harness.py), real training, the champion scoring mnist-t10k's held-out digits in batch, and the
same digits sent to the online endpoint through its official client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from harness import ProviderEngine, StackRun, run_stack
from PIL import Image

from infra.local import platform as local
from infra.local.support import LocalProviderError
from infra.settings import Framework
from mnistctl.batch import read_confusion_csv
from mnistctl.client import client_for
from training.datasets import load_dataset

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BATCH = "mnist-xgboost-batch"


@pytest.fixture(autouse=True)
def training_code_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = {model: local.training_code_hash(model) for model in Framework}
    monkeypatch.setattr(local, "training_code_hash", hashes.__getitem__)


@pytest.fixture
def engine() -> Iterator[ProviderEngine]:
    engine = ProviderEngine()
    yield engine
    engine.destroy()


def up(engine: ProviderEngine, config: dict[str, Any]) -> StackRun:
    run = run_stack("local", config, new_resource=engine)
    engine.finish()
    return run


def online_accuracy(endpoint: dict[str, Any], t10k_dir: Path) -> tuple[float, np.ndarray]:
    """The held-out split sent to the online endpoint in requests of 100 digits: accuracy and digits."""
    split = load_dataset("mnist-t10k", t10k_dir)
    pixels = split.x_test.reshape(len(split.x_test), 784).astype(np.float32) / 255.0
    client = client_for(endpoint)
    digits = np.concatenate(
        [client.predict(pixels[i : i + 100]).argmax(axis=1) for i in range(0, len(pixels), 100)]
    )
    return float((digits == split.y_test).mean()), digits


def batch_digits(entry: dict[str, Any]) -> np.ndarray:
    rows = Path(entry["predictions"]).read_text().splitlines()[1:]
    return np.array([int(row.split(",")[3]) for row in rows])


def test_the_champion_scores_the_held_out_digits_as_the_endpoint_does_and_rescores_only_a_new_champion(
    engine: ProviderEngine, tmp_path: Path, t10k_dir: Path
):
    root = tmp_path / "local-root"
    config: dict[str, Any] = {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "ui": False,
        "hyperparameters": {"xgboost": {"num_round": 8, "max_depth": 4}},
        "minAccuracy": 0.8,
        "batch": {"xgboost": {"input": "test"}},
    }
    first = up(engine, config)
    entry = first.outputs["batch"]["xgboost"]
    assert entry["images"] == 2000  # mnist-t10k's held-out part: the last 2,000 of the official test set
    online, online_digits = online_accuracy(first.outputs["endpoints"]["xgboost"], t10k_dir)
    assert entry["accuracy"] == online  # the same digits, the same model: the same answers
    np.testing.assert_array_equal(batch_digits(entry), online_digits)
    assert entry["accuracy"] >= 0.8
    with Image.open(entry["confusion_png"]) as png:
        assert png.format == "PNG"
    matrix = read_confusion_csv(Path(entry["confusion_csv"]))
    assert matrix.sum() == 2000 and np.trace(matrix) == round(entry["accuracy"] * 2000)
    report = json.loads(Path(entry["report"]).read_text())
    assert report["images_per_second"] > 0 and report["cost"]["estimate"] == 0.0
    first_folder = Path(entry["report"]).parent

    # No change: nothing is scored again.
    steps_before = len(engine.steps)
    again = up(engine, config)
    assert ("same", BATCH) in engine.steps[steps_before:]
    assert again.outputs["batch"] == first.outputs["batch"]

    # A new champion: scored again into a new folder, the old one removed.
    config["hyperparameters"] = {"xgboost": {"num_round": 12, "max_depth": 4}}
    config["forcePromotion"] = True
    steps_before = len(engine.steps)
    second = up(engine, config)
    assert ("update", BATCH) in engine.steps[steps_before:]
    rescored = second.outputs["batch"]["xgboost"]
    assert Path(rescored["report"]).parent != first_folder and not first_folder.exists()
    online, online_digits = online_accuracy(second.outputs["endpoints"]["xgboost"], t10k_dir)
    assert rescored["accuracy"] == online
    np.testing.assert_array_equal(batch_digits(rescored), online_digits)

    engine.destroy()
    assert not root.exists()


def test_a_failing_batch_fails_the_update_and_leaves_no_run_behind(
    engine: ProviderEngine, tmp_path: Path, t10k_dir: Path
):
    root = tmp_path / "local-root"
    bad = tmp_path / "scans.csv"
    bad.write_text("0.5,0.5,0.5\n")  # three pixels a row: not an image
    config: dict[str, Any] = {
        "localRoot": str(root),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "ui": False,
        "dryRun": True,
        "batch": {"xgboost": {"input": str(bad)}},
    }
    with pytest.raises(LocalProviderError) as error:
        up(engine, config)
    assert "3 columns; expected 784 pixels" in str(error.value)
    assert BATCH not in engine.live
    assert not list((root / "batch").rglob("*.csv"))

    # Fixed input: the next up scores it (the rows carry no label: accuracy unknown, no confusion matrix).
    bad.write_text(",".join(["0.5"] * 784) + "\n" + ",".join(["0"] * 784) + "\n")
    fixed = up(engine, config)
    entry = fixed.outputs["batch"]["xgboost"]
    assert entry["images"] == 2 and entry["accuracy"] is None and entry["confusion_png"] == ""

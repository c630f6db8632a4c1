"""Fixtures of the serving tests: small but real models trained on real MNIST digits, and a server per
flavor on a free loopback port, stopped when the session ends."""

from __future__ import annotations

import contextlib
import io
import tarfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from starlette.applications import Starlette

from serving.app import create_app, serve_in_thread
from serving.constants import Flavor

ENDPOINT = "mnist-test"
TRAIN_IMAGES = 3000  # of the mnist-t10k training part: enough for >= 90 % with the small models below


@pytest.fixture(scope="session")
def t10k(t10k_dir: Path):
    from training.datasets import load_dataset

    return load_dataset("mnist-t10k", t10k_dir)


@pytest.fixture(scope="session")
def held_out(t10k) -> tuple[np.ndarray, np.ndarray]:
    """50 digits of the evaluation part (never trained on): float32 [50, 784] in [0, 1] and labels."""
    return t10k.x_test[:50].reshape(50, 784).astype(np.float32) / 255.0, t10k.y_test[:50].astype(np.int64)


def _train_xgboost(x: np.ndarray, y: np.ndarray, out: Path) -> None:
    import xgboost

    # One thread and coarse bins: seconds, not tens of seconds, on a busy shared machine.
    params = {
        "objective": "multi:softprob",
        "num_class": 10,
        "max_depth": 4,
        "eta": 0.5,
        "nthread": 1,
        "max_bin": 32,
        "seed": 0,
    }
    booster = xgboost.train(params, xgboost.DMatrix(x, label=y), num_boost_round=12)
    raw = bytes(booster.save_raw("ubj"))
    with tarfile.open(out / "model.tar.gz", "w:gz") as tar:
        member = tarfile.TarInfo("xgboost-model")
        member.size = len(raw)
        tar.addfile(member, io.BytesIO(raw))


def _train_tensorflow(x: np.ndarray, y: np.ndarray, out: Path) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Reshape((28, 28, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, batch_size=64, verbose=0)

    class Serving(tf.Module):
        def __init__(self, network: keras.Model) -> None:
            super().__init__()
            self.network = network

        @tf.function(input_signature=[tf.TensorSpec([None, 784], tf.float32, name="images")])
        def serve(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
            probabilities = self.network(images, training=False)
            return {"classes": tf.argmax(probabilities, axis=1), "probabilities": probabilities}

    module = Serving(model)
    tf.saved_model.save(module, str(out / "model"), signatures={"serving_default": module.serve})


def _train_onnx(x: np.ndarray, y: np.ndarray, out: Path) -> None:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(8 * 13 * 13, 10),
    )
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28))
    labels = torch.from_numpy(y.astype(np.int64))
    for _ in range(2):
        for start in range(0, len(images), 64):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                net(images[start : start + 64]), labels[start : start + 64]
            )
            loss.backward()
            optimiser.step()
    exported = torch.nn.Sequential(net, torch.nn.Softmax(dim=1)).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter: fast and enough here
        torch.onnx.export(
            exported,
            (images[:1],),
            str(out / "model.onnx"),
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


_TRAINERS: dict[Flavor, Callable[[np.ndarray, np.ndarray, Path], None]] = {
    Flavor.SAGEMAKER: _train_xgboost,
    Flavor.VERTEX: _train_tensorflow,
    Flavor.WATSONX: _train_onnx,
}


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, t10k) -> Callable[[Flavor], Path]:
    """flavor -> an OUT folder holding that flavor's small model (trained once, on first use)."""
    built: dict[Flavor, Path] = {}
    x = t10k.x_train[:TRAIN_IMAGES].reshape(TRAIN_IMAGES, 784).astype(np.float32) / 255.0
    y = t10k.y_train[:TRAIN_IMAGES]

    def get(flavor: Flavor) -> Path:
        if flavor not in built:
            out = tmp_path_factory.mktemp(f"small-{flavor.value}")
            _TRAINERS[flavor](x, y, out)
            built[flavor] = out
        return built[flavor]

    return get


@pytest.fixture(scope="session")
def served_app(model_dir: Callable[[Flavor], Path]) -> Iterator[Callable[[Flavor], tuple[str, Starlette]]]:
    """flavor -> (base URL, app) of a running server for that flavor's small model (endpoint name
    `mnist-test`, batching on by default); `app.state.model` and `app.state.batcher` are its model and
    batcher. Servers start on first use and all stop when the session ends."""
    running: dict[Flavor, tuple[str, Starlette]] = {}
    with contextlib.ExitStack() as servers:

        def get(flavor: Flavor) -> tuple[str, Starlette]:
            if flavor not in running:
                app = create_app(flavor, model_dir(flavor), ENDPOINT)
                running[flavor] = (servers.enter_context(serve_in_thread(app)), app)
            return running[flavor]

        yield get


@pytest.fixture(scope="session")
def server_url(served_app: Callable[[Flavor], tuple[str, Starlette]]) -> Callable[[Flavor], str]:
    """flavor -> base URL of a running server for that flavor's small model (see `served_app`)."""
    return lambda flavor: served_app(flavor)[0]

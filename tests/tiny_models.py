"""Tiny real models for tests that need something to serve but not a trainer: seconds, not minutes."""

from __future__ import annotations

import io
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from serving.constants import Flavor


def train_tiny_xgboost(out: Path, data_dir: Path, images: int = 2000, rounds: int = 5) -> Path:
    """An OUT folder as `mnistctl train --framework xgboost` lays it out (`model.tar.gz` holding
    `xgboost-model`), a `multi:softprob` booster trained on the first `images` mnist-t10k digits."""
    import xgboost

    from training.datasets import DatasetName, load_dataset

    split = load_dataset(DatasetName.MNIST_T10K, data_dir)
    x = split.x_train[:images].reshape(images, -1).astype(np.float32) / 255.0
    booster = xgboost.train(
        {"objective": "multi:softprob", "num_class": 10, "max_depth": 4, "nthread": 1},
        xgboost.DMatrix(x, label=split.y_train[:images]),
        num_boost_round=rounds,
    )
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "xgboost-model.ubj"
    booster.save_model(str(saved))
    with tarfile.open(out / "model.tar.gz", "w:gz") as tar:
        tar.add(saved, arcname="xgboost-model")
    saved.unlink()
    return out


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


SMALL_MODEL_TRAINERS: dict[Flavor, Callable[[np.ndarray, np.ndarray, Path], None]] = {
    Flavor.SAGEMAKER: _train_xgboost,
    Flavor.VERTEX: _train_tensorflow,
    Flavor.WATSONX: _train_onnx,
}


def train_small_model(flavor: Flavor, x: np.ndarray, y: np.ndarray, out: Path) -> Path:
    """An OUT folder holding a small real model of `flavor`'s framework trained on (x, y): seconds."""
    SMALL_MODEL_TRAINERS[flavor](x, y, out)
    return out

"""The Keras CNN's dry run and its SavedModel, loaded as TensorFlow Serving / Vertex AI load it."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from training import tf_trainer
from training.datasets import Split
from training.formats import write_npz
from training.run import train_model

pytestmark = pytest.mark.slow

# Ops TensorFlow has had since 1.x (AddV2 since 1.14): a graph made only of these loads in the TF 2.15
# prediction container. Batch norm at inference is Rsqrt, Mul, Sub and AddV2.
LONG_STANDING_OPS = {
    "AddV2", "ArgMax", "BiasAdd", "Const", "Conv2D", "Identity", "MatMul", "MaxPool", "Mul", "NoOp",
    "Pack", "Placeholder", "ReadVariableOp", "Relu", "Reshape", "Rsqrt", "Shape", "Softmax", "Squeeze",
    "StatefulPartitionedCall", "StridedSlice", "Sub",
}  # fmt: skip
# The mirror average of the fashion-mnist preset adds these, in TensorFlow since 1.0.
MIRROR_AVERAGE_OPS = {"ReverseV2", "RealDiv", "AddN"}


@pytest.fixture(scope="module")
def trained(t10k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("tensorflow")
    metrics = train_model("tensorflow", "mnist-t10k", t10k_dir, out, {}, dry_run=True, threads=2)
    return out, metrics


@pytest.fixture(scope="module")
def serving_default(trained: tuple[Path, dict]):  # a ConcreteFunction
    return tf.saved_model.load(str(trained[0] / "model")).signatures["serving_default"]


def test_dry_run_writes_savedmodel_hyperparameters_and_metrics(trained: tuple[Path, dict]) -> None:
    out, metrics = trained
    assert (out / "model" / "saved_model.pb").is_file()
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert json.loads((out / "hyperparameters.json").read_text())["epochs"] == 3
    assert (metrics["framework"], metrics["n_train"], metrics["n_test"]) == ("tensorflow", 512, 256)


@pytest.mark.parametrize("shape", [(5, 784), (5, 28, 28)])
def test_serving_signature_accepts_flat_and_square_images(
    serving_default, t10k_split: Split, shape: tuple
) -> None:
    images = (t10k_split.x_test[:5].astype(np.float32) / 255).reshape(shape)

    result = serving_default(images=tf.constant(images))

    assert set(result) == {"classes", "probabilities"}
    assert result["classes"].dtype == tf.int64 and result["classes"].shape == (5,)
    assert result["probabilities"].dtype == tf.float32 and result["probabilities"].shape == (5, 10)
    probabilities = result["probabilities"].numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(result["classes"].numpy(), probabilities.argmax(axis=1))


def test_savedmodel_accuracy_matches_the_reported_accuracy(
    serving_default, trained: tuple[Path, dict], t10k_split: Split
) -> None:
    images = t10k_split.x_test[:256].astype(np.float32).reshape(-1, 784) / 255
    classes = serving_default(images=tf.constant(images))["classes"].numpy()
    accuracy = float(np.mean(classes == t10k_split.y_test[:256]))
    assert accuracy == pytest.approx(trained[1]["accuracy"], abs=1e-6)
    assert accuracy > 0.5


def test_serving_graph_uses_only_long_standing_ops(serving_default) -> None:
    graph = serving_default.graph.as_graph_def()
    ops = {node.op for node in graph.node}
    ops |= {node.op for function in graph.library.function for node in function.node_def}
    assert ops <= LONG_STANDING_OPS, ops - LONG_STANDING_OPS


def test_main_reads_npz_and_exports_to_aip_model_dir(
    small_split: Split, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As Vertex AI runs it: data from --data, the SavedModel to $AIP_MODEL_DIR, metadata beside it.
    write_npz(small_split, tmp_path / "data")
    monkeypatch.setenv(tf_trainer.AIP_MODEL_DIR_ENV, str(tmp_path / "output" / "model"))

    metrics = tf_trainer.main(["--data", str(tmp_path / "data"), "--dry-run", "--set", "batch_size=100"])

    assert (tmp_path / "output" / "model" / "saved_model.pb").is_file()
    assert json.loads((tmp_path / "output" / "hyperparameters.json").read_text())["batch_size"] == 100
    assert json.loads((tmp_path / "output" / "metrics.json").read_text())["n_train"] == small_split.n_train
    assert metrics["hyperparameters"]["epochs"] == 3


def test_the_clothes_network_is_exported_with_its_mirror_average(
    t10k_dir: Path, t10k_split: Split, tmp_path: Path
) -> None:
    overrides = {"convs": "2", "hidden": "32", "shift": "2", "flip": "true", "average_mirrored": "true"}
    metrics = train_model("tensorflow", "mnist-t10k", t10k_dir, tmp_path, overrides, dry_run=True, threads=2)
    serve = tf.saved_model.load(str(tmp_path / "model")).signatures["serving_default"]
    images = t10k_split.x_test[:256].astype(np.float32) / 255
    probabilities = serve(images=tf.constant(images))["probabilities"].numpy()
    mirrored = serve(images=tf.constant(np.ascontiguousarray(images[..., ::-1])))["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, mirrored, atol=1e-6)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == t10k_split.y_test[:256]))
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)
    graph = serve.graph.as_graph_def()
    ops = {node.op for node in graph.node} | {n.op for f in graph.library.function for n in f.node_def}
    assert ops <= LONG_STANDING_OPS | MIRROR_AVERAGE_OPS, ops - LONG_STANDING_OPS - MIRROR_AVERAGE_OPS


def test_the_input_pipeline_is_neither_autotuned_nor_sharded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # What `fit` is given: autotuning slowed whole epochs by 70 % on 2 cores, and tf.distribute must not
    # shard what each worker already read as its own shard.
    given: list[tf.data.Dataset] = []
    monkeypatch.setattr(keras.Model, "fit", lambda self, data, **kwargs: given.append(data))
    images = np.zeros((8, 28, 28), dtype=np.uint8)
    hp = tf_trainer.Hyperparameters(epochs=1, batch_size=4, flip=True, shift=2)
    tf_trainer.train(images, np.arange(8) % 10, hp)
    (options,) = (data.options() for data in given)
    assert options.autotune.enabled is False
    assert options.experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF

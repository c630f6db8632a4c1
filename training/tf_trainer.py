"""A small Keras 3 CNN exported as a TensorFlow SavedModel for Vertex AI.

Runs unchanged as a Python package in Vertex AI's prebuilt TensorFlow training container::

    python -m training.tf_trainer --data gs://BUCKET/data      # reads train.npz and test.npz

The SavedModel goes to ``$AIP_MODEL_DIR`` (set by Vertex AI) or ``--model-dir``; metrics.json and
hyperparameters.json go to the folder above it. Its ``serving_default`` signature takes ``images``
float32 in [0, 1] shaped [N, 784] or [N, 28, 28] and returns ``classes`` int64 [N] and
``probabilities`` float32 [N, 10]. The graph uses only long-standing ops (Conv2D, MaxPool, MatMul,
Softmax, ArgMax, Reshape), so TF 2.15 prediction containers serve it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import posixpath
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.datasets import Split, load_dataset
from training.distributed import TF_CONFIG_ENV, ClusterRole, cluster_role, shard, tf_config
from training.formats import read_npz_split
from training.hyperparameters import (
    HYPERPARAMETERS_FILE,
    METRICS_FILE,
    ProgressCallback,
    field_names,
    parse_assignments,
    with_overrides,
)

AIP_MODEL_DIR_ENV = "AIP_MODEL_DIR"  # where Vertex AI expects the exported model
# Set by Vertex AI in every trial of a hyperparameter tuning job; the trial then reports its metric for the
# tuning service with cloudml-hypertune (to /tmp/hypertune/output.metrics, or $CLOUD_ML_HP_METRIC_FILE).
TRIAL_ID_ENV = "CLOUD_ML_TRIAL_ID"
HYPERTUNE_METRIC = "accuracy"  # the study spec's metric_id (infra/gcp/tuning_job.py)
TF_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
SERVING_SIGNATURE = "serving_default"
SERVING_INPUT = "images"
DRY_RUN_HYPERPARAMETERS = {"epochs": "3", "batch_size": "32", "augment": "false"}  # batch norm needs steps
DRY_RUN_IMAGES = (512, 256)

os.environ.setdefault(TF_LOG_LEVEL_ENV, "2")  # TensorFlow's C++ start-up chatter hides real messages

import keras  # noqa: E402  (after the log level, which TensorFlow reads once at import)
import tensorflow as tf  # noqa: E402


@dataclass(frozen=True)
class Hyperparameters:
    # Defaults tuned on mnist-t10k; training.presets holds what other datasets need (flips for clothes).
    epochs: int = 7  # 99.25 % on mnist-t10k in 46 s on 2 cores; 8 took 62 s, over the 60 s target
    batch_size: int = 64
    learning_rate: float = 0.003  # peak of the warm-up + cosine schedule
    weight_decay: float = 0.0001
    dropout: float = 0.25
    augment: bool = True  # small random rotations, zooms and shifts of the training images
    flip: bool = False  # random horizontal flips: right for clothes, wrong for digits and characters
    label_smoothing: float = 0.0
    shift: int = 0  # random shifts of up to this many pixels each way (zero-filled): random crops of padding
    width: int = 16  # channels of the first conv block; the next two have 2x and 4x as many
    convs: int = 1  # convolutions in the second and third blocks (the first, at full resolution, has one)
    hidden: int = 0  # units of a dense layer (batch norm, ReLU) before the classifier; 0: none
    # Test-time flips: the exported model also predicts each image's mirror image and averages the two.
    # Right for clothes (left-right symmetric), wrong for digits and characters.
    average_mirrored: bool = False
    seed: int = 0


def _conv_block(x: Any, channels: int, convs: int = 1) -> Any:
    # As in the PyTorch trainer: no conv bias (batch norm shifts), PyTorch's batch-norm momentum and epsilon.
    for _ in range(convs):
        x = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x))
    return keras.layers.MaxPooling2D()(x)


def build_model(hp: Hyperparameters) -> keras.Model:
    """The PyTorch trainer's network: three conv blocks (3x3 convs with batch norm and ReLU, then max-pool:
    28 -> 14 -> 7 -> 3), an optional hidden dense layer, and the classifier."""
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = _conv_block(inputs, hp.width)
    x = _conv_block(x, 2 * hp.width, hp.convs)
    x = keras.layers.Flatten()(_conv_block(x, 4 * hp.width, hp.convs))
    if hp.hidden:
        x = keras.layers.Dense(hp.hidden, use_bias=False)(x)
        x = keras.layers.ReLU()(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x))
    x = keras.layers.Dropout(hp.dropout)(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def with_mirror_average(model: keras.Model) -> keras.Model:
    """The trained network as exported and evaluated when ``average_mirrored``: the mean of its
    probabilities for the image and for its mirror image (ReverseV2 in the SavedModel, an old op)."""
    inputs = keras.Input(shape=(28, 28, 1), name="image")
    mirrored = keras.layers.Lambda(lambda images: keras.ops.flip(images, axis=2), name="mirror")(inputs)
    outputs = keras.layers.Average(name="probabilities")([model(inputs), model(mirrored)])
    return keras.Model(inputs, outputs, name=f"{model.name}_mirror_averaged")


def _augmenter(hp: Hyperparameters) -> keras.Sequential:
    # Used only in the input pipeline, so nothing of it reaches the exported graph.
    seed = hp.seed
    layers: list[keras.layers.Layer] = []
    if hp.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed + 3))
    if hp.augment:
        layers += [
            keras.layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed),
            keras.layers.RandomZoom(0.1, fill_mode="constant", seed=seed + 1),
            keras.layers.RandomTranslation(2 / 28, 2 / 28, fill_mode="constant", seed=seed + 2),
        ]
    if hp.shift:
        # whole-pixel shifts, as the PyTorch trainer's random crops of the zero-padded image
        layers.append(
            keras.layers.RandomTranslation(
                hp.shift / 28, hp.shift / 28, fill_mode="constant", interpolation="nearest", seed=seed + 4
            )
        )
    return keras.Sequential(layers)


def to_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 [N, 28, 28] to float32 [N, 28, 28, 1] in [0, 1]."""
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


class _ReportProgress(keras.callbacks.Callback):
    def __init__(self, progress: ProgressCallback, epochs: int, steps_per_epoch: int) -> None:
        super().__init__()
        self.progress = progress
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        step = self.epoch * self.steps_per_epoch + batch + 1
        total = self.epochs * self.steps_per_epoch
        if step % 10 == 0 or step == total:
            loss = (logs or {}).get("loss")
            detail = f" loss {float(loss):.4f}" if loss is not None else ""
            self.progress(step, total, f"epoch {self.epoch + 1}/{self.epochs}{detail}")


class _EpochEnd(keras.callbacks.Callback):
    def __init__(self, on_epoch: Callable[[int, keras.Model], None]) -> None:
        super().__init__()
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.model is not None:  # set by fit before the first epoch
            self.on_epoch(epoch + 1, self.model)


def train(
    x_train: np.ndarray,
    y_train: np.ndarray,
    hp: Hyperparameters,
    progress: ProgressCallback | None = None,
    on_epoch: Callable[[int, keras.Model], None] | None = None,
) -> keras.Model:
    """``on_epoch(epoch, model)`` hears each finished epoch (training/tuning.py scores the model on its
    validation split and may stop the training by raising)."""
    keras.utils.set_random_seed(hp.seed)
    model = build_model(hp)
    steps_per_epoch = int(np.ceil(len(x_train) / hp.batch_size))
    total_steps = hp.epochs * steps_per_epoch
    warmup = max(1, total_steps // 4)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=hp.learning_rate / 25,
        decay_steps=max(1, total_steps - warmup),
        warmup_target=hp.learning_rate,
        warmup_steps=warmup,
    )
    # keras annotates learning_rate as float although it documents (and takes) schedules
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=hp.weight_decay)  # pyright: ignore[reportArgumentType]
    # One-hot labels: Keras smooths labels only in CategoricalCrossentropy.
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=hp.label_smoothing)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    labels = np.eye(10, dtype=np.float32)[y_train]
    data = tf.data.Dataset.from_tensor_slices((to_inputs(x_train), labels))
    data = data.shuffle(len(x_train), seed=hp.seed, reshuffle_each_iteration=True).batch(hp.batch_size)
    if hp.augment or hp.flip or hp.shift:
        augmenter = _augmenter(hp)
        data = data.map(lambda x, y: (augmenter(x, training=True), y), num_parallel_calls=1)
    data = with_pipeline_options(data.prefetch(2))
    callbacks: list[keras.callbacks.Callback] = (
        [_ReportProgress(progress, hp.epochs, steps_per_epoch)] if progress else []
    )
    if on_epoch is not None:
        callbacks.append(_EpochEnd(on_epoch))
    # shuffle=False: the pipeline shuffles; verbose=0 is documented though the annotation says str
    if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        fit_on_all_workers(model, data, hp.epochs, callbacks)
    else:
        model.fit(data, epochs=hp.epochs, verbose=0, callbacks=callbacks, shuffle=False)  # pyright: ignore[reportArgumentType]
    return model


def predict_proba(model: keras.Model, images: np.ndarray) -> np.ndarray:
    probabilities = model.predict(to_inputs(images), batch_size=1000, verbose=0)  # pyright: ignore[reportArgumentType]
    return np.asarray(probabilities)


def evaluate(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(predict_proba(model, images).argmax(axis=1) == labels))


def export(model: keras.Model, model_dir: str) -> str:
    """Write the SavedModel with the ``serving_default`` signature described in the module docstring."""
    archive = keras.export.ExportArchive()
    archive.track(model)

    # shape=None: Vertex AI hands the instances over as they come, [N, 784] or [N, 28, 28].
    spec = tf.TensorSpec(shape=None, dtype=tf.float32, name=SERVING_INPUT)  # pyright: ignore[reportArgumentType]

    @tf.function(input_signature=[spec])
    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        probabilities = model(tf.reshape(images, [-1, 28, 28, 1]), training=False)
        return {"classes": tf.argmax(probabilities, axis=1), "probabilities": probabilities}

    archive.add_endpoint(SERVING_SIGNATURE, serve)
    archive.write_out(model_dir, verbose=False)  # pyright: ignore[reportAttributeAccessIssue]
    return model_dir


def _write_text(path: str, text: str) -> None:
    with tf.io.gfile.GFile(path, "w") as f:  # local paths and gs:// alike
        f.write(text)


def train_and_evaluate(
    data: str | Path | Split,
    model_dir: str | Path,
    hp: Hyperparameters,
    *,
    dry_run: bool = False,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    on_epoch: Callable[[int, keras.Model], None] | None = None,
) -> dict[str, Any]:
    """Train on ``data`` (folder of train.npz/test.npz, local or gs://, or a Split); export to ``model_dir``.

    hyperparameters.json is written beside ``model_dir`` (into its parent folder), not inside the SavedModel.
    """
    if threads:
        _set_threads(threads)
    role = cluster_role(os.environ)
    strategy = all_workers_strategy(role)  # before TensorFlow runs anything
    split = data if isinstance(data, Split) else read_npz_split(data)
    if dry_run:
        split = split.head(*DRY_RUN_IMAGES)
    model_dir = str(model_dir)
    started = time.perf_counter()
    with strategy.scope() if strategy else contextlib.nullcontext():
        model = train(*shard(split.x_train, split.y_train, role), hp, progress, on_epoch)
    train_seconds = time.perf_counter() - started
    if hp.average_mirrored:
        model = with_mirror_average(model)
    export_dir = export_on_every_worker(model, model_dir, role)
    if role.is_chief:
        _write_text(
            posixpath.join(_parent(model_dir), HYPERPARAMETERS_FILE), json.dumps(asdict(hp), indent=2) + "\n"
        )
    score = evaluate if not role.distributed else evaluate_on_this_worker
    return {
        "accuracy": score(model, split.x_test, split.y_test),
        "n_train": split.n_train,
        "n_test": split.n_test,
        "train_seconds": round(train_seconds, 3),
        "artifact": export_dir,
    }


# -- multi-worker plumbing (Vertex AI: TF_CONFIG names a chief in pool 0 and workers in pool 1) --------


def all_workers_strategy(role: ClusterRole) -> tf.distribute.Strategy | None:
    """MultiWorkerMirroredStrategy with more than one replica (in its scope the model, its optimizer and
    `fit` run in lockstep on every replica); None on a single one. It must exist before any TF op runs."""
    if not role.distributed:
        return None
    if TF_CONFIG_ENV not in os.environ:  # only CLUSTER_SPEC was set: TensorFlow reads TF_CONFIG
        os.environ[TF_CONFIG_ENV] = json.dumps(tf_config(os.environ))
    return tf.distribute.MultiWorkerMirroredStrategy()


def fit_on_all_workers(
    model: keras.Model, data: tf.data.Dataset, epochs: int, callbacks: Sequence[keras.callbacks.Callback]
) -> None:
    """`fit` for MultiWorkerMirroredStrategy: the compiled loss and optimizer, one synchronous step on
    every worker at a time (gradients all-reduced by the optimizer). Keras 3's own `fit` cannot run under
    this strategy: it reduces a first batch and the step's scalar logs along an axis they do not have
    (keras-team/keras#20585). `data` yields this worker's batches of the global batch size; each step
    takes a per-worker share of it, so the global batch, the learning-rate schedule and the number of
    steps per epoch are those of a single worker."""
    strategy = tf.distribute.get_strategy()
    per_worker = max(1, _batch_size(data) // strategy.num_replicas_in_sync)
    batches = strategy.distribute_datasets_from_function(lambda _: data.rebatch(per_worker))
    optimizer = model.optimizer

    def replica_step(images: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            probabilities = model(images, training=True)
            # The compiled loss (one-hot labels, label smoothing), per example.
            per_example = model.loss.call(labels, probabilities)
            loss = tf.nn.compute_average_loss(per_example)  # / the global batch: all-reduced SUM = mean
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def step(batch: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        return strategy.reduce("SUM", strategy.run(replica_step, args=batch), axis=None)

    for epoch in range(epochs):
        for callback in callbacks:
            callback.on_epoch_begin(epoch)
        for index, batch in enumerate(batches):
            loss = step(batch)
            for callback in callbacks:
                callback.on_train_batch_end(index, {"loss": float(loss)})


def _batch_size(data: tf.data.Dataset) -> int:
    """The size `batch` was given (the first batch's; only the last one may be smaller)."""
    images, _ = next(iter(data))
    return int(images.shape[0])


def with_pipeline_options(data: tf.data.Dataset) -> tf.data.Dataset:
    """The input pipeline's options:

    - No auto-sharding: each worker already reads its own shard (training.distributed.shard); tf.distribute
      must not shard again (its DATA fallback for in-memory data would read everything and drop most of it).
    - No autotuning: the pipeline's parallelism and prefetch are fixed, so it has nothing to tune, and on
      2 cores its background tuning made whole epochs run at 103 ms a step instead of 60 (the step itself
      unchanged, the wait for the next batch 45 ms; docs/training.md, "TensorFlow on full size").
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    options.autotune.enabled = False
    return data.with_options(options)


def export_on_every_worker(model: keras.Model, model_dir: str, role: ClusterRole) -> str:
    """Export to `model_dir` on the chief. Saving a multi-worker model is a collective operation, so the
    other workers save too, each into a temporary folder that is removed afterwards."""
    if role.is_chief:
        return export(model, model_dir)
    scratch = tempfile.mkdtemp(prefix=f"mnist-{role.task_type}-{role.task_index}-")
    try:
        return export(model, posixpath.join(scratch, "model"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def evaluate_on_this_worker(model: keras.Model, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy computed by this process alone (`model.predict` would split the images across workers)."""
    batches = np.array_split(to_inputs(images), max(1, len(images) // 1000))
    probabilities = np.concatenate([np.asarray(model(b, training=False)) for b in batches])
    return float(np.mean(probabilities.argmax(axis=1) == labels))


def _parent(path: str) -> str:
    parent = posixpath.dirname(path.rstrip("/"))
    return parent or "."


def _set_threads(threads: int) -> None:
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass  # TensorFlow already started in this process; it keeps the thread pools it has


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train the Keras CNN and export a SavedModel (Vertex AI ready)."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="folder (local or gs://) holding train.npz and test.npz")
    source.add_argument("--dataset", help="dataset name, loaded with training.datasets instead")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="with --dataset: where it is read from / cached"
    )
    parser.add_argument(
        "--model-dir",
        default=os.environ.get(AIP_MODEL_DIR_ENV),
        help=f"where the SavedModel goes (default: ${AIP_MODEL_DIR_ENV}, which Vertex AI sets)",
    )
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a hyperparameter")
    # Vertex AI's tuning service passes each trial's values as `--<parameter_id>=<value>`.
    tunable = parser.add_argument_group("hyperparameters (as a Vertex AI tuning trial passes them)")
    for name in field_names(Hyperparameters):
        tunable.add_argument(f"--{name}", dest=f"hp_{name}", metavar="VALUE", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dry-run", action="store_true", help="a few hundred images, one epoch: seconds")
    args = parser.parse_args(argv)
    if not args.model_dir:
        parser.error(f"--model-dir is required when ${AIP_MODEL_DIR_ENV} is not set")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    hp = Hyperparameters()
    if args.dry_run:
        hp = with_overrides(hp, DRY_RUN_HYPERPARAMETERS)
    hp = with_overrides(hp, parse_assignments(args.set))
    given = {name: getattr(args, f"hp_{name}") for name in field_names(Hyperparameters)}
    hp = with_overrides(hp, {name: value for name, value in given.items() if value is not None})
    data = load_dataset(args.dataset, args.data_dir) if args.dataset else args.data
    metrics = train_and_evaluate(data, args.model_dir, hp, dry_run=args.dry_run, threads=args.threads)
    metrics |= {
        "framework": "tensorflow",
        "dataset": args.dataset or args.data,
        "hyperparameters": asdict(hp),
    }
    if cluster_role(os.environ).is_chief:
        _write_text(
            posixpath.join(_parent(str(args.model_dir)), METRICS_FILE), json.dumps(metrics, indent=2) + "\n"
        )
        if os.environ.get(TRIAL_ID_ENV) is not None:
            report_to_tuning_service(metrics["accuracy"], hp.epochs)
    print(json.dumps(metrics, indent=2))
    return metrics


def report_to_tuning_service(accuracy: float, step: int) -> None:
    """The trial's objective for Vertex AI's tuning service, written as cloudml-hypertune writes it."""
    import hypertune

    hypertune.HyperTune().report_hyperparameter_tuning_metric(
        hyperparameter_metric_tag=HYPERTUNE_METRIC, metric_value=accuracy, global_step=step
    )


if __name__ == "__main__":
    main()

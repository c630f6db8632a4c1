"""A small PyTorch CNN, exported to ONNX for watsonx.ai Runtime.

The ONNX graph takes ``input`` float32 [N, 1, 28, 28] (pixels in [0, 1], any batch size) and returns
``probabilities`` float32 [N, 10] (softmax is part of the graph). Opset 19 with IR version 9 is what
watsonx.ai's ``onnxruntime_opset_19`` software specification (model type ``onnxruntime_1.16``) loads;
the same file also runs on the newer ``onnxruntime_opset_21`` specification, since ONNX Runtime reads
every older opset. See docs/training.md.
"""

from __future__ import annotations

import argparse
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.artifacts import write_tar_gz
from training.datasets import Split
from training.hyperparameters import ProgressCallback, parse_assignments, save_hyperparameters

if TYPE_CHECKING:
    import onnx

ONNX_FILE = "model.onnx"
MODEL_ARCHIVE = "model.tar.gz"  # what the watsonx.ai repository stores: the archive holds model.onnx
ONNX_OPSET = 19
ONNX_IR_VERSION = 9  # ONNX Runtime 1.16 reads IR versions up to 9
ONNX_INPUT_NAME = "input"
ONNX_OUTPUT_NAME = "probabilities"
# For the IBM stack: the watsonx.ai model type and software specification this artifact is stored with.
WATSONX_MODEL_TYPE = "onnxruntime_1.16"
WATSONX_SOFTWARE_SPEC = "onnxruntime_opset_19"
DRY_RUN_HYPERPARAMETERS = {"epochs": "3", "batch_size": "32", "augment": "false"}  # batch norm needs steps
DRY_RUN_IMAGES = (512, 256)


@dataclass(frozen=True)
class Hyperparameters:
    # Defaults tuned on mnist-t10k; training.presets holds what other datasets need (flips for clothes).
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 0.005  # the peak of the one-cycle schedule
    weight_decay: float = 0.0001
    dropout: float = 0.25
    augment: bool = True  # small random rotations, scalings and shifts of the training images
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


def _conv_block(channels_in: int, channels_out: int, convs: int = 1) -> nn.Sequential:
    # No conv bias: batch norm's shift replaces it; in the exported graph the norm folds into the conv.
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [
            nn.Conv2d(channels_in if i == 0 else channels_out, channels_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels_out),
            nn.ReLU(),
        ]
    return nn.Sequential(*layers, nn.MaxPool2d(2))


class Net(nn.Module):
    """Three conv blocks (3x3 convs with batch norm and ReLU, then max-pool: 28 -> 14 -> 7 -> 3), an
    optional hidden dense layer, and the classifier."""

    def __init__(self, dropout: float = 0.25, width: int = 16, convs: int = 1, hidden: int = 0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_block(1, width),
            _conv_block(width, 2 * width, convs),
            _conv_block(2 * width, 4 * width, convs),
        )
        flat = 4 * width * 3 * 3
        self.hidden = (
            nn.Sequential(nn.Linear(flat, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU())
            if hidden
            else nn.Identity()
        )
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden or flat, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hidden(torch.flatten(self.features(x), 1))
        return self.classifier(self.dropout(x))  # logits; the exported graph adds the softmax


class WithSoftmax(nn.Module):
    """What is exported and evaluated: the network followed by softmax, so that clients receive
    probabilities; with ``average_mirrored``, the mean of the probabilities of the image and its mirror."""

    mirror: torch.Tensor

    def __init__(self, net: Net, average_mirrored: bool = False) -> None:
        super().__init__()
        self.net = net
        self.average_mirrored = average_mirrored
        # Mirroring as a product with the anti-diagonal matrix: MatMul is in every ONNX runtime's opset.
        self.register_buffer("mirror", torch.eye(28).flip(0), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(self.net(x), dim=1)
        if self.average_mirrored:
            mirrored = torch.softmax(self.net(x @ self.mirror), dim=1)
            probabilities = (probabilities + mirrored) / 2
        return probabilities


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28] to float32 [N, 1, 28, 28] in [0, 1]."""
    return torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation (±10°), scale (±10 %) and shift (±2 px) per image."""
    n = batch.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * 2 / 28)  # grid units: 2 px of 28
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, align_corners=False, padding_mode="zeros")


def flip_horizontally(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images left to right."""
    flipped = torch.rand(batch.shape[0], generator=generator) < 0.5
    return torch.where(flipped[:, None, None, None], batch.flip(3), batch)


def shift_randomly(batch: torch.Tensor, pixels: int, generator: torch.Generator) -> torch.Tensor:
    """Move each image by up to ``pixels`` each way, filling with black: a random crop of the padded image."""
    n, size = batch.shape[0], batch.shape[-1]
    padded = F.pad(batch, (pixels, pixels, pixels, pixels))
    dy, dx = torch.randint(0, 2 * pixels + 1, (2, n), generator=generator)
    rows = (torch.arange(size)[None, :] + dy[:, None])[:, :, None]
    cols = (torch.arange(size)[None, :] + dx[:, None])[:, None, :]
    return padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)


def train(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    hp: Hyperparameters,
    progress: ProgressCallback | None = None,
    on_epoch: Callable[[int, Net], None] | None = None,
) -> Net:
    """``on_epoch(epoch, model)`` hears each finished epoch, the model in eval mode (training/tuning.py
    scores it on its validation split and may stop the training by raising)."""
    torch.manual_seed(hp.seed)
    generator = torch.Generator().manual_seed(hp.seed)
    model = Net(hp.dropout, hp.width, hp.convs, hp.hidden)
    # Channels-last: oneDNN's CPU convolutions ran 25-45 % faster on it here (a training step of the
    # width-16 network: 44 vs 60 ms). Module.to documents memory_format; torch's type overloads omit it.
    model.to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue]
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / hp.batch_size)
    total = hp.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=hp.learning_rate, total_steps=total)
    model.train()
    step = 0
    for epoch in range(1, hp.epochs + 1):
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(x_train), hp.batch_size):
            index = order[start : start + hp.batch_size]
            images, labels = x_train[index], y_train[index]
            if hp.flip:
                images = flip_horizontally(images, generator)
            if hp.augment:
                images = augment(images, generator)
            if hp.shift:
                images = shift_randomly(images, hp.shift, generator)
            images = images.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(images), labels, label_smoothing=hp.label_smoothing)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if progress and (step % 10 == 0 or step == total):
                progress(step, total, f"epoch {epoch}/{hp.epochs} loss {loss.item():.4f}")
        if on_epoch is not None:
            model.eval()
            on_epoch(epoch, model)
            model.train()
    model.eval()
    model.to(memory_format=torch.contiguous_format)  # pyright: ignore[reportCallIssue]  (as exported)
    return model


@torch.no_grad()
def predict_proba(served: WithSoftmax, images: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    served.eval()
    return torch.cat([served(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]).numpy()


def evaluate(served: WithSoftmax, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of what is exported (softmax, and the mirror average if the model has it)."""
    predicted = predict_proba(served, images).argmax(axis=1)
    return float(np.mean(predicted == labels.numpy()))


def conform_to_runtime(proto: onnx.ModelProto) -> bool:
    """Make ``proto`` loadable by watsonx.ai's ONNX runtime (``onnxruntime_opset_19``: ONNX Runtime 1.16):
    operators of the default domain at opset <= ONNX_OPSET and no other operator set (1.16 lacks newer
    ones; a ``RuntimeError`` names them), IR version lowered to ONNX_IR_VERSION if the exporter wrote a
    newer one (the full check that follows proves the graph uses nothing the older IR lacks).
    Returns whether ``proto`` was changed."""
    unsupported = [
        f"{imp.domain or 'ai.onnx'} opset {imp.version}"
        for imp in proto.opset_import
        if imp.domain not in ("", "ai.onnx") or imp.version > ONNX_OPSET
    ]
    if unsupported:
        raise RuntimeError(
            f"the exported graph needs {', '.join(unsupported)}; watsonx.ai's {WATSONX_SOFTWARE_SPEC} "
            f"(ONNX Runtime 1.16) runs the default domain up to opset {ONNX_OPSET} only"
        )
    if proto.ir_version <= ONNX_IR_VERSION:
        return False
    proto.ir_version = ONNX_IR_VERSION
    return True


def export_onnx(model: Net | WithSoftmax, out_dir: Path) -> Path:
    """Write ``model.onnx`` (softmax included, dynamic batch) and check it with onnx and onnxruntime."""
    import onnx
    import onnxruntime as ort

    path = Path(out_dir) / ONNX_FILE
    exported = (model if isinstance(model, WithSoftmax) else WithSoftmax(model)).eval()
    example = torch.zeros(2, 1, 28, 28)
    # The TorchScript exporter (dynamo=False) writes a single self-contained file at IR version 9; the
    # dynamo exporter writes IR 10 (too new for ONNX Runtime 1.16) with weights in a separate file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            exported,
            (example,),
            str(path),
            opset_version=ONNX_OPSET,
            input_names=[ONNX_INPUT_NAME],
            output_names=[ONNX_OUTPUT_NAME],
            dynamic_axes={ONNX_INPUT_NAME: {0: "batch"}, ONNX_OUTPUT_NAME: {0: "batch"}},
            dynamo=False,
        )
    proto = onnx.load(str(path))
    if conform_to_runtime(proto):
        onnx.save(proto, str(path))
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = torch.rand(3, 1, 28, 28)
    onnx_out = np.asarray(session.run([ONNX_OUTPUT_NAME], {ONNX_INPUT_NAME: probe.numpy()})[0])
    with torch.no_grad():
        torch_out = exported(probe).numpy()
    if not np.allclose(onnx_out, torch_out, atol=1e-5):
        raise RuntimeError(
            f"{path}: onnxruntime and torch disagree (max diff {np.abs(onnx_out - torch_out).max()})"
        )
    return path


def train_and_evaluate(
    split: Split,
    out_dir: Path,
    hp: Hyperparameters,
    *,
    dry_run: bool = False,
    threads: int | None = None,
    progress: ProgressCallback | None = None,
    on_epoch: Callable[[int, Net], None] | None = None,
) -> dict[str, Any]:
    """Train, evaluate on the test part, write model.onnx, model.tar.gz and hyperparameters.json."""
    if dry_run:
        split = split.head(*DRY_RUN_IMAGES)
    if threads:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train = to_tensor(split.x_train), torch.from_numpy(split.y_train.astype(np.int64))
    x_test, y_test = to_tensor(split.x_test), torch.from_numpy(split.y_test.astype(np.int64))
    started = time.perf_counter()
    model = train(x_train, y_train, hp, progress, on_epoch)
    train_seconds = time.perf_counter() - started
    served = WithSoftmax(model, hp.average_mirrored).eval()
    onnx_path = export_onnx(served, out_dir)
    write_tar_gz(out_dir / MODEL_ARCHIVE, {ONNX_FILE: onnx_path.read_bytes()})
    save_hyperparameters(hp, out_dir)
    return {
        "accuracy": evaluate(served, x_test, y_test),
        "n_train": split.n_train,
        "n_test": split.n_test,
        "train_seconds": round(train_seconds, 3),
        "artifact": str(onnx_path),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train the PyTorch CNN and export it to ONNX.")
    parser.add_argument("--dataset", default="mnist-t10k")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the dataset is read from / cached")
    parser.add_argument(
        "--out", type=Path, required=True, help="where model.onnx, model.tar.gz and metrics.json go"
    )
    parser.add_argument("--set", action="append", metavar="NAME=VALUE", help="override a hyperparameter")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dry-run", action="store_true", help="a few hundred images, one epoch: seconds")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from training.run import train_model

    args = parse_args(argv)
    overrides = parse_assignments(args.set)
    return train_model(
        "pytorch", args.dataset, args.data_dir, args.out, overrides, args.dry_run, threads=args.threads
    )


if __name__ == "__main__":
    main()

"""The PyTorch CNN's dry run and its ONNX artifact, loaded with onnxruntime as watsonx.ai loads it."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mnistctl.client import watsonx_payload
from training import torch_trainer
from training.datasets import Split
from training.run import train_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(t10k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, list]:
    out = tmp_path_factory.mktemp("pytorch")
    reports: list[tuple[int, int, str]] = []
    metrics = train_model(
        "pytorch",
        "mnist-t10k",
        t10k_dir,
        out,
        {},
        dry_run=True,
        progress=lambda *a: reports.append(a),
        threads=2,
    )
    return out, metrics, reports


def test_dry_run_writes_onnx_archive_hyperparameters_and_metrics(trained: tuple[Path, dict, list]) -> None:
    out, metrics, reports = trained
    assert {p.name for p in out.iterdir()} == {
        "model.onnx",
        "model.tar.gz",
        "hyperparameters.json",
        "metrics.json",
    }
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert (metrics["framework"], metrics["n_train"], metrics["n_test"]) == ("pytorch", 512, 256)
    assert json.loads((out / "hyperparameters.json").read_text())["epochs"] == 3
    assert reports[-1][0] == reports[-1][1] == 48  # 512 images in batches of 32, three epochs


def test_archive_holds_exactly_the_onnx_file(trained: tuple[Path, dict, list]) -> None:
    out = trained[0]
    with tarfile.open(out / "model.tar.gz", "r:gz") as tar:
        assert tar.getnames() == ["model.onnx"]
        assert tar.extractfile("model.onnx").read() == (out / "model.onnx").read_bytes()  # type: ignore[union-attr]


def test_onnx_model_has_the_opset_and_ir_version_watsonx_runtimes_load(
    trained: tuple[Path, dict, list],
) -> None:
    model = onnx.load(str(trained[0] / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert {(o.domain, o.version) for o in model.opset_import} == {("", torch_trainer.ONNX_OPSET)}
    assert model.ir_version <= torch_trainer.ONNX_IR_VERSION
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


@pytest.mark.parametrize("batch", [1, 7])
def test_onnxruntime_predicts_ten_probabilities_for_any_batch_size(
    trained: tuple[Path, dict, list], t10k_split: Split, batch: int
) -> None:
    session = ort.InferenceSession(str(trained[0] / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [torch_trainer.ONNX_INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [torch_trainer.ONNX_OUTPUT_NAME]
    images = (t10k_split.x_test[:batch].astype(np.float32) / 255)[:, np.newaxis]

    probabilities = np.asarray(session.run(None, {torch_trainer.ONNX_INPUT_NAME: images})[0])

    assert probabilities.shape == (batch, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_onnx_accuracy_matches_the_reported_accuracy(
    trained: tuple[Path, dict, list], t10k_split: Split
) -> None:
    out, metrics, _ = trained
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    images = (t10k_split.x_test[:256].astype(np.float32) / 255)[:, np.newaxis]
    probabilities = np.asarray(session.run(None, {"input": images})[0])
    accuracy = float(np.mean(probabilities.argmax(axis=1) == t10k_split.y_test[:256]))
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)
    assert accuracy > 0.5  # two epochs on 512 images: far above chance (0.1)


def test_the_body_mnistctls_watsonx_client_sends_runs_unreshaped_in_onnxruntime_and_gets_the_digits(
    trained: tuple[Path, dict, list], t10k_split: Split
) -> None:
    """watsonx.ai hands `values` to onnxruntime as received: the exact JSON body of mnistctl's client,
    decoded and run with no reshape, must be what the stored model declares, and score as the trainer
    measured."""
    out, metrics, _ = trained
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    flat = t10k_split.x_test[:256].reshape(256, 784).astype(np.float32) / 255
    body = json.loads(json.dumps(watsonx_payload(flat)))

    (input_data,) = body["input_data"]
    values = np.asarray(input_data["values"], dtype=np.float32)
    probabilities = np.asarray(session.run(None, {torch_trainer.ONNX_INPUT_NAME: values})[0])

    accuracy = float(np.mean(probabilities.argmax(axis=1) == t10k_split.y_test[:256]))
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)


def test_a_flat_body_is_refused_by_onnxruntime_as_watsonx_would_refuse_it(
    trained: tuple[Path, dict, list],
) -> None:
    session = ort.InferenceSession(str(trained[0] / "model.onnx"), providers=["CPUExecutionProvider"])
    invalid_argument = ort.capi.onnxruntime_pybind11_state.InvalidArgument  # type: ignore[attr-defined]
    with pytest.raises(invalid_argument, match=r"Invalid rank for input: input Got: 2 Expected: 4"):
        session.run(None, {torch_trainer.ONNX_INPUT_NAME: np.zeros((2, 784), dtype=np.float32)})


def test_the_clothes_network_is_exported_with_its_mirror_average(
    t10k_dir: Path, t10k_split: Split, tmp_path: Path
) -> None:
    # The fashion-mnist preset's network (two convs per block, hidden layer, random crops) with test-time
    # flips in the graph: mirror-invariant answers, and the accuracy reported is the exported graph's.
    overrides = {"convs": "2", "hidden": "32", "shift": "2", "flip": "true", "average_mirrored": "true"}
    metrics = train_model("pytorch", "mnist-t10k", t10k_dir, tmp_path, overrides, dry_run=True, threads=2)
    model = onnx.load(str(tmp_path / "model.onnx"))
    assert {(o.domain, o.version) for o in model.opset_import} == {("", torch_trainer.ONNX_OPSET)}
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    images = (t10k_split.x_test[:256].astype(np.float32) / 255)[:, np.newaxis]
    probabilities = np.asarray(session.run(None, {"input": images})[0])
    mirrored = np.asarray(session.run(None, {"input": np.ascontiguousarray(images[..., ::-1])})[0])
    np.testing.assert_allclose(probabilities, mirrored, atol=1e-6)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == t10k_split.y_test[:256]))
    assert accuracy == pytest.approx(metrics["accuracy"], abs=1e-6)

"""The ONNX artifact targets watsonx.ai's runtime: `onnxruntime_opset_19` (model type `onnxruntime_1.16`)
runs ONNX Runtime 1.16, so the graph must stay at opset <= 19 and IR version <= 9. The slow tests load
the exported model with onnxruntime==1.16.3 itself, in a venv of its own (bench/runtime_venv.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from training import torch_trainer
from training.datasets import load_dataset
from training.run import train_model

REPO_ROOT = Path(__file__).resolve().parents[2]

# Runs under the old runtime: load each model, score the images, report what happened as JSON.
LEGACY_SCRIPT = """
import json, sys
import numpy as np, onnxruntime
images = np.load(sys.argv[1])
report = {"version": onnxruntime.__version__, "models": {}}
for path in sys.argv[2:]:
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        np.save(path + ".npy", session.run(None, {"input": images})[0])
        report["models"][path] = "ok"
    except Exception as error:
        report["models"][path] = str(error)
print(json.dumps(report))
"""


def identity_model(opsets: dict[str, int], ir_version: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    model.ir_version = ir_version
    return model


def test_a_newer_ir_version_is_lowered_to_what_onnxruntime_1_16_reads() -> None:
    model = identity_model({"": 19}, ir_version=10)
    assert torch_trainer.conform_to_runtime(model) is True
    assert model.ir_version == torch_trainer.ONNX_IR_VERSION == 9
    onnx.checker.check_model(model, full_check=True)
    assert torch_trainer.conform_to_runtime(identity_model({"": 19}, ir_version=8)) is False


@pytest.mark.parametrize(
    ("opsets", "named"),
    [({"": 21}, "ai.onnx opset 21"), ({"": 19, "com.microsoft": 1}, "com.microsoft opset 1")],
)
def test_an_opset_the_watsonx_runtime_lacks_is_refused_by_name(opsets: dict[str, int], named: str) -> None:
    with pytest.raises(RuntimeError, match=f"needs {named}.*up to opset 19"):
        torch_trainer.conform_to_runtime(identity_model(opsets, ir_version=9))


def _load_runtime_venv() -> ModuleType:
    spec = importlib.util.spec_from_file_location("runtime_venv", REPO_ROOT / "bench" / "runtime_venv.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def legacy_python() -> Path:
    """The interpreter of a venv holding onnxruntime==1.16.3 (built once, minutes; then cached)."""
    runtime_venv = _load_runtime_venv()
    try:
        return runtime_venv.venv_python(runtime_venv.WATSONX_ONNX_RUNTIME)
    except runtime_venv.RegistryUnreachable as error:
        pytest.skip(f"no onnxruntime 1.16.3 to compare with: {error}")


@pytest.fixture(scope="module")
def exported(t10k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pytorch-for-ort-1.16")
    train_model("pytorch", "mnist-t10k", t10k_dir, out, {}, dry_run=True, threads=2)
    return out / torch_trainer.ONNX_FILE


def run_legacy(python: Path, images: np.ndarray, models: list[Path], scratch: Path) -> dict:
    np.save(scratch / "images.npy", images)
    done = subprocess.run(
        [str(python), "-c", LEGACY_SCRIPT, str(scratch / "images.npy"), *map(str, models)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_onnxruntime_1_16_loads_the_export_and_predicts_what_the_project_runtime_predicts(
    legacy_python: Path, exported: Path, t10k_dir: Path, tmp_path: Path
) -> None:
    images = load_dataset("mnist-t10k", t10k_dir).x_test[-200:].astype(np.float32)[:, None] / 255.0
    report = run_legacy(legacy_python, images, [exported], tmp_path)
    assert report["version"] == "1.16.3"
    assert report["models"] == {str(exported): "ok"}
    old = np.load(f"{exported}.npy")
    here = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    new = np.asarray(here.run(None, {torch_trainer.ONNX_INPUT_NAME: images})[0])
    np.testing.assert_allclose(old, new, atol=1e-5)
    assert (old.argmax(axis=1) == new.argmax(axis=1)).all()


@pytest.mark.slow
def test_onnxruntime_1_16_refuses_what_the_export_must_avoid(
    legacy_python: Path, exported: Path, tmp_path: Path
) -> None:
    """The check above means something: the same graph stamped IR 10 or opset 21 does not load in 1.16."""
    variants = {}
    for name, change in (("ir10", ("ir_version", 10)), ("opset21", ("opset", 21))):
        proto = onnx.load(str(exported))
        if change[0] == "ir_version":
            proto.ir_version = change[1]
        else:
            proto.opset_import[0].version = change[1]
        variants[name] = tmp_path / f"{name}.onnx"
        onnx.save(proto, str(variants[name]))
    report = run_legacy(
        legacy_python, np.zeros((1, 1, 28, 28), np.float32), list(variants.values()), tmp_path
    )
    outcomes = {name: report["models"][str(path)] for name, path in variants.items()}
    assert "ok" not in outcomes.values(), outcomes
    assert "IR version" in outcomes["ir10"] or "ir_version" in outcomes["ir10"], outcomes["ir10"]

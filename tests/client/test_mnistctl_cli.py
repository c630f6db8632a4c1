"""`mnistctl` as a user meets it: allowed values named on bad input, clear messages instead of tracebacks,
and the same table of digits whatever the platform."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pytest_httpserver import HTTPServer
from typer.testing import CliRunner

from mnistctl.cli import app
from mnistctl.images import read_image

runner = CliRunner()


def run(*args: str) -> Any:
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["serve", "--flavor", "azure", "--model", "out"], ["sagemaker", "vertex", "watsonx"]),
        (["train", "--framework", "sklearn", "--out", "out"], ["xgboost", "tensorflow", "pytorch"]),
        (["train", "--framework", "xgboost", "--dataset", "cifar", "--out", "out"], ["mnist-t10k", "kmnist"]),
        (["predict", "--flavor", "bedrock", "--sample", "1"], ["sagemaker", "vertex", "watsonx"]),
    ],
)
def test_a_bad_choice_is_refused_naming_the_allowed_values(args: list[str], allowed: list[str]) -> None:
    result = run(*args)
    assert result.exit_code == 2
    for value in allowed:
        assert value in result.output


@pytest.fixture
def fake_training(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Replaces `training.run` with a recorder; tests set `fail` to make it raise."""
    calls: dict[str, Any] = {}

    def train_model(
        framework, dataset, data_dir, out, overrides, dry_run, progress=None, preset="standard", **queueing
    ):
        calls.update(
            slots=queueing.get("slots"),
            framework=framework,
            dataset=dataset,
            data_dir=data_dir,
            out=out,
            overrides=overrides,
            dry_run=dry_run,
            preset=preset,
        )
        if "fail" in calls:
            raise calls["fail"]
        for step in (1, 2):
            progress(step, 2, f"round {step}/2")
        return {"accuracy": 0.9712, "n_train": 8000, "n_test": 2000, "train_seconds": 1.5}

    monkeypatch.setitem(sys.modules, "training.run", types.SimpleNamespace(train_model=train_model))
    return calls


def test_train_passes_the_options_to_the_trainer_and_prints_its_metrics(
    fake_training, tmp_path: Path
) -> None:
    result = run(
        "train",
        "--framework",
        "xgboost",
        "--dataset",
        "mnist-t10k",
        "--data-dir",
        tmp_path,
        "--out",
        tmp_path / "out",
        "--hp",
        "num_round=5",
        "--hp",
        "eta=0.3",
        "--dry-run",
    )
    assert result.exit_code == 0, result.output
    assert fake_training["framework"] == "xgboost"
    assert fake_training["dataset"] == "mnist-t10k"
    assert fake_training["overrides"] == {"num_round": "5", "eta": "0.3"}
    assert fake_training["dry_run"] is True
    assert fake_training["preset"] == "standard"  # the default preset, under the --hp overrides
    assert "97.12%" in result.stdout


def test_a_data_error_is_a_message_and_exit_code_2_not_a_traceback(fake_training, tmp_path: Path) -> None:
    from training.datasets import ChecksumError

    fake_training["fail"] = ChecksumError(
        "t10k-images-idx3-ubyte.gz: md5 abc differs from 9fb629c4; delete it"
    )
    result = run("train", "--framework", "pytorch", "--dataset", "mnist", "--out", tmp_path)
    assert result.exit_code == 2
    assert "md5 abc differs" in result.output
    assert "Traceback" not in result.output


def test_a_malformed_hyperparameter_names_the_expected_form(fake_training, tmp_path: Path) -> None:
    result = run("train", "--framework", "xgboost", "--out", tmp_path, "--hp", "num_round")
    assert result.exit_code == 2
    assert "NAME=VALUE" in result.output


@pytest.mark.parametrize("args", [[], ["digit.png", "--sample", "3"]], ids=["neither", "both"])
def test_predict_needs_either_images_or_a_sample(args: list[str], tmp_path: Path) -> None:
    result = run("predict", "--flavor", "watsonx", "--url", "http://127.0.0.1:9", *args)
    assert result.exit_code == 2
    assert "--sample" in result.output


def _watsonx_answering(httpserver: HTTPServer, digits: list[int]) -> str:
    probabilities = np.full((len(digits), 10), 0.01)
    probabilities[np.arange(len(digits)), digits] = 0.91
    httpserver.expect_request("/ml/v4/deployments/dep/predictions").respond_with_json(
        {"predictions": [{"id": "probabilities", "values": probabilities.tolist()}]}
    )
    return httpserver.url_for("").rstrip("/")


def test_predict_sample_prints_digit_label_and_probabilities(httpserver: HTTPServer, t10k_dir: Path) -> None:
    from mnistctl.samples import sample_digits

    _, labels = sample_digits(4, t10k_dir)
    answered = [int(labels[0]), int(labels[1]), int(labels[2]), (int(labels[3]) + 1) % 10]
    url = _watsonx_answering(httpserver, answered)

    result = run(
        "predict", "--flavor", "watsonx", "--url", url, "--name", "dep", "--sample", 4, "--data-dir", t10k_dir
    )

    assert result.exit_code == 0, result.output
    assert "test #8000" in result.stdout and "test #8003" in result.stdout
    assert "0.91" in result.stdout
    assert "3/4 correct" in result.stdout


def test_predict_finds_the_endpoint_of_a_model_in_stack_outputs(
    httpserver: HTTPServer, t10k_dir: Path, tmp_path: Path
) -> None:
    from mnistctl.samples import sample_digits

    _, labels = sample_digits(2, t10k_dir)
    url = _watsonx_answering(httpserver, [int(label) for label in labels])
    outputs = {
        "endpoints": {
            "pytorch": {"flavor": "watsonx", "name": "dep", "url": url, "version": "2024-05-01"},
            "xgboost": {"flavor": "sagemaker", "name": "other", "url": "http://127.0.0.1:9"},
        }
    }
    (tmp_path / "outputs.json").write_text(__import__("json").dumps(outputs))
    common = ["predict", "--outputs", tmp_path / "outputs.json", "--sample", 2, "--data-dir", t10k_dir]

    result = run(*common, "--model", "pytorch")
    assert result.exit_code == 0, result.output
    assert "2/2 correct" in result.stdout

    ambiguous = run(*common)
    assert ambiguous.exit_code == 2
    assert "--model must be one of the stack's models: pytorch, xgboost" in ambiguous.output


def test_predict_reads_png_files(httpserver: HTTPServer, tmp_path: Path) -> None:
    picture = Image.new("L", (300, 300), 255)
    ImageDraw.Draw(picture).text((80, 20), "1", fill=0, font=ImageFont.load_default(size=240))
    picture.save(tmp_path / "one.png")
    url = _watsonx_answering(httpserver, [1])

    result = run("predict", "--flavor", "watsonx", "--url", url, "--name", "dep", tmp_path / "one.png")

    assert result.exit_code == 0, result.output
    assert "one.png" in result.stdout
    sent = np.asarray(
        json.loads(httpserver.log[0][0].get_data())["input_data"][0]["values"], dtype=np.float32
    )
    # Exactly what mnistctl.images makes of the picture: the same 784 intensities, in order, as the one
    # [1][28][28] image the ONNX model declares.
    np.testing.assert_array_equal(sent, read_image(tmp_path / "one.png").reshape(1, 1, 28, 28))


def test_predict_against_an_unreachable_endpoint_fails_with_a_message(t10k_dir: Path) -> None:
    result = run(
        "predict",
        "--flavor",
        "watsonx",
        "--url",
        "http://127.0.0.1:9",
        "--name",
        "dep",
        "--sample",
        1,
        "--data-dir",
        t10k_dir,
    )
    assert result.exit_code == 1
    assert "watsonx endpoint 'dep' failed" in result.output
    assert "Traceback" not in result.output


def test_predict_for_a_cloud_endpoint_without_a_region_says_so(t10k_dir: Path) -> None:
    result = run("predict", "--flavor", "vertex", "--name", "123", "--sample", 1, "--data-dir", t10k_dir)
    assert result.exit_code == 2
    assert "region" in result.output


def test_serve_without_an_artifact_says_what_is_missing(tmp_path: Path) -> None:
    result = run("serve", "--flavor", "sagemaker", "--model", tmp_path, "--port", 0)
    assert result.exit_code == 2
    assert "model.tar.gz" in result.output and str(tmp_path) in result.output

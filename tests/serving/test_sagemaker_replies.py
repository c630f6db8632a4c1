"""The SageMaker flavor answers byte for byte as the built-in XGBoost container does, in both of its
modes, and mnistctl's SageMaker client reads every one of those answers.

The fixtures were written by the container's own encoders (fixtures/sagemaker_xgboost/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mnistctl.client import sagemaker_reply_scores
from serving.constants import CSV, JSON, SAGEMAKER_INFERENCE_OUTPUT_ENV
from serving.errors import PlatformError
from serving.models import InferenceRequest, SageMakerXGBoostModel

FIXTURES = Path(__file__).parent / "fixtures" / "sagemaker_xgboost"
# (SAGEMAKER_INFERENCE_OUTPUT, Accept, fixture)
REPLIES = [
    (None, CSV, "plain.csv"),
    (None, None, "plain.csv"),
    (None, JSON, "plain.json"),
    ("probabilities", CSV, "selected-probabilities.csv"),
    ("probabilities", JSON, "selected-probabilities.json"),
    ("predicted_label,probabilities", CSV, "selected-predicted_label-probabilities.csv"),
    ("predicted_label, Probabilities", JSON, "selected-predicted_label-probabilities.json"),
]


@pytest.fixture(scope="module")
def probabilities() -> np.ndarray:
    return np.array(json.loads((FIXTURES / "probabilities.json").read_text()), dtype=np.float32)


def _model(monkeypatch: pytest.MonkeyPatch, inference_output: str | None) -> SageMakerXGBoostModel:
    if inference_output is None:
        monkeypatch.delenv(SAGEMAKER_INFERENCE_OUTPUT_ENV, raising=False)
    else:
        monkeypatch.setenv(SAGEMAKER_INFERENCE_OUTPUT_ENV, inference_output)
    return SageMakerXGBoostModel("mnist-test", "unused")


@pytest.mark.parametrize(("inference_output", "accept", "fixture"), REPLIES)
def test_reply_is_byte_for_byte_the_containers(
    monkeypatch: pytest.MonkeyPatch,
    probabilities: np.ndarray,
    inference_output: str | None,
    accept: str | None,
    fixture: str,
) -> None:
    model = _model(monkeypatch, inference_output)
    reply = model.postprocess(probabilities, InferenceRequest(body=b"", content_type=CSV, accept=accept))
    assert reply.body == (FIXTURES / fixture).read_bytes()
    assert reply.media_type == (CSV if fixture.endswith(".csv") else JSON)


def test_probabilities_mode_writes_each_row_as_one_quoted_cell(
    monkeypatch: pytest.MonkeyPatch, probabilities: np.ndarray
) -> None:
    model = _model(monkeypatch, "probabilities")
    reply = model.postprocess(probabilities, InferenceRequest(body=b"", content_type=CSV, accept=CSV))
    lines = reply.body.decode().split("\n")
    assert len(lines) == len(probabilities), "one line per image, no trailing newline"
    assert all(line.startswith('"[') and line.endswith(']"') for line in lines)


@pytest.mark.parametrize(("inference_output", "accept", "fixture"), REPLIES)
def test_the_client_reads_every_reply_of_the_container(
    probabilities: np.ndarray, inference_output: str | None, accept: str | None, fixture: str
) -> None:
    media_type = CSV if fixture.endswith(".csv") else JSON
    rows = sagemaker_reply_scores((FIXTURES / fixture).read_bytes(), f"{media_type}; charset=utf-8")
    np.testing.assert_array_equal(np.asarray(rows, dtype=np.float32), probabilities)


def test_unsupported_selectable_keys_fail_at_start_naming_the_supported_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(SAGEMAKER_INFERENCE_OUTPUT_ENV, "raw_scores")
    with pytest.raises(
        PlatformError, match=r"use any of predicted_label, labels, probability, probabilities$"
    ):
        SageMakerXGBoostModel("mnist-test", "unused")


def test_every_selectable_key_is_answered_as_the_container_fills_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fixtures cover predicted_label and probabilities; the container's serve_utils also fills `labels`
    # (every class, in order) and `probability` (the highest of the row) for multi:softprob.
    model = _model(monkeypatch, "predicted_label,labels,probability,probabilities")
    probabilities = np.full((1, 10), 0.05, dtype=np.float32)
    probabilities[0, 3] = 0.55
    reply = model.postprocess(probabilities, InferenceRequest(body=b"", content_type=CSV, accept=JSON))
    (prediction,) = json.loads(reply.body)["predictions"]
    assert prediction == {
        "predicted_label": 3,
        "labels": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
        "probability": pytest.approx(0.55),
        "probabilities": pytest.approx([0.05] * 3 + [0.55] + [0.05] * 6),
    }

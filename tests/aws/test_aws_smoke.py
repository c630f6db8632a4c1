"""The aws stack's outputs and its public API function against a local SageMaker-flavor server.

What `mnistctl smoke --stack aws` and the Lambda do in the cloud, through the same boto3
`sagemaker-runtime` code path, pointed (`endpoint_url`) at `serving.app` serving a tiny real XGBoost
model under the endpoint name the stack declares.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from aws_mocks import AwsRun, run_aws
from tiny_models import train_tiny_xgboost

from infra.aws.predict_lambda import handler
from mnistctl.smoke import smoke
from serving.app import create_app, serve_in_thread

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(t10k_dir: Path) -> Path:
    # The offline folder as it is (read-only in CI): the stack stages its CSV in the user cache instead.
    return t10k_dir


@pytest.fixture(scope="module")
def stack(data_dir: Path) -> AwsRun:
    return run_aws(data_dir)


@pytest.fixture(scope="module")
def local_endpoint(stack: AwsRun, data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SageMaker-flavor server answering for the stack's endpoint name; yields its base URL."""
    model_dir = train_tiny_xgboost(tmp_path_factory.mktemp("aws-smoke-model"), data_dir)
    name = stack.outputs["endpoints"]["xgboost"]["name"]
    with serve_in_thread(create_app("sagemaker", model_dir, name)) as url:
        yield url


def test_smoke_reads_the_aws_outputs_and_scores_ten_digits_through_boto3(
    stack: AwsRun, local_endpoint: str, data_dir: Path
) -> None:
    outputs = json.loads(json.dumps(stack.outputs))
    entry = outputs["endpoints"]["xgboost"]
    assert entry["flavor"] == "sagemaker" and entry["region"] == "us-east-1"
    entry["url"] = local_endpoint  # the only difference from the cloud: where boto3 sends the request
    result = smoke(outputs, count=10, data_dir=data_dir, label="aws")
    scored = result.for_model("xgboost")
    assert result.ok, scored.error
    assert scored.count == 10 and scored.accuracy is not None and scored.accuracy >= 0.6


def test_public_api_function_forwards_to_a_real_sagemaker_contract(
    stack: AwsRun, local_endpoint: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistctl.samples import sample_digits

    images, labels = sample_digits(3, data_dir)
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=local_endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    monkeypatch.setattr(handler, "_runtime_client", client)
    monkeypatch.setenv(handler.ENDPOINT_NAME_ENV, stack.outputs["endpoints"]["xgboost"]["name"])
    body = "\n".join(",".join(f"{v:.6g}" for v in row) for row in images)
    event = {
        "headers": {"content-type": "text/csv", "accept": "application/json"},
        "body": body,
        "isBase64Encoded": False,
    }
    response = handler.handler(event, None)
    assert response["statusCode"] == 200, response["body"]
    scores = np.array([p["score"] for p in json.loads(response["body"])["predictions"]])
    assert scores.shape == (3, 10)
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-4)
    assert (scores.argmax(axis=1) == labels).sum() >= 2

    bad = handler.handler({**event, "body": ",".join(["2"] * 784)}, None)
    assert bad["statusCode"] == 400

"""The endpoint clients against fake platforms at the HTTP boundary: what they send, how they read the
answer, when they retry, and how they authenticate."""

from __future__ import annotations

import json
from urllib.parse import parse_qs

import numpy as np
import pytest
import requests
import responses
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from mnistctl.client import (
    SageMakerEndpointClient,
    VertexEndpointClient,
    WatsonxEndpointClient,
    as_probabilities,
    check_images,
    client_for,
    resolve_endpoint,
    sagemaker_scores,
)

IMAGES = np.linspace(0, 1, 3 * 784, dtype=np.float32).reshape(3, 784)
PROBABILITIES = np.eye(10, dtype=np.float32)[[3, 1, 4]]


@pytest.mark.parametrize(
    ("entry", "kind"),
    [
        ({"flavor": "sagemaker", "name": "e", "url": "http://127.0.0.1:1"}, SageMakerEndpointClient),
        ({"flavor": "sagemaker", "name": "e", "region": "eu-west-1"}, SageMakerEndpointClient),
        ({"flavor": "vertex", "name": "e", "url": "http://127.0.0.1:1"}, VertexEndpointClient),
        (
            {"flavor": "watsonx", "name": "e", "url": "http://127.0.0.1:1", "extra": "ignored"},
            WatsonxEndpointClient,
        ),
        (
            {"flavor": "watsonx", "name": "e", "region": "us-south", "version": "2024-05-01"},
            WatsonxEndpointClient,
        ),
    ],
)
def test_client_for_builds_the_client_of_the_entrys_flavor(entry: dict, kind: type) -> None:
    assert isinstance(client_for(entry), kind)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"flavor": "azure", "name": "e"}, "sagemaker"),
        ({"flavor": "vertex", "name": "e", "region": "us-central1"}, "project"),
        ({"flavor": "watsonx", "name": "e"}, "region"),
        ({"flavor": "sagemaker"}, "name"),
    ],
)
def test_client_for_says_what_is_wrong_with_an_entry(entry: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        client_for(entry)


def test_resolve_endpoint_writes_the_stack_output_shape() -> None:
    assert resolve_endpoint("vertex", "123", url="http://127.0.0.1:9/") == {
        "flavor": "vertex",
        "name": "123",
        "url": "http://127.0.0.1:9",
    }


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((0, 784)), r"non-empty float array \[N, 784\] or \[N, 28, 28\]; got \(0, 784\)"),
        (np.zeros((2, 783)), r"non-empty float array \[N, 784\] or \[N, 28, 28\]; got \(2, 783\)"),
        (np.full((1, 784), 2.0), r"pixel values must be finite and in \[0, 1\]"),
        (np.full((1, 784), np.nan), r"pixel values must be finite and in \[0, 1\]"),
    ],
)
def test_images_outside_the_contract_are_refused_before_sending(images: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_images(images)


def test_28x28_images_are_flattened() -> None:
    assert check_images(np.zeros((2, 28, 28))).shape == (2, 784)


def test_logits_are_turned_into_probabilities_and_probabilities_are_kept() -> None:
    np.testing.assert_allclose(as_probabilities(PROBABILITIES, 3), PROBABILITIES)
    from_logits = as_probabilities([[0.0] * 9 + [np.log(9.0)]], 1)
    np.testing.assert_allclose(from_logits[0, 9], 0.5, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[3, 10\]"):
        as_probabilities(np.zeros((3, 9)), 3)


def test_sagemaker_client_posts_csv_and_reads_json_scores(httpserver: HTTPServer) -> None:
    seen: list[Request] = []

    def answer(request: Request) -> Response:
        seen.append(request)
        body = {"predictions": [{"score": row} for row in PROBABILITIES.tolist()]}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/endpoints/ep/invocations", method="POST").respond_with_handler(answer)
    client = client_for({"flavor": "sagemaker", "name": "ep", "url": httpserver.url_for("")})

    np.testing.assert_allclose(client.predict(IMAGES), PROBABILITIES)
    (request,) = seen
    assert request.headers["Content-Type"] == "text/csv"
    assert request.headers["Accept"] == "application/json"
    rows = [[float(v) for v in line.split(",")] for line in request.get_data(as_text=True).splitlines()]
    np.testing.assert_array_equal(np.asarray(rows, dtype=np.float32), IMAGES)  # exact, not approximately


def test_sagemaker_client_reads_the_builtin_xgboost_containers_selectable_probabilities(
    httpserver: HTTPServer,
) -> None:
    # What the real container answers with SAGEMAKER_INFERENCE_OUTPUT=probabilities (the aws stack's model).
    body = {"predictions": [{"probabilities": row} for row in PROBABILITIES.tolist()]}
    httpserver.expect_request("/endpoints/ep/invocations", method="POST").respond_with_json(body)
    client = client_for({"flavor": "sagemaker", "name": "ep", "url": httpserver.url_for("")})

    np.testing.assert_allclose(client.predict(IMAGES), PROBABILITIES)


def test_sagemaker_prediction_without_probabilities_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="neither 'probabilities' nor 'score'"):
        sagemaker_scores({"predicted_label": 3})


def test_sagemaker_client_retries_service_unavailable_but_not_validation_errors(
    httpserver: HTTPServer,
) -> None:
    from botocore.exceptions import ClientError

    unavailable = {"message": "busy"}
    scores = {"predictions": [{"score": row} for row in PROBABILITIES[:1].tolist()]}
    httpserver.expect_ordered_request("/endpoints/ep/invocations").respond_with_json(
        unavailable, status=503, headers={"x-amzn-ErrorType": "ServiceUnavailable"}
    )
    httpserver.expect_ordered_request("/endpoints/ep/invocations").respond_with_json(scores)
    httpserver.expect_ordered_request("/endpoints/ep/invocations").respond_with_json(
        {"message": "pixel values must be in [0, 1]"},
        status=400,
        headers={"x-amzn-ErrorType": "ValidationError"},
    )
    client = client_for({"flavor": "sagemaker", "name": "ep", "url": httpserver.url_for("")})

    np.testing.assert_allclose(client.predict(IMAGES[:1]), PROBABILITIES[:1])
    with pytest.raises(ClientError, match=r"\[0, 1\]"):
        client.predict(IMAGES[:1])
    assert len(httpserver.log) == 3  # one retry for the 503, none for the 400


def test_vertex_client_sends_rounded_instances_in_batches_under_the_payload_limit(
    httpserver: HTTPServer,
) -> None:
    batches: list[list[list[float]]] = []

    def answer(request: Request) -> Response:
        instances = json.loads(request.get_data())["instances"]
        batches.append(instances)
        predictions = [{"classes": 0, "probabilities": [1.0] + [0.0] * 9} for _ in instances]
        return Response(
            json.dumps({"predictions": predictions, "deployedModelId": "1"}), content_type="application/json"
        )

    httpserver.expect_request(
        "/v1/projects/local/locations/us-central1/endpoints/ep:predict"
    ).respond_with_handler(answer)
    client = client_for({"flavor": "vertex", "name": "ep", "url": httpserver.url_for("").rstrip("/")})
    images = np.full((320, 784), 1 / 255, dtype=np.float32)

    probabilities = client.predict(images)

    assert probabilities.shape == (320, 10)
    assert [len(batch) for batch in batches] == [100, 100, 100, 20]
    assert (
        batches[0][0][0] == 0.003921569
    )  # float32 1/255 in its shortest exact form, not 0.003921568859368563
    assert "Authorization" not in httpserver.log[0][0].headers


def test_watsonx_client_posts_v4_scoring_payload_with_version(httpserver: HTTPServer) -> None:
    httpserver.expect_request(
        "/ml/v4/deployments/dep/predictions", method="POST", query_string={"version": "2025-01-01"}
    ).respond_with_json({"predictions": [{"id": "probabilities", "values": PROBABILITIES.tolist()}]})
    client = client_for(
        {
            "flavor": "watsonx",
            "name": "dep",
            "url": httpserver.url_for("").rstrip("/"),
            "version": "2025-01-01",
        }
    )

    np.testing.assert_allclose(client.predict(IMAGES), PROBABILITIES)
    request = httpserver.log[0][0]
    assert "Authorization" not in request.headers  # a local http server gets no credentials
    (entry,) = json.loads(request.get_data())["input_data"]
    # The pixels themselves, in order, as the shortest decimals that round-trip to the float32 values,
    # each image [1][28][28] as the ONNX model declares its input (watsonx.ai does not reshape).
    np.testing.assert_array_equal(
        np.asarray(entry["values"], dtype=np.float32), IMAGES.reshape(len(IMAGES), 1, 28, 28)
    )


def test_watsonx_client_retries_503_and_reports_the_error_message_of_a_400(httpserver: HTTPServer) -> None:
    route = "/ml/v4/deployments/dep/predictions"
    httpserver.expect_ordered_request(route).respond_with_json({"errors": []}, status=503)
    httpserver.expect_ordered_request(route).respond_with_json({"errors": []}, status=503)
    httpserver.expect_ordered_request(route).respond_with_json(
        {"trace": "t", "errors": [{"code": "invalid_request", "message": "each image must be 784 floats"}]},
        status=400,
    )
    client = client_for({"flavor": "watsonx", "name": "dep", "url": httpserver.url_for("").rstrip("/")})

    with pytest.raises(requests.HTTPError, match="each image must be 784 floats"):
        client.predict(IMAGES)
    assert len(httpserver.log) == 3


@responses.activate
def test_watsonx_cloud_client_exchanges_the_api_key_for_a_bearer_token_once(monkeypatch) -> None:
    monkeypatch.setenv("IBMCLOUD_API_KEY", "secret-key")
    iam = responses.post(
        "https://iam.cloud.ibm.com/identity/token", json={"access_token": "tok", "expires_in": 3600}
    )
    scoring = responses.post(
        "https://us-south.ml.cloud.ibm.com/ml/v4/deployments/dep/predictions",
        json={"predictions": [{"id": "out", "values": PROBABILITIES[:1].tolist()}]},
    )
    client = client_for({"flavor": "watsonx", "name": "dep", "region": "us-south"})

    client.predict(IMAGES[:1])
    client.predict(IMAGES[:1])

    assert iam.call_count == 1
    assert parse_qs(iam.calls[0].request.body)["apikey"] == ["secret-key"]
    assert scoring.call_count == 2
    assert scoring.calls[0].request.headers["Authorization"] == "Bearer tok"


def test_watsonx_cloud_client_without_an_api_key_says_which_variable_to_set(monkeypatch) -> None:
    monkeypatch.delenv("IBMCLOUD_API_KEY", raising=False)
    monkeypatch.delenv("WATSONX_APIKEY", raising=False)
    client = client_for({"flavor": "watsonx", "name": "dep", "region": "us-south"})
    with pytest.raises(ValueError, match="IBMCLOUD_API_KEY"):
        client.predict(IMAGES[:1])

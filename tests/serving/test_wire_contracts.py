"""The three wire contracts, spoken by real servers to the platforms' official clients, on real digits."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import requests

from serving.constants import SAGEMAKER_MAX_PAYLOAD_BYTES, VERTEX_MAX_PAYLOAD_BYTES, Flavor
from serving.identity import model_identity

pytestmark = pytest.mark.slow

NAME = "mnist-test"
ROUTES = {
    Flavor.SAGEMAKER: f"/endpoints/{NAME}/invocations",
    Flavor.VERTEX: f"/v1/projects/demo/locations/us-central1/endpoints/{NAME}:predict",
    Flavor.WATSONX: f"/ml/v4/deployments/{NAME}/predictions?version=2024-05-01",
}
MIN_ACCURACY = 0.9


def csv_body(images: np.ndarray) -> bytes:
    return "\n".join(",".join(f"{v:.6g}" for v in row) for row in images).encode()


def good_request(flavor: Flavor, images: np.ndarray) -> dict[str, Any]:
    """requests.post keyword arguments of a well-formed request for `images`."""
    if flavor is Flavor.SAGEMAKER:
        return {
            "data": csv_body(images),
            "headers": {"Content-Type": "text/csv", "Accept": "application/json"},
        }
    if flavor is Flavor.VERTEX:
        return {"json": {"instances": images.tolist()}}
    # watsonx.ai hands `values` to onnxruntime unreshaped: each image as the model declares it, 1x28x28.
    return {"json": {"input_data": [{"values": images.reshape(len(images), 1, 28, 28).tolist()}]}}


def scores(flavor: Flavor, document: dict[str, Any]) -> np.ndarray:
    if flavor is Flavor.SAGEMAKER:
        return np.array([p["score"] for p in document["predictions"]])
    if flavor is Flavor.VERTEX:
        return np.array([p["probabilities"] for p in document["predictions"]])
    return np.array(document["predictions"][0]["values"])


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float((np.asarray(probabilities).argmax(axis=1) == labels).mean())


# --- the official clients, unchanged ------------------------------------------------------------------


def test_boto3_sagemaker_runtime_invokes_the_endpoint_and_gets_right_digits(server_url, held_out) -> None:
    import boto3

    images, labels = held_out
    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=server_url(Flavor.SAGEMAKER),
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    response = runtime.invoke_endpoint(
        EndpointName=NAME, ContentType="text/csv", Accept="application/json", Body=csv_body(images)
    )
    assert response["ContentType"] == "application/json"
    probabilities = scores(Flavor.SAGEMAKER, json.loads(response["Body"].read()))
    assert probabilities.shape == (50, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert accuracy(probabilities, labels) >= MIN_ACCURACY


def test_boto3_sees_an_unknown_endpoint_as_a_validation_error(server_url, held_out) -> None:
    import boto3
    from botocore.exceptions import ClientError

    runtime = boto3.client(
        "sagemaker-runtime",
        endpoint_url=server_url(Flavor.SAGEMAKER),
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    with pytest.raises(ClientError) as raised:
        runtime.invoke_endpoint(EndpointName="nobody", ContentType="text/csv", Body=csv_body(held_out[0][:1]))
    assert raised.value.response["Error"]["Code"] == "ValidationError"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert "nobody" in raised.value.response["Error"]["Message"]


def test_sagemaker_csv_accept_answers_one_line_of_ten_probabilities_per_image(server_url, held_out) -> None:
    images, labels = held_out
    response = requests.post(
        server_url(Flavor.SAGEMAKER) + ROUTES[Flavor.SAGEMAKER],
        data=csv_body(images[:7]),
        headers={"Content-Type": "text/csv", "Accept": "text/csv"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.strip().split("\n")
    assert len(lines) == 7
    rows = np.array([[float(v) for v in line.split(",")] for line in lines])
    assert rows.shape == (7, 10)
    assert (rows.argmax(axis=1) == labels[:7]).mean() >= 5 / 7


def test_sagemaker_container_route_serves_the_same_model(server_url, held_out) -> None:
    url = server_url(Flavor.SAGEMAKER)
    body = csv_body(held_out[0][:3])
    inside = requests.post(url + "/invocations", data=body, headers={"Content-Type": "text/csv"})
    outside = requests.post(url + ROUTES[Flavor.SAGEMAKER], data=body, headers={"Content-Type": "text/csv"})
    assert inside.status_code == outside.status_code == 200
    assert inside.text == outside.text


def test_vertex_prediction_client_over_rest_gets_right_digits(server_url, held_out) -> None:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1

    images, labels = held_out
    client = aiplatform_v1.PredictionServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=server_url(Flavor.VERTEX)),
    )
    endpoint = client.endpoint_path("demo", "us-central1", NAME)
    flat = client.predict(endpoint=endpoint, instances=np.round(images.astype(np.float64), 4).tolist())
    square = client.predict(endpoint=endpoint, instances=images[:5].reshape(5, 28, 28).tolist())

    assert flat.deployed_model_id.isdigit()
    assert flat.model == f"projects/demo/locations/us-central1/models/{NAME}"
    assert flat.model_display_name == NAME
    probabilities = np.array([list(p["probabilities"]) for p in flat.predictions])
    classes = np.array([p["classes"] for p in flat.predictions])
    assert probabilities.shape == (50, 10)
    np.testing.assert_array_equal(classes, probabilities.argmax(axis=1))
    assert accuracy(probabilities, labels) >= MIN_ACCURACY
    np.testing.assert_allclose(
        [list(p["probabilities"]) for p in square.predictions], probabilities[:5], atol=1e-3
    )


def test_vertex_accepts_tf_serving_named_instances(server_url, held_out) -> None:
    images = held_out[0]
    named = {"instances": [{"images": image} for image in images[:5].tolist()]}
    plain = {"instances": images[:5].tolist()}
    url = server_url(Flavor.VERTEX) + ROUTES[Flavor.VERTEX]
    assert (
        requests.post(url, json=named).json()["predictions"]
        == requests.post(url, json=plain).json()["predictions"]
    )


def test_vertex_prediction_client_raises_not_found_for_an_unknown_endpoint(server_url) -> None:
    from google.api_core import exceptions
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1

    client = aiplatform_v1.PredictionServiceClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=server_url(Flavor.VERTEX)),
    )
    with pytest.raises(exceptions.NotFound, match="nobody"):
        client.predict(
            endpoint=client.endpoint_path("demo", "us-central1", "nobody"), instances=[[0.0] * 784]
        )
    with pytest.raises(exceptions.BadRequest, match=r"\[0, 1\]"):
        client.predict(endpoint=client.endpoint_path("demo", "us-central1", NAME), instances=[[255.0] * 784])


def test_watsonx_v4_scoring_over_plain_http_gets_right_digits(server_url, held_out) -> None:
    images, labels = held_out
    response = requests.post(
        server_url(Flavor.WATSONX) + f"/ml/v4/deployments/{NAME}/predictions",
        params={"version": "2024-05-01"},
        json={"input_data": [{"values": images.reshape(len(images), 1, 28, 28).tolist()}]},
    )
    assert response.status_code == 200
    (prediction,) = response.json()["predictions"]
    assert prediction["id"] == "probabilities"  # the ONNX output name, as watsonx.ai reports it
    probabilities = np.array(prediction["values"])
    assert probabilities.shape == (50, 10)
    assert accuracy(probabilities, labels) >= MIN_ACCURACY


@pytest.mark.parametrize(
    ("shape", "runtime_words"),
    [
        ((784,), "INVALID_ARGUMENT : Invalid rank for input: image Got: 2 Expected: 4"),
        ((28, 28, 1), "Got invalid dimensions for input: image for the following indices"),
    ],
    ids=["784-floats", "28x28x1"],
)
def test_watsonx_refuses_images_not_shaped_as_the_model_declares_with_onnxruntimes_words(
    server_url, held_out, shape, runtime_words
) -> None:
    """watsonx.ai hands `values` to onnxruntime as received: flat pixels for a [N, 1, 28, 28] model are
    refused by the runtime, not reshaped for the caller."""
    images, _ = held_out
    response = requests.post(
        server_url(Flavor.WATSONX) + f"/ml/v4/deployments/{NAME}/predictions",
        params={"version": "2024-05-01"},
        json={"input_data": [{"values": images[:2].reshape(2, *shape).tolist()}]},
    )
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert runtime_words in error["message"]
    assert "1x28x28" in error["message"]


@pytest.mark.parametrize("flavor", list(Flavor))
def test_ping_reports_the_loaded_model(server_url, model_dir, flavor: Flavor) -> None:
    response = requests.get(server_url(flavor) + "/ping")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ready",
        "flavor": flavor.value,
        "name": NAME,
        "model_sha256": model_identity(model_dir(flavor)),  # what a deployment is verified by
    }


# --- malformed requests: a 4xx with a JSON message, and the server keeps serving ------------------------

NAN_LINE = ("nan," + "0," * 783).rstrip(",").encode()
PIXELS_255 = ",".join(["255"] * 784).encode()
SHORT_LINE = ",".join(["0"] * 783).encode()
JSON_NAN = ("[" + ", ".join(["NaN"] + ["0"] * 783) + "]").encode()

Case = tuple[Flavor, str, Callable[[str], dict[str, Any]], int, str]


def _csv(body: bytes, content_type: str = "text/csv", **headers: str) -> Callable[[str], dict[str, Any]]:
    return lambda route: {"url": route, "data": body, "headers": {"Content-Type": content_type, **headers}}


def _json(body: bytes | str, route_suffix: str = "", content_type: str = "application/json"):
    data = body.encode() if isinstance(body, str) else body
    return lambda route: {
        "url": route + route_suffix,
        "data": data,
        "headers": {"Content-Type": content_type},
    }


def _watsonx(body: bytes | str, query: str = "?version=2024-05-01", content_type: str = "application/json"):
    data = body.encode() if isinstance(body, str) else body
    route = f"/ml/v4/deployments/{NAME}/predictions{query}"
    return lambda _: {"url": route, "data": data, "headers": {"Content-Type": content_type}}


def _instances(document: str) -> str:
    return '{"instances": ' + document + "}"


def _values(document: str) -> str:
    return '{"input_data": [{"values": ' + document + "}]}"


ZEROS = "[" + ",".join(["0"] * 784) + "]"
MALFORMED: list[Case] = [
    (Flavor.SAGEMAKER, "json-content-type", _csv(b'{"a": 1}', "application/json"), 415, "text/csv"),
    (Flavor.SAGEMAKER, "no-content-type", _csv(SHORT_LINE, ""), 415, "text/csv"),
    (Flavor.SAGEMAKER, "empty-body", _csv(b""), 400, "784"),
    (Flavor.SAGEMAKER, "783-values", _csv(SHORT_LINE), 400, "784"),
    (Flavor.SAGEMAKER, "ragged-lines", _csv(PIXELS_255 + b"\n" + SHORT_LINE), 400, "CSV"),
    (Flavor.SAGEMAKER, "not-numbers", _csv(b"a,b,c"), 400, "CSV"),
    (Flavor.SAGEMAKER, "nan", _csv(NAN_LINE), 400, "finite"),
    (Flavor.SAGEMAKER, "0-255-scale", _csv(PIXELS_255), 400, "[0, 1]"),
    (Flavor.SAGEMAKER, "negative", _csv(("-0.5," + "0," * 783).rstrip(",").encode()), 400, "[0, 1]"),
    (Flavor.SAGEMAKER, "accept-xml", _csv(SHORT_LINE, Accept="application/xml"), 406, "text/csv"),
    (
        Flavor.SAGEMAKER,
        "over-6-MB",
        _csv(b"\n".join([",".join(["0.5"] * 784).encode()] * (SAGEMAKER_MAX_PAYLOAD_BYTES // 3136 + 10))),
        413,
        "limit",
    ),
    (
        Flavor.SAGEMAKER,
        "unknown-endpoint",
        lambda _: {
            "url": "/endpoints/other/invocations",
            "data": SHORT_LINE,
            "headers": {"Content-Type": "text/csv"},
        },
        404,
        "other",
    ),
    (Flavor.VERTEX, "not-json", _json(b"instances: [1]"), 400, "JSON"),
    (
        Flavor.VERTEX,
        "csv-content-type",
        _json(_instances("[" + ZEROS + "]"), content_type="text/csv"),
        415,
        "json",
    ),
    (Flavor.VERTEX, "no-instances", _json('{"inputs": [' + ZEROS + "]}"), 400, "instances"),
    (Flavor.VERTEX, "empty-instances", _json(_instances("[]")), 400, "non-empty"),
    (Flavor.VERTEX, "3-values", _json(_instances("[[0.1, 0.2, 0.3]]")), 400, "784"),
    (Flavor.VERTEX, "wrong-input-name", _json(_instances('[{"pixels": ' + ZEROS + "}]")), 400, "'images'"),
    (Flavor.VERTEX, "ragged", _json(_instances("[" + ZEROS + ", [0.5]]")), 400, "shape"),
    (Flavor.VERTEX, "strings", _json(_instances('[["a", "b"]]')), 400, "numbers"),
    (Flavor.VERTEX, "nan", _json(_instances("[" + JSON_NAN.decode() + "]")), 400, "finite"),
    (Flavor.VERTEX, "0-255-scale", _json(_instances("[" + ZEROS.replace("0", "255") + "]")), 400, "[0, 1]"),
    (
        Flavor.VERTEX,
        "over-1.5-MB",
        _json(
            _instances(
                "[" + ",".join([ZEROS.replace("0", "0.25")] * (VERTEX_MAX_PAYLOAD_BYTES // 3900 + 5)) + "]"
            )
        ),
        413,
        "limit",
    ),
    (
        Flavor.VERTEX,
        "unknown-endpoint",
        lambda _: {
            "url": "/v1/projects/p/locations/l/endpoints/other:predict",
            "json": {"instances": [[0.0] * 784]},
        },
        404,
        "other",
    ),
    (Flavor.WATSONX, "no-version", _watsonx(_values("[" + ZEROS + "]"), query=""), 400, "version"),
    (Flavor.WATSONX, "not-json", _watsonx(b"{values"), 400, "JSON"),
    (
        Flavor.WATSONX,
        "text-content-type",
        _watsonx(_values("[" + ZEROS + "]"), content_type="text/plain"),
        415,
        "json",
    ),
    (Flavor.WATSONX, "no-input-data", _watsonx('{"values": [' + ZEROS + "]}"), 400, "input_data"),
    (Flavor.WATSONX, "two-inputs", _watsonx('{"input_data": [{"values": []}, {"values": []}]}'), 400, "one"),
    (Flavor.WATSONX, "no-values", _watsonx('{"input_data": [{"fields": ["x"]}]}'), 400, "values"),
    (
        Flavor.WATSONX,
        "28x28-without-channel",
        _watsonx(_values(json.dumps([[[0.0] * 28] * 28]))),
        400,
        "1x28x28",
    ),
    (
        Flavor.WATSONX,
        "out-of-range",
        _watsonx(_values(json.dumps([[[[1.5] * 28] * 28]]))),
        400,
        "[0, 1]",
    ),
    (
        Flavor.WATSONX,
        "unknown-deployment",
        lambda _: {
            "url": "/ml/v4/deployments/other/predictions?version=2024-05-01",
            "json": {"input_data": [{"values": [[0.0] * 784]}]},
        },
        404,
        "other",
    ),
]


def _message(flavor: Flavor, document: dict[str, Any]) -> str:
    """The error message, read where each platform puts it."""
    if flavor is Flavor.SAGEMAKER:
        return document["message"]
    if flavor is Flavor.VERTEX:
        return document["error"]["message"]
    return document["errors"][0]["message"]


@pytest.mark.parametrize(
    ("flavor", "case", "request_for", "status", "mentions"),
    MALFORMED,
    ids=[f"{c[0].value}-{c[1]}" for c in MALFORMED],
)
def test_malformed_request_gets_a_4xx_json_message_and_the_server_keeps_serving(
    server_url, held_out, flavor: Flavor, case: str, request_for, status: int, mentions: str
) -> None:
    base = server_url(flavor)
    arguments = request_for(ROUTES[flavor])
    arguments["url"] = base + arguments["url"]
    response = requests.post(**arguments)

    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert mentions.lower() in _message(flavor, response.json()).lower()

    images, labels = held_out
    after = requests.post(base + ROUTES[flavor], **good_request(flavor, images[:5]))
    assert after.status_code == 200
    assert (scores(flavor, after.json()).argmax(axis=1) == labels[:5]).mean() >= 0.6


def test_watsonx_errors_have_the_ibm_cloud_error_shape(server_url) -> None:
    response = requests.post(server_url(Flavor.WATSONX) + f"/ml/v4/deployments/{NAME}/predictions", json={})
    document = response.json()
    assert response.status_code == 400
    assert set(document) == {"trace", "errors", "status_code"}
    assert document["status_code"] == "400"
    assert document["errors"][0]["code"] == "missing_query_parameter"


def test_vertex_errors_have_the_google_api_error_shape(server_url) -> None:
    response = requests.post(
        server_url(Flavor.VERTEX) + ROUTES[Flavor.VERTEX], json={"instances": [[2.0] * 784]}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


@pytest.mark.parametrize("flavor", list(Flavor))
def test_unknown_route_and_wrong_method_answer_json(server_url, flavor: Flavor) -> None:
    missing = requests.get(server_url(flavor) + "/nothing/here")
    wrong_method = requests.get(server_url(flavor) + ROUTES[flavor])
    assert missing.status_code == 404
    assert wrong_method.status_code == 405
    assert "/nothing/here" in _message(flavor, missing.json())

"""Clients of the three wire contracts, local or in the cloud, behind one interface:
`predict(images float32 [N, 784] in [0, 1]) -> float32 [N, 10]` probabilities.

Each client uses the platform's official way in (boto3 `sagemaker-runtime`, `aiplatform_v1`
`PredictionServiceClient` over REST, the watsonx.ai v4 REST API over `requests`), splits large inputs
into requests under the platform's payload limit, and retries transient failures only.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar, cast
from urllib.parse import urlsplit

import numpy as np
import requests
from pydantic import BaseModel, ConfigDict, model_validator
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_exponential

from serving.constants import (
    CLASSES,
    CSV,
    JSON,
    PIXELS,
    WATSONX_IMAGE_SHAPE,
    WATSONX_PREDICT_ROUTE,
    WATSONX_VERSION_PARAM,
    Flavor,
)

# The watsonx.ai API version date sent when a stack output names none.
DEFAULT_WATSONX_VERSION = "2024-05-01"
# Where the IBM Cloud API key is read from (the ibm-watsonx-ai SDK reads WATSONX_APIKEY).
IBM_API_KEY_ENVS = ("IBMCLOUD_API_KEY", "IC_API_KEY", "WATSONX_APIKEY")
IBM_IAM_TOKEN_URL = "https://iam.cloud.ibm.com/identity/token"
# Placeholder project and location in Vertex paths for a local server, which ignores them.
LOCAL_VERTEX_PROJECT = "local"
LOCAL_VERTEX_LOCATION = "us-central1"
REQUEST_TIMEOUT = (5.0, 60.0)  # seconds: connect, read
API_GATEWAY_SIGNING_NAME = "execute-api"
# HTTP statuses worth a retry whatever the error code says (API Gateway's own throttling answers 429
# with only {"message": "Too Many Requests"}).
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
RETRY_ATTEMPTS = 4

T = TypeVar("T")


class Endpoint(BaseModel):
    """One entry of the stack output `endpoints`: which contract, which endpoint, where."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    flavor: Flavor
    name: str
    url: str | None = None  # a local server's base URL; None means the platform's cloud endpoint
    region: str | None = None
    project: str | None = None  # vertex
    version: str = DEFAULT_WATSONX_VERSION  # watsonx
    auth: str | None = None  # sagemaker through the aws stack's HTTP API: "iam" (SigV4) or "none" (open)
    iam_url: str | None = None  # watsonx: an IAM other than IBM Cloud's (private endpoint, test fake)
    # watsonx: one image as the stored model declares its input (the ibm stack reads it from the ONNX file)
    input_shape: tuple[int, ...] = WATSONX_IMAGE_SHAPE

    @model_validator(mode="after")
    def _cloud_needs_a_region(self) -> Endpoint:
        if self.url is None and self.flavor in (Flavor.VERTEX, Flavor.WATSONX) and not self.region:
            raise ValueError(
                f"a cloud {self.flavor.value} endpoint needs a region (or a url for a local server)"
            )
        if self.url is None and self.flavor is Flavor.VERTEX and not self.project:
            raise ValueError("a cloud vertex endpoint needs a project (or a url for a local server)")
        if int(np.prod(self.input_shape)) != PIXELS:
            raise ValueError(
                f"input_shape {list(self.input_shape)} does not hold one 28x28 image ({PIXELS} values)"
            )
        return self

    @property
    def is_local(self) -> bool:
        """A plain-http URL is one of our local servers: no credentials are sent to it."""
        return self.url is not None and urlsplit(self.url).scheme == "http"


class EndpointClient(Protocol):
    """What every client offers; build one with `client_for`."""

    endpoint: Endpoint

    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 [N, 784] pixels in [0, 1] -> float32 [N, 10] class probabilities."""
        ...


def resolve_endpoint(
    flavor: Flavor | str,
    name: str,
    url: str | None = None,
    region: str | None = None,
    project: str | None = None,
    version: str | None = None,
) -> dict[str, Any]:
    """Command-line options -> an endpoint entry in the shape of the stack output `endpoints`."""
    entry: dict[str, Any] = {"flavor": Flavor(flavor).value, "name": name}
    optional = {
        "url": url.rstrip("/") if url else None,
        "region": region,
        "project": project,
        "version": version,
    }
    entry.update({key: value for key, value in optional.items() if value})
    return entry


def client_for(endpoint: Mapping[str, Any] | Endpoint) -> EndpointClient:
    """The client for one stack output entry; `ValueError` saying what is missing or wrong in it."""
    spec = endpoint if isinstance(endpoint, Endpoint) else Endpoint.model_validate(dict(endpoint))
    return _CLIENTS[spec.flavor](spec)


def check_images(images: np.ndarray) -> np.ndarray:
    """float32 [N, 784] in [0, 1] (28x28 images are flattened), or `ValueError` saying what is wrong."""
    array = np.asarray(images, dtype=np.float32)
    if array.ndim == 3 and array.shape[1:] == (28, 28):
        array = array.reshape(len(array), PIXELS)
    if array.ndim != 2 or array.shape[1] != PIXELS or len(array) == 0:
        raise ValueError(
            f"images must be a non-empty float array [N, {PIXELS}] or [N, 28, 28]; got {array.shape}"
        )
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise ValueError("pixel values must be finite and in [0, 1]")
    return array


def as_probabilities(values: Any, expected_rows: int) -> np.ndarray:
    """A response's scores as float32 [N, 10] probabilities. Rows that are not already a distribution
    (an ONNX model exported without its softmax returns logits) are passed through a softmax."""
    array = np.asarray(values, dtype=np.float32)
    if array.shape != (expected_rows, CLASSES):
        raise ValueError(
            f"the endpoint returned scores of shape {list(array.shape)}; expected [{expected_rows}, 10]"
        )
    if (array < 0).any() or not np.allclose(array.sum(axis=1), 1.0, atol=1e-3):
        shifted = np.exp(array - array.max(axis=1, keepdims=True))
        array = shifted / shifted.sum(axis=1, keepdims=True)
    return array


class _BatchingClient:
    """Splits inputs into requests under the platform's payload limit and retries transient errors."""

    max_images_per_request: ClassVar[int]

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def predict(self, images: np.ndarray) -> np.ndarray:
        array = check_images(images)
        step = self.max_images_per_request
        parts = [
            self._with_retries(self._predict_batch, array[i : i + step]) for i in range(0, len(array), step)
        ]
        return np.concatenate(parts)

    def _predict_batch(self, images: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _is_transient(self, error: BaseException) -> bool:
        return isinstance(error, requests.ConnectionError | requests.Timeout)

    def _with_retries(self, call: Callable[[np.ndarray], T], images: np.ndarray) -> T:
        retrying = Retrying(
            retry=retry_if_exception(self._is_transient),
            stop=stop_after_attempt(RETRY_ATTEMPTS),
            wait=wait_exponential(multiplier=0.25, max=5.0),
            reraise=True,
        )
        return retrying(call, images)


def _shortest_decimals(images: np.ndarray) -> np.ndarray:
    """Each float32 pixel as the shortest decimal string that reads back as exactly that float32.

    Exactness matters: a tree model splits on pixel values seen in training (k/255), so a pixel rounded to
    fewer digits can fall on the other side of a split. Only the distinct values (usually <= 256) are
    formatted, which keeps this fast.
    """
    values, inverse = np.unique(images, return_inverse=True)
    return values.astype(str)[inverse.reshape(images.shape)]


def json_pixels(images: np.ndarray) -> list[Any]:
    """Images (of any shape) as nested lists for a JSON body, each pixel written exactly and briefly
    (0.5019608, not 0.501960813999176)."""
    return _shortest_decimals(images).astype(np.float64).tolist()


def watsonx_payload(images: np.ndarray, image_shape: tuple[int, ...] = WATSONX_IMAGE_SHAPE) -> dict[str, Any]:
    """The watsonx.ai scoring body of [N, 784] images: each image in the shape the stored model declares
    (watsonx.ai hands `values` to onnxruntime as they are; a flat [N, 784] is refused by a [N, 1, 28, 28]
    model), as IBM's ONNX samples send it."""
    return {"input_data": [{"values": json_pixels(images.reshape(len(images), *image_shape))}]}


def csv_payload(images: np.ndarray) -> bytes:
    """Images as a SageMaker CSV body: one line of 784 exact pixel values per image, no header."""
    return "".join(",".join(row) + "\n" for row in _shortest_decimals(images).tolist()).encode()


def sagemaker_scores(prediction: dict[str, Any]) -> Any:
    """The ten probabilities of one SageMaker JSON prediction. The built-in XGBoost container with
    SAGEMAKER_INFERENCE_OUTPUT=probabilities (as the aws stack deploys it) names them `probabilities`;
    the generic SageMaker algorithm format (and our local server's JSON reply) names them `score`."""
    for key in ("probabilities", "score"):
        if key in prediction:
            return prediction[key]
    raise ValueError(f"a SageMaker prediction has neither 'probabilities' nor 'score': {prediction!r}")


def sagemaker_reply_scores(body: bytes, content_type: str) -> list[Any]:
    """The rows of probabilities in any answer of the built-in XGBoost container (its serve_utils.py):
    JSON `{"predictions": [{"probabilities"|"score": [...]}]}`, or CSV, either ten values per line (no
    SAGEMAKER_INFERENCE_OUTPUT) or the selected keys per line, a list being one quoted cell `"[...]"`."""
    if content_type.split(";", 1)[0].strip().lower() != CSV:
        document = json.loads(body)
        return [sagemaker_scores(row) for row in document["predictions"]]
    rows = []
    for line in body.decode().splitlines():
        if not line.strip():
            continue
        cells = next(csv.reader([line]))
        # `labels` is a list of ints too; the probabilities are the list of floats.
        lists = [json.loads(cell) for cell in cells if cell.startswith("[")]
        floats = [values for values in lists if not all(isinstance(v, int) for v in values)]
        rows.append(floats[-1] if floats else [float(cell) for cell in cells])
    return rows


def sign_for_api_gateway(request: Any, **_: Any) -> None:
    """botocore `before-sign` hook: sign this request for API Gateway (`execute-api`)."""
    request.context.setdefault("signing", {})["signing_name"] = API_GATEWAY_SIGNING_NAME


class SageMakerEndpointClient(_BatchingClient):
    """boto3 `sagemaker-runtime` InvokeEndpoint, CSV in and JSON out (`endpoint_url` for a local server)."""

    max_images_per_request = 500  # CSV of 500 MNIST images (~2 KB each) stays well under SageMaker's 6 MB

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        import boto3
        from botocore.config import Config

        # Retries are tenacity's (transient errors only), so botocore makes one attempt per call.
        config = Config(
            retries={"total_max_attempts": 1},
            connect_timeout=REQUEST_TIMEOUT[0],
            read_timeout=REQUEST_TIMEOUT[1],
        )
        local = {"aws_access_key_id": "local", "aws_secret_access_key": "local"} if endpoint.is_local else {}
        through_api = endpoint.url is not None and not endpoint.is_local
        if through_api and endpoint.auth == "none":
            from botocore import UNSIGNED

            config = config.merge(Config(signature_version=UNSIGNED))
        self._runtime = boto3.client(
            "sagemaker-runtime",
            endpoint_url=endpoint.url,
            region_name=endpoint.region or ("us-east-1" if endpoint.url else None),
            config=config,
            **local,
        )
        if through_api:
            # The aws stack's HTTP API authorizes with IAM: API Gateway checks a SigV4 signature made
            # for the `execute-api` service, not for `sagemaker`, which the client would otherwise use.
            self._runtime.meta.events.register(
                "before-sign.sagemaker-runtime.InvokeEndpoint", sign_for_api_gateway
            )

    def _predict_batch(self, images: np.ndarray) -> np.ndarray:
        response = self._runtime.invoke_endpoint(
            EndpointName=self.endpoint.name, ContentType=CSV, Accept=JSON, Body=csv_payload(images)
        )
        reply = sagemaker_reply_scores(response["Body"].read(), response.get("ContentType", JSON))
        return as_probabilities(reply, len(images))

    def _is_transient(self, error: BaseException) -> bool:
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
        )

        if isinstance(error, EndpointConnectionError | ConnectionClosedError | ConnectTimeoutError):
            return True
        if isinstance(error, ClientError):
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return status in TRANSIENT_STATUSES or code in {
                "ServiceUnavailable",
                "ModelNotReadyException",
                "ThrottlingException",
                "InternalFailure",
            }
        return False


class VertexEndpointClient(_BatchingClient):
    """`aiplatform_v1.PredictionServiceClient` over REST (anonymous for a local http server, else ADC)."""

    max_images_per_request = 100  # JSON of 100 images (at most 784 x 14 bytes each) stays under 1.5 MB

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import aiplatform_v1

        api_endpoint = endpoint.url or f"{endpoint.region}-aiplatform.googleapis.com"
        self._client = aiplatform_v1.PredictionServiceClient(
            transport="rest",
            credentials=AnonymousCredentials() if endpoint.is_local else None,
            client_options=ClientOptions(api_endpoint=api_endpoint),
        )
        self._path = self._client.endpoint_path(
            endpoint.project or LOCAL_VERTEX_PROJECT, endpoint.region or LOCAL_VERTEX_LOCATION, endpoint.name
        )

    def _predict_batch(self, images: np.ndarray) -> np.ndarray:
        # proto-plus turns plain lists into protobuf Values and back; the stubs only know the Value type.
        instances = cast(Any, json_pixels(images))
        response = self._client.predict(endpoint=self._path, instances=instances, timeout=REQUEST_TIMEOUT[1])
        predictions = cast(list[dict[str, Any]], response.predictions)
        return as_probabilities([list(p["probabilities"]) for p in predictions], len(images))

    def _is_transient(self, error: BaseException) -> bool:
        from google.api_core import exceptions

        transient = (exceptions.ServiceUnavailable, exceptions.TooManyRequests, exceptions.DeadlineExceeded)
        return isinstance(error, transient) or super()._is_transient(error)


class WatsonxEndpointClient(_BatchingClient):
    """The watsonx.ai v4 scoring API over plain `requests` (its SDK refuses http); an IAM bearer token
    from the IBM Cloud API key in the environment for the cloud, none for a local server."""

    max_images_per_request = 200
    transient_statuses = frozenset({429, 502, 503, 504})

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        base = endpoint.url or f"https://{endpoint.region}.ml.cloud.ibm.com"
        self._url = base + WATSONX_PREDICT_ROUTE.format(name=endpoint.name)
        self._session = requests.Session()
        self._token: tuple[str, float] | None = None  # (bearer token, monotonic expiry)

    def _predict_batch(self, images: np.ndarray) -> np.ndarray:
        response = self._session.post(
            self._url,
            params={WATSONX_VERSION_PARAM: self.endpoint.version},
            json=watsonx_payload(images, self.endpoint.input_shape),
            headers=self._auth_headers(),
            timeout=REQUEST_TIMEOUT,
        )
        if response.status_code >= 400:
            raise requests.HTTPError(
                f"{response.status_code} from {self._url}: {_error_text(response)}", response=response
            )
        (prediction, *_) = response.json()["predictions"]
        return as_probabilities(prediction["values"], len(images))

    def _auth_headers(self) -> dict[str, str]:
        if self.endpoint.is_local:
            return {}
        if self._token is None or time.monotonic() > self._token[1]:
            self._token = self._iam_token()
        return {"Authorization": f"Bearer {self._token[0]}"}

    def _iam_token(self) -> tuple[str, float]:
        api_key = next((os.environ[name] for name in IBM_API_KEY_ENVS if os.environ.get(name)), None)
        if api_key is None:
            raise ValueError(
                f"set {' or '.join(IBM_API_KEY_ENVS)} to an IBM Cloud API key to call watsonx.ai"
            )
        token_url = f"{self.endpoint.iam_url.rstrip('/')}/identity/token" if self.endpoint.iam_url else None
        response = self._session.post(
            token_url or IBM_IAM_TOKEN_URL,
            data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": api_key},
            headers={"Accept": JSON},
            timeout=REQUEST_TIMEOUT,
        )
        if response.status_code >= 400:
            raise requests.HTTPError(
                f"IBM Cloud IAM refused the API key ({response.status_code})", response=response
            )
        token = response.json()
        return token["access_token"], time.monotonic() + float(token.get("expires_in", 3600)) - 60.0

    def _is_transient(self, error: BaseException) -> bool:
        if isinstance(error, requests.HTTPError) and error.response is not None:
            return error.response.status_code in self.transient_statuses
        return super()._is_transient(error)


def _error_text(response: requests.Response) -> str:
    """The message of an error body in any of the three shapes, else the raw text."""
    try:
        document = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(document, dict):
        if document.get("errors"):
            return "; ".join(str(e.get("message", e)) for e in document["errors"])
        if isinstance(document.get("error"), dict):
            return str(document["error"].get("message", document["error"]))
        if "message" in document:
            return str(document["message"])
    return response.text[:500]


_CLIENTS: dict[Flavor, Callable[[Endpoint], EndpointClient]] = {
    Flavor.SAGEMAKER: SageMakerEndpointClient,
    Flavor.VERTEX: VertexEndpointClient,
    Flavor.WATSONX: WatsonxEndpointClient,
}

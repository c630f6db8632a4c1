"""Names that the serving code, the CLI and the docs share: flavors, routes, media types, limits, env vars.

Each name lives here once (as sagemaker-xgboost-container keeps its environment names in one module),
so a route or a limit cannot drift between the server, the clients and the tests.
"""

from __future__ import annotations

from enum import StrEnum


class Flavor(StrEnum):
    """Which platform's wire contract an endpoint speaks."""

    SAGEMAKER = "sagemaker"
    VERTEX = "vertex"
    WATSONX = "watsonx"


# The only interface the local servers bind to: they are for this machine, never for the network.
LOOPBACK_HOST = "127.0.0.1"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# Image geometry of every model: 28x28 grey pixels in [0, 1], 10 classes.
IMAGE_SIDE = 28
PIXELS = IMAGE_SIDE * IMAGE_SIDE
CLASSES = 10

# Routes. `{name}` is the endpoint (SageMaker), endpoint id (Vertex) or deployment id (watsonx).
PING_ROUTE = "/ping"
SAGEMAKER_ENDPOINT_ROUTE = (
    "/endpoints/{name}/invocations"  # what boto3 sagemaker-runtime InvokeEndpoint posts to
)
SAGEMAKER_CONTAINER_ROUTE = "/invocations"  # what SageMaker posts to inside the model container
VERTEX_PREDICT_ROUTE = "/v1/projects/{project}/locations/{location}/endpoints/{name}:predict"
WATSONX_PREDICT_ROUTE = "/ml/v4/deployments/{name}/predictions"
WATSONX_VERSION_PARAM = "version"  # watsonx.ai requires ?version=YYYY-MM-DD on every v4 call
# One image as the trainer's ONNX model declares its input ([N, 1, 28, 28]): watsonx.ai hands `values` to
# onnxruntime unreshaped, so a client sends each image in this shape (docs/serving.md).
WATSONX_IMAGE_SHAPE = (1, IMAGE_SIDE, IMAGE_SIDE)

# Media types.
CSV = "text/csv"
JSON = "application/json"

# Request size limits, as the platforms enforce them.
SAGEMAKER_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # InvokeEndpoint: 6 MB
VERTEX_MAX_PAYLOAD_BYTES = 1_500_000  # online prediction: 1.5 MB (gcloud ai endpoints predict)
WATSONX_MAX_PAYLOAD_BYTES = 6 * 1024 * 1024  # no documented figure found; the SageMaker limit is used

# Artifact layout written by `mnistctl train` (docs/architecture.md).
XGBOOST_ARCHIVE = "model.tar.gz"
XGBOOST_MEMBER = "xgboost-model"
TF_SAVED_MODEL_DIR = "model"
TF_SIGNATURE = "serving_default"
ONNX_FILE = "model.onnx"

# Environment variables read by the server.
# Threads each runtime may use for one request; 1 keeps single-image latency steady on a shared machine.
THREADS_ENV = "MNIST_SERVING_THREADS"
DEFAULT_THREADS = 1
# SageMaker's built-in XGBoost container: selectable inference content (`probabilities`, ...); the aws
# stack sets it on the model, and the local stack on its sagemaker-flavor server.
SAGEMAKER_INFERENCE_OUTPUT_ENV = "SAGEMAKER_INFERENCE_OUTPUT"
SAGEMAKER_DEPLOYED_INFERENCE_OUTPUT = "probabilities"
# Vertex AI sets these in a custom prediction container; honoured so the same app can run there.
AIP_HEALTH_ROUTE_ENV = "AIP_HEALTH_ROUTE"
AIP_PREDICT_ROUTE_ENV = "AIP_PREDICT_ROUTE"
AIP_HTTP_PORT_ENV = "AIP_HTTP_PORT"  # the port Vertex AI sends health checks and predictions to
AIP_STORAGE_URI_ENV = "AIP_STORAGE_URI"  # gs:// folder holding Vertex AI's copy of the model's artifactUri
# The project's image sets this to 0.0.0.0: inside a Vertex AI container the server must be reachable from
# outside the container. Honoured only while AIP_HTTP_PORT is set (that is, under Vertex AI).
SERVING_HOST_ENV = "MNIST_SERVING_HOST"
ALL_INTERFACES_HOSTS = frozenset({"0.0.0.0", "::"})

# Micro-batching (serving/batching.py): most images per model call (1 = off), and the longest a batch
# waits for requests whose bodies are still arriving (never when none are: a lone request does not wait).
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_WAIT_MS = 1.0
# A single-image request alone in the server runs on the event loop's thread when the model's last
# single-image call took less than this: the hop to the worker thread and back costs a lone request
# 0.2-0.4 ms on our 2-core VM (bench/load.py, 1 client), more than ONNX Runtime's whole call (0.1 ms).
# TensorFlow's single-image call takes 0.9 ms on the loop's thread but 2.0 ms on the worker's (measured
# with the bench model), hence 5 ms. It bounds how long /ping can wait behind such a call; slower models
# always use the worker thread.
INLINE_CALL_MAX_MS = 5.0
# Request bodies admitted at once (counted by Content-Length from when the body is read until the reply
# is sent); later requests wait, unread, in uvicorn's paused connections. 128 clients sending 100-image
# bodies (0.25-0.45 MB each) would otherwise all be read, parsed and queued together, for no throughput:
# the model takes one such request per call. 4 MiB is about ten such bodies: the watsonx server's peak
# RSS under that load was 1.49x idle with it, 1.54x with 8 MiB, 2.1x without (bench/load.py). A single
# body larger than this is admitted alone.
BODY_BYTES_IN_FLIGHT = 4 * 1024 * 1024
# A body still arriving this long after admission stops counting (its client is slow, not busy): a slow
# client may delay others by this much at most, never by the 20 s it has to finish its body.
SLOW_BODY_SECONDS = 1.0
# A client that has not sent its whole body within this many seconds gets 408 and its connection closed.
BODY_READ_TIMEOUT_SECONDS = 20.0
# On SIGTERM, requests in flight get this long to finish before the server exits anyway (Kubernetes, and
# so Vertex AI and KServe, give a pod 30 s between SIGTERM and SIGKILL by default).
DRAIN_TIMEOUT_SECONDS = 25

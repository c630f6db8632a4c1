"""One model class per flavor, in the shape of kserve's `Model`: `load`, `preprocess`, `predict`,
`postprocess` and a `ready` flag that the health route reports.

`preprocess` turns the flavor's wire request into a float32 [N, 784] array of pixels in [0, 1],
`predict` turns that into float32 [N, 10] probabilities, `postprocess` writes the flavor's wire response.
`infer` chains the three, and is what the HTTP app and the in-process benchmark both call. The
runtimes (xgboost, tensorflow, onnxruntime) are imported in `load`, so a server loads only its own.
"""

from __future__ import annotations

import json
import os
import tarfile
import uuid
import zlib
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from serving import payloads
from serving.constants import (
    CLASSES,
    CSV,
    DEFAULT_THREADS,
    JSON,
    ONNX_FILE,
    PIXELS,
    SAGEMAKER_CONTAINER_ROUTE,
    SAGEMAKER_ENDPOINT_ROUTE,
    SAGEMAKER_INFERENCE_OUTPUT_ENV,
    SAGEMAKER_MAX_PAYLOAD_BYTES,
    TF_SAVED_MODEL_DIR,
    TF_SIGNATURE,
    THREADS_ENV,
    VERTEX_MAX_PAYLOAD_BYTES,
    VERTEX_PREDICT_ROUTE,
    WATSONX_MAX_PAYLOAD_BYTES,
    WATSONX_PREDICT_ROUTE,
    WATSONX_VERSION_PARAM,
    XGBOOST_ARCHIVE,
    XGBOOST_MEMBER,
    Flavor,
)
from serving.errors import ModelError, ModelNotReady, PlatformError, ServingError, UserError


@dataclass(frozen=True)
class InferenceRequest:
    """What a model needs from an HTTP request: the raw body, and the contract's headers and parameters."""

    body: bytes
    content_type: str | None = None
    accept: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)
    path: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class InferenceReply:
    """The wire response: bytes and their media type."""

    body: bytes
    media_type: str


@dataclass(frozen=True)
class ErrorReply:
    """An error in the flavor's own shape: JSON document and extra headers."""

    document: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def runtime_threads() -> int:
    """Threads a runtime may use per request, from the environment (default 1)."""
    raw = os.environ.get(THREADS_ENV, str(DEFAULT_THREADS))
    try:
        threads = int(raw)
    except ValueError:
        threads = 0
    if threads < 1:
        raise PlatformError(f"{THREADS_ENV}={raw!r} must be a positive integer")
    return threads


class ServedModel(ABC):
    """A model behind one platform's wire contract."""

    flavor: ClassVar[Flavor]
    routes: ClassVar[tuple[str, ...]]  # POST routes that predict
    max_payload_bytes: ClassVar[int]

    def __init__(self, name: str, model_dir: Path | str) -> None:
        self.name = name
        self.model_dir = Path(model_dir)
        self.ready = False

    @abstractmethod
    def load(self) -> None:
        """Load the artifact from `model_dir`; sets `ready`. Raises `PlatformError` naming what is missing."""

    @abstractmethod
    def preprocess(self, request: InferenceRequest) -> np.ndarray:
        """Wire request -> float32 [N, 784] pixels in [0, 1]; `UserError` saying what was expected."""

    @abstractmethod
    def predict(self, images: np.ndarray) -> np.ndarray:
        """float32 [N, 784] -> float32 [N, 10] class probabilities."""

    @abstractmethod
    def postprocess(self, probabilities: np.ndarray, request: InferenceRequest) -> InferenceReply:
        """Probabilities -> the flavor's wire response."""

    @classmethod
    @abstractmethod
    def error_reply(cls, status: int, error: ServingError) -> ErrorReply:
        """An error as the platform itself words it (the status code is decided by `serving.app`)."""

    def infer(self, request: InferenceRequest) -> InferenceReply:
        """preprocess -> predict -> postprocess: one request, in process."""
        if not self.ready:
            raise ModelNotReady(f"model {self.name!r} is still loading")
        return self.postprocess(self.predict(self.preprocess(request)), request)

    def _checked(self, probabilities: Any, images: np.ndarray) -> np.ndarray:
        """The runtime's output as float32 [N, 10], or `ModelError` saying what came back instead."""
        array = np.asarray(probabilities, dtype=np.float32)
        if array.shape != (len(images), CLASSES):
            raise ModelError(
                f"model {self.name!r} returned shape {list(array.shape)} for {len(images)} image(s); "
                f"expected [{len(images)}, {CLASSES}] class probabilities"
            )
        return array

    def _require(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise PlatformError(
                f"{what} not found at {path}: point --model at the OUT folder of `mnistctl train`"
            )
        return path


class SageMakerXGBoostModel(ServedModel):
    """XGBoost `multi:softprob` booster from `model.tar.gz` (`xgboost-model` inside), served as the
    SageMaker built-in XGBoost container does: CSV in, CSV or JSON out."""

    flavor = Flavor.SAGEMAKER
    routes = (SAGEMAKER_ENDPOINT_ROUTE, SAGEMAKER_CONTAINER_ROUTE)
    max_payload_bytes = SAGEMAKER_MAX_PAYLOAD_BYTES
    accepts = (CSV,)
    produces = (CSV, JSON)

    def __init__(self, name: str, model_dir: Path | str) -> None:
        super().__init__(name, model_dir)
        # Read once, as the container reads it at start-up: None is its plain mode.
        try:
            selected = os.environ.get(SAGEMAKER_INFERENCE_OUTPUT_ENV)
            self.selected_keys = payloads.sagemaker_selected_keys(selected)
        except ValueError as error:
            raise PlatformError(str(error)) from None

    def load(self) -> None:
        import xgboost

        raw = self._read_model_file()
        booster = xgboost.Booster(params={"nthread": runtime_threads()})
        try:
            booster.load_model(bytearray(raw))
        except xgboost.core.XGBoostError as error:
            raise PlatformError(
                f"{XGBOOST_MEMBER} in {self.model_dir} is not an XGBoost model: {error}"
            ) from error
        if booster.num_features() != PIXELS:
            raise PlatformError(f"the XGBoost model takes {booster.num_features()} features, not {PIXELS}")
        self._booster = booster
        self._error_type: type[Exception] = xgboost.core.XGBoostError
        self.ready = True

    def _read_model_file(self) -> bytes:
        # SageMaker unpacks model.tar.gz into /opt/ml/model, so an unpacked `xgboost-model` is valid too.
        unpacked = self.model_dir / XGBOOST_MEMBER
        if unpacked.is_file():
            return unpacked.read_bytes()
        archive = self._require(self.model_dir / XGBOOST_ARCHIVE, f"{XGBOOST_ARCHIVE} (or {XGBOOST_MEMBER})")
        try:
            with tarfile.open(archive) as tar:
                member = tar.extractfile(XGBOOST_MEMBER)
                if member is None:
                    raise KeyError(XGBOOST_MEMBER)
                return member.read()
        except (KeyError, tarfile.TarError) as error:
            raise PlatformError(f"{archive} does not hold a file named {XGBOOST_MEMBER}: {error}") from error

    def preprocess(self, request: InferenceRequest) -> np.ndarray:
        payloads.require_media_type(request.content_type, self.accepts)
        payloads.negotiate(request.accept, self.produces, default=CSV)
        rows = payloads.parse_csv(request.body)
        if rows.shape[1] != PIXELS:
            raise UserError(
                f"each CSV line must hold {PIXELS} pixel values (one 28x28 image, no label); "
                f"got {rows.shape[1]}"
            )
        return payloads.check_pixels(rows)

    def predict(self, images: np.ndarray) -> np.ndarray:
        try:
            # inplace_predict reads the numpy array directly: no DMatrix copy.
            out = self._booster.inplace_predict(images)
        except self._error_type as error:
            raise ModelError(f"XGBoost failed to predict: {error}") from error
        if np.ndim(out) == 1:
            raise ModelError(
                "the XGBoost model predicts classes, not probabilities: train with multi:softprob"
            )
        return self._checked(out, images)

    def postprocess(self, probabilities: np.ndarray, request: InferenceRequest) -> InferenceReply:
        # Byte for byte what the built-in container answers (serving/payloads.py names its encoders).
        media_type = payloads.negotiate(request.accept, self.produces, default=CSV)
        if self.selected_keys is None:
            if media_type == CSV:
                return InferenceReply(payloads.csv_lines(probabilities), CSV)
            return InferenceReply(payloads.sagemaker_scores_json(probabilities), JSON)
        predictions = payloads.sagemaker_selected_predictions(probabilities, self.selected_keys)
        if media_type == CSV:
            return InferenceReply(payloads.sagemaker_selected_csv(predictions, self.selected_keys), CSV)
        return InferenceReply(payloads.sagemaker_selected_json(predictions), JSON)

    @classmethod
    def error_reply(cls, status: int, error: ServingError) -> ErrorReply:
        # The error types of sagemaker-runtime InvokeEndpoint, so boto3 raises its modelled exceptions.
        if isinstance(error, ModelNotReady):
            error_type = "ModelNotReadyException"
        elif isinstance(error, ModelError):
            error_type = "ModelError"
        else:
            error_type = "ValidationError" if status < 500 else "InternalFailure"
        return ErrorReply({"message": error.message}, {"x-amzn-ErrorType": error_type})


class VertexTensorFlowModel(ServedModel):
    """TensorFlow SavedModel at `OUT/model/`, called through its `serving_default` signature (which returns
    `classes` and `probabilities`), served as Vertex AI's prebuilt TF prediction container does."""

    flavor = Flavor.VERTEX
    routes = (VERTEX_PREDICT_ROUTE,)
    max_payload_bytes = VERTEX_MAX_PAYLOAD_BYTES
    expected = (
        '{"instances": [image, ...]} with each image 784 floats or 28x28 floats in [0, 1] '
        '(or {"<input name>": image})'
    )

    def load(self) -> None:
        import tensorflow as tf

        threads = runtime_threads()
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:
            pass  # TensorFlow is already initialised in this process (tests); it keeps its thread pools
        path = self._require(self.model_dir / TF_SAVED_MODEL_DIR, "SavedModel folder")
        try:
            loaded = tf.saved_model.load(str(path))
        except (OSError, ValueError) as error:
            raise PlatformError(f"{path} is not a loadable SavedModel: {error}") from error
        signatures = loaded.signatures
        if TF_SIGNATURE not in signatures:
            raise PlatformError(f"{path} has no {TF_SIGNATURE!r} signature (found {sorted(signatures)})")
        function = signatures[TF_SIGNATURE]
        inputs = function.structured_input_signature[1]
        if len(inputs) != 1:
            raise PlatformError(f"{TF_SIGNATURE} takes {len(inputs)} inputs; expected one image batch")
        ((self._input_name, spec),) = inputs.items()
        self._input_shape = self._batch_shape(spec.shape)
        outputs = function.structured_outputs
        self._output_key = "probabilities" if "probabilities" in outputs else next(iter(outputs))
        self._input_dtype = spec.dtype
        self._model = loaded  # keeps the variables of the concrete function alive
        self._function = function
        self._tf = tf
        self.ready = True

    @staticmethod
    def _batch_shape(shape: Any) -> tuple[int, ...]:
        """The shape to feed the signature: its own if fully known, else [N, 784] (the trainer exports an
        unknown-rank input, so that Vertex AI can pass [N, 784] or [N, 28, 28] instances as they come)."""
        if shape.rank is None:
            return (-1, PIXELS)
        inner = shape.as_list()[1:]
        if len(inner) == 1 and inner[0] in (None, PIXELS):
            return (-1, PIXELS)
        if None in inner or int(np.prod(inner)) != PIXELS:
            raise PlatformError(f"{TF_SIGNATURE} input shape {shape} does not hold 28x28 images")
        return (-1, *inner)

    def preprocess(self, request: InferenceRequest) -> np.ndarray:
        payloads.require_media_type(request.content_type, (JSON,))
        instances = payloads.field(payloads.parse_json(request.body), "instances", self.expected)
        if isinstance(instances, list) and instances and all(isinstance(i, dict) for i in instances):
            # TF Serving's row format also names the input: [{"images": [...]}, ...]
            if any(set(i) != {self._input_name} for i in instances):
                raise UserError(f"named instances must each hold only {self._input_name!r}: {self.expected}")
            instances = [i[self._input_name] for i in instances]
        return payloads.to_images(instances, (payloads.FLAT, payloads.SQUARE), "784 floats or 28x28 floats")

    def predict(self, images: np.ndarray) -> np.ndarray:
        batch = self._tf.constant(images.reshape(self._input_shape), dtype=self._input_dtype)
        try:
            out = self._function(**{self._input_name: batch})
        except (self._tf.errors.OpError, ValueError, TypeError) as error:
            raise ModelError(f"the SavedModel failed to predict: {error}") from error
        return self._checked(out[self._output_key].numpy(), images)

    def postprocess(self, probabilities: np.ndarray, request: InferenceRequest) -> InferenceReply:
        project = request.path.get("project", "local")
        location = request.path.get("location", "local")
        classes = probabilities.argmax(axis=1).tolist()
        document = {
            "predictions": [
                {"classes": k, "probabilities": row}
                for k, row in zip(classes, probabilities.tolist(), strict=True)
            ],
            "deployedModelId": self.deployed_model_id,
            "model": f"projects/{project}/locations/{location}/models/{self.name}",
            "modelDisplayName": self.name,
            "modelVersionId": "1",
        }
        return InferenceReply(json.dumps(document).encode(), JSON)

    @property
    def deployed_model_id(self) -> str:
        """Vertex ids are decimal strings; a stable one per endpoint name."""
        return str(zlib.crc32(self.name.encode()))

    # google.rpc status names, as Google APIs put them in error bodies (google-api-core reads them).
    _statuses: ClassVar[dict[int, str]] = {
        400: "INVALID_ARGUMENT",
        404: "NOT_FOUND",
        405: "UNIMPLEMENTED",
        406: "INVALID_ARGUMENT",
        408: "DEADLINE_EXCEEDED",
        413: "INVALID_ARGUMENT",
        415: "INVALID_ARGUMENT",
        500: "INTERNAL",
        503: "UNAVAILABLE",
    }

    @classmethod
    def error_reply(cls, status: int, error: ServingError) -> ErrorReply:
        grpc_status = cls._statuses.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION")
        return ErrorReply({"error": {"code": status, "message": error.message, "status": grpc_status}})


class WatsonxOnnxModel(ServedModel):
    """ONNX model at `OUT/model.onnx` (float32 [N, 1, 28, 28] in, 10 probabilities out) run by onnxruntime,
    served as a watsonx.ai Runtime online deployment of an ONNX model answers the v4 scoring API.

    The runtime hands `values` to onnxruntime as they are: each image must have the shape the model
    declares for its input (1x28x28 for ours), as IBM's own ONNX samples reshape before scoring. A body
    of any other shape is refused with onnxruntime's own words, as the service would refuse it; nothing
    here reshapes a request."""

    flavor = Flavor.WATSONX
    routes = (WATSONX_PREDICT_ROUTE,)
    max_payload_bytes = WATSONX_MAX_PAYLOAD_BYTES

    @property
    def expected(self) -> str:
        image = self._image_text if self.ready else "the model's input shape"
        return f'{{"input_data": [{{"values": [image, ...]}}]}} with each image {image} in [0, 1]'

    def load(self) -> None:
        import onnxruntime

        path = self._require(self.model_dir / ONNX_FILE, "ONNX model")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = runtime_threads()
        options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except (onnxruntime.capi.onnxruntime_pybind11_state.Fail, RuntimeError) as error:  # type: ignore[attr-defined]
            raise PlatformError(f"{path} is not a loadable ONNX model: {error}") from error
        (model_input,) = session.get_inputs()
        inner = tuple(model_input.shape[1:])
        if not all(isinstance(d, int) for d in inner) or int(np.prod(inner)) != PIXELS:
            raise PlatformError(
                f"ONNX input {model_input.name} has shape {model_input.shape}; expected [N, 1, 28, 28]"
            )
        if model_input.type != "tensor(float)":
            raise PlatformError(
                f"ONNX input {model_input.name} is {model_input.type}; expected tensor(float)"
            )
        self._input_name = model_input.name
        # One image as the model declares it (its input without the batch axis), and in words, once.
        self._image_shape: tuple[int, ...] = tuple(int(d) for d in inner)
        self._image_text = "x".join(map(str, self._image_shape)) + " floats"
        self._input_shape = (-1, *self._image_shape)
        self.output_name = session.get_outputs()[0].name
        self._session = session
        state = onnxruntime.capi.onnxruntime_pybind11_state  # type: ignore[attr-defined]
        # InvalidArgument is what the runtime raises for an input of the wrong rank, shape or type.
        self._error_types: tuple[type[Exception], ...] = (RuntimeError, state.Fail, state.InvalidArgument)
        self.ready = True

    def preprocess(self, request: InferenceRequest) -> np.ndarray:
        version = request.query.get(WATSONX_VERSION_PARAM)
        if not version:
            raise UserError(
                f"missing query parameter {WATSONX_VERSION_PARAM!r}: add ?{WATSONX_VERSION_PARAM}=YYYY-MM-DD",
                code="missing_query_parameter",
            )
        payloads.require_media_type(request.content_type, (JSON,))
        input_data = payloads.field(payloads.parse_json(request.body), "input_data", self.expected)
        if not isinstance(input_data, list) or len(input_data) != 1:
            raise UserError(
                f"'input_data' must be a list of exactly one object (the model has one input): "
                f"expected {self.expected}"
            )
        values = payloads.field(input_data[0], "values", self.expected)
        try:
            return payloads.to_images(values, (self._image_shape,), self._image_text)
        except UserError as error:
            refusal = self._runtime_refusal(values)
            if refusal is None:  # the shape is right; the pixels are not
                raise
            raise UserError(
                f"onnxruntime refused the input as the model declares it ({refusal}); each image must be "
                f"{self._image_text} (the model's input is [N, {', '.join(map(str, self._image_shape))}])",
                code="invalid_input",
            ) from error

    def _runtime_refusal(self, values: Any) -> str | None:
        """What onnxruntime says when handed `values` unreshaped, or None when it would run them.

        Asked of the runtime itself rather than paraphrased, so the message is the one a watsonx.ai
        deployment of an ONNX model answers with."""
        try:
            array = np.asarray(values, dtype=np.float32)
        except (ValueError, TypeError):  # ragged or not numbers: the payload check's message says so
            return None
        if array.size == 0:
            return None
        try:
            self._session.run([self.output_name], {self._input_name: array})
        except self._error_types as error:
            return str(error).strip()
        return None

    def predict(self, images: np.ndarray) -> np.ndarray:
        try:
            (out, *_) = self._session.run(
                [self.output_name], {self._input_name: images.reshape(self._input_shape)}
            )
        except self._error_types as error:
            raise ModelError(f"onnxruntime failed to predict: {error}") from error
        return self._checked(out, images)

    def postprocess(self, probabilities: np.ndarray, request: InferenceRequest) -> InferenceReply:
        document = {"predictions": [{"id": self.output_name, "values": probabilities.tolist()}]}
        return InferenceReply(json.dumps(document).encode(), JSON)

    @classmethod
    def error_reply(cls, status: int, error: ServingError) -> ErrorReply:
        # The IBM Cloud API error model, as watsonx.ai answers: trace id, list of errors, status as a string.
        return ErrorReply(
            {
                "trace": uuid.uuid4().hex,
                "errors": [
                    {
                        "code": error.code,
                        "message": error.message,
                        "more_info": "https://cloud.ibm.com/apidocs/machine-learning",
                    }
                ],
                "status_code": str(status),
            }
        )


MODEL_CLASSES: dict[Flavor, type[ServedModel]] = {
    Flavor.SAGEMAKER: SageMakerXGBoostModel,
    Flavor.VERTEX: VertexTensorFlowModel,
    Flavor.WATSONX: WatsonxOnnxModel,
}


def model_for(flavor: Flavor | str, model_dir: Path | str, name: str) -> ServedModel:
    """The (not yet loaded) model class of `flavor`; `ValueError` naming the flavors for anything else."""
    try:
        kind = MODEL_CLASSES[Flavor(flavor)]
    except ValueError:
        allowed = ", ".join(f.value for f in Flavor)
        raise ValueError(f"unknown flavor {flavor!r}: choose one of {allowed}") from None
    return kind(name=name, model_dir=model_dir)

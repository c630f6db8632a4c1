"""The HTTP layer without a real runtime: status codes come from the error type, in one place, and each
flavor words errors its own way. A stub model stands in for the runtimes, so these tests are fast."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import requests

from serving.app import STATUS_BY_ERROR, app_for, serve, serve_in_thread, status_for
from serving.constants import Flavor
from serving.errors import (
    EndpointNotFound,
    ModelError,
    ModelNotReady,
    NotAcceptable,
    PayloadTooLarge,
    PlatformError,
    ServingError,
    UnsupportedMediaType,
    UserError,
)
from serving.models import (
    MODEL_CLASSES,
    SageMakerXGBoostModel,
    VertexTensorFlowModel,
    WatsonxOnnxModel,
    model_for,
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UserError("x"), 400),
        (EndpointNotFound("x"), 404),
        (NotAcceptable("x"), 406),
        (PayloadTooLarge("x"), 413),
        (UnsupportedMediaType("x"), 415),
        (ModelError("x"), 500),
        (PlatformError("x"), 500),
        (ModelNotReady("x"), 503),
    ],
)
def test_each_error_type_has_its_status(error: ServingError, status: int) -> None:
    assert status_for(error) == status


def test_every_error_class_is_mapped_in_the_one_table() -> None:
    def subclasses(kind: type) -> set[type]:
        return {kind} | {s for sub in kind.__subclasses__() for s in subclasses(sub)}

    assert subclasses(ServingError) <= set(STATUS_BY_ERROR)


class StubModel(SageMakerXGBoostModel):
    """The SageMaker contract around a fake runtime whose answer each test chooses."""

    def __init__(self, answer: object = None, fail: Exception | None = None) -> None:
        super().__init__(name="stub", model_dir=Path("."))
        self.answer = answer
        self.fail = fail

    def load(self) -> None:
        self.ready = True

    def predict(self, images: np.ndarray) -> np.ndarray:
        if self.fail is not None:
            raise self.fail
        answer = self.answer if self.answer is not None else np.full((len(images), 10), 0.1)
        return self._checked(answer, images)


ONE_IMAGE = ",".join(["0"] * 784)
CSV = {"Content-Type": "text/csv"}


class Http:
    """requests against a stub model served on a free loopback port (stopped by the fixture)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get(self, path: str) -> requests.Response:
        return requests.get(self.url + path, timeout=10)

    def post(self, path: str, content: object, headers: dict[str, str]) -> requests.Response:
        return requests.post(self.url + path, data=content, headers=headers, timeout=10)


@pytest.fixture
def serve_stub():
    with contextlib.ExitStack() as servers:

        def start(model: StubModel, load: bool = True) -> Http:
            if load:
                model.load()
            return Http(servers.enter_context(serve_in_thread(app_for(model))))

        yield start


def test_a_model_answering_the_wrong_shape_is_a_500_model_error(serve_stub) -> None:
    response = serve_stub(StubModel(answer=np.zeros((1, 3)))).post(
        "/invocations", content=ONE_IMAGE, headers=CSV
    )
    assert response.status_code == 500
    assert response.headers["x-amzn-ErrorType"] == "ModelError"
    assert "expected [1, 10]" in response.json()["message"]


def test_an_unexpected_exception_is_a_500_that_names_it_and_the_server_keeps_serving(serve_stub) -> None:
    model = StubModel(fail=ZeroDivisionError("boom"))
    http = serve_stub(model)
    response = http.post("/invocations", content=ONE_IMAGE, headers=CSV)
    assert response.status_code == 500
    assert "ZeroDivisionError: boom" in response.json()["message"]
    model.fail = None
    assert http.post("/invocations", content=ONE_IMAGE, headers=CSV).status_code == 200


def test_a_model_still_loading_is_503_on_ping_and_predict(serve_stub) -> None:
    http = serve_stub(StubModel(), load=False)
    assert http.get("/ping").status_code == 503
    response = http.post("/invocations", content=ONE_IMAGE, headers=CSV)
    assert response.status_code == 503
    assert response.headers["x-amzn-ErrorType"] == "ModelNotReadyException"


def test_a_body_without_content_length_is_still_limited(serve_stub) -> None:
    model = StubModel()
    model.max_payload_bytes = 10_000  # type: ignore[misc]
    chunks = (ONE_IMAGE.encode() + b"\n" for _ in range(10))
    response = serve_stub(model).post("/invocations", content=chunks, headers=CSV)
    assert response.status_code == 413
    assert "10000 bytes" in response.json()["message"]


@pytest.mark.parametrize("flavor", list(Flavor))
def test_a_missing_artifact_is_a_platform_error_naming_the_file(tmp_path: Path, flavor: Flavor) -> None:
    model = model_for(flavor, tmp_path, "m")
    with pytest.raises(PlatformError, match=str(tmp_path)):
        model.load()
    assert not model.ready


def test_unknown_flavor_names_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sagemaker, vertex, watsonx"):
        model_for("azure", tmp_path, "m")


def test_the_server_refuses_to_bind_beyond_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("serving.app.create_app", lambda *args: app_for(StubModel()))
    with pytest.raises(ValueError, match=r"127\.0\.0\.1"):
        serve("sagemaker", tmp_path, "0.0.0.0", port=0, name="m")


def test_each_flavor_has_one_model_class() -> None:
    assert {
        Flavor.SAGEMAKER: SageMakerXGBoostModel,
        Flavor.VERTEX: VertexTensorFlowModel,
        Flavor.WATSONX: WatsonxOnnxModel,
    } == MODEL_CLASSES


@pytest.mark.parametrize(
    ("model_class", "field_path"),
    [
        (SageMakerXGBoostModel, ("message",)),
        (VertexTensorFlowModel, ("error", "message")),
        (WatsonxOnnxModel, ("errors", 0, "message")),
    ],
)
def test_each_flavor_words_errors_where_its_platform_client_reads_them(model_class, field_path) -> None:
    document = model_class.error_reply(400, UserError("pixel values out of range")).document
    for key in field_path:
        document = document[key]
    assert document == "pixel values out of range"

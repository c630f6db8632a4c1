"""The page's server without a browser: the picture-to-pixels path is mnistctl.images' own and gives
MNIST-style pixels, each endpoint's failure stays in its own result, and bad uploads get a clear 4xx."""

from __future__ import annotations

import contextlib
import io
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from mnistctl.cli import app as cli_app
from mnistctl.images import read_image
from mnistctl.ui import server
from mnistctl.ui.server import MAX_UPLOAD_BYTES, create_app
from serving.app import serve_in_thread

PNG = {"Content-Type": "image/png"}
OUTPUTS = {
    "endpoints": {
        "xgboost": {"flavor": "sagemaker", "name": "s-xgb", "url": "http://127.0.0.1:9", "region": "local"},
        "tensorflow": {"flavor": "vertex", "name": "v-tf", "url": "http://127.0.0.1:9", "project": "local"},
        "pytorch": {"flavor": "watsonx", "name": "w-pt", "url": "http://127.0.0.1:9"},
    },
    "dataset": "mnist-t10k",
}


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _canvas_seven() -> Image.Image:
    """A drawing as the page's pad makes it: 280x280, black, a thick white stroke."""
    picture = Image.new("RGB", (280, 280), "black")
    ImageDraw.Draw(picture).line([(65, 50), (215, 50), (130, 235)], fill="white", width=22, joint="curve")
    return picture


def _scan_of_a_two() -> Image.Image:
    """A photo-like picture: dark ink on light paper, not square, with transparency around it."""
    picture = Image.new("RGBA", (150, 210), (0, 0, 0, 0))
    draw = ImageDraw.Draw(picture)
    draw.arc([(30, 20), (120, 110)], start=180, end=20, fill=(20, 20, 20, 255), width=9)
    draw.line([(118, 75), (30, 185), (125, 185)], fill=(20, 20, 20, 255), width=9)
    return picture


@pytest.fixture
def serve_page() -> Iterator[Callable[[Any], str]]:
    """app -> the base URL of that app served on a loopback port (as a browser reaches it); all stop after."""
    with contextlib.ExitStack() as servers:
        yield lambda app: servers.enter_context(serve_in_thread(app))


class RecordingClient:
    """Remembers what it was sent; answers that the image is digit `digit`."""

    def __init__(self, digit: int, sent: list[np.ndarray]) -> None:
        self.digit, self.sent = digit, sent

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.sent.append(images)
        probabilities = np.full((len(images), 10), 0.01, dtype=np.float32)
        probabilities[:, self.digit] = 0.91
        return probabilities


def assert_mnist_style(pixels: np.ndarray) -> None:
    """What MNIST's preprocessing makes of any digit (LeCun et al.), checked without mnistctl.images: light
    ink on a dark field, the ink's longer side scaled to 20 px, its centre of mass at the field's centre
    (14, 14 in 0-based pixel indices), off by at most the half pixel that whole-pixel placement allows."""
    field = pixels.reshape(28, 28)
    assert field.max() >= 0.9, "the ink is light"
    assert (field == 0.0).mean() > 0.5, "most of the field is a black background"
    rows, cols = np.nonzero(field)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == 20
    row_index, col_index = np.indices(field.shape)
    mass = field.sum()
    centre = ((row_index * field).sum() / mass, (col_index * field).sum() / mass)
    assert np.abs(np.subtract(centre, 14.0)).max() <= 0.5, f"centre of mass at {centre}"


@pytest.mark.parametrize("picture", [_canvas_seven(), _scan_of_a_two()], ids=["canvas", "scan"])
def test_the_page_sends_mnist_style_pixels_the_same_as_mnistctl_images_makes(
    picture: Image.Image, tmp_path: Path, serve_page: Callable[[Any], str]
) -> None:
    path = tmp_path / "digit.png"
    path.write_bytes(_png(picture))
    sent: list[np.ndarray] = []
    url = serve_page(create_app(OUTPUTS, client_factory=lambda entry: RecordingClient(7, sent)))

    response = requests.post(f"{url}/api/predict", data=path.read_bytes(), headers=PNG)

    assert response.status_code == 200
    expected = read_image(path)
    assert len(sent) == 3
    for images in sent:
        np.testing.assert_array_equal(images, expected[np.newaxis, :])
    np.testing.assert_allclose(response.json()["pixels"], expected, atol=1e-4)
    assert [r["digit"] for r in response.json()["results"]] == [7, 7, 7]
    # The same as the CLI's would prove nothing if both were wrong alike.
    assert_mnist_style(sent[0][0])


def test_one_failing_and_one_slow_endpoint_do_not_stop_the_others() -> None:
    release = threading.Event()

    class Broken:
        def predict(self, images: np.ndarray) -> np.ndarray:
            raise ConnectionError("connection refused by 127.0.0.1:9")

    class Slow:
        def predict(self, images: np.ndarray) -> np.ndarray:
            release.wait(5)
            return np.eye(10, dtype=np.float32)[[3]]

    def factory(entry: Mapping[str, Any]) -> Any:
        if entry["flavor"] == "vertex":
            raise ValueError("a cloud vertex endpoint needs a project")
        return {"sagemaker": Broken(), "watsonx": Slow()}[entry["flavor"]]

    outputs = {"endpoints": {**OUTPUTS["endpoints"], "extra": {"flavor": "sagemaker", "name": "ok"}}}
    working = RecordingClient(4, [])
    page = create_app(
        outputs, timeout=0.5, client_factory=lambda e: working if e["name"] == "ok" else factory(e)
    )
    with serve_in_thread(page) as url:  # a real server: the slow endpoint's thread outlives the request
        started = time.monotonic()
        response = requests.post(f"{url}/api/predict", data=_png(_canvas_seven()), headers=PNG, timeout=10)
        elapsed = time.monotonic() - started
        release.set()

    assert response.status_code == 200
    assert elapsed < 4.0
    results = {r["model"]: r for r in response.json()["results"]}
    assert results["xgboost"]["error"] == "ConnectionError: connection refused by 127.0.0.1:9"
    assert results["tensorflow"]["error"] == "ValueError: a cloud vertex endpoint needs a project"
    assert results["pytorch"]["error"] == "no answer within 0.5 s"
    assert results["extra"]["error"] is None
    assert results["extra"]["digit"] == 4
    assert results["extra"]["probabilities"][4] == pytest.approx(0.91)
    assert results["extra"]["latency_ms"] >= 0.0
    assert all(results[m]["digit"] is None for m in ("xgboost", "tensorflow", "pytorch"))


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"", 400, "no picture"),
        (_png(Image.new("RGB", (280, 280), "black")), 422, "no digit found"),
        (b"%PDF-1.7 not a picture at all", 415, "not a readable image"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 64, 415, "not a readable image"),
        (_png(Image.new("L", (5000, 5000), 0)), 413, "5000x5000 pixels"),
        (b"\0" * (MAX_UPLOAD_BYTES + 1), 413, "limit"),
    ],
    ids=["empty", "blank-canvas", "not-an-image", "broken-png", "too-many-pixels", "too-many-bytes"],
)
def test_bad_pictures_get_a_clear_4xx_and_no_endpoint_is_called(
    body: bytes, status: int, says: str, serve_page: Callable[[Any], str]
) -> None:
    sent: list[np.ndarray] = []
    url = serve_page(create_app(OUTPUTS, client_factory=lambda entry: RecordingClient(1, sent)))

    response = requests.post(f"{url}/api/predict", data=body, headers=PNG, timeout=10)

    assert response.status_code == status
    assert says in response.json()["error"]
    assert "Traceback" not in response.text
    assert sent == []


@pytest.mark.parametrize(
    ("headers", "status", "says"),
    [
        ({**PNG, "Origin": "https://evil.example"}, 403, "requests from https://evil.example are refused"),
        ({"Content-Type": "text/plain"}, 415, "not text/plain"),  # what a cross-site form can send
        ({**PNG, "Host": "rebound.example:8090"}, 400, "Invalid host header"),
    ],
    ids=["other-origin", "form-content-type", "dns-rebinding-host"],
)
def test_requests_another_site_could_send_reach_no_endpoint(
    headers: dict[str, str], status: int, says: str, serve_page: Callable[[Any], str]
) -> None:
    sent: list[np.ndarray] = []
    url = serve_page(create_app(OUTPUTS, client_factory=lambda entry: RecordingClient(7, sent)))

    response = requests.post(f"{url}/api/predict", data=_png(_canvas_seven()), headers=headers, timeout=10)

    assert response.status_code == status
    assert says in response.text
    assert sent == []
    same_page = {**PNG, "Origin": url}
    assert requests.post(f"{url}/api/predict", data=_png(_canvas_seven()), headers=same_page, timeout=10).ok


def test_a_kmnist_stack_is_labelled_with_the_characters_of_the_class_map(
    serve_page: Callable[[Any], str],
) -> None:
    kmnist = serve_page(create_app({**OUTPUTS, "dataset": "kmnist"}))
    assert requests.get(f"{kmnist}/api/stack", timeout=10).json()["labels"] == list("おきすつなはまやれを")
    mnist = requests.get(f"{serve_page(create_app(OUTPUTS))}/api/stack", timeout=10).json()
    assert mnist["labels"] == [str(d) for d in range(10)]
    assert [(e["model"], e["platform"]) for e in mnist["endpoints"]] == [
        ("xgboost", "SageMaker (local)"),
        ("tensorflow", "Vertex AI"),
        ("pytorch", "watsonx.ai"),
    ]


def test_the_page_and_its_assets_are_served_from_the_package_with_no_cdn(
    serve_page: Callable[[Any], str],
) -> None:
    url = serve_page(create_app(OUTPUTS))
    html = requests.get(url, timeout=10).text
    assert 'id="pad"' in html and "/static/app.js" in html
    for asset in ("app.js", "style.css"):
        assert requests.get(f"{url}/static/{asset}", timeout=10).status_code == 200
    for path in server.STATIC_DIR.iterdir():
        assert "//" not in path.read_text().replace("// ", "").replace("//\n", ""), path.name


@pytest.mark.parametrize(
    ("outputs", "says"),
    [(None, "cannot read the outputs file"), ({"bucket": "/x"}, "hold no endpoints")],
    ids=["missing-file", "no-endpoints"],
)
def test_ui_refuses_an_unknown_stack_with_a_message(tmp_path: Path, outputs: Any, says: str) -> None:
    path = tmp_path / "outputs.json"
    if outputs is not None:
        path.write_text(json.dumps(outputs))

    result = CliRunner().invoke(cli_app, ["ui", "--outputs", str(path), "--port", "0"])

    assert result.exit_code == 2
    assert says in " ".join(result.output.split())
    assert "Traceback" not in result.output

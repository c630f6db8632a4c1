"""`mnistctl ui`: a page on 127.0.0.1 where you draw a digit and every endpoint of a stack answers.

The browser sends the picture (the canvas as a PNG, or a dropped file) as the request body; this server
turns it into the 784 intensities with `mnistctl.images.image_to_mnist`, the code `mnistctl predict`
runs on a picture file, sends them to every endpoint through `mnistctl.client` (concurrently, each with
its own timeout, with the user's own credentials) and answers with the 28x28 the models saw and one
result per endpoint. One endpoint's failure is its own result; the others still answer.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mnistctl.client import EndpointClient, client_for
from mnistctl.compare import tuning_summary
from mnistctl.images import image_to_mnist
from mnistctl.stacks import endpoints as stack_endpoints
from mnistctl.stacks import models as stack_models

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
KMNIST_CLASS_MAP = HERE / "kmnist_classmap.csv"

# An upload larger than this is refused (413) before it is decoded: a drawing's PNG is a few KB.
MAX_UPLOAD_BYTES = 2 * 1024 * 1024
# Pictures with more pixels are refused before decoding (a small file can decode to gigabytes).
MAX_IMAGE_PIXELS = 4096 * 4096
DEFAULT_TIMEOUT_SECONDS = 20.0
LOCAL_HOSTS = ("127.0.0.1", "localhost")
PLATFORM_BY_FLAVOR = {"sagemaker": "SageMaker", "vertex": "Vertex AI", "watsonx": "watsonx.ai"}

ClientFactory = Callable[[Mapping[str, Any]], EndpointClient]


class BadPicture(Exception):
    """The upload is not a picture the page can score; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class EndpointAnswer:
    """What one endpoint answered to one picture (or why it did not)."""

    model: str
    flavor: str
    platform: str
    name: str
    tuning: str = "untuned"
    """Whether the served model is the best trial of a tuning job (mnistctl.compare.tuning_summary)."""
    digit: int | None = None
    probabilities: list[float] | None = None
    latency_ms: float | None = None
    error: str | None = None


def class_labels(dataset: str | None, class_map: Path = KMNIST_CLASS_MAP) -> list[str]:
    """The ten class names the page shows: KMNIST's characters for a kmnist stack, else the digits."""
    if dataset != "kmnist":
        return [str(digit) for digit in range(10)]
    with class_map.open(encoding="utf-8", newline="") as lines:
        rows = sorted(csv.DictReader(lines), key=lambda row: int(row["index"]))
    return [row["char"] for row in rows]


def picture_to_pixels(data: bytes) -> np.ndarray:
    """The bytes of an uploaded picture -> float32 [784] as `mnistctl.images` makes them, or `BadPicture`."""
    if not data:
        raise BadPicture("the request holds no picture: draw a digit or drop an image file", 400)
    if len(data) > MAX_UPLOAD_BYTES:
        raise BadPicture(f"the picture is {len(data):,} bytes; the limit is {MAX_UPLOAD_BYTES:,} bytes", 413)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise BadPicture(
                    f"the picture is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS:,} pixels", 413
                )
            image.load()
            return image_to_mnist(image)
    except UnidentifiedImageError as error:
        raise BadPicture("not a readable image: send a PNG, JPEG, GIF, BMP or WebP picture", 415) from error
    except (OSError, Image.DecompressionBombError) as error:  # a truncated or corrupt file of a known format
        raise BadPicture(f"not a readable image (the file is damaged: {error})", 415) from error
    except ValueError as error:  # blank canvas, no contrast
        raise BadPicture(str(error), 422) from error


class Scorer:
    """Sends one picture's pixels to every endpoint of a stack, each in its own thread with a timeout."""

    def __init__(
        self,
        outputs: Mapping[str, Any],
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        client_factory: ClientFactory | None = None,
    ) -> None:
        self.entries = stack_endpoints(outputs)
        served = stack_models(outputs)
        self.tuning = {
            model: tuning_summary((served.get(model, {}).get("metrics") or {}).get("tuning"))
            for model in self.entries
        }
        self.timeout = timeout
        self._client_factory = client_factory or client_for
        self._clients: dict[str, EndpointClient] = {}

    def describe(self) -> list[dict[str, str]]:
        """The endpoints as the page lists them, in the stack's order."""
        return [
            asdict(self._answer(model, entry, self.tuning[model])) for model, entry in self.entries.items()
        ]

    async def score(self, pixels: np.ndarray) -> list[EndpointAnswer]:
        """Every endpoint's answer to `pixels` (float32 [784]), in the stack's order."""
        return list(await asyncio.gather(*(self._score_one(model, pixels) for model in self.entries)))

    async def _score_one(self, model: str, pixels: np.ndarray) -> EndpointAnswer:
        answer = self._answer(model, self.entries[model], self.tuning[model])
        try:
            probabilities, latency_ms = await asyncio.wait_for(
                asyncio.to_thread(self._predict, model, pixels), self.timeout
            )
        except TimeoutError:
            answer.error = f"no answer within {self.timeout:g} s"
        except Exception as error:  # noqa: BLE001 (any failure of one endpoint is shown in its panel only)
            answer.error = f"{type(error).__name__}: {error}"
        else:
            answer.digit = int(np.argmax(probabilities))
            answer.probabilities = [round(float(p), 6) for p in probabilities]
            answer.latency_ms = round(latency_ms, 1)
        return answer

    def _predict(self, model: str, pixels: np.ndarray) -> tuple[np.ndarray, float]:
        client = self._clients.get(model)
        if client is None:  # built on first use: a broken entry is that endpoint's error, not the page's
            client = self._clients[model] = self._client_factory(self.entries[model])
        started = time.perf_counter()
        probabilities = client.predict(pixels[np.newaxis, :])[0]
        return probabilities, (time.perf_counter() - started) * 1000.0

    @staticmethod
    def _answer(model: str, entry: Mapping[str, Any], tuning: str) -> EndpointAnswer:
        flavor = str(entry["flavor"])
        region = entry.get("region")
        platform = PLATFORM_BY_FLAVOR.get(flavor, flavor) + (f" ({region})" if region else "")
        return EndpointAnswer(
            model=model, flavor=flavor, platform=platform, name=str(entry["name"]), tuning=tuning
        )


def create_app(
    outputs: Mapping[str, Any],
    label: str = "stack",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    client_factory: ClientFactory | None = None,
) -> Starlette:
    """The page for the stack whose `outputs` are given; `StackOutputsError` if it has no endpoints."""
    scorer = Scorer(outputs, timeout, client_factory)
    dataset = outputs.get("dataset")
    labels = class_labels(dataset if isinstance(dataset, str) else None)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def stack(request: Request) -> Response:
        return JSONResponse(
            {"stack": label, "dataset": dataset, "labels": labels, "endpoints": scorer.describe()}
        )

    async def predict(request: Request) -> Response:
        refused = _refuse_other_sites(request)
        if refused is not None:
            return refused
        try:
            data = await _read_limited(request, MAX_UPLOAD_BYTES)
            pixels = picture_to_pixels(data)
        except BadPicture as error:
            return JSONResponse({"error": error.message}, status_code=error.status)
        answers = await scorer.score(pixels)
        return JSONResponse(
            {
                "pixels": [round(float(p), 4) for p in pixels],
                "results": [asdict(answer) for answer in answers],
            }
        )

    return Starlette(
        # Only names of this machine: another site's page cannot reach this one by DNS rebinding.
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(LOCAL_HOSTS))],
        routes=[
            Route("/", index),
            Route("/api/stack", stack),
            Route("/api/predict", predict, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
    )


def _refuse_other_sites(request: Request) -> Response | None:
    """A 403/415 for a request another site's page could send (each one is a billed prediction on the
    user's credentials). Pictures must come as image/* or application/octet-stream, which browsers only
    send cross-site after a CORS preflight this server never grants; an Origin must be this page's."""
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).hostname not in LOCAL_HOSTS:
        return JSONResponse({"error": f"requests from {origin} are refused"}, status_code=403)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (media_type.startswith("image/") or media_type == "application/octet-stream"):
        sent = media_type or "no Content-Type"
        message = f"send the picture as image/* or application/octet-stream, not {sent}"
        return JSONResponse({"error": message}, status_code=415)
    return None


async def _read_limited(request: Request, limit: int) -> bytes:
    """The body, or `BadPicture` (413) as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadPicture(f"the picture is {int(declared):,} bytes; the limit is {limit:,} bytes", 413)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BadPicture(f"the picture is over the limit of {limit:,} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)

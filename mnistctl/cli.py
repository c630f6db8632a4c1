"""`mnistctl`: train a model, serve it under a platform's wire contract, and ask any endpoint for digits.

Heavy packages (the trainers, the serving runtimes, the cloud SDKs) are imported inside the commands,
so `mnistctl --help` and `mnistctl predict` start quickly.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from mnistctl import batch_command, cost, stack_commands
from serving.constants import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS, Flavor
from training.datasets import DatasetName
from training.presets import Preset
from training.run import Framework

app = typer.Typer(
    help="Train, serve and query MNIST models on SageMaker, Vertex AI, watsonx.ai or this machine.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Tables are wider than 80 columns; when stdout is not a terminal (pipes, tests) do not wrap them.
console = Console(width=None if sys.stdout.isatty() else 160)
errors = Console(stderr=True)

# Exit codes: 1 a remote or runtime failure, 2 bad input (as click uses 2 for usage errors).
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2

DEFAULT_PORT = 8080
DEFAULT_NAME = "mnist"
DEFAULT_UI_PORT = 8090
DEFAULT_UI_TIMEOUT_SECONDS = 20.0  # each endpoint, per drawing (mnistctl.ui.server.DEFAULT_TIMEOUT_SECONDS)


def fail(message: str, code: int = EXIT_FAILURE) -> typer.Exit:
    """Print `message` on stderr; return the Exit to raise."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(code)


@app.command()
def train(
    framework: Annotated[Framework, typer.Option(help="Which trainer.", case_sensitive=False)],
    out: Annotated[
        Path, typer.Option(help="Folder for the artifact, metrics.json and hyperparameters.json.")
    ],
    dataset: Annotated[DatasetName, typer.Option(help="Dataset to train on.")] = DatasetName.MNIST,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with the dataset files (default: the user cache).")
    ] = None,
    hp: Annotated[
        list[str] | None, typer.Option("--hp", help="Hyperparameter override NAME=VALUE (repeatable).")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Train a tiny model on a few images (for CI).")] = False,
    preset: Annotated[
        Preset, typer.Option(help="The dataset's hyperparameters (training/presets.py); --hp wins over it.")
    ] = Preset.STANDARD,
    slots: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Queue for one of N training slots shared by this user's trainings on this machine "
            "(training/slots.py), fastest framework first, and train with cores/N threads. "
            "Default: train at once, with every core.",
        ),
    ] = None,
    tune: Annotated[
        str | None,
        typer.Option(
            help="Tune instead: the search as JSON, the stack's `tuning` entry of this model with its "
            'objective ({"maxTrials": 4, "objective": {"metric": "validation:merror", "goal": '
            '"Minimize"}, "ranges": {"eta": {"min": 0.05, "max": 0.5}}}); OUT gets the best trial '
            "(training/tuning.py).",
        ),
    ] = None,
) -> None:
    """Train one model and write its artifact in the layout each platform serves."""
    from training.datasets import DatasetError
    from training.hyperparameters import parse_assignments
    from training.run import train_model
    from training.slots import SlotQueue

    try:
        overrides = parse_assignments(hp)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--hp") from error
    try:
        queue = SlotQueue(slots) if slots is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--slots") from error
    search = _search_option(tune) if tune is not None else None
    with _TrainingProgress(f"{framework.value} on {dataset.value}") as progress:
        try:
            if search is not None:
                from training.tuning import tune_model

                metrics = tune_model(
                    framework.value,
                    dataset.value,
                    data_dir,
                    out,
                    search,
                    overrides,
                    dry_run,
                    progress=progress.update,
                    preset=preset.value,
                    slots=queue,
                    on_wait=lambda message: errors.print(message, markup=False, highlight=False),
                    log=lambda message: errors.print(message, markup=False, highlight=False),
                )
            else:
                metrics = train_model(
                    framework.value,
                    dataset.value,
                    data_dir,
                    out,
                    overrides,
                    dry_run,
                    progress=progress.update,
                    preset=preset.value,
                    slots=queue,
                    on_wait=lambda message: errors.print(message, markup=False, highlight=False),
                )
        except DatasetError as error:
            raise fail(str(error), EXIT_BAD_INPUT) from error
        except ValueError as error:  # unknown hyperparameter or a value of the wrong type
            raise fail(str(error), EXIT_BAD_INPUT) from error
    from mnistctl.report import metrics_table

    console.print(metrics_table(metrics, title=f"{framework.value} -> {out}"))


def _search_option(text: str) -> dict[str, Any]:
    try:
        search = json.loads(text)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"not JSON ({error.msg}): {text!r}", param_hint="--tune") from None
    if not isinstance(search, dict) or not {"maxTrials", "ranges", "objective"} <= set(search):
        raise typer.BadParameter(
            "expected a JSON map with maxTrials, ranges and objective {metric, goal}", param_hint="--tune"
        )
    return search


class _TrainingProgress:
    """A rich progress bar fed by the trainer's `progress(done, total, message)` callback."""

    def __init__(self, description: str) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[message]}"),
            console=errors,
        )
        self._task: TaskID = self._progress.add_task(description, total=None, message="")

    def __enter__(self) -> _TrainingProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, done: int, total: int, message: str) -> None:
        self._progress.update(self._task, completed=done, total=total, message=message)


def serve_command(
    flavor: Flavor | str,
    model_dir: Path | str,
    port: int,
    name: str,
    max_batch: int | None = None,
    max_wait_ms: float | None = None,
) -> list[str]:
    """The command line that runs `mnistctl serve` as a child process of this interpreter (the local
    stack's endpoints, the serving benchmarks); port 0 picks a free port; batching as `serve`'s defaults
    unless given."""
    flavor_value = flavor.value if isinstance(flavor, Flavor) else flavor
    batching = [] if max_batch is None else ["--max-batch", str(max_batch)]
    batching += [] if max_wait_ms is None else ["--max-wait-ms", str(max_wait_ms)]
    return [
        sys.executable,
        "-m",
        "mnistctl",
        "serve",
        "--flavor",
        flavor_value,
        "--model",
        str(model_dir),
        "--port",
        str(port),
        "--name",
        name,
        *batching,
    ]


def ui_command(outputs_file: Path | str, port: int) -> list[str]:
    """The command line that runs `mnistctl ui` on a stack outputs file as a child process of this
    interpreter (the local stack's `ui` resource)."""
    return [sys.executable, "-m", "mnistctl", "ui", "--outputs", str(outputs_file), "--port", str(port)]


@app.command()
def serve(
    flavor: Annotated[
        Flavor, typer.Option(help="Which platform's wire contract to speak.", case_sensitive=False)
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            help="The OUT folder of `mnistctl train`. With --flavor vertex it may be left out when "
            "AIP_STORAGE_URI names the model (a gs:// or local folder), as Vertex AI sets it."
        ),
    ] = None,
    port: Annotated[
        int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).", min=0, max=65535)
    ] = DEFAULT_PORT,
    name: Annotated[str, typer.Option(help="Endpoint (or deployment) name in the URL.")] = DEFAULT_NAME,
    max_batch: Annotated[
        int,
        typer.Option(help="Most images in one model call for requests that arrive together; 1 = off.", min=1),
    ] = DEFAULT_MAX_BATCH,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            help="Longest a batch waits for requests still being received (a lone request never waits).",
            min=0,
            max=1000,
        ),
    ] = DEFAULT_MAX_WAIT_MS,
) -> None:
    """Serve a trained model on 127.0.0.1 until SIGTERM or Ctrl-C.

    Prints one line `serving <flavor> <name> on http://127.0.0.1:<port>` once it accepts requests.
    With --flavor vertex inside a Vertex AI container, AIP_HTTP_PORT, AIP_STORAGE_URI and the AIP_*
    routes decide instead (serving/vertex_container.py).
    On SIGTERM, requests in flight finish first.
    """
    from serving.app import serve as run_server
    from serving.batching import BatchingConfig
    from serving.errors import PlatformError
    from serving.vertex_container import serving_place

    def announce(url: str) -> None:
        print(f"serving {flavor.value} {name} on {url}", flush=True)

    try:
        place = serving_place(flavor, model, port)
        run_server(
            flavor,
            place.model_dir,
            place.host,
            port=place.port,
            name=name,
            on_ready=announce,
            batching=BatchingConfig(max_batch=max_batch, max_wait_ms=max_wait_ms),
        )
    except PlatformError as error:
        raise fail(error.message, EXIT_BAD_INPUT) from error


@app.command()
def predict(
    flavor: Annotated[
        Flavor | None,
        typer.Option(help="The wire contract the endpoint speaks (not with --stack).", case_sensitive=False),
    ] = None,
    images: Annotated[list[Path] | None, typer.Argument(help="PNG files of digits, any size.")] = None,
    name: Annotated[str, typer.Option(help="Endpoint (or deployment) name.")] = DEFAULT_NAME,
    url: Annotated[
        str | None, typer.Option(help="Base URL of a local server; omit for the platform's cloud endpoint.")
    ] = None,
    region: Annotated[str | None, typer.Option(help="Cloud region (cloud endpoints).")] = None,
    project: Annotated[
        str | None, typer.Option(help="Google Cloud project (cloud vertex endpoints).")
    ] = None,
    version: Annotated[str | None, typer.Option(help="watsonx.ai API version date, YYYY-MM-DD.")] = None,
    sample: Annotated[
        int | None, typer.Option(help="Send this many held-out MNIST test digits instead of files.", min=1)
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Folder with the MNIST test files (for --sample).")
    ] = None,
    stack: Annotated[
        str | None, typer.Option(help="Take the endpoint from this stack's outputs (pulumi stack output).")
    ] = None,
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="A JSON file of stack outputs instead of --stack.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="With --stack/--outputs: which model's endpoint (xgboost, ...).")
    ] = None,
) -> None:
    """Send digits to an endpoint and print the digit and the ten probabilities for each."""
    from mnistctl.client import client_for, resolve_endpoint

    inputs, pixels, labels = _load_inputs(images or [], sample, data_dir)
    try:
        if stack is not None or outputs is not None:
            entry = _stack_endpoint(stack, outputs, model)
        elif flavor is None:
            raise ValueError("give --flavor (with --url for a local server), or --stack S / --outputs FILE")
        else:
            entry = resolve_endpoint(flavor, name, url, region, project, version)
        client = client_for(entry)
    except ValueError as error:
        raise fail(str(error), EXIT_BAD_INPUT) from error
    label = f"{entry['flavor']} {entry['name']}"
    try:
        probabilities = client.predict(pixels)
    except _remote_errors() as error:
        raise fail(f"{entry['flavor']} endpoint {entry['name']!r} failed: {error}") from error
    from mnistctl.report import prediction_table

    console.print(prediction_table(probabilities, inputs, labels, title=label))
    if labels is not None:
        correct = int((probabilities.argmax(axis=1) == labels).sum())
        console.print(f"{correct}/{len(labels)} correct ({correct / len(labels):.1%})")


@app.command()
def ui(
    stack: Annotated[
        str | None, typer.Option(help="Stack whose endpoints answer (pulumi stack output).")
    ] = None,
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="A JSON file of stack outputs instead of --stack.")
    ] = None,
    port: Annotated[
        int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).", min=0, max=65535)
    ] = DEFAULT_UI_PORT,
    timeout: Annotated[
        float, typer.Option(help="Seconds each endpoint has to answer one drawing.", min=0.1)
    ] = DEFAULT_UI_TIMEOUT_SECONDS,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the page in the default browser once it is up.")
    ] = False,
) -> None:
    """A page on 127.0.0.1: draw a digit (or drop a picture) and every endpoint of the stack answers.

    Prints one line `ui <stack> on http://127.0.0.1:<port>` once it accepts requests.
    """
    import uvicorn

    from mnistctl.stacks import StackOutputsError, load_outputs
    from mnistctl.ui.server import create_app
    from serving.app import LocalServer
    from serving.constants import LOOPBACK_HOST

    try:
        found = load_outputs(stack=stack, outputs_file=outputs)
        label = stack or str(found.get("stack") or (outputs.name if outputs else "stack"))
        page = create_app(found, label=label, timeout=timeout)
    except StackOutputsError as error:
        raise fail(str(error), EXIT_BAD_INPUT) from error

    def announce(url: str) -> None:
        print(f"ui {label} on {url}", flush=True)
        if open_browser:
            import webbrowser

            webbrowser.open(url)

    config = uvicorn.Config(
        page, host=LOOPBACK_HOST, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    LocalServer(config, on_ready=announce).run()


def _stack_endpoint(stack: str | None, outputs: Path | None, model: str | None) -> dict:
    """The endpoint entry of `model` in a stack's outputs (the only one when the stack has one)."""
    from mnistctl.stacks import StackOutputsError, endpoints, load_outputs

    try:
        found = endpoints(load_outputs(stack=stack, outputs_file=outputs))
    except StackOutputsError as error:
        raise ValueError(str(error)) from error
    if model is None and len(found) == 1:
        return next(iter(found.values()))
    if model not in found:
        raise ValueError(f"--model must be one of the stack's models: {', '.join(sorted(found))}")
    return found[model]


def _load_inputs(
    paths: list[Path], sample: int | None, data_dir: Path | None
) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """(row names, float32 [N, 784], labels or None) from image files or from held-out test digits."""
    if bool(paths) == (sample is not None):
        raise typer.BadParameter("give either IMAGE files or --sample K (not both, not neither)")
    if sample is not None:
        from mnistctl.samples import sample_digits
        from training.datasets import DatasetError

        try:
            pixels, labels = sample_digits(sample, data_dir)
        except (DatasetError, ValueError) as error:
            raise fail(str(error), EXIT_BAD_INPUT) from error
        return [f"test #{8000 + i}" for i in range(sample)], pixels, labels
    from mnistctl.images import read_image

    try:
        pixels = np.stack([read_image(path) for path in paths])
    except ValueError as error:
        raise fail(str(error), EXIT_BAD_INPUT) from error
    return [path.name for path in paths], pixels, None


def _remote_errors() -> tuple[type[BaseException], ...]:
    """Exceptions an endpoint call can end with: the SDKs' own, HTTP errors, and a malformed answer."""
    import requests

    kinds: list[type[BaseException]] = [requests.RequestException, ValueError, KeyError]
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        kinds += [BotoCoreError, ClientError]
    except ImportError:
        pass
    try:
        from google.api_core.exceptions import GoogleAPIError
        from google.auth.exceptions import GoogleAuthError

        kinds += [GoogleAPIError, GoogleAuthError]
    except ImportError:
        pass
    return tuple(kinds)


# `smoke` and `compare` read stacks; they live in their own module and join the CLI here.
stack_commands.register(app)
cost.register(app)
batch_command.register(app)

"""`mnistctl batch`: score a whole input offline with a model (a stack's champion or a model folder) and
write the predictions and their report (mnistctl/batch.py) into a folder.

The local stack's batch resource runs this same command (infra/local/batch.py), so that what `pulumi up`
writes and what a user types give the same files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from serving.constants import THREADS_ENV, Flavor

TEST_INPUT = "test"


def register(app: typer.Typer) -> None:
    app.command(name="batch")(batch)


def batch(
    source: Annotated[
        str,
        typer.Argument(
            metavar="INPUT",
            help="'test' (the dataset's held-out test split), an IDX or .npz file, a CSV of 784 pixels a row "
            "(785: a label first) or a folder of PNGs.",
        ),
    ],
    stack: Annotated[
        str | None, typer.Option(help="Score with this local stack's champion (pulumi stack output).")
    ] = None,
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="A JSON file of stack outputs instead of --stack.")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Which model of the stack (xgboost, tensorflow, pytorch).")
    ] = None,
    model_dir: Annotated[
        Path | None, typer.Option(help="A model folder (`mnistctl train --out`) instead of a stack.")
    ] = None,
    flavor: Annotated[
        Flavor | None, typer.Option(help="With --model-dir: the model's flavor.", case_sensitive=False)
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Folder for the predictions and the report (default batch-<model>).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="For INPUT 'test': the dataset (default: the stack's).")
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(help="For INPUT 'test': where the dataset's files are (default: the stack's)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per model call.", min=1)] = 1024,
    threads: Annotated[
        int | None, typer.Option(help=f"Runtime threads (sets {THREADS_ENV}; default: every core).", min=1)
    ] = None,
) -> None:
    """Score INPUT with a model in large batches; write predictions.csv, report.json and (with labels) the
    confusion matrix as CSV and PNG."""
    import os

    from mnistctl import batch as scorer
    from mnistctl.cli import EXIT_BAD_INPUT, console, fail
    from mnistctl.report import metrics_table

    try:
        name, folder, kind, stack_dataset, stack_data = _model_of(stack, outputs, model, model_dir, flavor)
        if source == TEST_INPUT:
            chosen = dataset or stack_dataset
            if chosen is None:
                raise ValueError("INPUT 'test' needs --dataset (or a stack, whose dataset it is)")
            digits = scorer.read_test_split(chosen, data_dir or stack_data)
        else:
            digits = scorer.read_input(Path(source))
    except (ValueError, OSError) as error:
        raise fail(str(error), EXIT_BAD_INPUT) from error
    os.environ[THREADS_ENV] = str(threads or os.cpu_count() or 1)
    target = out or Path(f"batch-{name}")
    from serving.errors import ServingError

    try:
        report = scorer.score_folder(folder, kind, digits, target, name, batch_size=batch_size)
    except (ServingError, OSError) as error:  # a model that does not load or predict: say which and why
        raise fail(f"scoring with {folder} failed: {error}") from error
    shown: dict[str, Any] = {
        "images": report.images,
        "accuracy": report.accuracy if report.accuracy is not None else "unknown (no labels)",
        "seconds": report.seconds,
        "images/s": report.images_per_second,
        "cost": report.cost["estimate"],
        **{kind_: path for kind_, path in report.files.items()},
    }
    console.print(metrics_table(shown, title=f"batch {name} on {digits.source}"))


def _model_of(
    stack: str | None,
    outputs: Path | None,
    model: str | None,
    model_dir: Path | None,
    flavor: Flavor | None,
) -> tuple[str, Path, str, str | None, Path | None]:
    """(model name, model folder, flavor, the stack's dataset, its data folder) from a stack's outputs
    (its champion) or from --model-dir/--flavor."""
    if model_dir is not None:
        if stack is not None or outputs is not None:
            raise ValueError("give --model-dir or --stack/--outputs, not both")
        if flavor is None:
            raise ValueError("--model-dir needs --flavor (sagemaker, vertex or watsonx)")
        return model or model_dir.name, model_dir, flavor.value, None, None
    from mnistctl.stacks import StackOutputsError, endpoints, load_outputs, models

    try:
        found = load_outputs(stack=stack, outputs_file=outputs)
        served = endpoints(found)
    except StackOutputsError as error:
        raise ValueError(str(error)) from error
    if model is None and len(served) == 1:
        model = next(iter(served))
    if model not in served:
        raise ValueError(f"--model must be one of the stack's models: {', '.join(sorted(served))}")
    champion = (models(found).get(model) or {}).get("champion") or {}
    artifact = champion.get("artifact")
    if not artifact or not Path(str(artifact)).exists():
        raise ValueError(
            f"the stack's {model} champion {artifact!r} is not a file on this machine: `mnistctl batch "
            "--stack` scores with a local stack's champion; for a cloud stack declare `batch` in its config "
            "(docs/batch.md)"
        )
    bucket = found.get("bucket")
    data = Path(str(bucket)) if bucket and Path(str(bucket)).is_dir() else None
    return model, Path(str(artifact)).parent, str(served[model]["flavor"]), found.get("dataset"), data

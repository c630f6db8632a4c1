"""`mnistctl smoke` and `mnistctl compare`: commands that read stacks. `register(app)` adds them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from mnistctl.smoke import DEFAULT_COUNT

console = Console()
DEFAULT_CHART = Path("compare.png")
# Exit codes as the rest of mnistctl uses them (mnistctl.cli): 1 a failure, 2 bad input.
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


def _fail(message: str, code: int) -> typer.Exit:
    from mnistctl.cli import fail  # imported late: cli.py imports this module to register the commands

    return fail(message, code)


def _outputs(stack: str | None, outputs_file: Path | None) -> dict[str, Any]:
    from mnistctl.stacks import StackOutputsError, load_outputs

    try:
        return load_outputs(stack=stack, outputs_file=outputs_file)
    except StackOutputsError as error:
        raise _fail(str(error), EXIT_BAD_INPUT) from error


def smoke_command(
    stack: Annotated[
        str | None, typer.Option(help="Stack whose endpoints to test (pulumi stack output).")
    ] = None,
    outputs: Annotated[
        Path | None, typer.Option("--outputs", help="JSON file of stack outputs instead of --stack.")
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", help="Held-out test digits per endpoint.", min=1)] = (
        DEFAULT_COUNT
    ),
    data_dir: Annotated[
        Path | None,
        typer.Option(help="Folder with the MNIST test files (default: the stack's, or the cache)."),
    ] = None,
    model: Annotated[list[str] | None, typer.Option(help="Only this model's endpoint (repeatable).")] = None,
    min_accuracy: Annotated[
        float, typer.Option(help="Exit 1 if an endpoint scores below this (0 to 1).", min=0.0, max=1.0)
    ] = 0.0,
) -> None:
    """Send held-out test digits to every endpoint of a stack; print accuracy and latency percentiles."""
    from mnistctl.smoke import smoke, smoke_table
    from mnistctl.stacks import StackOutputsError
    from training.datasets import DatasetError

    document = _outputs(stack, outputs)
    try:
        result = smoke(
            document,
            count=count,
            data_dir=data_dir,
            label=stack or (outputs.name if outputs else ""),
            models=model,
        )
    except (StackOutputsError, DatasetError, ValueError) as error:
        raise _fail(str(error), EXIT_BAD_INPUT) from error
    console.print(smoke_table(result))
    below = [r.model for r in result.results if r.ok and (r.accuracy or 0.0) < min_accuracy]
    if not result.ok:
        raise _fail(
            "some endpoints failed: " + ", ".join(r.model for r in result.results if not r.ok), EXIT_FAILURE
        )
    if below:
        raise _fail(f"accuracy below {min_accuracy:.0%}: {', '.join(below)}", EXIT_FAILURE)


def compare_command(
    stack: Annotated[list[str] | None, typer.Option(help="A stack to compare (repeatable).")] = None,
    outputs: Annotated[
        list[Path] | None, typer.Option("--outputs", help="A JSON file of stack outputs (repeatable).")
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", help="Held-out test digits per endpoint.", min=1)] = (
        DEFAULT_COUNT
    ),
    data_dir: Annotated[Path | None, typer.Option(help="Folder with the MNIST test files.")] = None,
    chart: Annotated[Path, typer.Option(help="Where to write the PNG chart.")] = DEFAULT_CHART,
) -> None:
    """Put several stacks side by side: accuracy, p50/p99 latency, artifact size, training time, and
    the champion gate's last decision.

    The gate: a retrained model is served only when its held-out accuracy is >= minAccuracy and >= the
    served model's accuracy - promotionTolerance (forcePromotion: true overrides); see docs/gate.md.
    """
    from mnistctl.compare import compare, comparison_table, gate_notes, write_chart
    from mnistctl.stacks import StackOutputsError
    from training.datasets import DatasetError

    sources = [(name, _outputs(name, None)) for name in stack or []]
    sources += [(path.stem, _outputs(None, path)) for path in outputs or []]
    if not sources:
        raise _fail("name at least one --stack or --outputs FILE", EXIT_BAD_INPUT)
    try:
        rows = compare(sources, count=count, data_dir=data_dir)
    except (StackOutputsError, DatasetError, ValueError) as error:
        raise _fail(str(error), EXIT_BAD_INPUT) from error
    console.print(comparison_table(rows))
    for note in gate_notes(rows):
        console.print(note, highlight=False)
    console.print(f"chart: {write_chart(rows, chart)}")
    if any(row.error for row in rows):
        raise _fail("some endpoints failed (see the table)", EXIT_FAILURE)


def register(app: typer.Typer) -> None:
    """Add `smoke` and `compare` to the mnistctl app."""
    app.command("smoke")(smoke_command)
    app.command("compare")(compare_command)

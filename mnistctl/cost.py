"""`mnistctl cost`: what a stack will cost before `up`, from its own plan (infra/cost.py).

`register(app)` adds it to mnistctl."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

# Exit codes as the rest of mnistctl uses them (mnistctl.cli): 1 a failure, 2 bad input.
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
# Tables are wider than 80 columns; when stdout is not a terminal (pipes, make up logs) do not wrap them.
console = Console(width=None if sys.stdout.isatty() else 200)


def _fail(message: str, code: int) -> typer.Exit:
    from mnistctl.cli import fail  # imported late: cli.py imports this module to register the command

    return fail(message, code)


def _money(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"{value:,.4f}" if value < 1 else f"{value:,.2f}"


def _total(part: Any) -> str:
    """A total, or `unknown` with what is known of it and the resources it waits for."""
    if part.value is not None:
        return f"{_money(part.value)} USD"
    return f"unknown (known part {_money(part.known)} USD; no price for {', '.join(part.unknown)})"


def _count(line: Any) -> str:
    if line.count_min == line.count_max:
        return f"{line.count_min:g}"
    return f"{line.count_min:g}-{line.count_max:g}"


def _unit_price(line: Any) -> str:
    from infra.cost import Group

    if line.group is Group.OWN_MACHINE:
        return "0 (your machine)"
    price = line.unit_price
    if price is None and line.rate is not None and line.rate.amount is not None:
        return f"unknown ({line.rate.amount:g} CUH/h x an unknown price per CUH)"
    if price is None:
        return "unknown"
    unit = line.price.unit if line.price is not None else ""
    if line.rate is not None and line.rate.amount is not None:
        return f"{_money(price)} USD/hour ({line.rate.amount:g} CUH/h)"
    return f"{_money(price)} USD/{unit}"


def _amount(line: Any) -> str:
    from infra.cost import Group

    if line.group in (Group.SERVING, Group.OWN_MACHINE):
        low, high = line.hourly(line.count_min), line.hourly(line.count_max)
        return f"{_money(low)}/h" if low == high else f"{_money(low)}-{_money(high)}/h"
    if line.group is Group.TRAINING:
        text = f"{_money(line.per_run_max)}/run (max {line.hours_per_run or 0:g} h)"
        if line.measured_hours is not None:
            text += f"; {_money(line.per_run_measured)}/run measured ({line.measured_hours * 60:.1f} min)"
        return text
    if line.group is Group.STORAGE:
        return f"{_money(line.monthly)}/month"
    return "per use, not in totals"


def cost_table(report: Any) -> Table:
    table = Table(
        title=f"What stack {report.stack} ({report.cloud}, {report.region or 'here'}) will cost, in USD"
    )
    for column in (
        "what",
        "resource",
        "type",
        "size",
        "count",
        "region",
        "unit price",
        "amount",
        "price read on",
    ):
        table.add_column(column)
    for line in report.lines:
        read_on = line.price.read_on.isoformat() if line.price is not None else "-"
        table.add_row(
            line.group.value,
            line.resource,
            line.type.rsplit(":", 1)[-1],
            line.size,
            _count(line),
            line.region,
            _unit_price(line),
            _amount(line),
            read_on,
        )
    return table


def summary_lines(report: Any) -> list[str]:
    measured = report.per_run_measured
    lines = [
        f"serving, per hour: {_total(report.hourly_min)} at the autoscaling minimum, "
        f"{_total(report.hourly_max)} at the maximum",
        f"training, per run: {_total(report.per_run_max)} at the maximum runtime"
        + (f", {_total(measured)} at the last measured run time" if measured is not None else ""),
        f"storage, per month: {_total(report.storage_per_month)}",
        f"total for {report.hours:g} h of serving and {report.runs:g} run(s): "
        f"{_total(report.total(high=False))} to {_total(report.total(high=True))}",
    ]
    if report.cloud == "local":
        lines.append("the local stack runs on this machine: nothing is billed (electricity aside).")
    lines.append("not counted: data transfer, logs and metrics, requests, free tiers, taxes (docs/cost.md).")
    return lines


def _overrides(assignments: list[str] | None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in assignments or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise _fail(f"--set takes KEY=VALUE (a config key of Pulumi.yaml), got {item!r}", EXIT_BAD_INPUT)
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    return values


def cost_command(
    stack: Annotated[str, typer.Option(help="The stack to price (its Pulumi.<stack>.yaml).")],
    hours: Annotated[float, typer.Option(help="Hours of serving in the total.", min=0)] = 24.0,
    runs: Annotated[float, typer.Option(help="Training runs in the total.", min=0)] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    assignments: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Config KEY=VALUE for this estimate only, as `pulumi config set` would (repeatable).",
        ),
    ] = None,
    outputs: Annotated[
        Path | None,
        typer.Option(
            "--outputs", help="JSON file of the stack's outputs, for the last measured training time."
        ),
    ] = None,
) -> None:
    """What a stack will cost before `up`: every billed resource its program declares, priced.

    The program runs under mocks (no cloud call, no credentials); prices come from the package's
    tables (infra/prices/), each dated with its source. Unknown prices show as unknown, never as zero.
    """
    from infra.cost import estimate
    from infra.plan import find_project_root, stack_file
    from mnistctl.stacks import StackOutputsError, find_pulumi, load_outputs

    root = find_project_root()
    if not stack_file(stack, root).exists():
        raise _fail(f"no Pulumi.{stack}.yaml in {root}: name a stack of the project", EXIT_BAD_INPUT)
    document = None
    if outputs is not None:
        try:
            document = load_outputs(outputs_file=outputs)
        except StackOutputsError as error:
            raise _fail(str(error), EXIT_BAD_INPUT) from error
    elif find_pulumi() is not None:
        # The last measured run, when the stack has been deployed; before its first `up` it has no outputs.
        try:
            document = load_outputs(stack=stack)
        except StackOutputsError:
            document = None
    try:
        report = estimate(
            stack, root=root, overrides=_overrides(assignments), hours=hours, runs=runs, outputs=document
        )
    except RuntimeError as error:  # the program failed under mocks: its own message says why
        raise _fail(f"could not plan stack {stack}: {error}", EXIT_FAILURE) from error
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    console.print(cost_table(report))
    for line in summary_lines(report):
        console.print(line, highlight=False)


def register(app: typer.Typer) -> None:
    """Add `cost` to the mnistctl app."""
    app.command("cost")(cost_command)

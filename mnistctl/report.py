"""Rich tables of results, the same whatever platform produced them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from rich.table import Table


def prediction_table(
    probabilities: np.ndarray,
    inputs: Sequence[str],
    labels: np.ndarray | None = None,
    title: str | None = None,
) -> Table:
    """One row per image: input, (true label,) predicted digit, its probability, then all ten."""
    table = Table(title=title)
    table.add_column("input")
    if labels is not None:
        table.add_column("label", justify="right")
    table.add_column("digit", justify="right", style="bold")
    table.add_column("p", justify="right")
    for digit in range(probabilities.shape[1]):
        table.add_column(f"p{digit}", justify="right", style="dim")
    for index, row in enumerate(probabilities):
        digit = int(row.argmax())
        cells = [inputs[index]]
        if labels is not None:
            label = int(labels[index])
            cells.append(str(label))
            shown = f"[green]{digit}[/]" if digit == label else f"[red]{digit}[/]"
        else:
            shown = str(digit)
        cells += [shown, f"{row[digit]:.3f}", *(f"{p:.2f}" for p in row)]
        table.add_row(*cells)
    return table


def metrics_table(metrics: Mapping[str, Any], title: str | None = None) -> Table:
    """Name/value rows; floats in [0, 1] that are accuracies shown as percentages too."""
    table = Table(title=title, show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        if isinstance(value, float) and "accuracy" in key:
            shown = f"{value:.4f} ({value:.2%})"
        elif isinstance(value, float):
            shown = f"{value:.3f}"
        elif isinstance(value, Mapping):
            shown = ", ".join(f"{k}={v}" for k, v in value.items())
        else:
            shown = str(value)
        table.add_row(key, shown)
    return table

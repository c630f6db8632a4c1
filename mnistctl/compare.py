"""`mnistctl compare`: several stacks side by side, one row per (stack, model), as a table and a PNG.

Accuracy and latency come from a smoke run against each live endpoint; artifact size and training
time from the stack's `models` output (a local artifact's size is measured on disk; a cloud
artifact's is shown as unknown). The champion gate's view comes from the same output: the accuracy
of the model being served (the champion), the last challenger's, and what the gate decided.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from mnistctl.smoke import ClientFactory, smoke
from mnistctl.stacks import models as stack_models

_MB = 1024 * 1024


@dataclass
class ComparisonRow:
    """One model of one stack."""

    stack: str
    model: str
    flavor: str
    accuracy: float | None
    p50_ms: float | None
    p99_ms: float | None
    artifact_bytes: int | None
    train_seconds: float | None
    trained_accuracy: float | None
    error: str | None = None
    challenger_accuracy: float | None = None
    """The last training run's held-out accuracy (the challenger the gate judged)."""
    decision: str | None = None
    """What the champion gate decided: promoted, forced, held, or champion (nothing new)."""
    reason: str | None = None
    """The gate's reason, naming both accuracies and the rule."""
    tuning: str = "untuned"
    """Whether the served model (the champion) came out of a tuning job: `tuning_summary`."""
    last_search: str | None = None
    """The stack's latest tuning job of this model (`models.<m>.tuning`), whatever the gate made of it."""

    @property
    def label(self) -> str:
        return f"{self.stack}/{self.model}"


def compare(
    stacks: Sequence[tuple[str, Mapping[str, Any]]],
    count: int = 10,
    data_dir: Path | None = None,
    client_factory: ClientFactory | None = None,
) -> list[ComparisonRow]:
    """Smoke every (label, outputs) stack and line its models up."""
    rows: list[ComparisonRow] = []
    for label, outputs in stacks:
        result = smoke(outputs, count=count, data_dir=data_dir, label=label, client_factory=client_factory)
        trained = stack_models(outputs)
        for r in result.results:
            model = trained.get(r.model, {})
            metrics = model.get("metrics") or {}
            challenger = model.get("challenger") or {}
            rows.append(
                ComparisonRow(
                    stack=label,
                    model=r.model,
                    flavor=r.flavor,
                    accuracy=r.accuracy,
                    p50_ms=r.latency_ms(50),
                    p99_ms=r.latency_ms(99),
                    artifact_bytes=artifact_bytes(model.get("artifact")),
                    train_seconds=_number(metrics.get("train_seconds")),
                    trained_accuracy=_number(metrics.get("accuracy")),
                    error=r.error,
                    challenger_accuracy=_number(challenger.get("accuracy")),
                    decision=challenger.get("decision"),
                    reason=challenger.get("reason"),
                    tuning=tuning_summary(metrics.get("tuning")),
                    last_search=search_summary(model.get("tuning")),
                )
            )
    return rows


def tuning_summary(tuning: Any) -> str:
    """ "untuned", or "tuned: trial 3 of 20" for a model that is the best trial of a tuning job."""
    trials = _number(tuning.get("trials")) if isinstance(tuning, Mapping) else None
    if not isinstance(tuning, Mapping) or trials is None:
        return "untuned"
    best = _number(tuning.get("best_trial"))
    return f"tuned: trial {best:.0f} of {trials:.0f}" if best is not None else f"tuned ({trials:.0f} trials)"


def search_summary(tuning: Any) -> str | None:
    """A tuning job in a line: trials, the best trial's objective and hyperparameters, the spread."""
    trials = _number(tuning.get("trials")) if isinstance(tuning, Mapping) else None
    if not isinstance(tuning, Mapping) or trials is None:
        return None
    objective = tuning.get("objective")
    metric = objective.get("metric", "objective") if isinstance(objective, Mapping) else "objective"
    spread = tuning.get("spread")
    finished, pruned = _count(tuning, "completed"), _count(tuning, "pruned")
    parts = [
        f"{trials:.0f} trials ({finished} finished, {pruned} pruned)",
        f"best trial {_cell(_number(tuning.get('best_trial')), '.0f')}: {metric} "
        f"{_cell(_number(tuning.get('best_objective')), '.4f')}",
    ]
    if isinstance(spread, Mapping):
        low, middle, high = (_cell(_number(spread.get(k)), ".4f") for k in ("min", "median", "max"))
        parts.append(f"spread {low} / {middle} / {high} (min / median / max)")
    chosen = tuning.get("best_hyperparameters")
    if isinstance(chosen, Mapping) and chosen:
        parts.append(", ".join(f"{name}={value}" for name, value in sorted(chosen.items())))
    return "; ".join(parts)


def _count(tuning: Mapping[str, Any], key: str) -> str:
    value = _number(tuning.get(key))
    return "?" if value is None else str(int(value))


def artifact_bytes(artifact: Any) -> int | None:
    """Size of a local artifact (file or SavedModel folder); None for a cloud URI or a missing path."""
    if not isinstance(artifact, str) or "://" in artifact:
        return None
    path = Path(artifact)
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def comparison_table(rows: Sequence[ComparisonRow]) -> Table:
    table = Table(title="stacks compared")
    for column in ("stack", "model", "flavor"):
        table.add_column(column)
    for column in ("smoke accuracy", "p50 ms", "p99 ms", "artifact MB", "train s", "eval accuracy"):
        table.add_column(column, justify="right")
    table.add_column("tuning")
    table.add_column("challenger", justify="right")
    table.add_column("gate")
    for row in rows:
        gate = (_cell(row.challenger_accuracy, ".2%"), row.decision or "-")
        if row.error is not None:
            table.add_row(
                row.stack, row.model, row.flavor, f"[red]{row.error}[/]", "-", "-", "-", "-", "-", "-", *gate
            )
            continue
        table.add_row(
            row.stack,
            row.model,
            row.flavor,
            _cell(row.accuracy, ".0%"),
            _cell(row.p50_ms, ".1f"),
            _cell(row.p99_ms, ".1f"),
            _cell(row.artifact_bytes / _MB if row.artifact_bytes is not None else None, ".2f"),
            _cell(row.train_seconds, ".1f"),
            _cell(row.trained_accuracy, ".2%"),
            row.tuning,
            *gate,
        )
    return table


GATE_RULE = (
    "Champion gate: a retrained model (the challenger) is served only when its held-out accuracy is "
    ">= minAccuracy and >= the served model's (the champion's) accuracy - promotionTolerance; otherwise "
    "the endpoint keeps serving the champion untouched. forcePromotion: true serves it anyway. "
    "'eval accuracy' is the champion's, 'challenger' the last training run's; 'tuning' says whether the "
    "champion is the best trial of a tuning job (config tuning) or was trained once (untuned)."
)


def gate_notes(rows: Sequence[ComparisonRow]) -> list[str]:
    """The rule, then the gate's reason for each model whose last challenger was not simply promoted."""
    notes = [GATE_RULE]
    notes += [f"{row.label}: {row.reason}" for row in rows if row.reason and row.decision != "promoted"]
    notes += [f"{row.label}: last tuning job: {row.last_search}" for row in rows if row.last_search]
    return notes


def write_chart(rows: Sequence[ComparisonRow], path: Path) -> Path:
    """A PNG with one bar panel per figure (accuracy, latency, artifact size, training time)."""
    import matplotlib

    matplotlib.use("Agg")  # no display: files only
    import matplotlib.pyplot as plt

    labels = [row.label for row in rows]
    positions = list(range(len(rows)))
    panels: list[tuple[str, list[tuple[str, list[float]]]]] = [
        ("smoke accuracy", [("accuracy", [_zero(r.accuracy) for r in rows])]),
        (
            "latency per request (ms)",
            [("p50", [_zero(r.p50_ms) for r in rows]), ("p99", [_zero(r.p99_ms) for r in rows])],
        ),
        ("artifact size (MB)", [("MB", [_zero(r.artifact_bytes) / _MB for r in rows])]),
        ("training time (s)", [("seconds", [_zero(r.train_seconds) for r in rows])]),
    ]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    for axis, (title, series) in zip(axes[0], panels, strict=True):
        width = 0.8 / len(series)
        for index, (name, values) in enumerate(series):
            offsets = [p - 0.4 + width * (index + 0.5) for p in positions]
            axis.bar(offsets, values, width=width, label=name)
        axis.set_title(title)
        axis.set_xticks(positions)
        axis.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
        if len(series) > 1:
            axis.legend(fontsize=8)
    axes[0][0].set_ylim(0, 1.05)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _zero(value: float | None) -> float:
    return 0.0 if value is None else float(value)

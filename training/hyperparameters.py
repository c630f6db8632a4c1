"""What the three trainers share: hyperparameters given as strings, saved as JSON, and progress reporting."""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

HYPERPARAMETERS_FILE = "hyperparameters.json"
METRICS_FILE = "metrics.json"

# progress(completed, total, message): the CLI turns it into a progress bar; trainers stay free of UI code.
ProgressCallback = Callable[[int, int, str], None]

T = TypeVar("T")


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _parse(name: str, kind: type, text: str) -> Any:
    try:
        if kind is bool:
            lowered = text.strip().lower()
            if lowered not in {"true", "false", "1", "0"}:
                raise ValueError(text)
            return lowered in {"true", "1"}
        if kind is int:
            return int(float(text)) if float(text).is_integer() else int(text)
        if kind is float:
            return float(text)
        return str(text)
    except ValueError:
        raise ValueError(f"hyperparameter {name}={text!r} is not a valid {kind.__name__}") from None


def with_overrides(hp: T, overrides: Mapping[str, str]) -> T:
    """A copy of dataclass ``hp`` with fields replaced by values parsed from strings.

    Unknown names raise ``ValueError`` listing the allowed ones.
    """
    cls = type(hp)
    hints = typing.get_type_hints(cls)
    allowed = field_names(cls)
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise ValueError(f"unknown hyperparameter(s) {', '.join(unknown)}: allowed are {', '.join(allowed)}")
    changes = {name: _parse(name, hints[name], str(value)) for name, value in overrides.items()}
    return dataclasses.replace(hp, **changes)  # type: ignore[type-var]


def as_strings(hp: Any) -> dict[str, str]:
    """Every field as a string, the form SageMaker and command lines take."""
    out = {}
    for name, value in dataclasses.asdict(hp).items():
        out[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def save_hyperparameters(hp: Any, out_dir: Path | str) -> Path:
    path = Path(out_dir) / HYPERPARAMETERS_FILE
    path.write_text(json.dumps(dataclasses.asdict(hp), indent=2, sort_keys=True) + "\n")
    return path


def parse_assignments(items: list[str] | None) -> dict[str, str]:
    """``["eta=0.1", "max_depth=8"]`` (repeated ``--set`` options) as a dict."""
    result: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        result[name.strip()] = value.strip()
    return result

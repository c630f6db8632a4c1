"""What every dynamic provider of the project shares, whatever the cloud: logging to the Pulumi log,
error tails, and the diff of recorded against new inputs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.rpc import UNKNOWN

LOG_TAIL_LINES = 25


def log(message: str) -> None:
    """Send a line to the Pulumi log.

    Inside a dynamic provider the SDK has no engine connection and `pulumi.log` prints to stderr,
    which the CLI shows under the resource (pulumi/pulumi#18253); under mocks it goes to logging.
    """
    pulumi.log.info(message)


def warn(message: str) -> None:
    """Send a warning to the Pulumi log (something the user should act on, shown in the update's summary)."""
    pulumi.log.warn(message)


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last `lines` non-empty lines of `text`, indented for an error message."""
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"    {line}" for line in kept) or "    (no output)"


def file_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return tail(path.read_text(errors="replace"), lines)
    except OSError:
        return f"    (no log at {path})"


def changed_keys(olds: Mapping[str, Any], news: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """The keys whose new value differs from the recorded one, or is not known yet (a preview)."""
    changed = []
    for key in keys:
        new = news.get(key)
        if new == UNKNOWN or _normalise(olds.get(key)) != _normalise(new):
            changed.append(key)
    return changed


def _normalise(value: Any) -> Any:
    # Numbers cross the wire as floats (8080 -> 8080.0); compare them as numbers, not by type.
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v) for v in value]
    return value


def state_of(props: Mapping[str, Any]) -> dict[str, Any]:
    """The resource's properties without the serialized provider, to return as outputs."""
    return {k: v for k, v in props.items() if k != "__provider" and v is not None}

"""What every dynamic provider of the project shares, whatever the cloud: logging to the Pulumi log,
error tails, the diff of recorded against new inputs, and the identity a create gives what it makes."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime.rpc import UNKNOWN

from infra.hashing import content_hash

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


IDENTITY_SEED = "identity_seed"
"""The input that carries a resource's identity seed (see `identity_seed`)."""
IDENTITY_TAG = "mnist-platform-id"
"""The tag or label key under which a created thing carries its identity, where the service has tags."""


def identity_seed(kind: str, name: str) -> str:
    """What names one declared resource across runs of `pulumi up`: a hash of the parts of its URN
    (project, stack, resource kind, resource name). A dynamic resource passes it as the input
    `identity_seed`, since a dynamic provider's `create` is not told its URN."""
    urn = f"{pulumi.get_project()}::{pulumi.get_stack()}::{kind}::{name}"
    return hashlib.sha256(urn.encode()).hexdigest()[:16]


def identity(props: Mapping[str, Any], replace_keys: Iterable[str]) -> str:
    """The identity of what one `create` makes: the resource's seed and the inputs whose change forces a
    replacement. A create interrupted before its result reached the state left something with this same
    identity, which the next create finds and adopts; the replacement of a resource (created before the
    old one is deleted) gets a new one, so it never adopts the thing it replaces."""
    return content_hash(
        {
            "seed": props.get(IDENTITY_SEED) or "",
            "inputs": {key: _normalise(props.get(key)) for key in replace_keys},
        }
    )


def identity_tag(value: str) -> str:
    """The `key:value` tag that carries an identity (IBM's tags are `key:value` strings)."""
    return f"{IDENTITY_TAG}:{value}"

"""Content hashes that name things: a changed input gives a new name, an unchanged one the same name.

Shared by every stack (job names, image tags, staged-data prefixes, replacement triggers).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

_HASH_CHUNK = 1 << 20
_SKIPPED_PARTS = frozenset({"__pycache__", ".pytest_cache", ".ipynb_checkpoints"})


def content_hash(value: Any, length: int = 12) -> str:
    """A short, stable hex digest of a JSON-able value (dict keys sorted, so order never matters)."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_sha256(root: Path, suffixes: tuple[str, ...] = (), skip: Collection[str] = ()) -> str:
    """One hash over every file below `root` (names and bytes), optionally only those with `suffixes`
    and not those whose path relative to `root` is in `skip`."""
    digest = hashlib.sha256()
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in paths:
        if _SKIPPED_PARTS.intersection(path.parts) or (suffixes and path.suffix not in suffixes):
            continue
        if path != root and path.relative_to(root).as_posix() in skip:
            continue
        digest.update(path.relative_to(root).as_posix().encode() if path != root else path.name.encode())
        digest.update(b"\0")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()

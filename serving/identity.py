"""What model a server serves, as a content hash of its folder: the identity its health route reports.

A deployment is verified by what the server says it loaded, not by what the deploying side meant to
start (docs/gate.md "What is verified"): the local stack compares this hash with the gate's hash of the
champion's folder. The scheme is the one `infra.hashing.tree_sha256` uses (every file below the folder,
by relative name and sha256 of its bytes, in name order), written here again because the serving image
carries serving/ and not infra/; tests/serving/test_model_identity.py keeps the two equal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20
_SKIPPED_PARTS = frozenset({"__pycache__", ".pytest_cache", ".ipynb_checkpoints"})


def model_identity(model_dir: Path | str) -> str:
    """The sha256 over every file below `model_dir` (a single file: over that file)."""
    root = Path(model_dir)
    digest = hashlib.sha256()
    paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for path in paths:
        if _SKIPPED_PARTS.intersection(path.parts):
            continue
        digest.update(path.relative_to(root).as_posix().encode() if path != root else path.name.encode())
        digest.update(b"\0")
        digest.update(_file_sha256(path).encode())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()

"""A stack's outputs, the one place clients learn where the endpoints are.

From the Pulumi CLI (`pulumi stack output --json`, with the same file backend `make up` uses) or from
a file holding that same JSON (`--outputs FILE`, for machines without the CLI or for CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PROJECT_FILE = "Pulumi.yaml"
# What `make up` uses when the user has not chosen a backend: a file backend inside the repo.
STATE_DIR = ".pulumi-state"
BACKEND_ENV = "PULUMI_BACKEND_URL"
PASSPHRASE_ENV = "PULUMI_CONFIG_PASSPHRASE"
PASSPHRASE_FILE_ENV = "PULUMI_CONFIG_PASSPHRASE_FILE"
LOCAL_STATE_ENV = "LOCAL_STATE"  # scripts/stack: keep a cloud stack's state in the repo, knowingly
LOCAL_STACK = "local"
OUTPUT_TIMEOUT_SECONDS = 60


class StackOutputsError(Exception):
    """The outputs of a stack could not be read; the message says what to do."""


def project_root(start: Path | None = None) -> Path:
    """The folder with Pulumi.yaml: the nearest one above `start` (or the cwd), else this checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return Path(__file__).resolve().parents[1]


def find_pulumi() -> str | None:
    """The Pulumi CLI: on PATH, or where Pulumi's installer puts it (~/.pulumi/bin)."""
    found = shutil.which("pulumi")
    if found:
        return found
    installed = Path.home() / ".pulumi" / "bin" / "pulumi"
    return str(installed) if installed.is_file() and os.access(installed, os.X_OK) else None


def pulumi_env(stack: str, root: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment `make up` (scripts/stack) runs Pulumi with, so that both find the same stack: the
    repo's file backend for the local stack (or a cloud stack with LOCAL_STATE=1) unless a backend is
    chosen, the user's PULUMI_BACKEND_URL otherwise; an empty passphrase for the local stack only."""
    env = dict(os.environ if environ is None else environ)
    if stack == LOCAL_STACK or env.get(LOCAL_STATE_ENV) == "1":
        env.setdefault(BACKEND_ENV, f"file://{root / STATE_DIR}")
    if stack == LOCAL_STACK and PASSPHRASE_ENV not in env and PASSPHRASE_FILE_ENV not in env:
        env[PASSPHRASE_ENV] = ""
    return env


def load_outputs(stack: str | None = None, outputs_file: Path | str | None = None) -> dict[str, Any]:
    """The outputs of `stack` (via the Pulumi CLI) or of `outputs_file` (the same JSON, from a file)."""
    if (stack is None) == (outputs_file is None):
        raise StackOutputsError(
            "name a stack (--stack local) or an outputs file (--outputs FILE), one of them"
        )
    if outputs_file is not None:
        return _read_outputs_file(Path(outputs_file))
    assert stack is not None
    return _outputs_from_cli(stack)


def _read_outputs_file(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise StackOutputsError(f"cannot read the outputs file {path}: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise StackOutputsError(
            f"{path} is not JSON ({error.msg} at line {error.lineno}); write it with "
            "`pulumi stack output --json > FILE`"
        ) from error
    if not isinstance(document, dict):
        raise StackOutputsError(
            f"{path} must hold a JSON object of stack outputs, like `pulumi stack output --json`"
        )
    return document


def _outputs_from_cli(stack: str) -> dict[str, Any]:
    pulumi = find_pulumi()
    if pulumi is None:
        raise StackOutputsError(
            "the Pulumi CLI is not installed (not on PATH, not in ~/.pulumi/bin), so stack outputs cannot be "
            "read. Run `make up` (it installs the CLI), or pass the outputs as a file: --outputs FILE "
            "(written on a machine with the CLI by `pulumi stack output --json --stack STACK > FILE`)."
        )
    root = project_root()
    command = [pulumi, "stack", "output", "--json", "--stack", stack, "--cwd", str(root), "--non-interactive"]
    try:
        result = subprocess.run(
            command,
            env=pulumi_env(stack, root),
            capture_output=True,
            text=True,
            timeout=OUTPUT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StackOutputsError(f"`{' '.join(command[1:])}` could not run: {error}") from error
    if result.returncode != 0:
        message = result.stderr.strip() or result.stdout.strip()
        raise StackOutputsError(
            f"`pulumi stack output --stack {stack}` failed: {message}\n"
            f"Is the stack up? `STACK={stack} make up` creates it (state in {root / STATE_DIR} unless "
            f"{BACKEND_ENV} says otherwise)."
        )
    try:
        document = json.loads(result.stdout or "{}")
    except json.JSONDecodeError as error:
        raise StackOutputsError(
            f"`pulumi stack output --json` printed something that is not JSON: {error}"
        ) from error
    if not document:
        raise StackOutputsError(f"stack {stack} has no outputs: run `STACK={stack} make up` first")
    return document


def endpoints(outputs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The `endpoints` output (model -> endpoint entry); a clear error when the stack has none."""
    found = outputs.get("endpoints")
    if not isinstance(found, Mapping) or not found:
        raise StackOutputsError(
            "the stack outputs hold no endpoints (expected `endpoints`: {model: {flavor, name, ...}}); "
            "is the stack up, and are these the outputs of an mnist-platform stack?"
        )
    for model, entry in found.items():
        if not isinstance(entry, Mapping) or "flavor" not in entry or "name" not in entry:
            raise StackOutputsError(f"endpoint {model!r} in the stack outputs lacks flavor/name: {entry!r}")
    return {str(model): dict(entry) for model, entry in found.items()}


def models(outputs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The `models` output (model -> {artifact, metrics}); empty when the stack exports none."""
    found = outputs.get("models")
    if not isinstance(found, Mapping):
        return {}
    return {str(model): dict(entry) for model, entry in found.items() if isinstance(entry, Mapping)}

"""`make up` / `make down` with a stand-in `pulumi` on PATH that records how it was called.

A cloud stack is safe by default: its state must outlive the clone, it is previewed with the policy
pack, and without a terminal it is deployed only with YES=1. The local stack stays one step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import PROJECT_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")

STAND_IN = """#!/usr/bin/env bash
echo "${PULUMI_BACKEND_URL:-<unset>} | $*" >> "$PULUMI_CALLS"
case "$*" in "stack output ui "*) echo "http://127.0.0.1:8090" ;; esac
"""
# `make up` prices the stack first (`python -m mnistctl cost`, tests/unit/test_make_up_cost.py proves it);
# these tests are about Pulumi's steps, so a stand-in answers for it at once.
COST_STAND_IN = """#!/usr/bin/env bash
echo "cost stand-in: $*"
"""


def make(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run `make ARGS` in the repository, with no terminal and the stand-in pulumi first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "pulumi").write_text(STAND_IN)
    (bin_dir / "pulumi").chmod(0o755)
    (bin_dir / "cost-python").write_text(COST_STAND_IN)
    (bin_dir / "cost-python").chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.unlink(missing_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "YES", "LOCAL_STATE"))}
    result = subprocess.run(
        # -o: never rebuild the virtualenv from here, whatever the timestamps say.
        ["make", "--no-print-directory", "-o", ".venv/.installed", *args],
        cwd=PROJECT_ROOT,
        env={
            **clean,
            "HOME": str(tmp_path),
            "PATH": f"{bin_dir}:{clean['PATH']}",
            "PULUMI_CALLS": str(calls),
            "MNISTCTL_PYTHON": str(bin_dir / "cost-python"),
            **env,
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result, calls.read_text().splitlines() if calls.exists() else []


POLICY = f"--policy-pack {PROJECT_ROOT / 'policy'}"


def test_cloud_up_without_yes_and_without_a_terminal_stops_after_the_preview(tmp_path: Path):
    result, calls = make(tmp_path, "up", "STACK=aws", PULUMI_BACKEND_URL="s3://team-state")
    assert result.returncode != 0  # make fails: nothing was deployed
    assert calls == [
        "s3://team-state | stack select --create aws",
        f"s3://team-state | preview --stack aws {POLICY}",
    ]
    assert "Stopped after the preview" in result.stderr
    assert "make up STACK=aws YES=1" in result.stderr


def test_cloud_up_with_yes_deploys_with_the_policy_pack(tmp_path: Path):
    result, calls = make(tmp_path, "up", "STACK=aws", "YES=1", PULUMI_BACKEND_URL="s3://team-state")
    assert result.returncode == 0, result.stderr
    assert calls[-1] == f"s3://team-state | up --yes --stack aws {POLICY}"


def test_cloud_up_refuses_to_start_without_a_state_backend(tmp_path: Path):
    result, calls = make(tmp_path, "up", "STACK=gcp", "YES=1")
    assert result.returncode != 0
    assert calls == []
    assert "export PULUMI_BACKEND_URL=s3://" in result.stderr
    assert "LOCAL_STATE=1 make up STACK=gcp" in result.stderr


def test_cloud_state_inside_the_clone_needs_local_state(tmp_path: Path):
    repo_state = f"file://{PROJECT_ROOT}/.pulumi-state"
    refused, calls = make(tmp_path, "up", "STACK=aws", "YES=1", PULUMI_BACKEND_URL=repo_state)
    assert refused.returncode != 0
    assert calls == []
    assert "inside this clone" in refused.stderr

    allowed, calls = make(tmp_path, "up", "STACK=aws", "YES=1", LOCAL_STATE="1")
    assert allowed.returncode == 0, allowed.stderr
    assert calls[-1] == f"{repo_state} | up --yes --stack aws {POLICY}"


def test_cloud_down_without_yes_only_previews_the_destroy(tmp_path: Path):
    result, calls = make(tmp_path, "down", "STACK=aws", PULUMI_BACKEND_URL="s3://team-state")
    assert result.returncode != 0  # make fails: nothing was deployed
    assert calls[-1] == "s3://team-state | destroy --preview-only --stack aws"
    assert "make down STACK=aws YES=1" in result.stderr


def test_local_stack_is_one_step_with_its_state_in_the_repo(tmp_path: Path):
    result, calls = make(tmp_path, "up")
    assert result.returncode == 0, result.stderr
    repo_state = f"file://{PROJECT_ROOT}/.pulumi-state"
    assert calls == [
        f"{repo_state} | stack select --create local",
        f"{repo_state} | up --yes --stack local",
        f"{repo_state} | stack output ui --stack local",
    ]
    # The draw-a-digit page's URL is the last thing `make up` prints.
    assert result.stdout.strip().splitlines()[-1].endswith("http://127.0.0.1:8090")

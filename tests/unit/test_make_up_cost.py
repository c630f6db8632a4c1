"""`make up` (scripts/stack) prints what the stack will cost before Pulumi previews and asks.

A stand-in `pulumi` on PATH prints each call to stdout, so the order of the cost table and Pulumi's
steps is visible in one stream; `mnistctl cost` runs for real (the program under mocks, the offline
dataset given through MNISTCTL_COST_FLAGS, since a download is something this machine cannot do).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STAND_IN = """#!/usr/bin/env bash
echo "PULUMI $*"
"""


def stack_up(tmp_path: Path, stack: str, **env: str) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "pulumi").write_text(STAND_IN)
    (bin_dir / "pulumi").chmod(0o755)
    data = tmp_path / "mnist"
    if not data.exists():
        shutil.copytree(REPO / "tests" / "data" / "mnist", data, ignore=shutil.ignore_patterns("staging"))
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "YES", "LOCAL_STATE", "MNISTCTL"))
    }
    return subprocess.run(
        [str(REPO / "scripts" / "stack"), "up", stack],
        cwd=REPO,
        env={
            **clean,
            "PATH": f"{bin_dir}:{clean['PATH']}",
            "MNISTCTL_COST_FLAGS": f"--set dataset=mnist-t10k --set dataDir={data}",
            **env,
        },
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_cloud_up_prints_the_cost_table_before_the_preview(tmp_path: Path):
    result = stack_up(tmp_path, "aws", PULUMI_BACKEND_URL="s3://team-state")
    out = result.stdout
    assert "PULUMI preview --stack aws" in out, result.stderr[-2000:]
    table = out.find("What stack aws (aws, us-east-1) will cost")
    assert 0 <= table < out.find("PULUMI preview --stack aws")
    assert out.find("PULUMI stack select --create aws") < table
    assert "ml.m5.large" in out[table:]
    assert "serving, per hour: 0.1150 USD at the autoscaling minimum" in out


def test_local_up_shows_that_the_stack_costs_nothing_before_it_deploys(tmp_path: Path):
    result = stack_up(tmp_path, "local", PULUMI_CONFIG_PASSPHRASE="")
    out = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    table = out.find("What stack local (local, here) will cost")
    assert 0 <= table < out.find("PULUMI up --yes --stack local")
    assert "the local stack runs on this machine: nothing is billed" in out


def test_a_stack_that_cannot_be_priced_says_so_and_still_previews(tmp_path: Path):
    result = stack_up(
        tmp_path,
        "aws",
        PULUMI_BACKEND_URL="s3://team-state",
        MNISTCTL_COST_FLAGS="--set endpointInstanceType=ml.nope",
    )
    assert "warning: could not price the aws stack" in result.stderr
    assert "PULUMI preview --stack aws" in result.stdout

"""The pack's gcp rules see the real Vertex AI graph, not only constructed inputs: the stack as
declared passes, the same stack with a customer key asked for passes `requireCustomerKey`, and the
same stack pushed past the cost limits is stopped by exactly the rules that guard them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from evaluate import Finding, evaluate_stack
from pulumi_policy import EnforcementLevel

from infra.plan import PROJECT, REPO_ROOT, collect

KMS_KEY = "projects/my-mnist-project/locations/us-central1/keyRings/mnist/cryptoKeys/data"


def _offline(folder: Path) -> dict[str, str]:
    copy = folder / "mnist"
    shutil.copytree(REPO_ROOT / "tests" / "data" / "mnist", copy)
    return {f"{PROJECT}:dataset": "mnist-t10k", f"{PROJECT}:dataDir": str(copy)}


def _mandatory(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level is EnforcementLevel.MANDATORY]


@pytest.mark.slow
def test_gcp_rules_judge_the_real_vertex_graph(tmp_path: Path) -> None:
    data = _offline(tmp_path)
    with_key = collect("gcp", overrides={**data, f"{PROJECT}:kmsKeyName": KMS_KEY})
    kinds = {r.resource_type for r in with_key}
    assert {"pulumi-python:dynamic/vertex:CustomJob", "pulumi-python:dynamic/vertex:Deployment"} <= kinds
    assert _mandatory(evaluate_stack(with_key, "gcp", customer_key=True)) == []

    oversized = collect(
        "gcp",
        overrides={
            **data,
            f"{PROJECT}:trainingMachineType": "n1-highmem-96",  # a real CPU type, far from small
            f"{PROJECT}:trainingTimeoutSeconds": 172_800,
            f"{PROJECT}:servingMaxReplicas": 10,
        },
    )
    stopped = _mandatory(evaluate_stack(oversized, "gcp"))
    assert {f.policy for f in stopped} == {"training-bounded", "endpoints-bounded"}
    messages = " ".join(f.message for f in stopped)
    assert "n1-highmem-96" in messages and "172800" in messages and "10" in messages

"""`budget`: the stack config's maxHourlyCost / maxRunCost, priced as `mnistctl cost` prices the plan.

Advisory (and silent) without a limit; mandatory with one, naming each resource that makes the stack
exceed it, or whose price is unknown (a limit cannot be held against an unknown price).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from unittest import mock

import pytest
from evaluate import evaluate_stack
from pulumi_policy import EnforcementLevel

from infra.plan import PROJECT, REPO_ROOT, collect, stack_config
from policy import rules
from policy.rules import BudgetLimits, StackResource, budget_violations

ENDPOINT_URN = "urn:pulumi:aws::mnist-platform::aws:sagemaker/endpoint:Endpoint::ep"
JOB_URN = "urn:pulumi:aws::mnist-platform::aws:sagemaker/trainingJob:TrainingJob::job"


def aws_stack(instance_type: str = "ml.m5.large", low: float = 1.0, high: float = 2.0) -> list[StackResource]:
    """The aws stack's billed resources as a stack policy receives them (outputs, under wire names)."""
    variant = {"variantName": "AllTraffic", "instanceType": instance_type, "initialInstanceCount": low}
    return [
        StackResource(
            rules.SAGEMAKER_ENDPOINT_CONFIG,
            "cfg",
            "urn:cfg",
            {"name": "cfg-1", "productionVariants": [variant]},
        ),
        StackResource(
            "aws:sagemaker/endpoint:Endpoint",
            "ep",
            ENDPOINT_URN,
            {"name": "ep-1", "endpointConfigName": "cfg-1"},
        ),
        StackResource(
            rules.AUTOSCALING_TARGET,
            "target",
            "urn:target",
            {
                "resourceId": "endpoint/ep-1/variant/AllTraffic",
                "scalableDimension": "sagemaker:variant:DesiredInstanceCount",
                "minCapacity": low,
                "maxCapacity": high,
            },
        ),
        StackResource(
            rules.SAGEMAKER_TRAINING_JOB,
            "job",
            JOB_URN,
            {
                "resourceConfig": {"instanceType": "ml.m5.xlarge", "instanceCount": 1.0},
                "stoppingCondition": {"maxRuntimeInSeconds": 3600.0},
            },
        ),
    ]


def test_without_a_limit_nothing_is_reported():
    assert budget_violations(aws_stack(), BudgetLimits(), "us-east-1") == []


def test_an_endpoint_over_the_hourly_limit_is_named_with_its_cost():
    (violation,) = budget_violations(aws_stack(), BudgetLimits(max_hourly=0.01), "us-east-1")
    assert violation.urn == ENDPOINT_URN
    assert violation.message.startswith(
        "ep (2 x ml.m5.large) costs 0.2300 USD per hour at the autoscaling maximum; the stack's 0.2300 USD "
        "exceeds maxHourlyCost 0.01 USD"
    )


def test_a_stack_within_its_limits_passes():
    assert budget_violations(aws_stack(), BudgetLimits(max_hourly=0.23, max_run=0.23), "us-east-1") == []


def test_a_training_run_over_the_run_limit_is_named():
    (violation,) = budget_violations(aws_stack(), BudgetLimits(max_run=0.1), "us-east-1")
    assert violation.urn == JOB_URN
    assert "costs 0.2300 USD per training run at the maximum runtime" in violation.message
    assert "maxRunCost 0.1 USD" in violation.message


def test_a_price_the_tables_do_not_know_cannot_pass_a_limit():
    (violation,) = budget_violations(
        aws_stack(instance_type="ml.c5.xlarge"), BudgetLimits(max_hourly=100.0), "us-east-1"
    )
    assert violation.urn == ENDPOINT_URN
    assert "has no known price (sagemaker-hosting:ml.c5.xlarge in us-east-1)" in violation.message


def test_the_level_is_mandatory_exactly_when_the_stack_config_sets_a_limit():
    policy = next(p for p in rules.POLICIES if p.name == "budget")
    config: dict[str, str] = {}
    with mock.patch.object(rules.pulumi.runtime, "get_config", lambda key: config.get(key)):
        assert policy.enforcement_level is EnforcementLevel.ADVISORY
        config["mnist-platform:maxRunCost"] = "0.5"
        assert rules.stack_budget() == BudgetLimits(max_run=0.5)
        assert policy.enforcement_level is EnforcementLevel.MANDATORY


@pytest.fixture(scope="module")
def aws_resources(tmp_path_factory):
    copy = tmp_path_factory.mktemp("budget-data") / "mnist"
    shutil.copytree(REPO_ROOT / "tests" / "data" / "mnist", copy, ignore=shutil.ignore_patterns("staging"))
    overrides = {
        f"{PROJECT}:dataset": "mnist-t10k",
        f"{PROJECT}:dataDir": str(copy),
        f"{PROJECT}:maxHourlyCost": "0.01",
    }
    return collect("aws", overrides=overrides)


def test_the_aws_stack_with_max_hourly_cost_001_is_stopped_by_a_mandatory_violation(aws_resources):
    config = {**stack_config("aws"), f"{PROJECT}:maxHourlyCost": "0.01"}
    limits = BudgetLimits(max_hourly=float(config[f"{PROJECT}:maxHourlyCost"]))
    findings = [
        f
        for f in evaluate_stack(aws_resources, "aws", budget=limits, region=config["aws:region"])
        if f.policy == "budget"
    ]
    assert [(f.level, f.resource_type) for f in findings] == [
        (EnforcementLevel.MANDATORY, "aws:sagemaker/endpoint:Endpoint")
    ], findings
    assert "(2 x ml.m5.large) costs 0.2300 USD per hour" in findings[0].message


def test_the_aws_stack_at_its_defaults_has_no_budget_finding(aws_resources):
    assert [f for f in evaluate_stack(aws_resources, "aws") if f.policy == "budget"] == []


def test_the_policy_reads_prices_from_the_project_it_belongs_to():
    # The pack's own virtualenv has no infra package installed: rules.py finds it beside policy/.
    assert Path(rules._infra_cost().__file__).resolve() == REPO_ROOT / "infra" / "cost.py"


# ---- the pack, served for real, with the stack config the CLI passes ------------------------------


@pytest.fixture(scope="module")
def pack_with_a_budget():
    """`python -m pulumi.policy` on policy/, as the CLI starts it for a stack that sets maxHourlyCost."""
    import json
    import os
    import subprocess
    import sys

    import grpc
    from pulumi.runtime.proto import analyzer_pb2_grpc

    env = {
        **os.environ,
        "PULUMI_PROJECT": "mnist-platform",
        "PULUMI_STACK": "aws",
        "PULUMI_DRY_RUN": "false",
        "PULUMI_CONFIG": json.dumps({"aws:region": "us-east-1", "mnist-platform:maxHourlyCost": "0.01"}),
    }
    pack = subprocess.Popen(
        [sys.executable, "-m", "pulumi.policy", "127.0.0.1:1", str(REPO_ROOT / "policy")],
        cwd=REPO_ROOT / "policy",
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert pack.stdout is not None
        port = pack.stdout.readline().strip()
        assert port.isdigit(), "the pack did not start"
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        pack.terminate()
        pack.wait(timeout=10)


def test_the_served_pack_stops_a_stack_over_the_budget_its_config_sets(pack_with_a_budget):
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    def resource(r: StackResource):
        properties = struct_pb2.Struct()
        properties.update(dict(r.props))
        return analyzer_pb2.AnalyzerResource(
            type=r.resource_type, properties=properties, urn=r.urn, name=r.name
        )

    request = analyzer_pb2.AnalyzeStackRequest(resources=[resource(r) for r in aws_stack()])
    found = [
        (d.policyName, d.enforcementLevel, d.urn)
        for d in pack_with_a_budget.AnalyzeStack(request).diagnostics
        if d.policyName == "budget"
    ]
    assert found == [("budget", analyzer_pb2.MANDATORY, ENDPOINT_URN)]

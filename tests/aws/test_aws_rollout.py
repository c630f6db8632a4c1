"""`rollout` on the aws stack: SageMaker's deployment guardrails (blue/green, a canary step, automatic
rollback on the stack's own CloudWatch alarms) under Pulumi mocks, checked against SageMaker's botocore
model of CreateEndpoint's DeploymentConfig; without `rollout`, today's all-at-once update."""

from __future__ import annotations

import fnmatch
import json
import logging
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from aws_mocks import ALARM, ENDPOINT, ENDPOINT_CONFIG, ROLE_POLICY, _call, _outputs
from botocore.validate import validate_parameters
from harness import Resource, StackRun, run_stack
from pulumi.runtime.mocks import MockResourceArgs

ROLLOUT = {"canaryPercent": 20, "bakeMinutes": 10, "maxErrorRate": 0.02}


def _with_alarm_names(args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
    id_, state = _outputs(args)
    if args.typ == ALARM:  # a generated name, as the provider's auto-naming gives one
        state["name"] = f"{args.name}-0a1b2c3"
    return id_, state


def _run(data_dir: Path, rollout: dict[str, Any] | None) -> StackRun:
    config: dict[str, Any] = {"dataset": "mnist-t10k", "dataDir": str(data_dir)}
    if rollout is not None:
        config["rollout"] = rollout
    return run_stack("aws", config, new_resource=_with_alarm_names, call=_call)


@pytest.fixture(scope="module")
def canary(t10k_dir: Path) -> StackRun:
    return _run(t10k_dir, ROLLOUT)


def _alarms(run: StackRun) -> dict[str, Resource]:
    return {alarm.name.rsplit("-", 2)[-2]: alarm for alarm in run.of_type(ALARM)}


def _camel_to_pascal(value: Any) -> Any:
    """The engine's camelCase inputs as the PascalCase request SageMaker takes (what the provider sends)."""
    if isinstance(value, dict):
        return {key[0].upper() + key[1:]: _camel_to_pascal(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_camel_to_pascal(item) for item in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


def test_without_rollout_an_update_is_all_at_once(t10k_dir: Path) -> None:
    run = _run(t10k_dir, None)
    assert run.one(ENDPOINT).inputs.get("deploymentConfig") is None
    assert run.one(ALARM, "5xx").inputs["period"] == 300


def test_a_canary_takes_canary_percent_of_the_capacity_for_bake_minutes(canary: StackRun) -> None:
    policy = canary.one(ENDPOINT).inputs["deploymentConfig"]["blueGreenUpdatePolicy"]
    assert policy["trafficRoutingConfiguration"] == {
        "type": "CANARY",
        "canarySize": {"type": "CAPACITY_PERCENT", "value": 20},
        "waitIntervalInSeconds": 600,
    }
    assert policy["terminationWaitInSeconds"] == 0
    assert policy["maximumExecutionTimeoutInSeconds"] == 600 + 1800


def test_the_deployment_config_is_what_sagemaker_accepts(canary: StackRun) -> None:
    """Against CreateEndpoint's DeploymentConfig in SageMaker's botocore model (names, types, minimums)."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateEndpoint").input_shape
    config = _camel_to_pascal(canary.one(ENDPOINT).inputs["deploymentConfig"])
    validate_parameters({"EndpointName": "e", "EndpointConfigName": "c", "DeploymentConfig": config}, shape)


def test_an_update_is_rolled_back_on_the_stacks_5xx_and_latency_alarms(canary: StackRun) -> None:
    endpoint = canary.one(ENDPOINT)
    rollback = endpoint.inputs["deploymentConfig"]["autoRollbackConfiguration"]["alarms"]
    alarms = canary.of_type(ALARM)
    assert sorted(a["alarmName"] for a in rollback) == sorted(a.outputs["name"] for a in alarms)
    # The alarms exist before the endpoint (they watch it by the name it will have): no cycle.
    for alarm in alarms:
        assert canary.depends_on(endpoint, alarm) and not canary.depends_on(alarm, endpoint)


def test_the_alarms_watch_the_real_endpoint_and_variant(canary: StackRun) -> None:
    endpoint_name = canary.one(ENDPOINT).inputs["name"]
    (variant,) = canary.one(ENDPOINT_CONFIG).inputs["productionVariants"]
    expected = {"EndpointName": endpoint_name, "VariantName": variant["variantName"]}
    latency = canary.one(ALARM, "latency").inputs
    assert latency["dimensions"] == expected and latency["metricName"] == "ModelLatency"
    assert latency["period"] == 60 and latency["extendedStatistic"] == "p90"
    errors = canary.one(ALARM, "5xx").inputs
    metrics = {q["id"]: q for q in errors["metricQueries"]}
    assert {metrics[i]["metric"]["metricName"] for i in ("errors", "invocations")} == {
        "Invocation5XXErrors",
        "Invocations",
    }
    for query in ("errors", "invocations"):
        assert metrics[query]["metric"]["dimensions"] == expected
        assert metrics[query]["metric"]["namespace"] == "AWS/SageMaker"
        assert metrics[query]["metric"]["period"] == 60
    assert metrics["error_rate"]["expression"] == "IF(invocations > 0, errors / invocations, 0)"
    assert metrics["error_rate"]["returnData"] is True
    assert errors["threshold"] == pytest.approx(0.02)
    assert errors["comparisonOperator"] == "GreaterThanThreshold"


def test_a_bake_longer_than_sagemakers_canary_wait_is_refused_naming_the_key(t10k_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"rollout\.bakeMinutes: 61 is more than SageMaker's canary wait"):
        _run(t10k_dir, {**ROLLOUT, "bakeMinutes": 61})


def test_min_live_accuracy_is_said_not_to_be_judged_on_aws(
    t10k_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):  # under mocks, pulumi.log.warn goes to logging
        _run(t10k_dir, {**ROLLOUT, "minLiveAccuracy": 0.9})
    assert "rollout.minLiveAccuracy (0.9) is not judged on aws" in caplog.text


def test_the_hosting_role_may_describe_the_rollback_alarms_only_with_rollout(
    canary: StackRun, t10k_dir: Path
) -> None:
    """SageMaker's guide: the execution role needs cloudwatch:DescribeAlarms on the auto-rollback alarms."""

    def described(run: StackRun) -> list[Any]:
        policy = json.loads(run.one(ROLE_POLICY, "hosting").inputs["policy"])
        return [s["Resource"] for s in policy["Statement"] if s["Action"] == "cloudwatch:DescribeAlarms"]

    (pattern,) = described(canary)
    for alarm in canary.of_type(ALARM):
        arn = f"arn:aws:cloudwatch:us-east-1:123456789012:alarm:{alarm.outputs['name']}"
        assert fnmatch.fnmatchcase(arn, pattern), (arn, pattern)
    assert described(_run(t10k_dir, None)) == []

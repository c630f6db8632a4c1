"""docs/aws.md's deployer policy grants what the stack itself calls with the deploying identity."""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

from harness import PROJECT_ROOT

from infra.aws import endpoint_check
from infra.aws.training_attempt import DEPLOYER_ACTIONS

ACCOUNT = "123456789012"
KEY = "arn:aws:kms:REGION:ACCOUNT:key/KEY-ID"  # the placeholder the docs ask to replace


def _deployer_policy() -> dict[str, Any]:
    text = (PROJECT_ROOT / "docs" / "aws.md").read_text()
    section = text.split("### What the deploying identity needs", 1)[1]
    block = re.search(r"```json\n(.*?)\n```", section, re.S)
    assert block, "no JSON policy under 'What the deploying identity needs'"
    return json.loads(block.group(1))


def _as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def _allowed(policy: dict[str, Any], action: str, resource: str) -> bool:
    return any(
        statement["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase(action, a) for a in _as_list(statement["Action"]))
        and any(fnmatch.fnmatchcase(resource, r) for r in _as_list(statement["Resource"]))
        for statement in policy["Statement"]
    )


def test_the_deployer_may_upload_into_an_sse_kms_bucket_with_the_stack_key() -> None:
    # Multipart uploads to SSE-KMS: GenerateDataKey for each part, Decrypt to complete the upload.
    policy = _deployer_policy()
    for action in ("kms:GenerateDataKey", "kms:Decrypt", "kms:DescribeKey", "kms:CreateGrant"):
        assert _allowed(policy, action, KEY), action


def test_the_deployer_may_run_the_training_attempt_provider_on_retried_jobs() -> None:
    policy = _deployer_policy()
    job = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:training-job/mnist-aws-xgboost-0123456789ab-r1"
    for action in DEPLOYER_ACTIONS:
        assert _allowed(policy, action, job), action


def test_the_deployer_may_run_the_endpoint_check_on_the_stacks_models_configurations_and_copies() -> None:
    policy = _deployer_policy()
    sagemaker = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}"
    config = f"{sagemaker}:endpoint-config/mnist-xgboost-endpoint-config-1a2b3c4"
    resources = {
        "sagemaker:DescribeEndpoint": f"{sagemaker}:endpoint/mnist-aws-xgboost-0a1b2c3d",
        "sagemaker:DescribeEndpointConfig": config,
        "sagemaker:DescribeModel": f"{sagemaker}:model/mnist-xgboost-model-1a2b3c4",
        "sagemaker:ListEndpointConfigs": "*",
        "sagemaker:ListModels": "*",
        "sagemaker:ListTags": f"{sagemaker}:model/mnist-xgboost-model-1a2b3c4",
        "sagemaker:DeleteEndpointConfig": config,
        "sagemaker:DeleteModel": f"{sagemaker}:model/mnist-xgboost-model-1a2b3c4",
        "s3:ListBucket": "arn:aws:s3:::mnist-data-1a2b3c4",
        "s3:DeleteObject": "arn:aws:s3:::mnist-data-1a2b3c4/champions/xgboost/job/model.tar.gz",
    }
    assert set(resources) == set(endpoint_check.DEPLOYER_ACTIONS)
    for action, resource in resources.items():
        assert _allowed(policy, action, resource), action

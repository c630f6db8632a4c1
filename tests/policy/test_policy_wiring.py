"""The pulumi_policy objects around the rules: names, levels and config schemas, each policy's `validate`
driven with the SDK's own argument objects, and the pack served for real by `python -m pulumi.policy`
in a child process and spoken to over gRPC as the Pulumi engine does."""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from evaluate import (
    options,
    policy_named,
    policy_resources,
    run_resource_policy,
    run_stack_policy,
    stack_context,
)
from pulumi_policy import EnforcementLevel, PolicyResource, ResourceValidationPolicy, StackValidationPolicy
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from infra.plan import RegisteredResource
from policy import rules

REPO_ROOT = Path(__file__).resolve().parents[2]
PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
MANDATORY, ADVISORY = EnforcementLevel.MANDATORY, EnforcementLevel.ADVISORY

EXPECTED_LEVELS = {
    "storage-private": MANDATORY,
    "s3-public-access-blocked": MANDATORY,
    "storage-encrypted": MANDATORY,
    "s3-encryption-declared": MANDATORY,
    "least-privilege": MANDATORY,
    "training-bounded": MANDATORY,
    "endpoints-bounded": MANDATORY,
    "resources-tagged": ADVISORY,
    "destroy-leaves-nothing": ADVISORY,
    "no-plaintext-secrets": MANDATORY,
    "budget": ADVISORY,  # mandatory once the stack config sets a limit (test_policy_budget.py)
}


def test_pack_holds_every_rule_with_its_documented_level():
    assert {p.name: p.enforcement_level for p in rules.POLICIES} == EXPECTED_LEVELS
    docs = (REPO_ROOT / "docs" / "policy.md").read_text()
    for name, level in EXPECTED_LEVELS.items():
        assert re.search(rf"`{name}`.*{level.value}", docs), (
            f"docs/policy.md does not document {name} as {level.value}"
        )


def test_every_tunable_setting_has_a_default_that_its_schema_accepts():
    for policy in rules.POLICIES:
        if policy.config_schema is None:
            continue
        for key, spec in policy.config_schema.properties.items():
            assert "default" in spec, f"{policy.name}.{key} has no default"
            python_type = {"boolean": bool, "integer": int, "number": (int, float), "array": list}[
                spec["type"]
            ]
            assert isinstance(spec["default"], python_type), f"{policy.name}.{key}"


def test_main_only_builds_the_pack_from_policies():
    # Never imported (its PolicyPack serves forever): read it instead.
    tree = ast.parse((REPO_ROOT / "policy" / "__main__.py").read_text())
    calls = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    assert calls == ["PolicyPack"]
    assert "from rules import POLICIES" in ast.unparse(tree)


# ---- resource policies, driven as Analyze drives them ----------------------------------------------


def test_public_access_block_violation_reaches_report_violation():
    props = {"bucket": "b", "blockPublicAcls": False, "blockPublicPolicy": True, "ignorePublicAcls": True}
    assert run_resource_policy("storage-private", PAB, props) == [
        "the S3 public access block must set all four flags to true; "
        "not true: blockPublicAcls, restrictPublicBuckets"
    ]


def test_a_value_unknown_at_preview_does_not_hide_the_other_checks():
    # The SDK's proxy raises on an unknown; the rules copy props first, so the known flags still count.
    props = {"bucket": UNKNOWN_STRING_VALUE, "blockPublicAcls": False, "blockPublicPolicy": True}
    props |= {"ignorePublicAcls": True, "restrictPublicBuckets": True}
    assert run_resource_policy("storage-private", PAB, props) == [
        "the S3 public access block must set all four flags to true; not true: blockPublicAcls"
    ]


def test_customer_key_follows_the_stack_config_or_the_pack_config():
    sse = {"bucket": "b", "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]}
    sse_type = next(iter(sorted(rules.S3_ENCRYPTION_TYPES)))
    with stack_context("aws", customer_key=False):
        assert run_resource_policy("storage-encrypted", sse_type, sse) == []
        assert (
            len(run_resource_policy("storage-encrypted", sse_type, sse, config={"requireCustomerKey": True}))
            == 1
        )
    with stack_context("aws", customer_key=True):
        assert run_resource_policy("storage-encrypted", sse_type, sse) == [
            "this stack asks for a customer key: use sseAlgorithm 'aws:kms' with kmsMasterKeyId "
            "(got 'AES256' without a key)"
        ]


def test_wildcard_role_policy_is_reported_through_the_policy():
    policy = json.dumps({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})
    assert run_resource_policy("least-privilege", "aws:iam/rolePolicy:RolePolicy", {"policy": policy}) == [
        "policy: statement #0 allows every action ('*')"
    ]
    tuned = {"forbiddenManagedPolicies": ["ReadOnlyAccess"], "forbiddenGcpRoles": []}
    attach = {"policyArn": "arn:aws:iam::aws:policy/ReadOnlyAccess"}
    assert run_resource_policy(
        "least-privilege", "aws:iam/rolePolicyAttachment:RolePolicyAttachment", attach, config=tuned
    )


def test_training_limits_are_tuned_through_the_pack_config():
    job = {
        "stoppingCondition": {"maxRuntimeInSeconds": 3600.0},
        "resourceConfig": {"instanceType": "ml.m5.xlarge", "instanceCount": 1.0},
    }
    assert run_resource_policy("training-bounded", rules.SAGEMAKER_TRAINING_JOB, job) == []
    # Policy config arrives over gRPC as JSON numbers, i.e. floats.
    assert run_resource_policy(
        "training-bounded", rules.SAGEMAKER_TRAINING_JOB, job, config={"maxRuntimeSeconds": 1800.0}
    ) == [
        "the training job may run 3600 s (stoppingCondition.maxRuntimeInSeconds), more than the limit 1800 s"
    ]
    assert run_resource_policy(
        "training-bounded", rules.SAGEMAKER_TRAINING_JOB, job, config={"allowedInstanceTypes": ["ml.c5.*"]}
    )[0].startswith("the training job uses instance type 'ml.m5.xlarge', not in the allowed list ['ml.c5.*']")


def test_oversized_endpoint_is_reported_through_the_policy():
    config = {
        "productionVariants": [
            {"variantName": "v", "instanceType": "ml.m5.large", "initialInstanceCount": 3.0}
        ]
    }
    assert run_resource_policy("endpoints-bounded", rules.SAGEMAKER_ENDPOINT_CONFIG, config) == [
        "variant v asks for initialInstanceCount 3, more than the maximum 2"
    ]
    assert (
        run_resource_policy(
            "endpoints-bounded", rules.SAGEMAKER_ENDPOINT_CONFIG, config, config={"maxInstanceCount": 3}
        )
        == []
    )


def test_tags_come_from_the_resource_or_its_provider():
    untagged = {"forceDestroy": True}
    assert run_resource_policy("resources-tagged", "aws:s3/bucket:Bucket", untagged) == [
        "missing tags project, stack: set them on the resource or as provider default tags (aws:defaultTags)"
    ]
    provider = {"defaultTags": json.dumps({"tags": {"project": "mnist-platform", "stack": "aws"}})}
    assert (
        run_resource_policy("resources-tagged", "aws:s3/bucket:Bucket", untagged, provider_props=provider)
        == []
    )
    assert run_resource_policy(
        "resources-tagged",
        "aws:s3/bucket:Bucket",
        untagged,
        provider_props=provider,
        config={"requiredTags": ["owner"]},
    ) == ["missing tags owner: set them on the resource or as provider default tags (aws:defaultTags)"]


def test_teardown_depends_on_the_stack_being_deployed():
    bucket = {"forceDestroy": False}
    with stack_context("aws"):
        assert len(run_resource_policy("destroy-leaves-nothing", "aws:s3/bucket:Bucket", bucket)) == 1
        assert run_resource_policy("destroy-leaves-nothing", "aws:iam/role:Role", {}, protect=True) == [
            "stack 'aws' is not a production stack, but the resource is protected from destroy"
        ]
    with stack_context("production"):
        assert run_resource_policy("destroy-leaves-nothing", "aws:s3/bucket:Bucket", bucket) == []


def test_plaintext_key_is_reported_unless_declared_in_additional_secret_outputs():
    instance = {
        "kind": "ibm:ResourceInstance",
        "tags": ["project:p", "stack:ibm"],
        "apikey": "abcdefghijklmnopqrstuvwxyz012345",
    }
    reported = run_resource_policy("no-plaintext-secrets", "pulumi-python:dynamic:Resource", instance)
    assert len(reported) == 1
    assert reported[0].startswith("input apikey looks like a credential")
    assert (
        run_resource_policy(
            "no-plaintext-secrets", "pulumi-python:dynamic:Resource", instance, secret_outputs=["apikey"]
        )
        == []
    )


# ---- stack policies, driven as AnalyzeStack drives them ------------------------------------------


def registered(resource_type: str, name: str, outputs: dict, **deps: list[str]) -> RegisteredResource:
    urn = f"urn:pulumi:aws::mnist-platform::{resource_type}::{name}"
    return RegisteredResource(
        resource_type, name, urn, True, outputs, outputs, property_dependencies=dict(deps)
    )


def test_bucket_without_public_access_block_is_reported_with_its_urn():
    bucket = registered("aws:s3/bucket:Bucket", "data", {"bucket": "data-1", "id": "data-1"})
    found = run_stack_policy("s3-public-access-blocked", policy_resources([bucket]))
    assert [(m.split(" (")[0], u) for m, u in found] == [
        ("S3 bucket 'data' has no public access block", bucket.urn)
    ]


def test_companions_linked_by_property_dependency_satisfy_the_stack_policies():
    bucket = registered("aws:s3/bucket:Bucket", "data", {"bucket": UNKNOWN_STRING_VALUE})
    block = registered(PAB, "data", {"bucket": UNKNOWN_STRING_VALUE}, bucket=[bucket.urn])
    sse_type = next(iter(sorted(rules.S3_ENCRYPTION_TYPES)))
    sse = registered(sse_type, "data", {"bucket": UNKNOWN_STRING_VALUE}, bucket=[bucket.urn])
    resources = policy_resources([bucket, block, sse])
    assert run_stack_policy("s3-public-access-blocked", resources) == []
    assert run_stack_policy("s3-encryption-declared", resources) == []


def test_stack_policies_read_the_sdk_resource_objects():
    resource = PolicyResource(
        "aws:s3/bucket:Bucket",
        unknown_checking_proxy({"bucket": "b", "id": "b"}),
        "urn:b",
        "b",
        options(),
        None,
        None,
        [],
        {},
    )
    assert [u for _, u in run_stack_policy("s3-encryption-declared", [resource])] == ["urn:b"]


# ---- the type tokens and property names exist in the providers we guard ---------------------------


def _pulumi_aws_tokens() -> dict[str, tuple[str, str]]:
    """token -> (module, class), from pulumi-aws's own resource module registry."""
    import pulumi_aws

    source = Path(pulumi_aws.__file__).read_text()
    found = re.search(r'resource_modules="""(.*?)"""', source, re.S)
    assert found is not None, "pulumi-aws no longer registers its resource modules this way"
    registry = json.loads(found.group(1))
    return {
        tok: (f"pulumi_aws.{m['fqn'].split('.', 1)[1]}", cls)
        for m in registry
        for tok, cls in m["classes"].items()
    }


def _accepts_tags(module: str, cls: str) -> bool:
    resource = getattr(importlib.import_module(module), cls)
    return "tags" in inspect.signature(resource._internal_init).parameters


def test_aws_type_tokens_of_the_rules_exist_in_pulumi_aws():
    known = _pulumi_aws_tokens()
    used = {
        *rules.S3_BUCKET_TYPES,
        rules.S3_PUBLIC_ACCESS_BLOCK,
        *rules.S3_ENCRYPTION_TYPES,
        *rules.S3_ACL_TYPES,
        rules.S3_BUCKET_POLICY,
        rules.SAGEMAKER_TRAINING_JOB,
        rules.SAGEMAKER_ENDPOINT_CONFIG,
        rules.AUTOSCALING_TARGET,
        rules.IAM_ROLE,
        *rules.IAM_POLICY_DOCUMENT_TYPES,
        *rules.IAM_ATTACHMENT_TYPES,
        *rules.AWS_TAGGABLE_TYPES,
    }
    assert sorted(used - known.keys()) == []


def test_every_type_the_tag_rule_lists_accepts_tags():
    known = _pulumi_aws_tokens()
    assert sorted(t for t in rules.AWS_TAGGABLE_TYPES if not _accepts_tags(*known[t])) == []


# ---- the pack, served for real --------------------------------------------------------------------


@pytest.fixture(scope="module")
def served_pack():
    """`python -m pulumi.policy` on policy/, as the CLI starts it; yields an Analyzer stub."""
    import grpc
    from pulumi.runtime.proto import analyzer_pb2_grpc

    env = {
        **os.environ,
        "PULUMI_PROJECT": "mnist-platform",
        "PULUMI_STACK": "aws",
        "PULUMI_DRY_RUN": "true",
        "PULUMI_CONFIG": json.dumps({"mnist-platform:kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/k"}),
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
        failure = pack.stderr.read() if pack.stderr is not None and pack.poll() is not None else ""
        assert port.isdigit(), f"the pack did not start: {failure}"
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        pack.terminate()
        pack.wait(timeout=10)


def _analyze(
    stub, resource_type: str, props: dict, secret_outputs: list[str] | None = None
) -> list[tuple[str, int, str]]:
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    properties = struct_pb2.Struct()
    properties.update(props)
    request = analyzer_pb2.AnalyzeRequest(
        type=resource_type,
        properties=properties,
        urn=f"urn:pulumi:aws::mnist-platform::{resource_type}::r",
        name="r",
        options=analyzer_pb2.AnalyzerResourceOptions(additionalSecretOutputs=secret_outputs or []),
    )
    return [(d.policyName, d.enforcementLevel, d.message) for d in stub.Analyze(request).diagnostics]


def test_served_pack_reports_mandatory_violations_the_engine_would_act_on(served_pack):
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import analyzer_pb2

    info = served_pack.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "mnist-platform-guardrails"
    assert {p.name for p in info.policies} == set(EXPECTED_LEVELS)

    block = {"bucket": UNKNOWN_STRING_VALUE, "blockPublicAcls": False, "blockPublicPolicy": True}
    block |= {"ignorePublicAcls": True, "restrictPublicBuckets": True}
    [(name, level, message)] = _analyze(served_pack, PAB, block)
    assert (name, level) == ("storage-private", analyzer_pb2.MANDATORY)
    assert message.endswith(
        "the S3 public access block must set all four flags to true; not true: blockPublicAcls"
    )

    # The stack config the CLI passes (PULUMI_CONFIG) names a customer key, so SSE-S3 is not enough.
    sse = {"bucket": "b", "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}}]}
    sse_type = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
    assert [n for n, _, _ in _analyze(served_pack, sse_type, sse)] == ["storage-encrypted"]


def test_served_pack_sees_secrets_decrypted_so_the_stack_must_declare_them(served_pack):
    # The engine sends a secret wrapped in its signature; the SDK unwraps it before any rule runs.
    secret = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270", "value": "k" * 44}
    instance = {"kind": "ibm:ResourceInstance", "tags": ["project:p", "stack:ibm"], "api_key": secret}
    names = [n for n, _, _ in _analyze(served_pack, "pulumi-python:dynamic:Resource", instance)]
    assert names == ["no-plaintext-secrets"]
    assert _analyze(served_pack, "pulumi-python:dynamic:Resource", instance, secret_outputs=["api_key"]) == []


def test_served_pack_takes_its_limits_from_the_pack_config(served_pack):
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    limits = struct_pb2.Struct()
    limits.update({"maxRuntimeSeconds": 600})
    served_pack.Configure(
        analyzer_pb2.ConfigureAnalyzerRequest(
            policyConfig={
                "training-bounded": analyzer_pb2.PolicyConfig(
                    enforcementLevel=analyzer_pb2.MANDATORY, properties=limits
                )
            }
        )
    )
    job = {
        "stoppingCondition": {"maxRuntimeInSeconds": 3600},
        "resourceConfig": {"instanceType": "ml.m5.xlarge", "instanceCount": 1, "volumeKmsKeyId": "k"},
        "outputDataConfig": {"s3OutputPath": "s3://b/o", "kmsKeyId": "k"},
        "tags": {"project": "mnist-platform", "stack": "aws"},
    }
    [(name, _, message)] = _analyze(served_pack, rules.SAGEMAKER_TRAINING_JOB, job)
    assert name == "training-bounded"
    assert message.endswith(
        "the training job may run 3600 s (stoppingCondition.maxRuntimeInSeconds), more than the limit 600 s"
    )


def test_policy_objects_are_the_sdk_types():
    assert all(isinstance(p, ResourceValidationPolicy | StackValidationPolicy) for p in rules.POLICIES)
    assert isinstance(policy_named("s3-public-access-blocked"), StackValidationPolicy)

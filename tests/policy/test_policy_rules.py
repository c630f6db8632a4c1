"""Each rule's plain function: a case that violates it (with the message a user reads) and one that passes.

Props are written as a policy receives them: wire (camelCase) names for provider resources, numbers
as floats, dynamic resources with their `kind` and snake_case inputs (docs/policy.md).
"""

from __future__ import annotations

import json

import pytest

from policy import rules
from policy.rules import (
    UNKNOWN,
    EndpointLimits,
    StackResource,
    TrainingLimits,
    buckets_without_encryption,
    buckets_without_public_access_block,
    endpoint_bounds_violations,
    least_privilege_violations,
    missing_tags_violations,
    plaintext_secret_violations,
    storage_encrypted_violations,
    storage_private_violations,
    teardown_violations,
    training_bounds_violations,
)

PAB = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
SSE = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
BUCKET = "aws:s3/bucket:Bucket"
DYNAMIC = "pulumi-python:dynamic:Resource"
ALL_BLOCKED = {
    "blockPublicAcls": True,
    "blockPublicPolicy": True,
    "ignorePublicAcls": True,
    "restrictPublicBuckets": True,
}
SAGEMAKER_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "sagemaker.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
)


def document(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def training_job(**overrides: object) -> dict:
    props: dict = {
        "stoppingCondition": {"maxRuntimeInSeconds": 3600.0},
        "resourceConfig": {"instanceType": "ml.m5.xlarge", "instanceCount": 1.0, "volumeSizeInGb": 10.0},
    }
    props.update(overrides)
    return props


# ---- 1. storage private ---------------------------------------------------------------------------


def test_public_access_block_with_a_flag_off_is_reported_by_name():
    messages = storage_private_violations(PAB, {**ALL_BLOCKED, "restrictPublicBuckets": False})
    assert messages == [
        "the S3 public access block must set all four flags to true; not true: restrictPublicBuckets"
    ]


def test_public_access_block_missing_flags_are_not_true():
    assert (
        "blockPublicAcls, blockPublicPolicy" in storage_private_violations(PAB, {"ignorePublicAcls": True})[0]
    )


def test_public_access_block_with_all_four_flags_passes():
    assert storage_private_violations(PAB, {"bucket": "b", **ALL_BLOCKED}) == []


def test_public_canned_acl_on_a_bucket_is_reported():
    assert storage_private_violations(BUCKET, {"acl": "public-read"}) == [
        "canned ACL 'public-read' makes the bucket readable by anyone; use 'private'"
    ]


def test_acl_grant_to_all_users_is_reported():
    props = {
        "accessControlPolicy": {
            "grants": [
                {"grantee": {"type": "Group", "uri": "http://acs.amazonaws.com/groups/global/AllUsers"}}
            ]
        }
    }
    assert storage_private_violations("aws:s3/bucketAcl:BucketAcl", props) == [
        "an ACL grant to AllUsers makes the bucket public"
    ]


def test_bucket_policy_open_to_anyone_is_reported_and_a_conditioned_one_is_not():
    public = document(
        {"Sid": "Open", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}
    )
    assert storage_private_violations("aws:s3/bucketPolicy:BucketPolicy", {"policy": public}) == [
        "the bucket policy allows Principal '*' without a condition (statement Open)"
    ]
    deny_insecure = document(
        {
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    )
    assert storage_private_violations("aws:s3/bucketPolicy:BucketPolicy", {"policy": deny_insecure}) == []


def test_private_bucket_passes():
    assert storage_private_violations(BUCKET, {"forceDestroy": True, "acl": "private"}) == []


def test_gcs_bucket_without_enforced_prevention_or_uniform_access_is_reported():
    messages = storage_private_violations(
        "gcp:storage/bucket:Bucket", {"publicAccessPrevention": "inherited"}
    )
    assert messages == [
        "publicAccessPrevention must be 'enforced', got 'inherited'",
        "uniformBucketLevelAccess must be true (object ACLs can make single objects public)",
    ]


def test_gcs_bucket_private_passes():
    props = {"publicAccessPrevention": "enforced", "uniformBucketLevelAccess": True}
    assert storage_private_violations("gcp:storage/bucket:Bucket", props) == []


def test_gcs_bucket_iam_grant_to_all_users_is_reported():
    props = {"bucket": "b", "role": "roles/storage.objectViewer", "member": "allUsers"}
    assert storage_private_violations("gcp:storage/bucketIAMMember:BucketIAMMember", props) == [
        "an IAM grant to allUsers makes the bucket public"
    ]


def test_cos_bucket_must_declare_public_access_false():
    cos = "pulumi-python:dynamic/ibm:CosBucket"  # class CosBucket(Resource, module="ibm", name="CosBucket")
    assert storage_private_violations(cos, {"public_access": True}) == [
        "a ibm:CosBucket must declare public_access: false (got True); "
        "its provider must create it without public access"
    ]
    assert storage_private_violations(cos, {})  # undeclared is not private
    assert storage_private_violations(cos, {"public_access": False}) == []
    assert storage_private_violations(DYNAMIC, {"kind": "ibm:CosBucket", "public_access": None})


def test_dynamic_kind_comes_from_the_type_token_or_the_kind_input():
    assert rules.dynamic_kind("pulumi-python:dynamic/vertex:CustomJob", {}) == "vertex:CustomJob"
    assert rules.dynamic_kind(DYNAMIC, {"kind": "ibm:Deployment"}) == "ibm:Deployment"
    assert rules.dynamic_kind(DYNAMIC, {}) is None
    assert rules.dynamic_kind("aws:s3/bucket:Bucket", {"kind": "ibm:CosBucket"}) is None
    # The local stack's own dynamic resources are no cloud kind: no rule but the secrets rule sees them.
    local_job = {"framework": "xgboost", "root": "/tmp/x", "dry_run": False}
    assert training_bounds_violations("pulumi-python:dynamic/local:TrainingJob", local_job) == []


def test_unknown_flag_at_preview_is_left_to_the_update():
    assert storage_private_violations(PAB, {**ALL_BLOCKED, "blockPublicAcls": UNKNOWN}) == []


def bucket_stack(*companions: StackResource) -> list[StackResource]:
    bucket = StackResource(BUCKET, "data", "urn:bucket", {"bucket": "data-123", "id": "data-123"})
    return [bucket, *companions]


def test_bucket_without_public_access_block_is_reported_on_the_bucket():
    violations = buckets_without_public_access_block(bucket_stack())
    assert [(v.message.split(" (")[0], v.urn) for v in violations] == [
        ("S3 bucket 'data' has no public access block", "urn:bucket")
    ]


def test_bucket_with_a_block_found_by_dependency_or_by_name_passes():
    by_dependency = StackResource(PAB, "data", "urn:pab", {"bucket": UNKNOWN}, {"bucket": ["urn:bucket"]})
    by_name = StackResource(PAB, "data", "urn:pab", {"bucket": "data-123"})
    assert buckets_without_public_access_block(bucket_stack(by_dependency)) == []
    assert buckets_without_public_access_block(bucket_stack(by_name)) == []


# ---- 2. encrypted at rest -------------------------------------------------------------------------


def sse(algorithm: str, key: str | None = None) -> dict:
    default = {"sseAlgorithm": algorithm, **({"kmsMasterKeyId": key} if key else {})}
    return {"bucket": "b", "rules": [{"applyServerSideEncryptionByDefault": default}]}


def test_sse_s3_passes_unless_the_stack_asks_for_a_customer_key():
    assert storage_encrypted_violations(SSE, sse("AES256")) == []
    assert storage_encrypted_violations(SSE, sse("AES256"), require_customer_key=True) == [
        "this stack asks for a customer key: use sseAlgorithm 'aws:kms' with kmsMasterKeyId "
        "(got 'AES256' without a key)"
    ]


def test_kms_with_a_customer_key_passes_when_one_is_required():
    assert storage_encrypted_violations(SSE, sse("aws:kms", "arn:aws:kms:us-east-1:1:key/k"), True) == []


def test_encryption_configuration_without_rules_is_reported():
    assert storage_encrypted_violations(SSE, {"bucket": "b", "rules": []}) == [
        "the server-side encryption configuration has no rule"
    ]


def test_bucket_without_encryption_configuration_is_reported():
    violations = buckets_without_encryption(bucket_stack())
    assert [(v.message, v.urn) for v in violations] == [
        ("S3 bucket 'data' has no server-side encryption configuration", "urn:bucket")
    ]
    config = StackResource(SSE, "data", "urn:sse", {"bucket": "data-123"})
    assert buckets_without_encryption(bucket_stack(config)) == []


def test_customer_key_required_reaches_training_volume_and_endpoint():
    assert storage_encrypted_violations(rules.SAGEMAKER_TRAINING_JOB, training_job(), True) == [
        "this stack asks for a customer key, but resourceConfig.volumeKmsKeyId is not set",
        "this stack asks for a customer key, but outputDataConfig.kmsKeyId is not set",
    ]
    keyed = training_job(
        resourceConfig={"instanceType": "ml.m5.xlarge", "instanceCount": 1.0, "volumeKmsKeyId": "k"},
        outputDataConfig={"s3OutputPath": "s3://b/out", "kmsKeyId": "k"},
    )
    assert storage_encrypted_violations(rules.SAGEMAKER_TRAINING_JOB, keyed, True) == []
    assert storage_encrypted_violations(rules.SAGEMAKER_ENDPOINT_CONFIG, {}, True) == [
        "this stack asks for a customer key, but kmsKeyArn is not set"
    ]
    assert storage_encrypted_violations(rules.SAGEMAKER_TRAINING_JOB, training_job()) == []


def test_customer_key_required_on_gcs_and_cos():
    assert storage_encrypted_violations("gcp:storage/bucket:Bucket", {}, True) == [
        "this stack asks for a customer key, but encryption.defaultKmsKeyName is not set"
    ]
    gcs = {"encryption": {"defaultKmsKeyName": "projects/p/locations/l/keyRings/r/cryptoKeys/k"}}
    assert storage_encrypted_violations("gcp:storage/bucket:Bucket", gcs, True) == []
    assert storage_encrypted_violations(DYNAMIC, {"kind": "ibm:CosBucket"}, True) == [
        "this stack asks for a customer key, but the ibm:CosBucket's kms_key_crn is not set"
    ]


# ---- 3. least privilege ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "expected"),
    [
        (
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            "policy: statement #0 allows every action ('*')",
        ),
        (
            {"Sid": "S3", "Effect": "Allow", "Action": ["s3:GetObject", "s3:*"], "Resource": "*"},
            "policy: statement S3 allows 's3:*' on Resource '*'; "
            "name the actions the job needs and the ARNs it needs them on",
        ),
        (
            {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"},
            "policy: statement #0 allows NotAction on Resource '*', i.e. nearly everything",
        ),
    ],
)
def test_wildcard_policy_is_reported(statement, expected):
    assert least_privilege_violations("aws:iam/rolePolicy:RolePolicy", {"policy": document(statement)}) == [
        expected
    ]


def test_policy_document_as_object_with_a_single_statement_is_parsed():
    props = {
        "policy": {"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}
    }
    assert least_privilege_violations("aws:iam/policy:Policy", props) == [
        "policy: statement #0 allows every action ('*')"
    ]


def test_scoped_policy_passes():
    scoped = document(
        {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "arn:aws:s3:::b/train/*"},
        {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"},  # service:* but scoped
        {
            "Effect": "Allow",
            "Action": ["ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"],
            "Resource": "*",
        },
        {"Effect": "Deny", "Action": "*", "Resource": "*"},
    )
    assert least_privilege_violations("aws:iam/rolePolicy:RolePolicy", {"policy": scoped}) == []


def test_role_inline_policy_and_managed_arns_are_checked():
    props = {
        "assumeRolePolicy": SAGEMAKER_TRUST,
        "inlinePolicies": [
            {"name": "data", "policy": document({"Effect": "Allow", "Action": "*", "Resource": "*"})}
        ],
        "managedPolicyArns": ["arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"],
    }
    assert least_privilege_violations(rules.IAM_ROLE, props) == [
        "inline policy 'data': statement #0 allows every action ('*')",
        "managed policy arn:aws:iam::aws:policy/AmazonSageMakerFullAccess "
        "grants far more than the platform needs",
    ]
    assert least_privilege_violations(rules.IAM_ROLE, {"assumeRolePolicy": SAGEMAKER_TRUST}) == []


def test_trust_policy_open_to_anyone_is_reported():
    trust = document({"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"})
    assert least_privilege_violations(rules.IAM_ROLE, {"assumeRolePolicy": trust}) == [
        "the trust policy lets any principal ('*') assume the role"
    ]


@pytest.mark.parametrize("name", ["AdministratorAccess", "PowerUserAccess", "AmazonSageMakerFullAccess"])
def test_broad_managed_policy_attachment_is_reported(name):
    arn = f"arn:aws:iam::aws:policy/{name}"
    assert least_privilege_violations(
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment", {"role": "r", "policyArn": arn}
    ) == [f"attaching {arn} grants far more than the platform needs; write a scoped policy"]


def test_scoped_managed_policy_attachment_passes():
    arn = "arn:aws:iam::aws:policy/CloudWatchLogsReadOnlyAccess"
    props = {"role": "r", "policyArn": arn}
    assert least_privilege_violations("aws:iam/rolePolicyAttachment:RolePolicyAttachment", props) == []


@pytest.mark.parametrize(
    ("resource_type", "props"),
    [
        ("gcp:projects/iAMMember:IAMMember", {"role": "roles/editor", "member": "serviceAccount:sa@p.iam"}),
        ("gcp:projects/iAMBinding:IAMBinding", {"role": "roles/owner", "members": ["user:a@b.c"]}),
        (
            "gcp:projects/iAMPolicy:IAMPolicy",
            {"policyData": json.dumps({"bindings": [{"role": "roles/owner", "members": ["user:a@b.c"]}]})},
        ),
    ],
)
def test_basic_gcp_roles_are_reported(resource_type, props):
    messages = least_privilege_violations(resource_type, props)
    assert len(messages) == 1
    assert "is a basic role covering almost every service; grant predefined roles" in messages[0]


def test_predefined_gcp_role_passes():
    props = {"role": "roles/aiplatform.user", "member": "serviceAccount:sa@p.iam"}
    assert least_privilege_violations("gcp:projects/iAMMember:IAMMember", props) == []


# ---- 4. training bounded --------------------------------------------------------------------------


def test_training_job_without_max_runtime_is_reported():
    props = training_job(stoppingCondition=None)
    assert training_bounds_violations(rules.SAGEMAKER_TRAINING_JOB, props) == [
        "the training job has no stoppingCondition.maxRuntimeInSeconds: "
        "a hung job would bill until someone notices"
    ]


def test_training_job_beyond_the_limits_is_reported():
    props = training_job(
        stoppingCondition={"maxRuntimeInSeconds": 172800.0},
        resourceConfig={"instanceType": "ml.p4d.24xlarge", "instanceCount": 8.0},
    )
    assert training_bounds_violations(rules.SAGEMAKER_TRAINING_JOB, props) == [
        "the training job may run 172800 s (stoppingCondition.maxRuntimeInSeconds), "
        "more than the limit 86400 s",
        "the training job uses instance type 'ml.p4d.24xlarge', "
        f"not in the allowed list {list(rules.DEFAULT_TRAINING_INSTANCE_TYPES)} "
        "(tune allowedInstanceTypes in the policy pack config)",
        "the training job asks for instanceCount 8, more than the maximum 4",
    ]


def test_training_job_within_limits_passes_and_limits_are_tunable():
    assert training_bounds_violations(rules.SAGEMAKER_TRAINING_JOB, training_job()) == []
    gpu = training_job(resourceConfig={"instanceType": "ml.g5.xlarge", "instanceCount": 1.0})
    assert (
        training_bounds_violations(rules.SAGEMAKER_TRAINING_JOB, gpu, TrainingLimits(3600, ("ml.g5.*",), 1))
        == []
    )


def test_vertex_custom_job_convention_is_bounded():
    job = {"kind": "vertex:CustomJob", "instance_type": "n1-standard-4", "instance_count": 1.0}
    assert training_bounds_violations(DYNAMIC, job) == [
        "the vertex:CustomJob has no max_runtime_seconds: a hung job would bill until someone notices"
    ]
    assert training_bounds_violations(DYNAMIC, {**job, "max_runtime_seconds": 7200.0}) == []


# ---- 5. endpoints bounded -------------------------------------------------------------------------


def variant(instance_type: str = "ml.m5.large", count: float = 1.0) -> dict:
    return {
        "variantName": "AllTraffic",
        "modelName": "m",
        "instanceType": instance_type,
        "initialInstanceCount": count,
    }


def test_oversized_endpoint_is_reported():
    props = {"productionVariants": [variant("ml.p3.16xlarge", 10.0)]}
    assert endpoint_bounds_violations(rules.SAGEMAKER_ENDPOINT_CONFIG, props) == [
        "variant AllTraffic uses instance type 'ml.p3.16xlarge', "
        f"not in the allowed list {list(rules.DEFAULT_ENDPOINT_INSTANCE_TYPES)} "
        "(tune allowedInstanceTypes in the policy pack config)",
        "variant AllTraffic asks for initialInstanceCount 10, more than the maximum 2",
    ]


def test_small_endpoint_and_serverless_variant_pass():
    props = {
        "productionVariants": [variant(), {"variantName": "sls", "serverlessConfig": {"maxConcurrency": 5.0}}]
    }
    assert endpoint_bounds_violations(rules.SAGEMAKER_ENDPOINT_CONFIG, props) == []


def test_autoscaling_beyond_max_replicas_is_reported():
    props = {
        "serviceNamespace": "sagemaker",
        "resourceId": "endpoint/mnist/variant/AllTraffic",
        "scalableDimension": "sagemaker:variant:DesiredInstanceCount",
        "minCapacity": 1.0,
        "maxCapacity": 20.0,
    }
    assert endpoint_bounds_violations(rules.AUTOSCALING_TARGET, props) == [
        "the endpoint autoscaling target allows 20 instances (maxCapacity), more than maxReplicas 4"
    ]
    assert endpoint_bounds_violations(rules.AUTOSCALING_TARGET, {**props, "maxCapacity": 2.0}) == []
    assert (
        endpoint_bounds_violations(
            rules.AUTOSCALING_TARGET, {**props, "maxCapacity": 20.0}, EndpointLimits(max_replicas=20)
        )
        == []
    )


def test_dynamic_deployments_follow_the_replica_convention():
    vertex = {
        "kind": "vertex:Deployment",
        "instance_type": "n1-standard-2",
        "min_replicas": 1.0,
        "max_replicas": 9.0,
    }
    assert endpoint_bounds_violations(DYNAMIC, vertex) == [
        "the vertex:Deployment scales to 9 replicas, more than maxReplicas 4"
    ]
    watsonx = {
        "kind": "ibm:Deployment",
        "instance_type": "S",
        "min_replicas": 1.0,
        "max_replicas": 1.0,
    }
    assert endpoint_bounds_violations(DYNAMIC, watsonx) == []
    assert endpoint_bounds_violations(DYNAMIC, {**watsonx, "max_replicas": None}) == [
        "the ibm:Deployment declares no max_replicas"
    ]


# ---- 6. tags --------------------------------------------------------------------------------------


def test_untagged_taggable_resource_is_reported():
    assert missing_tags_violations(rules.SAGEMAKER_TRAINING_JOB, training_job()) == [
        "missing tags project, stack: set them on the resource or as provider default tags (aws:defaultTags)"
    ]


def test_tags_on_the_resource_or_from_provider_default_tags_pass():
    tagged = training_job(tags={"project": "mnist-platform", "stack": "aws"})
    assert missing_tags_violations(rules.SAGEMAKER_TRAINING_JOB, tagged) == []
    provider = {
        "region": "us-east-1",
        "defaultTags": json.dumps({"tags": {"project": "mnist-platform", "stack": "aws"}}),
    }
    assert missing_tags_violations(rules.SAGEMAKER_TRAINING_JOB, training_job(), provider) == []
    partial = {"defaultTags": {"tags": {"project": "mnist-platform"}}}
    assert missing_tags_violations(BUCKET, {}, partial) == [
        "missing tags stack: set them on the resource or as provider default tags (aws:defaultTags)"
    ]


def test_untaggable_types_are_not_checked():
    assert missing_tags_violations(PAB, ALL_BLOCKED) == []
    assert missing_tags_violations("aws:iam/rolePolicy:RolePolicy", {"policy": "{}"}) == []


def test_gcp_labels_and_dynamic_kinds():
    assert missing_tags_violations(
        "gcp:storage/bucket:Bucket", {"labels": {"project": "mnist-platform"}}
    ) == ["missing labels stack: set them on the resource or as provider default labels (gcp:defaultLabels)"]
    assert (
        missing_tags_violations(
            "gcp:storage/bucket:Bucket", {}, {"defaultLabels": {"project": "p", "stack": "gcp"}}
        )
        == []
    )
    ibm = {"kind": "ibm:ResourceInstance", "tags": ["project:mnist-platform", "stack:ibm"]}
    assert missing_tags_violations(DYNAMIC, ibm) == []
    assert missing_tags_violations(
        DYNAMIC, {"kind": "ibm:DeploymentSpace", "tags": ["project:mnist-platform"]}
    ) == ["missing tags stack: set them in its `tags` input ('key:value' strings)"]
    assert missing_tags_violations(DYNAMIC, {"kind": "vertex:CustomJob"}) == [
        "missing labels project, stack: set them in its `labels` input"
    ]


# ---- 7. destroy leaves nothing --------------------------------------------------------------------


def test_bucket_without_force_destroy_on_a_dev_stack_is_reported():
    assert teardown_violations(BUCKET, {}, "aws") == [
        "stack 'aws' is not a production stack, so its bucket needs forceDestroy: true, "
        "or `pulumi destroy` stops at the first object left in it"
    ]
    assert teardown_violations("gcp:storage/bucket:Bucket", {"forceDestroy": False}, "gcp")
    assert teardown_violations(DYNAMIC, {"kind": "ibm:CosBucket"}, "ibm")


def test_force_destroyable_buckets_and_production_stacks_pass():
    assert teardown_violations(BUCKET, {"forceDestroy": True}, "aws") == []
    assert teardown_violations(DYNAMIC, {"kind": "ibm:CosBucket", "force_destroy": True}, "ibm") == []
    assert teardown_violations(BUCKET, {}, "prod") == []
    assert teardown_violations(BUCKET, {}, "aws", production_stacks=["aws"]) == []


def test_protected_resource_on_a_dev_stack_is_reported():
    assert teardown_violations(rules.IAM_ROLE, {}, "aws", protect=True) == [
        "stack 'aws' is not a production stack, but the resource is protected from destroy"
    ]


# ---- 8. no plain-text secrets ---------------------------------------------------------------------

FAKE_IBM_KEY = "0123456789abcdefABCDEF_-0123456789abcdefXYZ"
FAKE_ACCESS_KEY = "AKIA" + "ABCDEFGHIJKLMNOP"


def test_credential_named_input_not_declared_secret_is_reported_without_its_value():
    props = {"kind": "ibm:ResourceInstance", "api_key": FAKE_IBM_KEY}
    messages = plaintext_secret_violations(DYNAMIC, props)
    assert messages == [
        "input api_key looks like a credential (its name says it is a credential) and 'api_key' is not "
        "declared secret: read it with config.require_secret() "
        "and list 'api_key' in additional_secret_outputs"
    ]
    assert FAKE_IBM_KEY not in messages[0]


def test_access_key_value_is_found_under_any_name_and_nesting():
    props = {"environment": {"variables": {"UPSTREAM": FAKE_ACCESS_KEY}}}
    messages = plaintext_secret_violations("aws:lambda/function:Function", props)
    assert len(messages) == 1
    assert messages[0].startswith(
        "input environment.variables.UPSTREAM looks like a credential "
        "(its value looks like an AWS access key id)"
    )


def test_credentials_declared_secret_pass():
    props = {
        "kind": "ibm:ResourceInstance",
        "api_key": FAKE_IBM_KEY,
        "environment": {"IBM_APIKEY": FAKE_IBM_KEY},
    }
    assert plaintext_secret_violations(DYNAMIC, props, secret_outputs=["api_key", "environment"]) == []


@pytest.mark.parametrize(
    "props",
    [
        {"secretArn": "arn:aws:secretsmanager:us-east-1:1:secret:x"},
        {"kmsKeyId": "arn:aws:kms:us-east-1:1:key/k", "accessKeyId": "ignored-id"},
        {"hyperParameters": {"max_tokens": "512", "num_round": "50", "tokenizer": "whitespace"}},
        {"password_length": 32.0, "enable_token": True},
        {"__provider": "gANjZGlsbC5fZGlsbApfY3JlYXRlX3R5cGUKcQBYBAAAAHR5cGVxAYVxAlJxAy4="},
    ],
)
def test_references_settings_and_internal_keys_are_not_credentials(props):
    assert plaintext_secret_violations(DYNAMIC, props) == []


def test_provider_credentials_are_left_to_the_provider_schema():
    assert (
        plaintext_secret_violations("pulumi:providers:aws", {"secretKey": "abcdefghijklmnopqrstuvwxyz"}) == []
    )


# ---- values unknown at preview --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("check", "resource_type", "props"),
    [
        (storage_encrypted_violations, SSE, {"bucket": "b", "rules": UNKNOWN}),
        (storage_encrypted_violations, BUCKET, {"serverSideEncryptionConfiguration": UNKNOWN}),
        (training_bounds_violations, rules.SAGEMAKER_TRAINING_JOB, training_job(stoppingCondition=UNKNOWN)),
        (training_bounds_violations, rules.SAGEMAKER_TRAINING_JOB, training_job(resourceConfig=UNKNOWN)),
        (least_privilege_violations, "aws:iam/rolePolicy:RolePolicy", {"policy": UNKNOWN}),
        (
            least_privilege_violations,
            rules.IAM_ROLE,
            {"assumeRolePolicy": UNKNOWN, "inlinePolicies": UNKNOWN},
        ),
        (endpoint_bounds_violations, rules.SAGEMAKER_ENDPOINT_CONFIG, {"productionVariants": [UNKNOWN]}),
        (storage_private_violations, "aws:s3/bucketPolicy:BucketPolicy", {"policy": UNKNOWN}),
    ],
)
def test_unknown_values_are_left_to_the_update(check, resource_type, props):
    assert check(resource_type, props) == []


def test_unknown_default_tags_are_left_to_the_update():
    assert missing_tags_violations(BUCKET, {}, {"defaultTags": UNKNOWN}) == []
    assert missing_tags_violations(BUCKET, {"tags": {"project": "p", "stack": UNKNOWN}}) == []


def test_new_bucket_at_preview_needs_its_encryption_resource():
    # At preview a new bucket's computed outputs are unknown; they must not count as declared encryption.
    bucket = StackResource(
        BUCKET, "data", "urn:bucket", {"bucket": UNKNOWN, "serverSideEncryptionConfiguration": UNKNOWN}
    )
    assert [v.urn for v in buckets_without_encryption([bucket])] == ["urn:bucket"]
    created = StackResource(
        BUCKET, "data", "urn:bucket", {"bucket": "b", "serverSideEncryptionConfiguration": {"rule": [{}]}}
    )
    assert buckets_without_encryption([created]) == []

"""The mnist-platform guardrails: plain rule functions, and the CrossGuard policies that wrap them.

Each rule is a plain function of `(resource type, props)` (or of the stack's resources) that returns
violation messages, so tests call it without a policy server. `POLICIES` wraps them in pulumi_policy
objects; `policy/__main__.py` hands `POLICIES` to `PolicyPack` (whose constructor serves gRPC forever,
so nothing but the pack's entry point may build it).

What a policy sees (see docs/policy.md): a ResourceValidationPolicy gets the resource's *inputs* under
their wire names (camelCase for provider resources: `forceDestroy`, not `force_destroy`; the keys as
written for dynamic resources), with secrets decrypted and no mark of secretness, numbers as floats, and
during preview any value computed from another resource's output unknown. A StackValidationPolicy gets
every resource's *outputs*. Checks that need an unknown value pass at preview and are decided when
`pulumi up` analyzes the resource again, with known inputs, just before creating it.
"""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

# --------------------------------------------------------------------------------------------------
# Resource types (pulumi-aws 7 and pulumi-gcp tokens) and the dynamic-resource convention
# --------------------------------------------------------------------------------------------------

S3_BUCKET_TYPES = frozenset({"aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"})
S3_PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
S3_ENCRYPTION_TYPES = frozenset(
    {
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2",
    }
)
S3_ACL_TYPES = frozenset({"aws:s3/bucketAcl:BucketAcl", "aws:s3/bucketAclV2:BucketAclV2"})
S3_BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
SAGEMAKER_TRAINING_JOB = "aws:sagemaker/trainingJob:TrainingJob"
SAGEMAKER_TUNING_JOB = "aws:sagemaker/hyperParameterTuningJob:HyperParameterTuningJob"
SAGEMAKER_ENDPOINT_CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
AUTOSCALING_TARGET = "aws:appautoscaling/target:Target"
IAM_ROLE = "aws:iam/role:Role"
# Identity policies (attached to a principal): the property holding the document.
IAM_POLICY_DOCUMENT_TYPES = {
    "aws:iam/rolePolicy:RolePolicy": "policy",
    "aws:iam/policy:Policy": "policy",
    "aws:iam/userPolicy:UserPolicy": "policy",
    "aws:iam/groupPolicy:GroupPolicy": "policy",
}
IAM_ATTACHMENT_TYPES = frozenset(
    {
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
        "aws:iam/userPolicyAttachment:UserPolicyAttachment",
        "aws:iam/groupPolicyAttachment:GroupPolicyAttachment",
        "aws:iam/policyAttachment:PolicyAttachment",
    }
)
GCS_BUCKET = "gcp:storage/bucket:Bucket"
GCS_ACL_TYPES = frozenset(
    {
        "gcp:storage/bucketAccessControl:BucketAccessControl",
        "gcp:storage/objectAccessControl:ObjectAccessControl",
        "gcp:storage/defaultObjectAccessControl:DefaultObjectAccessControl",
        "gcp:storage/bucketACL:BucketACL",
        "gcp:storage/defaultObjectACL:DefaultObjectACL",
    }
)
VERTEX_ENDPOINT = "gcp:vertex/aiEndpoint:AiEndpoint"

# AWS types that accept `tags` (checked against the installed pulumi-aws by tests/policy). A type not
# listed still counts as taggable when its inputs carry `tags` or `tagsAll`.
AWS_TAGGABLE_TYPES = frozenset(
    {
        "aws:apigatewayv2/api:Api",
        "aws:apigatewayv2/stage:Stage",
        "aws:appautoscaling/target:Target",
        "aws:cloudwatch/compositeAlarm:CompositeAlarm",
        "aws:cloudwatch/logGroup:LogGroup",
        "aws:cloudwatch/metricAlarm:MetricAlarm",
        "aws:ecr/repository:Repository",
        "aws:iam/instanceProfile:InstanceProfile",
        "aws:iam/policy:Policy",
        "aws:iam/role:Role",
        "aws:iam/user:User",
        "aws:kms/key:Key",
        "aws:lambda/function:Function",
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketObject:BucketObject",
        "aws:s3/bucketObjectv2:BucketObjectv2",
        "aws:s3/bucketV2:BucketV2",
        "aws:sagemaker/endpoint:Endpoint",
        "aws:sagemaker/endpointConfiguration:EndpointConfiguration",
        "aws:sagemaker/model:Model",
        "aws:sagemaker/modelPackageGroup:ModelPackageGroup",
        "aws:sagemaker/notebookInstance:NotebookInstance",
        "aws:sagemaker/trainingJob:TrainingJob",
        "aws:secretsmanager/secret:Secret",
        "aws:sns/topic:Topic",
    }
)
GCP_LABELLED_TYPES = frozenset(
    {
        "gcp:artifactregistry/repository:Repository",
        "gcp:kms/cryptoKey:CryptoKey",
        "gcp:storage/bucket:Bucket",
        "gcp:vertex/aiDataset:AiDataset",
        "gcp:vertex/aiEndpoint:AiEndpoint",
        "gcp:vertex/aiTensorboard:AiTensorboard",
    }
)

# Dynamic resources (`pulumi.dynamic.Resource`) have no provider schema and their `__provider` is an
# opaque pickle, so a dynamic resource says what it is through its type token: a subclass declared
# `class CosBucket(dynamic.Resource, module="ibm", name="CosBucket")` registers as
# `pulumi-python:dynamic/ibm:CosBucket`, kind `ibm:CosBucket`. A plain `dynamic.Resource`
# (`pulumi-python:dynamic:Resource`) may name its kind in an input property `kind` instead. The inputs
# of each kind are snake_case, as the provider's create() receives them (docs/policy.md lists them).
DYNAMIC_TYPE = re.compile(r"pulumi-(?:python|nodejs):dynamic(?:/(?P<module>[^:]+))?:(?P<name>.+)")
KIND_PROPERTY = "kind"
IBM_COS_BUCKET = "ibm:CosBucket"
IBM_RESOURCE_INSTANCE = "ibm:ResourceInstance"
IBM_SPACE = "ibm:DeploymentSpace"
IBM_MODEL = "ibm:Model"
IBM_DEPLOYMENT = "ibm:Deployment"
VERTEX_CUSTOM_JOB = "vertex:CustomJob"
VERTEX_TUNING_JOB = "vertex:HyperparameterTuningJob"
VERTEX_MODEL = "vertex:Model"
VERTEX_DEPLOYMENT = "vertex:Deployment"
BUCKET_KINDS = frozenset({IBM_COS_BUCKET})
TRAINING_KINDS = frozenset({VERTEX_CUSTOM_JOB, VERTEX_TUNING_JOB})
ENDPOINT_KINDS = frozenset({VERTEX_DEPLOYMENT, IBM_DEPLOYMENT})
LABELLED_KINDS = frozenset({VERTEX_CUSTOM_JOB, VERTEX_TUNING_JOB, VERTEX_MODEL})  # Vertex: `labels`
TAGGED_KINDS = frozenset(
    {IBM_RESOURCE_INSTANCE, IBM_SPACE, IBM_MODEL, IBM_DEPLOYMENT}
)  # IBM: `tags`, "key:value"

# Stack config keys that name a customer-managed key; when one is set, the stack asked for one.
CUSTOMER_KEY_STACK_CONFIG = (
    "mnist-platform:kmsKeyArn",
    "mnist-platform:kmsKeyName",
    "mnist-platform:kmsKeyCrn",
)

# --------------------------------------------------------------------------------------------------
# Defaults of the tunable rules (each one is also the `default` of its config schema)
# --------------------------------------------------------------------------------------------------

# SageMaker's own default stopping condition is one day; MNIST trains in minutes, so a day is a bound
# on a hung job, not on real work. Vertex's default (7 days) and SageMaker's maximum (28 days) are not.
DEFAULT_MAX_RUNTIME_SECONDS = 86_400
DEFAULT_TRAINING_INSTANCE_TYPES = (
    "ml.m4.xlarge",
    "ml.m5.large",
    "ml.m5.xlarge",
    "ml.m5.2xlarge",
    "ml.m5.4xlarge",
    "ml.c5.xlarge",
    "ml.c5.2xlarge",
    "ml.c5.4xlarge",
    "n1-standard-4",
    "n1-standard-8",
    "e2-standard-4",
    "e2-standard-8",
)
DEFAULT_MAX_TRAINING_INSTANCES = 4
# A tuning job runs many trials: its worst case is max trials x instances x max runtime. 50 instance-hours
# is 20 one-hour trials of one instance with room to spare (~12 USD on ml.m5.xlarge).
DEFAULT_MAX_TUNING_INSTANCE_HOURS = 50
DEFAULT_ENDPOINT_INSTANCE_TYPES = (
    "ml.t2.medium",
    "ml.t2.large",
    "ml.m5.large",
    "ml.m5.xlarge",
    "ml.c5.large",
    "ml.c5.xlarge",
    "n1-standard-2",
    "n1-standard-4",
    "e2-standard-2",
    "e2-standard-4",
    "XS",
    "S",
    "M",
)
DEFAULT_MAX_ENDPOINT_INSTANCES = 2
DEFAULT_MAX_REPLICAS = 4
DEFAULT_REQUIRED_TAGS = ("project", "stack")
DEFAULT_PRODUCTION_STACKS = ("prod", "production")
DEFAULT_FORBIDDEN_MANAGED_POLICIES = (
    "AdministratorAccess",
    "PowerUserAccess",
    "IAMFullAccess",
    "AmazonSageMakerFullAccess",
    "AmazonS3FullAccess",
)
DEFAULT_FORBIDDEN_GCP_ROLES = ("roles/owner", "roles/editor")

# --------------------------------------------------------------------------------------------------
# Values as policies see them
# --------------------------------------------------------------------------------------------------


class _Unknown:
    """A value not known during preview (it comes from another resource's output)."""

    def __repr__(self) -> str:
        return "<unknown>"


UNKNOWN: Any = _Unknown()
_UNKNOWN_SENTINELS = frozenset(
    {
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_STRING_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_OBJECT_VALUE,
    }
)


def plain(value: Any) -> Any:
    """Copy the SDK's unknown-checking proxies into dicts and lists, unknowns replaced by `UNKNOWN`.

    The SDK's proxy raises on the first unknown a rule touches, which would skip every other check of
    the resource; rules work on this copy and decide what an unknown means for them.
    """
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key in value:
            try:
                out[key] = plain(value[key])
            except UnknownValueError:
                out[key] = UNKNOWN
        return out
    if isinstance(value, Sequence):
        items: list[Any] = []
        for index in range(len(value)):
            try:
                items.append(plain(value[index]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


def _one(value: Any) -> Any:
    """A nested block: providers hand single-item blocks over as an object or a one-element list."""
    if isinstance(value, list):
        return value[0] if len(value) == 1 else None
    return value


def _get(obj: Any, *path: str) -> Any:
    """obj[path[0]][path[1]]...; None where a level is missing, UNKNOWN where one is unknown."""
    for key in path:
        obj = _one(obj)
        if obj is UNKNOWN:
            return UNKNOWN
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _items(value: Any) -> list[Any]:
    if value is None or value is UNKNOWN:
        return []
    if isinstance(value, list):
        return value
    return [value]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None or value is UNKNOWN:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _fmt(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _json_object(value: Any) -> Any:
    """A document given as a JSON string or as an object (IAM policies, provider defaultTags)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return None
    return value


def dynamic_kind(resource_type: str, props: Mapping[str, Any]) -> str | None:
    """`module:Name` of a dynamic resource (from its type token, else its `kind` input), else None."""
    match = DYNAMIC_TYPE.fullmatch(resource_type)
    if match is None:
        return None
    if match["module"]:
        return f"{match['module']}:{match['name']}"
    kind = props.get(KIND_PROPERTY)
    return kind if isinstance(kind, str) else None


def _allowed(value: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(value, pattern) for pattern in patterns)


# --------------------------------------------------------------------------------------------------
# 1. Storage is private
# --------------------------------------------------------------------------------------------------

PUBLIC_ACCESS_BLOCK_FLAGS = (
    "blockPublicAcls",
    "blockPublicPolicy",
    "ignorePublicAcls",
    "restrictPublicBuckets",
)
PUBLIC_CANNED_ACLS = frozenset({"public-read", "public-read-write", "authenticated-read"})
PUBLIC_GRANTEE_GROUPS = ("/global/AllUsers", "/global/AuthenticatedUsers")
PUBLIC_GCP_MEMBERS = frozenset({"allUsers", "allAuthenticatedUsers"})


def _is_public_principal(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, Mapping):
        return any("*" in _items(value) for value in principal.values())
    return False


def _statements(document: Any) -> list[Mapping[str, Any]]:
    return [s for s in _items(_get(document, "Statement")) if isinstance(s, Mapping)]


def _public_statements(document: Any) -> list[str]:
    """Sids (or positions) of Allow statements that grant anyone, with no condition narrowing them."""
    found = []
    for index, statement in enumerate(_statements(document)):
        if statement.get("Effect", "Allow") != "Allow" or statement.get("Condition"):
            continue
        if _is_public_principal(statement.get("Principal")):
            found.append(str(statement.get("Sid") or f"#{index}"))
    return found


def storage_private_violations(resource_type: str, props: Mapping[str, Any]) -> list[str]:
    """Public access blocks fully on, no public ACL, grant or policy; GCS and COS not public."""
    violations: list[str] = []
    kind = dynamic_kind(resource_type, props)
    if resource_type == S3_PUBLIC_ACCESS_BLOCK:
        off = [
            flag
            for flag in PUBLIC_ACCESS_BLOCK_FLAGS
            if props.get(flag) is not True and props.get(flag) is not UNKNOWN
        ]
        if off:
            violations.append(
                f"the S3 public access block must set all four flags to true; not true: {', '.join(off)}"
            )
    elif resource_type in S3_BUCKET_TYPES or resource_type in S3_ACL_TYPES:
        acl = props.get("acl")
        if isinstance(acl, str) and acl in PUBLIC_CANNED_ACLS:
            violations.append(f"canned ACL {acl!r} makes the bucket readable by anyone; use 'private'")
        grants = _items(props.get("grants")) + _items(_get(props, "accessControlPolicy", "grants"))
        for grant in grants:
            uri = _get(grant, "uri") or _get(grant, "grantee", "uri")
            if isinstance(uri, str) and uri.endswith(PUBLIC_GRANTEE_GROUPS):
                violations.append(f"an ACL grant to {uri.rsplit('/', 1)[-1]} makes the bucket public")
        public = _public_statements(_json_object(props.get("policy")))
        if public:
            violations.append(
                f"the inline bucket policy allows Principal '*' (statement {', '.join(public)})"
            )
    elif resource_type == S3_BUCKET_POLICY:
        public = _public_statements(_json_object(props.get("policy")))
        if public:
            violations.append(
                f"the bucket policy allows Principal '*' without a condition (statement {', '.join(public)})"
            )
    elif resource_type == GCS_BUCKET:
        prevention = props.get("publicAccessPrevention")
        if prevention is not UNKNOWN and prevention != "enforced":
            violations.append(f"publicAccessPrevention must be 'enforced', got {prevention!r}")
        uniform = props.get("uniformBucketLevelAccess")
        if uniform is not UNKNOWN and uniform is not True:
            violations.append(
                "uniformBucketLevelAccess must be true (object ACLs can make single objects public)"
            )
    elif resource_type.startswith("gcp:storage/") and resource_type.rsplit(":", 1)[-1].endswith(
        ("IAMMember", "IAMBinding")
    ):
        members = _items(props.get("member")) + _items(props.get("members"))
        public = sorted({m for m in members if m in PUBLIC_GCP_MEMBERS})
        if public:
            violations.append(f"an IAM grant to {', '.join(public)} makes the bucket public")
    elif resource_type in GCS_ACL_TYPES:
        entities = (
            _items(props.get("entity")) + _items(props.get("roleEntities")) + _items(props.get("roleEntity"))
        )
        public = sorted(
            {e for e in entities if isinstance(e, str) and any(m in e for m in PUBLIC_GCP_MEMBERS)}
        )
        if public:
            violations.append(f"an ACL entry for {', '.join(public)} makes the bucket public")
    elif kind in BUCKET_KINDS:
        public_access = props.get("public_access")
        if public_access is not UNKNOWN and public_access is not False:
            violations.append(
                f"a {kind} must declare public_access: false (got {public_access!r}); "
                "its provider must create it without public access"
            )
    return violations


@dataclass(frozen=True)
class StackResource:
    """One resource of the stack, as a stack rule needs it (PolicyResource without the SDK's types)."""

    resource_type: str
    name: str
    urn: str
    props: Mapping[str, Any]
    property_dependencies: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def from_policy_resource(cls, resource: PolicyResource) -> StackResource:
        return cls(
            resource_type=resource.resource_type,
            name=resource.name,
            urn=resource.urn,
            props=plain(resource.props),
            property_dependencies={
                key: [dep.urn for dep in deps] for key, deps in (resource.property_dependencies or {}).items()
            },
        )


@dataclass(frozen=True)
class StackViolation:
    message: str
    urn: str | None = None


def _buckets_without(
    resources: Sequence[StackResource], companion_types: Iterable[str], what: str
) -> list[StackViolation]:
    """S3 buckets that no resource of `companion_types` points at (by dependency or by bucket name)."""
    companion_types = frozenset(companion_types)
    covered_urns: set[str] = set()
    covered_names: set[str] = set()
    for resource in resources:
        if resource.resource_type in companion_types:
            covered_urns.update(resource.property_dependencies.get("bucket", ()))
            bucket = resource.props.get("bucket")
            if isinstance(bucket, str):
                covered_names.add(bucket)
    violations = []
    for resource in resources:
        if resource.resource_type not in S3_BUCKET_TYPES or resource.urn in covered_urns:
            continue
        names = {resource.props.get("bucket"), resource.props.get("id")}
        if names & covered_names:
            continue
        violations.append(StackViolation(f"S3 bucket {resource.name!r} has no {what}", resource.urn))
    return violations


def buckets_without_public_access_block(resources: Sequence[StackResource]) -> list[StackViolation]:
    return _buckets_without(
        resources,
        {S3_PUBLIC_ACCESS_BLOCK},
        f"public access block ({S3_PUBLIC_ACCESS_BLOCK} with all four flags)",
    )


# --------------------------------------------------------------------------------------------------
# 2. Storage is encrypted at rest
# --------------------------------------------------------------------------------------------------

S3_SSE_ALGORITHMS = frozenset({"AES256", "aws:kms", "aws:kms:dsse"})


def _sse_rule_violations(rules: Any, require_customer_key: bool) -> list[str]:
    if rules is UNKNOWN:
        return []
    rules = _items(rules)
    if not rules:
        return ["the server-side encryption configuration has no rule"]
    violations = []
    for rule in rules:
        default = _get(rule, "applyServerSideEncryptionByDefault")
        algorithm = _get(default, "sseAlgorithm")
        if algorithm is UNKNOWN:
            continue
        if algorithm not in S3_SSE_ALGORITHMS:
            violations.append(f"sseAlgorithm must be one of {sorted(S3_SSE_ALGORITHMS)}, got {algorithm!r}")
        elif require_customer_key:
            key = _get(default, "kmsMasterKeyId")
            if not str(algorithm).startswith("aws:kms") or not key:
                violations.append(
                    "this stack asks for a customer key: use sseAlgorithm 'aws:kms' with kmsMasterKeyId "
                    f"(got {algorithm!r}{'' if key else ' without a key'})"
                )
    return violations


def _missing_key(present: Any, what: str) -> list[str]:
    if present is UNKNOWN or (isinstance(present, str) and present):
        return []
    return [f"this stack asks for a customer key, but {what} is not set"]


def storage_encrypted_violations(
    resource_type: str, props: Mapping[str, Any], require_customer_key: bool = False
) -> list[str]:
    """S3 default encryption declared; a customer key on every store when the stack asks for one.

    GCS, Vertex AI and COS always encrypt at rest with provider keys, so for them only the
    customer-key requirement adds anything.
    """
    kind = dynamic_kind(resource_type, props)
    if resource_type in S3_ENCRYPTION_TYPES:
        return _sse_rule_violations(props.get("rules"), require_customer_key)
    if resource_type in S3_BUCKET_TYPES and props.get("serverSideEncryptionConfiguration"):
        inline = props["serverSideEncryptionConfiguration"]
        return _sse_rule_violations(_get(inline, "rule"), require_customer_key)
    if not require_customer_key:
        return []
    if resource_type == SAGEMAKER_TRAINING_JOB:
        return _missing_key(
            _get(props, "resourceConfig", "volumeKmsKeyId"), "resourceConfig.volumeKmsKeyId"
        ) + (_missing_key(_get(props, "outputDataConfig", "kmsKeyId"), "outputDataConfig.kmsKeyId"))
    if resource_type == SAGEMAKER_ENDPOINT_CONFIG:
        return _missing_key(props.get("kmsKeyArn"), "kmsKeyArn")
    if resource_type == GCS_BUCKET:
        return _missing_key(_get(props, "encryption", "defaultKmsKeyName"), "encryption.defaultKmsKeyName")
    if resource_type == VERTEX_ENDPOINT:
        return _missing_key(_get(props, "encryptionSpec", "kmsKeyName"), "encryptionSpec.kmsKeyName")
    if kind in BUCKET_KINDS:
        return _missing_key(props.get("kms_key_crn"), f"the {kind}'s kms_key_crn")
    if kind in TRAINING_KINDS:
        return _missing_key(props.get("kms_key_name"), f"the {kind}'s kms_key_name")
    return []


def buckets_without_encryption(resources: Sequence[StackResource]) -> list[StackViolation]:
    violations = _buckets_without(resources, S3_ENCRYPTION_TYPES, "server-side encryption configuration")
    # The deprecated inline block of Bucket also declares encryption (AWS reports SSE-S3 there for every
    # bucket once created); unknown at preview for a new bucket, so it does not count then.
    inline = {
        r.urn
        for r in resources
        if isinstance(r.props.get("serverSideEncryptionConfiguration"), Mapping | list)
        and r.props["serverSideEncryptionConfiguration"]
    }
    return [v for v in violations if v.urn not in inline]


# --------------------------------------------------------------------------------------------------
# 3. Least privilege
# --------------------------------------------------------------------------------------------------


def policy_document_violations(document: Any, where: str) -> list[str]:
    """Allow statements granting `*`, or `service:*` on Resource `*`, in an IAM identity policy."""
    if document is UNKNOWN or document is None:
        return []
    parsed = _json_object(document)
    if not isinstance(parsed, Mapping):
        return [f"{where}: the policy document is not a JSON object, so it cannot be checked"]
    violations = []
    for index, statement in enumerate(_statements(parsed)):
        if statement.get("Effect", "Allow") != "Allow":
            continue
        sid = statement.get("Sid") or f"#{index}"
        resources = [r for r in _items(statement.get("Resource")) if isinstance(r, str)]
        on_everything = "*" in resources or "NotResource" in statement
        if "NotAction" in statement and on_everything:
            violations.append(
                f"{where}: statement {sid} allows NotAction on Resource '*', i.e. nearly everything"
            )
        for action in _items(statement.get("Action")):
            if not isinstance(action, str):
                continue
            if action == "*":
                violations.append(f"{where}: statement {sid} allows every action ('*')")
            elif action.endswith(":*") and on_everything:
                violations.append(
                    f"{where}: statement {sid} allows {action!r} on Resource '*'; "
                    "name the actions the job needs and the ARNs it needs them on"
                )
    return violations


def _managed_policy_name(arn: Any) -> str | None:
    """`AdministratorAccess` for `arn:aws:iam::aws:policy/AdministratorAccess` (AWS-managed only)."""
    if not isinstance(arn, str):
        return None
    match = re.fullmatch(r"arn:aws[\w-]*:iam::aws:policy/(?:.*/)?([^/]+)", arn)
    return match.group(1) if match else None


def least_privilege_violations(
    resource_type: str,
    props: Mapping[str, Any],
    forbidden_managed_policies: Iterable[str] = DEFAULT_FORBIDDEN_MANAGED_POLICIES,
    forbidden_gcp_roles: Iterable[str] = DEFAULT_FORBIDDEN_GCP_ROLES,
) -> list[str]:
    forbidden = set(forbidden_managed_policies)
    violations: list[str] = []
    if resource_type in IAM_POLICY_DOCUMENT_TYPES:
        violations += policy_document_violations(
            props.get(IAM_POLICY_DOCUMENT_TYPES[resource_type]), "policy"
        )
    elif resource_type == IAM_ROLE:
        for inline in _items(props.get("inlinePolicies")):
            name = _get(inline, "name") or "inline"
            violations += policy_document_violations(_get(inline, "policy"), f"inline policy {name!r}")
        for arn in _items(props.get("managedPolicyArns")):
            if _managed_policy_name(arn) in forbidden:
                violations.append(f"managed policy {arn} grants far more than the platform needs")
        trust = _json_object(props.get("assumeRolePolicy"))
        if trust is not UNKNOWN and _public_statements(trust):
            violations.append("the trust policy lets any principal ('*') assume the role")
    elif resource_type in IAM_ATTACHMENT_TYPES:
        arn = props.get("policyArn")
        if _managed_policy_name(arn) in forbidden:
            violations.append(
                f"attaching {arn} grants far more than the platform needs; write a scoped policy"
            )
    elif resource_type.startswith("gcp:"):
        short = resource_type.rsplit(":", 1)[-1]
        roles: list[Any] = []
        if short.endswith(("IAMMember", "IAMBinding")):
            roles = [props.get("role")]
        elif short.endswith("IAMPolicy"):
            roles = [_get(b, "role") for b in _items(_get(_json_object(props.get("policyData")), "bindings"))]
        for role in roles:
            if role in set(forbidden_gcp_roles):
                violations.append(
                    f"role {role} is a basic role covering almost every service; grant predefined roles"
                )
    return violations


# --------------------------------------------------------------------------------------------------
# 4. Training is bounded; 5. endpoints are bounded
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingLimits:
    max_runtime_seconds: float = DEFAULT_MAX_RUNTIME_SECONDS
    allowed_instance_types: tuple[str, ...] = DEFAULT_TRAINING_INSTANCE_TYPES
    max_instance_count: float = DEFAULT_MAX_TRAINING_INSTANCES
    max_tuning_instance_hours: float = DEFAULT_MAX_TUNING_INSTANCE_HOURS


@dataclass(frozen=True)
class EndpointLimits:
    allowed_instance_types: tuple[str, ...] = DEFAULT_ENDPOINT_INSTANCE_TYPES
    max_instance_count: float = DEFAULT_MAX_ENDPOINT_INSTANCES
    max_replicas: float = DEFAULT_MAX_REPLICAS


def _instance_violations(
    what: str, instance_type: Any, count: Any, allowed: Sequence[str], max_count: float, count_name: str
) -> list[str]:
    violations = []
    if instance_type is UNKNOWN:
        pass
    elif not isinstance(instance_type, str) or not instance_type:
        violations.append(f"{what} names no instance type")
    elif not _allowed(instance_type, allowed):
        violations.append(
            f"{what} uses instance type {instance_type!r}, not in the allowed list {list(allowed)} "
            "(tune allowedInstanceTypes in the policy pack config)"
        )
    number = _number(count)
    if number is not None and number > max_count:
        violations.append(
            f"{what} asks for {count_name} {_fmt(number)}, more than the maximum {_fmt(max_count)}"
        )
    return violations


def _runtime_violations(what: str, runtime: Any, limit: float, name: str) -> list[str]:
    if runtime is UNKNOWN:
        return []
    seconds = _number(runtime)
    if seconds is None:
        return [f"{what} has no {name}: a hung job would bill until someone notices"]
    if seconds > limit:
        return [f"{what} may run {_fmt(seconds)} s ({name}), more than the limit {_fmt(limit)} s"]
    return []


def _tuning_budget_violations(
    what: str, trials: Any, instances: Any, runtime: Any, trials_name: str, limits: TrainingLimits
) -> list[str]:
    """A tuning job's worst case, max trials x instances per trial x max runtime, within the limit."""
    if trials is UNKNOWN:
        return []
    most = _number(trials)
    if most is None:
        return [f"{what} sets no {trials_name}: the number of trials it may start is unbounded"]
    count, seconds = _number(instances), _number(runtime)
    if count is None or seconds is None:
        return []  # no runtime or instance count: reported per trial above
    hours = most * count * seconds / 3600
    if hours > limits.max_tuning_instance_hours:
        return [
            f"{what} may use {_fmt(hours)} instance-hours ({_fmt(most)} trials x {_fmt(count)} instances x "
            f"{_fmt(seconds)} s), more than the limit {_fmt(limits.max_tuning_instance_hours)} "
            "(maxTuningInstanceHours in the policy pack config)"
        ]
    return []


def training_bounds_violations(
    resource_type: str, props: Mapping[str, Any], limits: TrainingLimits = TrainingLimits()
) -> list[str]:
    kind = dynamic_kind(resource_type, props)
    violations: list[str] = []
    if resource_type == SAGEMAKER_TUNING_JOB:
        # Each trial is a training job of the definition; the search as a whole is bounded too.
        definitions = _items(_get(props, "trainingJobDefinitions")) or [_get(props, "trainingJobDefinition")]
        trials = _get(props, "config", "resourceLimits", "maxNumberOfTrainingJobs")
        for definition in definitions:
            trial = _one(definition)
            if isinstance(trial, Mapping):
                violations += [
                    v.replace("the training job", "the tuning job's trial", 1)
                    for v in training_bounds_violations(SAGEMAKER_TRAINING_JOB, trial, limits)
                ]
            violations += _tuning_budget_violations(
                "the tuning job",
                trials,
                _get(definition, "resourceConfig", "instanceCount"),
                _get(definition, "stoppingCondition", "maxRuntimeInSeconds"),
                "config.resourceLimits.maxNumberOfTrainingJobs",
                limits,
            )
    elif resource_type == SAGEMAKER_TRAINING_JOB:
        what = "the training job"
        stopping = _get(props, "stoppingCondition")
        violations += _runtime_violations(
            what,
            _get(stopping, "maxRuntimeInSeconds"),
            limits.max_runtime_seconds,
            "stoppingCondition.maxRuntimeInSeconds",
        )
        wait = _number(_get(stopping, "maxWaitTimeInSeconds"))  # spot training: includes waiting for capacity
        if wait is not None and wait > limits.max_runtime_seconds:
            violations.append(
                f"{what} may wait {_fmt(wait)} s (maxWaitTimeInSeconds), "
                f"more than the limit {_fmt(limits.max_runtime_seconds)} s"
            )
        config = _get(props, "resourceConfig")
        groups = _items(_get(config, "instanceGroups"))
        if groups:
            for group in groups:
                violations += _instance_violations(
                    f"{what}'s instance group {_get(group, 'instanceGroupName')!r}",
                    _get(group, "instanceType"),
                    _get(group, "instanceCount"),
                    limits.allowed_instance_types,
                    limits.max_instance_count,
                    "instanceCount",
                )
        elif config is not UNKNOWN:
            violations += _instance_violations(
                what,
                _get(config, "instanceType"),
                _get(config, "instanceCount"),
                limits.allowed_instance_types,
                limits.max_instance_count,
                "instanceCount",
            )
    elif kind in TRAINING_KINDS:
        what = f"the {kind}"
        violations += _runtime_violations(
            what, props.get("max_runtime_seconds"), limits.max_runtime_seconds, "max_runtime_seconds"
        )
        violations += _instance_violations(
            what,
            props.get("instance_type"),
            props.get("instance_count", 1),
            limits.allowed_instance_types,
            limits.max_instance_count,
            "instance_count",
        )
        if kind == VERTEX_TUNING_JOB:
            violations += _tuning_budget_violations(
                what,
                props.get("max_trial_count"),
                props.get("instance_count", 1),
                props.get("max_runtime_seconds"),
                "max_trial_count",
                limits,
            )
    return violations


def endpoint_bounds_violations(
    resource_type: str, props: Mapping[str, Any], limits: EndpointLimits = EndpointLimits()
) -> list[str]:
    kind = dynamic_kind(resource_type, props)
    violations: list[str] = []
    if resource_type == SAGEMAKER_ENDPOINT_CONFIG:
        variants = _items(props.get("productionVariants")) + _items(props.get("shadowProductionVariants"))
        for variant in variants:
            what = f"variant {_get(variant, 'variantName') or '(unnamed)'}"
            if _get(variant, "serverlessConfig"):
                continue  # no instances: billed per request, bounded by its max concurrency
            violations += _instance_violations(
                what,
                _get(variant, "instanceType"),
                _get(variant, "initialInstanceCount"),
                limits.allowed_instance_types,
                limits.max_instance_count,
                "initialInstanceCount",
            )
            managed_max = _number(_get(variant, "managedInstanceScaling", "maxInstanceCount"))
            if managed_max is not None and managed_max > limits.max_replicas:
                violations.append(
                    f"{what} scales to {_fmt(managed_max)} instances, "
                    f"more than maxReplicas {_fmt(limits.max_replicas)}"
                )
    elif resource_type == AUTOSCALING_TARGET:
        namespace, resource_id = props.get("serviceNamespace"), props.get("resourceId")
        is_sagemaker = namespace == "sagemaker" or (
            isinstance(resource_id, str) and resource_id.startswith("endpoint/")
        )
        capacity = _number(props.get("maxCapacity"))
        if is_sagemaker and capacity is not None and capacity > limits.max_replicas:
            violations.append(
                f"the endpoint autoscaling target allows {_fmt(capacity)} instances (maxCapacity), "
                f"more than maxReplicas {_fmt(limits.max_replicas)}"
            )
    elif kind in ENDPOINT_KINDS:
        what = f"the {kind}"
        violations += _instance_violations(
            what,
            props.get("instance_type"),
            props.get("min_replicas", 1),
            limits.allowed_instance_types,
            limits.max_instance_count,
            "min_replicas",
        )
        replicas = props.get("max_replicas")
        number = _number(replicas)
        if replicas is not UNKNOWN and number is None:
            violations.append(f"{what} declares no max_replicas")
        elif number is not None and number > limits.max_replicas:
            violations.append(
                f"{what} scales to {_fmt(number)} replicas, more than maxReplicas {_fmt(limits.max_replicas)}"
            )
    return violations


# --------------------------------------------------------------------------------------------------
# 6. Every taggable resource carries the required tags
# --------------------------------------------------------------------------------------------------


def _tag_map(value: Any) -> dict[str, Any]:
    """Tags as a mapping, from a mapping, a JSON string or IBM's list of `key:value` strings."""
    value = _json_object(value)
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        tags: dict[str, Any] = {}
        for item in value:
            if isinstance(item, str):
                key, _, val = item.partition(":")
                tags[key.strip()] = val.strip() or True
        return tags
    return {}


def missing_tags_violations(
    resource_type: str,
    props: Mapping[str, Any],
    provider_props: Mapping[str, Any] | None = None,
    required_tags: Iterable[str] = DEFAULT_REQUIRED_TAGS,
) -> list[str]:
    """Tags on the resource, in its computed tagsAll/effectiveLabels, or as its provider's defaults."""
    provider_props = provider_props or {}
    kind = dynamic_kind(resource_type, props)
    if resource_type.startswith("aws:"):
        if resource_type not in AWS_TAGGABLE_TYPES and "tags" not in props and "tagsAll" not in props:
            return []
        noun, where = "tags", "on the resource or as provider default tags (aws:defaultTags)"
        sources = [
            _get(_json_object(provider_props.get("defaultTags")), "tags"),
            props.get("tagsAll"),
            props.get("tags"),
        ]
    elif resource_type.startswith("gcp:"):
        if resource_type not in GCP_LABELLED_TYPES and "labels" not in props:
            return []
        noun, where = "labels", "on the resource or as provider default labels (gcp:defaultLabels)"
        sources = [provider_props.get("defaultLabels"), props.get("effectiveLabels"), props.get("labels")]
    elif kind in LABELLED_KINDS:
        noun, where, sources = "labels", "in its `labels` input", [props.get("labels")]
    elif kind in TAGGED_KINDS:
        noun, where, sources = "tags", "in its `tags` input ('key:value' strings)", [props.get("tags")]
    else:
        return []
    if any(source is UNKNOWN for source in sources):
        return []  # computed from another resource's output: decided when `pulumi up` analyzes it again
    present: dict[str, Any] = {}
    for source in sources:
        present.update(_tag_map(source))
    missing = [tag for tag in required_tags if not present.get(tag)]  # an unknown single value is truthy
    if not missing:
        return []
    return [f"missing {noun} {', '.join(missing)}: set them {where}"]


# --------------------------------------------------------------------------------------------------
# 7. Destroy leaves nothing behind
# --------------------------------------------------------------------------------------------------


def teardown_violations(
    resource_type: str,
    props: Mapping[str, Any],
    stack: str,
    production_stacks: Iterable[str] = DEFAULT_PRODUCTION_STACKS,
    protect: bool = False,
) -> list[str]:
    """On a non-production stack, `pulumi destroy` must be able to remove every bucket with its data."""
    if stack in set(production_stacks):
        return []
    violations = []
    kind = dynamic_kind(resource_type, props)
    if resource_type in S3_BUCKET_TYPES or resource_type == GCS_BUCKET:
        flag, name = props.get("forceDestroy"), "forceDestroy"
    elif kind in BUCKET_KINDS:
        flag, name = props.get("force_destroy"), "force_destroy"
    else:
        flag, name = True, ""
    if flag is not True and flag is not UNKNOWN:
        violations.append(
            f"stack {stack!r} is not a production stack, so its bucket needs {name}: true, "
            "or `pulumi destroy` stops at the first object left in it"
        )
    if protect:
        violations.append(
            f"stack {stack!r} is not a production stack, but the resource is protected from destroy"
        )
    return violations


# --------------------------------------------------------------------------------------------------
# 8. No secret in plain text
# --------------------------------------------------------------------------------------------------

# A key names a credential when one of its words (camelCase or snake_case) or word pairs does.
_CREDENTIAL_WORDS = frozenset(
    {
        "secret",
        "secrets",
        "password",
        "passwd",
        "token",
        "apikey",
        "credential",
        "credentials",
        "privatekey",
        "accesskey",
    }
)
_CREDENTIAL_PAIRS = frozenset({("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key")})
# ...unless its last word says it holds a reference to the credential or a setting about it.
_REFERENCE_WORDS = frozenset(
    {"arn", "crn", "name", "id", "ids", "url", "uri", "path", "type", "version", "ttl", "length", "enabled",
     "prefix", "count", "limit", "seconds", "ref"}
)  # fmt: skip
_CREDENTIAL_VALUES = (
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), "an AWS access key id"),
    (re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY-----"), "a PEM private key"),
    (re.compile(r"\"private_key\"\s*:"), "a service account key"),
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"), "a GitHub token"),
)
# Values that cannot be a credential even under a credential-like name.
_NOT_A_CREDENTIAL = re.compile(r"[\d.]+|true|false|(?:arn|crn|s3|gs|https?):.*|projects/.*|\$\{.*\}", re.I)


def _credential_name(key: str) -> bool:
    words = [w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", key)]
    if not words or words[-1] in _REFERENCE_WORDS:
        return False
    return any(w in _CREDENTIAL_WORDS for w in words) or any(
        p in _CREDENTIAL_PAIRS for p in itertools.pairwise(words)
    )


def _credentials(value: Any, path: str, named: bool) -> Iterator[tuple[str, str]]:
    """(path, why) of every string that looks like a credential, walking nested inputs."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and not key.startswith("__"):
                yield from _credentials(item, f"{path}.{key}", named or _credential_name(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _credentials(item, f"{path}[{index}]", named)
    elif isinstance(value, str) and value:
        for pattern, why in _CREDENTIAL_VALUES:
            if pattern.search(value):
                yield path, f"its value looks like {why}"
                return
        if named and len(value) >= 8 and not _NOT_A_CREDENTIAL.fullmatch(value):
            yield path, "its name says it is a credential"


def plaintext_secret_violations(
    resource_type: str, props: Mapping[str, Any], secret_outputs: Iterable[str] = ()
) -> list[str]:
    """Credential-like inputs whose property is not declared secret.

    Policies receive secrets decrypted and unmarked (pulumi-policy#241), so a policy cannot see whether
    a value came from `config.require_secret`. What it can see is the resource option
    `additional_secret_outputs`: a stack proves a credential is handled as a secret by listing the
    top-level property that carries it there. Messages never repeat the value.
    """
    if resource_type.startswith("pulumi:providers:"):
        return []  # provider credentials come from stack config; the providers' schemas mark them secret
    declared = set(secret_outputs)
    violations = []
    for key, value in props.items():
        if key.startswith("__") or key in declared:
            continue
        for path, why in _credentials(value, key, _credential_name(key)):
            violations.append(
                f"input {path} looks like a credential ({why}) and {key!r} is not declared secret: "
                f"read it with config.require_secret() and list {key!r} in additional_secret_outputs"
            )
    return violations


# --------------------------------------------------------------------------------------------------
# 9. A budget: what the endpoints cost per hour and a training run costs, priced as `mnistctl cost` does
# --------------------------------------------------------------------------------------------------

# The stack's own config sets the limits (infra/settings.py validates them); with one set, `budget` is
# mandatory. The pack's process has only pulumi and pulumi-policy: the pricing (infra/cost.py, stdlib only)
# and the price tables are read from the project this pack belongs to.
BUDGET_STACK_CONFIG = {"hourly": "mnist-platform:maxHourlyCost", "run": "mnist-platform:maxRunCost"}


@dataclass(frozen=True)
class BudgetLimits:
    max_hourly: float | None = None
    """USD per hour of serving at the autoscaling maximum."""
    max_run: float | None = None
    """USD per training run at the jobs' maximum runtime."""

    @property
    def any(self) -> bool:
        return self.max_hourly is not None or self.max_run is not None


def _infra_cost() -> Any:
    import sys
    from pathlib import Path

    project = str(Path(__file__).resolve().parents[1])
    if project not in sys.path:
        sys.path.append(project)
    from infra import cost

    return cost


def _cloud_of(resources: Sequence[StackResource]) -> str:
    types = [r.resource_type for r in resources]
    if any(t.startswith("aws:") for t in types):
        return "aws"
    if any(t.startswith("gcp:") or "dynamic/vertex:" in t for t in types):
        return "gcp"
    if any("dynamic/ibm:" in t for t in types):
        return "ibm"
    return "local"


def budget_violations(
    resources: Sequence[StackResource], limits: BudgetLimits, region: str = ""
) -> list[StackViolation]:
    """The serving resources whose hourly cost (at the autoscaling maximum) and the training jobs whose cost
    per run (at the maximum runtime) make the stack exceed its limits, each named with its share; a price
    the tables do not know cannot be checked against a limit, and says so."""
    if not limits.any:
        return []
    cost = _infra_cost()
    cloud = _cloud_of(resources)
    planned = [
        cost.RegisteredResource(r.resource_type, r.name, r.urn, True, dict(r.props), dict(r.props))
        for r in resources
    ]
    table = cost.load_price_table(cloud) if cloud in cost.CLOUDS_WITH_PRICES else None
    lines = cost.billed_lines(planned, cloud, region, table)
    urns = {r.name: r.urn for r in resources}
    violations: list[StackViolation] = []
    checks = (
        (
            limits.max_hourly,
            "maxHourlyCost",
            "per hour at the autoscaling maximum",
            cost.Group.SERVING,
            lambda line: line.hourly(line.count_max),
        ),
        (
            limits.max_run,
            "maxRunCost",
            "per training run at the maximum runtime",
            cost.Group.TRAINING,
            lambda line: line.per_run_max,
        ),
    )
    for limit, key, what, group, amount in checks:
        if limit is None:
            continue
        billed = [line for line in lines if line.group is group]
        amounts = [(line, amount(line)) for line in billed]
        for line, value in amounts:
            if value is None:
                violations.append(
                    StackViolation(
                        f"{line.resource} ({line.size}) has no known price ({line.sku} in "
                        f"{line.region or 'any region'}), so the stack cannot be held to {key} "
                        f"{_fmt(limit)} USD: add the price to infra/prices/{cloud}.csv (docs/cost.md)",
                        urns.get(line.resource),
                    )
                )
        total = sum(value for _, value in amounts if value is not None)
        if total <= limit:
            continue
        for line, value in sorted(amounts, key=lambda item: -(item[1] or 0.0)):
            if value is None or value <= 0:
                continue
            count = f"{line.count_max:g} x {line.size}"
            violations.append(
                StackViolation(
                    f"{line.resource} ({count}) costs {value:.4f} USD {what}; the stack's {total:.4f} USD "
                    f"exceeds {key} {_fmt(limit)} USD: use a smaller type or fewer instances, or raise {key}",
                    urns.get(line.resource),
                )
            )
    return violations


# --------------------------------------------------------------------------------------------------
# The CrossGuard policies
# --------------------------------------------------------------------------------------------------


def current_stack() -> str:
    """The stack being deployed (the CLI tells the policy process through PULUMI_STACK)."""
    return pulumi.get_stack()


def stack_budget() -> BudgetLimits:
    """The limits the stack's own config sets (the CLI passes the stack config to policies)."""

    def limit(key: str) -> float | None:
        raw = pulumi.runtime.get_config(key)
        return float(raw) if raw not in (None, "") else None

    return BudgetLimits(limit(BUDGET_STACK_CONFIG["hourly"]), limit(BUDGET_STACK_CONFIG["run"]))


def stack_region() -> str:
    return str(pulumi.runtime.get_config("aws:region") or pulumi.runtime.get_config("gcp:region") or "")


class BudgetPolicy(StackValidationPolicy):
    """`budget`: advisory unless the stack config sets maxHourlyCost or maxRunCost, then mandatory. The level
    is read at each analysis (the analyzer asks for it after the engine has handed over the stack config)."""

    def __init__(self) -> None:
        def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
            resources = [StackResource.from_policy_resource(r) for r in args.resources]
            for violation in budget_violations(resources, stack_budget(), stack_region()):
                report_violation(violation.message, violation.urn)

        super().__init__(
            "budget",
            "The stack stays within the stack config's maxHourlyCost (USD per hour of serving at the "
            "autoscaling maximum) and maxRunCost (USD per training run), priced as `mnistctl cost` prices "
            "it; mandatory when either is set.",
            validate,
        )

    @property
    def enforcement_level(self) -> EnforcementLevel:  # pyright: ignore[reportIncompatibleVariableOverride]
        return EnforcementLevel.MANDATORY if stack_budget().any else EnforcementLevel.ADVISORY

    @enforcement_level.setter
    def enforcement_level(self, _level: EnforcementLevel | None) -> None:  # pyright: ignore[reportIncompatibleVariableOverride]
        """The base class assigns the level it was built with; this policy decides it per analysis."""


def stack_asks_for_customer_key() -> bool:
    """Whether the stack's own config names a customer-managed key (the CLI passes it to policies)."""
    return any(pulumi.runtime.get_config(key) for key in CUSTOMER_KEY_STACK_CONFIG)


def _config(
    args: ResourceValidationArgs | StackValidationArgs, schema: PolicyConfigSchema | None
) -> dict[str, Any]:
    defaults = {k: v.get("default") for k, v in (schema.properties if schema else {}).items()}
    return {**defaults, **dict(args.get_config() or {})}


def _schema(**properties: dict[str, Any]) -> PolicyConfigSchema:
    return PolicyConfigSchema(properties=properties)


def _string_list(description: str, default: Sequence[str]) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "string"},
        "description": description,
        "default": list(default),
    }


def _resource_policy(
    name: str,
    description: str,
    level: EnforcementLevel,
    check: Callable[[ResourceValidationArgs, dict[str, Any]], list[str]],
    schema: PolicyConfigSchema | None = None,
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(args, _config(args, schema)):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=level, config_schema=schema
    )


def _stack_policy(
    name: str,
    description: str,
    level: EnforcementLevel,
    check: Callable[[Sequence[StackResource]], list[StackViolation]],
) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [StackResource.from_policy_resource(r) for r in args.resources]
        for violation in check(resources):
            report_violation(violation.message, violation.urn)

    return StackValidationPolicy(
        name=name, description=description, validate=validate, enforcement_level=level
    )


def _provider_props(args: ResourceValidationArgs) -> Mapping[str, Any]:
    return plain(args.provider.props) if args.provider is not None else {}


ENCRYPTION_SCHEMA = _schema(
    requireCustomerKey={
        "type": "boolean",
        "description": "Require a customer-managed key everywhere, even when the stack config names none.",
        "default": False,
    }
)
PRIVILEGE_SCHEMA = _schema(
    forbiddenManagedPolicies=_string_list(
        "AWS-managed policies no role of the platform may attach.", DEFAULT_FORBIDDEN_MANAGED_POLICIES
    ),
    forbiddenGcpRoles=_string_list("GCP roles no binding may grant.", DEFAULT_FORBIDDEN_GCP_ROLES),
)
TRAINING_SCHEMA = _schema(
    maxRuntimeSeconds={
        "type": "integer",
        "minimum": 1,
        "description": "Longest a training job may run (SageMaker's default stopping condition is 86400).",
        "default": DEFAULT_MAX_RUNTIME_SECONDS,
    },
    allowedInstanceTypes=_string_list(
        "Training instance/machine types (glob patterns allowed, e.g. 'ml.m5.*').",
        DEFAULT_TRAINING_INSTANCE_TYPES,
    ),
    maxInstanceCount={
        "type": "integer",
        "minimum": 1,
        "description": "Most instances one training job may use.",
        "default": DEFAULT_MAX_TRAINING_INSTANCES,
    },
    maxTuningInstanceHours={
        "type": "number",
        "minimum": 0,
        "description": "Most instance-hours a tuning job may use: max trials x instances x max runtime.",
        "default": DEFAULT_MAX_TUNING_INSTANCE_HOURS,
    },
)
ENDPOINT_SCHEMA = _schema(
    allowedInstanceTypes=_string_list(
        "Serving instance/machine types or watsonx hardware specs (glob patterns allowed).",
        DEFAULT_ENDPOINT_INSTANCE_TYPES,
    ),
    maxInstanceCount={
        "type": "integer",
        "minimum": 1,
        "description": "Most instances an endpoint starts with (initial count / min replicas).",
        "default": DEFAULT_MAX_ENDPOINT_INSTANCES,
    },
    maxReplicas={
        "type": "integer",
        "minimum": 1,
        "description": "Most instances autoscaling may add up to (autoscaling max capacity / max replicas).",
        "default": DEFAULT_MAX_REPLICAS,
    },
)
TAGS_SCHEMA = _schema(
    requiredTags=_string_list("Tags (labels on GCP) every taggable resource carries.", DEFAULT_REQUIRED_TAGS)
)
TEARDOWN_SCHEMA = _schema(
    productionStacks=_string_list(
        "Stacks whose buckets may keep their data on destroy (no force-destroy needed).",
        DEFAULT_PRODUCTION_STACKS,
    )
)

POLICIES: list[ResourceValidationPolicy | StackValidationPolicy] = [
    _resource_policy(
        "storage-private",
        "Buckets are private: S3 public access blocks all on and no public ACL or policy; GCS public access "
        "prevention enforced with uniform bucket-level access; COS buckets not public.",
        EnforcementLevel.MANDATORY,
        lambda args, _: storage_private_violations(args.resource_type, plain(args.props)),
    ),
    _stack_policy(
        "s3-public-access-blocked",
        "Every S3 bucket has a public access block.",
        EnforcementLevel.MANDATORY,
        buckets_without_public_access_block,
    ),
    _resource_policy(
        "storage-encrypted",
        "Data is encrypted at rest, with a customer-managed key when the stack config names one "
        f"({', '.join(CUSTOMER_KEY_STACK_CONFIG)}) or requireCustomerKey is set.",
        EnforcementLevel.MANDATORY,
        lambda args, config: storage_encrypted_violations(
            args.resource_type,
            plain(args.props),
            bool(config["requireCustomerKey"]) or stack_asks_for_customer_key(),
        ),
        ENCRYPTION_SCHEMA,
    ),
    _stack_policy(
        "s3-encryption-declared",
        "Every S3 bucket declares its server-side encryption configuration.",
        EnforcementLevel.MANDATORY,
        buckets_without_encryption,
    ),
    _resource_policy(
        "least-privilege",
        "IAM grants are scoped: no '*' actions, no 'service:*' on Resource '*', no broad AWS-managed "
        "policies, no basic GCP roles (owner/editor).",
        EnforcementLevel.MANDATORY,
        lambda args, config: least_privilege_violations(
            args.resource_type,
            plain(args.props),
            config["forbiddenManagedPolicies"],
            config["forbiddenGcpRoles"],
        ),
        PRIVILEGE_SCHEMA,
    ),
    _resource_policy(
        "training-bounded",
        "Training jobs have a max runtime within the limit, allowed instance types and a bounded "
        "instance count; tuning jobs bound their trials, and max trials x instances x max runtime.",
        EnforcementLevel.MANDATORY,
        lambda args, config: training_bounds_violations(
            args.resource_type,
            plain(args.props),
            TrainingLimits(
                float(config["maxRuntimeSeconds"]),
                tuple(config["allowedInstanceTypes"]),
                float(config["maxInstanceCount"]),
                float(config["maxTuningInstanceHours"]),
            ),
        ),
        TRAINING_SCHEMA,
    ),
    _resource_policy(
        "endpoints-bounded",
        "Endpoints use allowed instance types and bounded instance counts and autoscaling maxima.",
        EnforcementLevel.MANDATORY,
        lambda args, config: endpoint_bounds_violations(
            args.resource_type,
            plain(args.props),
            EndpointLimits(
                tuple(config["allowedInstanceTypes"]),
                float(config["maxInstanceCount"]),
                float(config["maxReplicas"]),
            ),
        ),
        ENDPOINT_SCHEMA,
    ),
    _resource_policy(
        "resources-tagged",
        "Every taggable resource carries the project and stack tags (labels on GCP), itself or through "
        "its provider's default tags.",
        EnforcementLevel.ADVISORY,
        lambda args, config: missing_tags_violations(
            args.resource_type, plain(args.props), _provider_props(args), config["requiredTags"]
        ),
        TAGS_SCHEMA,
    ),
    _resource_policy(
        "destroy-leaves-nothing",
        "On non-production stacks buckets are force-destroyable and nothing is protected, so "
        "`pulumi destroy` removes everything.",
        EnforcementLevel.ADVISORY,
        lambda args, config: teardown_violations(
            args.resource_type,
            plain(args.props),
            current_stack(),
            config["productionStacks"],
            bool(getattr(args.opts, "protect", False)),
        ),
        TEARDOWN_SCHEMA,
    ),
    _resource_policy(
        "no-plaintext-secrets",
        "Inputs that look like credentials are Pulumi secrets, declared in additional_secret_outputs.",
        EnforcementLevel.MANDATORY,
        lambda args, _: plaintext_secret_violations(
            args.resource_type,
            plain(args.props),
            list(getattr(args.opts, "additional_secret_outputs", None) or []),
        ),
    ),
    BudgetPolicy(),
]

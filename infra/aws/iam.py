"""IAM policy documents of the SageMaker stack, as pure functions of plain strings.

Two execution roles instead of one: the training job may read the data and write artifacts, the
hosted model may only read its artifact. Every statement names its resources; the only `*`
resources are the two actions that AWS does not authorize per resource at all
(`ecr:GetAuthorizationToken`, `cloudwatch:PutMetricData`), and the second is narrowed by a
namespace condition. The permission lists follow "CreateTrainingJob API: Execution Role
Permissions" and "CreateModel API: Execution Role Permissions" in the SageMaker developer guide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

POLICY_VERSION = "2012-10-17"
TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"
ENDPOINT_LOG_GROUP_PREFIX = "/aws/sagemaker/Endpoints"
TRAINING_METRICS_NAMESPACE = "/aws/sagemaker/TrainingJobs"
ENDPOINT_METRICS_NAMESPACE = "/aws/sagemaker/Endpoints"
# Actions AWS authorizes only against Resource "*" (Service Authorization Reference: no resource types).
ACTIONS_WITHOUT_RESOURCE_LEVEL_PERMISSIONS = frozenset(
    {"ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"}
)
# IAM names a log group `...:log-group:NAME:*` for every action but the tagging ones (CloudWatch Logs
# user guide, "CloudWatch Logs resources and operations"); streams are `...:log-group:NAME:log-stream:S`.
LOG_GROUP_ACTIONS = ["logs:CreateLogGroup", "logs:DescribeLogStreams"]
LOG_STREAM_ACTIONS = ["logs:CreateLogStream", "logs:PutLogEvents"]
LOG_WRITE_ACTIONS = [*LOG_GROUP_ACTIONS, *LOG_STREAM_ACTIONS]

Statement = dict[str, Any]
PolicyDocument = dict[str, Any]


@dataclass(frozen=True)
class Account:
    """Where the stack runs: the parts every ARN is built from."""

    partition: str
    region: str
    account_id: str

    def arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        region = self.region if regional else ""
        return f"arn:{self.partition}:{service}:{region}:{self.account_id}:{resource}"


def document(*statements: Statement) -> PolicyDocument:
    return {"Version": POLICY_VERSION, "Statement": list(statements)}


def service_trust_policy(service: str, account_id: str) -> PolicyDocument:
    """Let `service` assume the role, only on behalf of this account (the confused-deputy guard)."""
    return document(
        {
            "Sid": "AssumedByServiceForThisAccount",
            "Effect": "Allow",
            "Principal": {"Service": service},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account_id}},
        }
    )


def s3_bucket_arn(partition: str, bucket: str) -> str:
    return f"arn:{partition}:s3:::{bucket}"


def _ecr_pull(repository_arn: str) -> list[Statement]:
    return [
        {
            "Sid": "PullAlgorithmImage",
            "Effect": "Allow",
            "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Resource": repository_arn,
        },
        {
            # GetAuthorizationToken has no resource type: AWS accepts only "*" here. The token alone
            # grants nothing; what can be pulled is decided by the repository-scoped statement above.
            "Sid": "EcrAuthorizationTokenHasNoResourceScope",
            "Effect": "Allow",
            "Action": "ecr:GetAuthorizationToken",
            "Resource": "*",
        },
    ]


def _metrics(namespace: str) -> Statement:
    # PutMetricData has no resource type either; the namespace condition is how AWS scopes it.
    return {
        "Sid": "PublishMetricsInSageMakerNamespaceOnly",
        "Effect": "Allow",
        "Action": "cloudwatch:PutMetricData",
        "Resource": "*",
        "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}},
    }


def _kms(key_arn: str) -> list[Statement]:
    return [
        {
            "Sid": "UseStackKmsKey",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"],
            "Resource": key_arn,
        },
        {
            # Volume encryption: SageMaker creates grants on the key for the instances' EBS volumes.
            "Sid": "GrantKeyToSageMakerVolumesOnly",
            "Effect": "Allow",
            "Action": "kms:CreateGrant",
            "Resource": key_arn,
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
        },
    ]


def training_role_policy(
    account: Account,
    bucket: str,
    data_prefixes: tuple[str, ...],
    output_prefix: str,
    job_name_prefix: str,
    image_repository_arn: str,
    kms_key_arn: str | None = None,
) -> PolicyDocument:
    """What a training job of this stack needs: read its channels, write its artifacts, pull, log."""
    bucket_arn = s3_bucket_arn(account.partition, bucket)
    log_group = account.arn("logs", f"log-group:{TRAINING_LOG_GROUP}")
    statements: list[Statement] = [
        {
            # Each prefix itself too: S3OutputPath has no trailing slash, and a listing of exactly
            # `output` (SageMaker's check of the output location) must not be denied.
            "Sid": "ListOnlyStackPrefixes",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket_arn,
            "Condition": {
                "StringLike": {
                    "s3:prefix": [form for p in (*data_prefixes, output_prefix) for form in (p, f"{p}/*")]
                }
            },
        },
        {
            "Sid": "ReadTrainingChannels",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [f"{bucket_arn}/{p}/*" for p in data_prefixes],
        },
        {
            "Sid": "WriteOwnJobArtifacts",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": f"{bucket_arn}/{output_prefix}/{job_name_prefix}-*",
        },
        *_ecr_pull(image_repository_arn),
        {
            "Sid": "UseTrainingJobsLogGroup",
            "Effect": "Allow",
            "Action": LOG_GROUP_ACTIONS,
            "Resource": f"{log_group}:*",
        },
        {
            "Sid": "WriteOwnJobLogs",
            "Effect": "Allow",
            "Action": LOG_STREAM_ACTIONS,
            "Resource": f"{log_group}:log-stream:{job_name_prefix}-*",
        },
        _metrics(TRAINING_METRICS_NAMESPACE),
    ]
    if kms_key_arn:
        statements.extend(_kms(kms_key_arn))
    return document(*statements)


def hosting_role_policy(
    account: Account,
    bucket: str,
    output_prefix: str,
    job_name_prefix: str,
    endpoint_name_prefix: str,
    image_repository_arn: str,
    kms_key_arn: str | None = None,
    champion_prefix: str | None = None,
    rollback_alarm_prefix: str | None = None,
) -> PolicyDocument:
    """What the hosted model needs: read the model artifacts of this stack's jobs, pull, log.

    With `champion_prefix` (the champion gate's copies, what the endpoint serves) only those are readable.
    With `rollback_alarm_prefix` (a canary rollout) it may describe the alarms named so: SageMaker's guide
    to deployment guardrails asks the execution role for cloudwatch:DescribeAlarms on the rollback alarms.
    """
    bucket_arn = s3_bucket_arn(account.partition, bucket)
    log_groups = account.arn("logs", f"log-group:{ENDPOINT_LOG_GROUP_PREFIX}/{endpoint_name_prefix}-*")
    artifacts = (
        f"{bucket_arn}/{champion_prefix}/*/model.tar.gz"
        if champion_prefix
        else f"{bucket_arn}/{output_prefix}/{job_name_prefix}-*/output/model.tar.gz"
    )
    statements: list[Statement] = [
        {
            "Sid": "ReadOwnModelArtifacts",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": artifacts,
        },
        *_ecr_pull(image_repository_arn),
        {
            "Sid": "WriteOwnEndpointLogs",
            "Effect": "Allow",
            "Action": LOG_WRITE_ACTIONS,
            "Resource": [log_groups, f"{log_groups}:log-stream:*"],
        },
        _metrics(ENDPOINT_METRICS_NAMESPACE),
    ]
    if rollback_alarm_prefix:
        statements.append(
            {
                "Sid": "DescribeRollbackAlarms",
                "Effect": "Allow",
                "Action": "cloudwatch:DescribeAlarms",
                "Resource": account.arn("cloudwatch", f"alarm:{rollback_alarm_prefix}-*"),
            }
        )
    if kms_key_arn:
        statements.extend(_kms(kms_key_arn))
    return document(*statements)


def invoke_endpoint_policy(endpoint_arn: str, log_group_arn: str) -> PolicyDocument:
    """The public API's function: invoke this one endpoint, write its own log group, nothing else."""
    return document(
        {
            "Sid": "InvokeThisEndpointOnly",
            "Effect": "Allow",
            "Action": "sagemaker:InvokeEndpoint",
            "Resource": endpoint_arn,
        },
        {
            "Sid": "WriteOwnLogGroup",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [log_group_arn, f"{log_group_arn}:log-stream:*"],
        },
    )


def bucket_tls_only_policy(partition: str, bucket: str) -> PolicyDocument:
    """Refuse every request to the bucket that does not arrive over TLS."""
    bucket_arn = s3_bucket_arn(partition, bucket)
    return document(
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": "s3:*",
            "Resource": [bucket_arn, f"{bucket_arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    )

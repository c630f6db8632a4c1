"""The reference program: `variant: good` is what the pack expects of a stack, `bad` makes every mistake."""

import json

import pulumi
import pulumi_aws as aws

config = pulumi.Config()
good = config.get("variant") != "bad"

bucket = aws.s3.Bucket("data", force_destroy=good)
if good:
    aws.s3.BucketPublicAccessBlock(
        "data",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
    )
aws.s3.BucketServerSideEncryptionConfiguration(
    "data",
    bucket=bucket.id,
    rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}],
)
aws.s3.BucketObjectv2("train", bucket=bucket.id, key="train/part-0.csv", content="5,0.0,0.1\n")

trust = aws.iam.get_policy_document_output(
    statements=[
        {
            "actions": ["sts:AssumeRole"],
            "principals": [{"type": "Service", "identifiers": ["sagemaker.amazonaws.com"]}],
        }
    ]
)
role = aws.iam.Role("execution", assume_role_policy=trust.json)
scoped = [
    {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": bucket.arn},
    {
        "Effect": "Allow",
        "Action": ["s3:GetObject", "s3:PutObject"],
        "Resource": bucket.arn.apply(lambda a: f"{a}/*"),
    },
    {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken", "cloudwatch:PutMetricData"], "Resource": "*"},
]
wildcard = [{"Effect": "Allow", "Action": ["s3:*", "logs:*"], "Resource": "*"}]
access = pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": scoped if good else wildcard})
aws.iam.RolePolicy("execution", role=role.id, policy=access)
if not good:
    aws.iam.RolePolicyAttachment(
        "everything", role=role.name, policy_arn="arn:aws:iam::aws:policy/AmazonSageMakerFullAccess"
    )

image = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
job = aws.sagemaker.TrainingJob(
    "xgboost",
    training_job_name="mnist-xgboost-0001",
    role_arn=role.arn,
    algorithm_specification={"training_image": image, "training_input_mode": "File"},
    hyper_parameters={"num_round": "50", "objective": "multi:softprob", "num_class": "10"},
    input_data_configs=[
        {
            "channel_name": "train",
            "content_type": "text/csv",
            "data_source": {
                "s3_data_source": {
                    "s3_data_type": "S3Prefix",
                    "s3_uri": bucket.bucket.apply(lambda b: f"s3://{b}/train/"),
                }
            },
        }
    ],
    output_data_config={"s3_output_path": bucket.bucket.apply(lambda b: f"s3://{b}/output")},
    resource_config={
        "instance_type": "ml.m5.xlarge" if good else "ml.p4d.24xlarge",
        "instance_count": 1,
        "volume_size_in_gb": 10,
    },
    stopping_condition={"max_runtime_in_seconds": 3600} if good else None,
)
model = aws.sagemaker.Model(
    "xgboost",
    execution_role_arn=role.arn,
    primary_container={
        "image": image,
        "model_data_url": bucket.bucket.apply(
            lambda b: f"s3://{b}/output/mnist-xgboost-0001/output/model.tar.gz"
        ),
    },
    opts=pulumi.ResourceOptions(depends_on=[job]),
)
endpoint_config = aws.sagemaker.EndpointConfiguration(
    "xgboost",
    production_variants=[
        {
            "variant_name": "AllTraffic",
            "model_name": model.name,
            "instance_type": "ml.m5.large" if good else "ml.p3.16xlarge",
            "initial_instance_count": 1 if good else 10,
        }
    ],
)
endpoint = aws.sagemaker.Endpoint("xgboost", endpoint_config_name=endpoint_config.name)
aws.appautoscaling.Target(
    "xgboost",
    service_namespace="sagemaker",
    scalable_dimension="sagemaker:variant:DesiredInstanceCount",
    resource_id=endpoint.name.apply(lambda name: f"endpoint/{name}/variant/AllTraffic"),
    min_capacity=1,
    max_capacity=2 if good else 50,
)

# A credential handed to a resource: good declares it secret, bad passes it as plain text.
api_key = config.require_secret("ibmApiKey") if good else "0123456789abcdefghijABCDEFGHIJ0123456789xyz"
aws.lambda_.Function(
    "proxy",
    role=role.arn,
    runtime="python3.12",
    handler="index.handler",
    code=pulumi.AssetArchive(
        {"index.py": pulumi.StringAsset("def handler(event, context):\n    return {}\n")}
    ),
    environment={"variables": {"ENDPOINT_NAME": endpoint.name, "IBM_API_KEY": api_key}},
    opts=pulumi.ResourceOptions(additional_secret_outputs=["environment"] if good else []),
)

pulumi.export("bucket", bucket.bucket)
pulumi.export("endpoint", json.dumps({"flavor": "sagemaker"}))

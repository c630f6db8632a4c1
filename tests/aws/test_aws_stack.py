"""The SageMaker stack's program under Pulumi mocks, with the config of `Pulumi.aws.yaml`.

Full MNIST is not available offline, so every run uses `dataset: mnist-t10k` from a private copy of
the t10k files (the staged CSV cache is written beside them, never into the data folder).
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aws_mocks import (
    ACCOUNT,
    ALARM,
    BUCKET,
    BUCKET_POLICY,
    COMPONENT,
    ENCRYPTION,
    ENDPOINT,
    ENDPOINT_CONFIG,
    FUNCTION,
    GATE,
    HTTP_API,
    INTEGRATION,
    LOG_GROUP,
    MODEL,
    OBJECT,
    OWNERSHIP,
    PERMISSION,
    PROVIDER,
    PUBLIC_ACCESS_BLOCK,
    REGION,
    ROLE,
    ROLE_POLICY,
    ROUTE,
    SCALING_POLICY,
    SCALING_TARGET,
    STAGE,
    TRAINING_ATTEMPT,
    TRAINING_JOB,
    UNIQUE_SUFFIX,
    AwsRun,
    provider_of,
    run_aws,
)
from harness import PROJECT_ROOT

from infra.aws.iam import ACTIONS_WITHOUT_RESOURCE_LEVEL_PERMISSIONS

XGBOOST_1_7_IMAGE_US_EAST_1 = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
XGBOOST_REPOSITORY_ARN = "arn:aws:ecr:us-east-1:683313688378:repository/sagemaker-xgboost"
KMS_KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555"


@pytest.fixture(scope="module")
def data_dir(t10k_dir: Path) -> Path:
    # The offline folder as it is (read-only in CI): the stack stages its CSV in the user cache instead.
    return t10k_dir


@pytest.fixture(scope="module")
def stack(data_dir: Path) -> AwsRun:
    """The stack exactly as Pulumi.aws.yaml declares it (with the offline dataset)."""
    return run_aws(data_dir)


@pytest.fixture(scope="module")
def kms_stack(data_dir: Path) -> AwsRun:
    return run_aws(data_dir, {"kmsKeyArn": KMS_KEY})


@pytest.fixture(scope="module")
def api_stack(data_dir: Path) -> AwsRun:
    return run_aws(data_dir, {"publicApi": True})


@pytest.fixture(scope="module")
def open_api_stack(data_dir: Path) -> AwsRun:
    return run_aws(data_dir, {"publicApi": "open"})


@pytest.fixture(scope="module")
def distributed_stack(data_dir: Path) -> AwsRun:
    return run_aws(data_dir, {"trainingInstanceCount": 2})


def _bucket_name(run: AwsRun) -> str:
    return run.one(BUCKET).outputs["bucket"]


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return document["Statement"]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _prefix(run: AwsRun) -> str:
    """The one `datasets/<hash>` prefix every uploaded object of the run is under."""
    (prefix,) = {o.inputs["key"].rsplit("/", 2)[0] for o in run.of_type(OBJECT)}
    return prefix


def _allows(statement: dict[str, Any], action: str, resource: str) -> bool:
    """IAM's matching of one Allow statement (wildcards `*` and `?`, no conditions)."""
    actions, resources = _as_list(statement["Action"]), _as_list(statement["Resource"])
    return action in actions and any(fnmatch.fnmatchcase(resource, pattern) for pattern in resources)


def _statement(document: dict[str, Any], sid: str) -> dict[str, Any]:
    found = [s for s in _statements(document) if s.get("Sid") == sid]
    assert len(found) == 1, f"no single statement {sid} in {[s.get('Sid') for s in _statements(document)]}"
    return found[0]


# -- storage --------------------------------------------------------------------------------------


def test_bucket_is_private_encrypted_and_force_destroyed(stack: AwsRun) -> None:
    bucket = stack.one(BUCKET)
    assert bucket.inputs["forceDestroy"] is True
    block = stack.one(PUBLIC_ACCESS_BLOCK)
    for flag in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"):
        assert block.inputs[flag] is True, flag
    assert stack.one(OWNERSHIP).inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    (rule,) = stack.one(ENCRYPTION).inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    for companion in (block, stack.one(OWNERSHIP), stack.one(ENCRYPTION), stack.one(BUCKET_POLICY)):
        assert companion.inputs["bucket"] == _bucket_name(stack)
        assert stack.depends_on(companion, bucket)


def test_bucket_refuses_requests_without_tls(stack: AwsRun) -> None:
    policy = json.loads(stack.one(BUCKET_POLICY).inputs["policy"])
    (statement,) = _statements(policy)
    assert statement["Effect"] == "Deny"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert f"arn:aws:s3:::{_bucket_name(stack)}/*" in statement["Resource"]


def test_dataset_is_uploaded_as_csv_under_train_and_validation(stack: AwsRun) -> None:
    prefix = _prefix(stack)
    assert re.fullmatch(r"datasets/[0-9a-f]{16}", prefix)
    objects = {o.inputs["key"].removeprefix(f"{prefix}/"): o for o in stack.of_type(OBJECT)}
    assert sorted(objects) == ["train/train.csv", "validation/validation.csv"]
    for key, obj in objects.items():
        assert obj.inputs["bucket"] == _bucket_name(stack)
        assert obj.inputs["contentType"] == "text/csv"
        path = Path(obj.inputs["source"].path)
        assert path.name == key.split("/")[1]
        # The change trigger is the content hash of exactly the bytes uploaded.
        assert obj.inputs["sourceHash"] == hashlib.sha256(path.read_bytes()).hexdigest()
    with Path(objects["train/train.csv"].inputs["source"].path).open() as train:
        first_row = train.readline().rstrip("\n").split(",")
    assert len(first_row) == 785, "a label, then 784 pixels"
    assert first_row[0] in set("0123456789"), "label first, no header"


def test_data_is_uploaded_only_once_the_bucket_is_private_and_encrypted(stack: AwsRun) -> None:
    settings = [stack.one(t) for t in (PUBLIC_ACCESS_BLOCK, OWNERSHIP, ENCRYPTION, BUCKET_POLICY)]
    for obj in stack.of_type(OBJECT):
        for setting in settings:
            assert stack.depends_on(obj, setting), (obj.name, setting.name)


def test_a_second_run_declares_identical_data_and_job(stack: AwsRun, data_dir: Path) -> None:
    again = run_aws(data_dir)
    assert {o.inputs["key"]: o.inputs["sourceHash"] for o in again.of_type(OBJECT)} == {
        o.inputs["key"]: o.inputs["sourceHash"] for o in stack.of_type(OBJECT)
    }
    assert again.one(TRAINING_JOB).inputs == stack.one(TRAINING_JOB).inputs
    assert again.outputs == stack.outputs
    assert _prefix(again) == _prefix(stack), "same dataset and settings: same prefix, nothing uploaded again"


def test_a_new_instance_count_stages_under_a_new_prefix_that_the_job_reads_alone(
    stack: AwsRun, distributed_stack: AwsRun
) -> None:
    # Pulumi deletes the objects that left the program only after the new job has trained: a job that
    # read `train/` would see the old unsharded file and the new shards, every row twice.
    old, new = _prefix(stack), _prefix(distributed_stack)
    assert old != new
    assert all(o.inputs["key"].startswith(f"{new}/") for o in distributed_stack.of_type(OBJECT))
    bucket = _bucket_name(distributed_stack)
    uris = {
        c["channelName"]: c["dataSource"]["s3DataSource"]["s3Uri"]
        for c in distributed_stack.one(TRAINING_JOB).inputs["inputDataConfigs"]
    }
    assert uris == {"train": f"s3://{bucket}/{new}/train/", "validation": f"s3://{bucket}/{new}/validation/"}
    # The role reads this version only.
    read = _statement(distributed_stack.policy("training-access"), "ReadTrainingChannels")
    assert all(r.startswith(f"arn:aws:s3:::{bucket}/{new}/") for r in read["Resource"])


# -- access ---------------------------------------------------------------------------------------


def test_execution_roles_are_assumable_by_sagemaker_for_this_account_only(stack: AwsRun) -> None:
    roles = stack.of_type(ROLE)
    assert sorted(r.name for r in roles) == ["mnist-training", "mnist-xgboost-hosting"]
    for role in roles:
        (statement,) = _statements(json.loads(role.inputs["assumeRolePolicy"]))
        assert statement["Principal"] == {"Service": "sagemaker.amazonaws.com"}
        assert statement["Action"] == "sts:AssumeRole"
        assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": ACCOUNT}}
        assert "managedPolicyArns" not in role.inputs, "no AWS-managed policy (AmazonSageMakerFullAccess)"


@pytest.mark.parametrize("stack_fixture", ["stack", "kms_stack", "api_stack"])
def test_every_policy_statement_is_scoped(stack_fixture: str, request: pytest.FixtureRequest) -> None:
    run: AwsRun = request.getfixturevalue(stack_fixture)
    policies = run.of_type(ROLE_POLICY)
    assert policies
    for policy in policies:
        for statement in _statements(json.loads(policy.inputs["policy"])):
            assert statement["Effect"] == "Allow"
            actions = _as_list(statement["Action"])
            assert all(a != "*" and not a.endswith(":*") for a in actions), statement
            resources = _as_list(statement["Resource"])
            if "*" in resources:
                # Only actions AWS cannot scope to a resource; metrics only in SageMaker's namespace.
                assert resources == ["*"], statement
                assert set(actions) <= ACTIONS_WITHOUT_RESOURCE_LEVEL_PERMISSIONS, statement
                if "cloudwatch:PutMetricData" in actions:
                    namespace = statement["Condition"]["StringEquals"]["cloudwatch:namespace"]
                    assert namespace.startswith("/aws/sagemaker/")
            else:
                assert all(r.startswith("arn:aws:") for r in resources), statement


def test_training_role_reads_the_channels_and_writes_only_its_jobs_artifacts(stack: AwsRun) -> None:
    bucket = f"arn:aws:s3:::{_bucket_name(stack)}"
    policy = stack.policy("training-access")
    prefix = _prefix(stack)
    assert _statement(policy, "ReadTrainingChannels")["Resource"] == [
        f"{bucket}/{prefix}/train/*",
        f"{bucket}/{prefix}/validation/*",
    ]
    write = _statement(policy, "WriteOwnJobArtifacts")
    assert write["Action"] == "s3:PutObject"
    assert write["Resource"] == f"{bucket}/output/mnist-aws-xgboost-*"
    listing = _statement(policy, "ListOnlyStackPrefixes")
    assert listing["Resource"] == bucket
    assert _statement(policy, "PullAlgorithmImage")["Resource"] == XGBOOST_REPOSITORY_ARN
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs"
    assert _statement(policy, "WriteOwnJobLogs")["Resource"] == f"{group}:log-stream:mnist-aws-xgboost-*"
    job_name = stack.one(TRAINING_JOB).inputs["trainingJobName"]
    assert job_name.startswith("mnist-aws-xgboost-"), "the policy's name patterns must match the real job"


def test_training_role_may_list_the_output_location_as_sagemaker_names_it(stack: AwsRun) -> None:
    # S3OutputPath is `s3://bucket/output` (no slash): a listing of exactly `output` must be allowed,
    # and nothing outside the stack's prefixes.
    listing = _statement(stack.policy("training-access"), "ListOnlyStackPrefixes")
    patterns = listing["Condition"]["StringLike"]["s3:prefix"]
    prefix = _prefix(stack)
    allowed = ["output", "output/", "output/mnist-aws-xgboost-1/", f"{prefix}/train/", f"{prefix}/validation"]
    for listed in allowed:
        assert any(fnmatch.fnmatchcase(listed, p) for p in patterns), listed
    for listed in ("", "datasets/", "train/", "other/"):
        assert not any(fnmatch.fnmatchcase(listed, p) for p in patterns), listed


def test_training_role_may_describe_log_streams_on_the_log_group_arn_iam_checks(stack: AwsRun) -> None:
    # IAM authorizes DescribeLogStreams (and CreateLogGroup) against `...:log-group:NAME:*`.
    group = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/sagemaker/TrainingJobs"
    statements = _statements(stack.policy("training-access"))
    for action in ("logs:DescribeLogStreams", "logs:CreateLogGroup"):
        assert any(_allows(s, action, f"{group}:*") for s in statements), action
    stream = f"{group}:log-stream:mnist-aws-xgboost-0123456789ab/algo-1-1700000000"
    for action in ("logs:CreateLogStream", "logs:PutLogEvents"):
        assert any(_allows(s, action, stream) for s in statements), action
    other_stream = f"{group}:log-stream:someone-else/algo-1"
    assert not any(_allows(s, "logs:PutLogEvents", other_stream) for s in statements)


def test_hosting_role_reads_only_the_champion_copies_it_serves(stack: AwsRun) -> None:
    bucket = f"arn:aws:s3:::{_bucket_name(stack)}"
    policy = stack.policy("hosting-access")
    s3_statements = [
        s for s in _statements(policy) if any(a.startswith("s3:") for a in _as_list(s["Action"]))
    ]
    assert s3_statements == [
        {
            "Sid": "ReadOwnModelArtifacts",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": f"{bucket}/champions/*/model.tar.gz",
        }
    ]
    served = stack.one(MODEL).inputs["primaryContainer"]["modelDataUrl"]
    assert served.startswith(f"s3://{_bucket_name(stack)}/champions/") and served.endswith("/model.tar.gz")
    endpoint_name = stack.one(ENDPOINT).inputs["name"]
    log_groups = _statement(policy, "WriteOwnEndpointLogs")["Resource"][0]
    assert log_groups.endswith("log-group:/aws/sagemaker/Endpoints/mnist-aws-xgboost-*")
    assert endpoint_name.startswith("mnist-aws-xgboost-")


def test_no_kms_permission_without_a_key(stack: AwsRun) -> None:
    for policy in stack.of_type(ROLE_POLICY):
        assert "kms:" not in policy.inputs["policy"]


# -- training -------------------------------------------------------------------------------------


def test_training_job_runs_the_builtin_xgboost_image(stack: AwsRun) -> None:
    job = stack.one(TRAINING_JOB)
    assert job.inputs["algorithmSpecification"] == {
        "trainingImage": XGBOOST_1_7_IMAGE_US_EAST_1,
        "trainingInputMode": "File",
    }
    assert job.inputs["roleArn"] == stack.one(ROLE, "training").outputs["arn"]
    assert job.inputs["enableNetworkIsolation"] is True


def test_training_job_reads_csv_channels_from_the_bucket(stack: AwsRun) -> None:
    bucket = _bucket_name(stack)
    channels = {c["channelName"]: c for c in stack.one(TRAINING_JOB).inputs["inputDataConfigs"]}
    assert sorted(channels) == ["train", "validation"]
    for name, channel in channels.items():
        assert channel["contentType"] == "text/csv"
        assert channel["dataSource"]["s3DataSource"] == {
            "s3DataType": "S3Prefix",
            "s3Uri": f"s3://{bucket}/{_prefix(stack)}/{name}/",
            "s3DataDistributionType": "FullyReplicated",
        }
    assert stack.one(TRAINING_JOB).inputs["outputDataConfig"] == {"s3OutputPath": f"s3://{bucket}/output"}


def test_training_job_waits_for_its_data_and_permissions(stack: AwsRun) -> None:
    job = stack.one(TRAINING_JOB)
    for dependency in [*stack.of_type(OBJECT), stack.one(ROLE_POLICY, "training")]:
        assert stack.depends_on(job, dependency), dependency.name


def test_hyperparameters_are_strings_for_probabilities_over_ten_classes(stack: AwsRun) -> None:
    hyperparameters = stack.one(TRAINING_JOB).inputs["hyperParameters"]
    assert all(isinstance(v, str) for v in hyperparameters.values())
    assert hyperparameters["objective"] == "multi:softprob"
    assert hyperparameters["num_class"] == "10"
    # The champion gate's score: the built-in algorithm reports validation:merror only when asked.
    assert "merror" in hyperparameters["eval_metric"].split(",")
    assert "num_round" in hyperparameters


def test_training_resources_and_stopping_condition_come_from_the_stack_config(stack: AwsRun) -> None:
    job = stack.one(TRAINING_JOB)
    assert job.inputs["resourceConfig"] == {
        "instanceType": "ml.m5.xlarge",
        "instanceCount": 1,
        "volumeSizeInGb": 10,
    }
    assert job.inputs["stoppingCondition"] == {"maxRuntimeInSeconds": 3600}
    # The provider waits for the job to finish; its create timeout must outlast the job.
    assert job.inputs["timeouts"]["create"] == "90m"


def test_training_job_takes_its_name_from_the_attempt_resource(stack: AwsRun) -> None:
    # A failed job keeps no Pulumi state: the attempt resource moves the next `up` to a free name.
    job, attempt = stack.one(TRAINING_JOB), stack.one(TRAINING_ATTEMPT)
    assert job.inputs["trainingJobName"] == attempt.outputs["job_name"]
    assert stack.depends_on(job, attempt)
    assert attempt.inputs["region"] == REGION
    assert re.fullmatch(r"mnist-aws-xgboost-[0-9a-f]{12}", attempt.inputs["base_name"])


def test_training_job_name_is_a_valid_sagemaker_name(stack: AwsRun) -> None:
    name = stack.one(TRAINING_JOB).inputs["trainingJobName"]
    assert len(name) <= 63
    assert name.replace("-", "").isalnum() and name[0].isalnum()


def test_changed_hyperparameters_train_a_new_job_and_roll_the_model_forward(
    stack: AwsRun, data_dir: Path
) -> None:
    changed = run_aws(data_dir, {"hyperparameters": {"xgboost": {"num_round": "7"}}})
    job, old_job = changed.one(TRAINING_JOB), stack.one(TRAINING_JOB)
    assert job.inputs["hyperParameters"]["num_round"] == "7"
    assert job.inputs["trainingJobName"] != old_job.inputs["trainingJobName"]
    new_artifact = changed.one(MODEL).inputs["primaryContainer"]["modelDataUrl"]
    assert job.inputs["trainingJobName"] in new_artifact
    assert changed.outputs["models"]["xgboost"]["artifact"] == new_artifact
    # Same serving shape: the endpoint keeps its name and is updated in place to the new configuration.
    assert changed.one(ENDPOINT).inputs["name"] == stack.one(ENDPOINT).inputs["name"]


def test_changed_data_alone_trains_a_new_job(
    stack: AwsRun, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the data changes (one training label), nothing else the job is made of: a new job."""
    from infra.aws import data as aws_data

    real_load = aws_data.load_dataset

    def one_label_changed(*args: Any, **kwargs: Any) -> Any:
        split = real_load(*args, **kwargs)
        split.y_train[0] = (split.y_train[0] + 1) % 10
        return split

    # A fresh staging cache for each run, so the stack converts the data it is given.
    monkeypatch.setattr(aws_data, "staging_root", lambda name: tmp_path / "same")
    same = run_aws(data_dir)
    monkeypatch.setattr(aws_data, "staging_root", lambda name: tmp_path / "changed")
    monkeypatch.setattr(aws_data, "load_dataset", one_label_changed)
    changed = run_aws(data_dir)

    original = stack.one(TRAINING_JOB).inputs
    assert same.one(TRAINING_JOB).inputs["trainingJobName"] == original["trainingJobName"]
    assert changed.one(TRAINING_JOB).inputs["trainingJobName"] != original["trainingJobName"]
    assert changed.one(TRAINING_JOB).inputs["hyperParameters"] == original["hyperParameters"]
    assert changed.one(TRAINING_JOB).inputs["resourceConfig"] == original["resourceConfig"]


# -- serving --------------------------------------------------------------------------------------


def test_model_serves_the_gates_champion_and_the_gate_judges_the_training_job(stack: AwsRun) -> None:
    job, model, gate = stack.one(TRAINING_JOB), stack.one(MODEL), stack.one(GATE)
    job_name = job.inputs["trainingJobName"]
    # The gate reads the job's metrics and judges its artifact; the model serves the gate's copy of it.
    assert gate.props["challenger_id"] == job_name
    assert (
        gate.props["challenger_artifact"]
        == f"s3://{_bucket_name(stack)}/output/{job_name}/output/model.tar.gz"
    )
    assert gate.props["region"] == REGION and gate.props["bucket"] == _bucket_name(stack)
    assert gate.props["min_accuracy"] == 0.95  # mnist-t10k's default floor for xgboost
    assert stack.depends_on(gate, job)
    assert model.property_dependencies["primaryContainer"] == {gate.urn}
    assert model.inputs["primaryContainer"] == {
        "image": XGBOOST_1_7_IMAGE_US_EAST_1,
        "modelDataUrl": f"s3://{_bucket_name(stack)}/champions/xgboost/{job_name}/model.tar.gz",
        "mode": "SingleModel",
        # Probabilities as JSON, one record per CSV line: what mnistctl's SageMaker client parses.
        "environment": {"SAGEMAKER_INFERENCE_OUTPUT": "probabilities"},
    }
    assert model.inputs["executionRoleArn"] == stack.one(ROLE, "hosting").outputs["arn"]
    # The model is created only once the gate has decided, i.e. after training completed.
    assert stack.depends_on(model, gate)
    assert stack.depends_on(model, stack.one(ROLE_POLICY, "hosting"))


def test_endpoint_serves_its_configuration_which_serves_the_model(stack: AwsRun) -> None:
    endpoint, config, model = stack.one(ENDPOINT), stack.one(ENDPOINT_CONFIG), stack.one(MODEL)
    assert endpoint.inputs["endpointConfigName"] == config.outputs["name"]
    (variant,) = config.inputs["productionVariants"]
    assert variant == {
        "variantName": "AllTraffic",
        "modelName": model.outputs["name"],
        "instanceType": "ml.m5.large",
        "initialInstanceCount": 1,
        "initialVariantWeight": 1,
    }
    assert stack.depends_on(endpoint, config) and stack.depends_on(config, model)


def test_model_and_configuration_are_generated_names_so_replacements_never_collide(stack: AwsRun) -> None:
    # SageMaker models and endpoint configurations are immutable: a fixed name would make the
    # create-before-delete replacement fail ("Cannot create already existing ...").
    assert "name" not in stack.one(MODEL).inputs
    assert "name" not in stack.one(ENDPOINT_CONFIG).inputs


def test_a_new_instance_type_gets_a_new_endpoint(stack: AwsRun, data_dir: Path) -> None:
    # SageMaker refuses UpdateEndpoint that changes the instance type of an autoscaled variant.
    moved = run_aws(data_dir, {"endpointInstanceType": "ml.c5.large"})
    assert moved.one(UNIQUE_SUFFIX).inputs["keepers"] != stack.one(UNIQUE_SUFFIX).inputs["keepers"]
    assert moved.one(ENDPOINT).inputs["name"] != stack.one(ENDPOINT).inputs["name"]
    assert moved.one(ENDPOINT).inputs["name"].startswith("mnist-aws-xgboost-")


def test_endpoint_and_log_group_names_come_from_a_suffix_kept_per_instance_type(stack: AwsRun) -> None:
    # The suffix is random per deployment (infra/aws/unique_suffix.py): a redeploy after destroy, or a
    # switch back to an earlier instance type, never reuses a log group name SageMaker may have recreated.
    suffix = stack.one(UNIQUE_SUFFIX)
    assert suffix.inputs["keepers"] == {"instance_type": "ml.m5.large"}
    endpoint, log_group = stack.one(ENDPOINT), stack.one(LOG_GROUP)
    assert endpoint.inputs["name"] == f"mnist-aws-xgboost-{suffix.outputs['suffix']}"
    assert log_group.inputs["name"] == f"/aws/sagemaker/Endpoints/{endpoint.inputs['name']}"
    assert stack.depends_on(log_group, suffix)


def test_endpoint_log_group_is_owned_by_the_stack(stack: AwsRun) -> None:
    endpoint, log_group = stack.one(ENDPOINT), stack.one(LOG_GROUP)
    assert log_group.inputs["name"] == f"/aws/sagemaker/Endpoints/{endpoint.inputs['name']}"
    assert log_group.inputs["retentionInDays"] == 30
    assert stack.depends_on(endpoint, log_group)


def test_autoscaling_tracks_invocations_between_the_configured_bounds(stack: AwsRun) -> None:
    endpoint_name = stack.one(ENDPOINT).inputs["name"]
    target = stack.one(SCALING_TARGET)
    assert target.inputs["resourceId"] == f"endpoint/{endpoint_name}/variant/AllTraffic"
    assert target.inputs["serviceNamespace"] == "sagemaker"
    assert target.inputs["scalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (1, 2)
    policy = stack.one(SCALING_POLICY)
    assert policy.inputs["policyType"] == "TargetTrackingScaling"
    assert policy.inputs["resourceId"] == target.inputs["resourceId"]
    tracking = policy.inputs["targetTrackingScalingPolicyConfiguration"]
    assert tracking["predefinedMetricSpecification"] == {
        "predefinedMetricType": "SageMakerVariantInvocationsPerInstance"
    }
    assert tracking["targetValue"] > 0


def test_autoscaling_bounds_follow_the_config(data_dir: Path) -> None:
    run = run_aws(data_dir, {"endpointMinInstances": 2, "endpointMaxInstances": 4})
    target = run.one(SCALING_TARGET)
    assert (target.inputs["minCapacity"], target.inputs["maxCapacity"]) == (2, 4)
    (variant,) = run.one(ENDPOINT_CONFIG).inputs["productionVariants"]
    assert variant["initialInstanceCount"] == 2


def test_alarms_watch_5xx_errors_and_model_latency_of_the_variant(stack: AwsRun) -> None:
    endpoint_name = stack.one(ENDPOINT).inputs["name"]
    alarms = {a.inputs["metricName"]: a for a in stack.of_type(ALARM)}
    assert sorted(alarms) == ["Invocation5XXErrors", "ModelLatency"]
    for alarm in alarms.values():
        assert alarm.inputs["namespace"] == "AWS/SageMaker"
        assert alarm.inputs["dimensions"] == {"EndpointName": endpoint_name, "VariantName": "AllTraffic"}
    assert alarms["Invocation5XXErrors"].inputs["statistic"] == "Sum"
    assert alarms["Invocation5XXErrors"].inputs["threshold"] == 1
    assert alarms["ModelLatency"].inputs["extendedStatistic"] == "p90"


# -- everything -----------------------------------------------------------------------------------


@pytest.mark.parametrize("stack_fixture", ["stack", "api_stack"])
def test_every_resource_uses_the_region_and_tagging_provider(
    stack_fixture: str, request: pytest.FixtureRequest
) -> None:
    stack: AwsRun = request.getfixturevalue(stack_fixture)
    provider = stack.one(PROVIDER)
    assert provider.inputs["region"] == REGION
    assert json.loads(provider.inputs["defaultTags"]) == {
        "tags": {"project": "mnist-platform", "stack": "aws"}
    }
    component = stack.one(COMPONENT)
    provider_ref = f"{provider.urn}::{provider.id}"
    for resource in stack.resources:
        if resource is provider or resource is component or resource.is_dynamic:
            continue  # (the champion gate is a dynamic resource: it calls boto3 with the stack's region)
        assert resource.parent is not None, resource.name
        if resource.custom and not resource.is_dynamic:  # dynamic providers run in the engine
            assert provider_of(stack, resource) == provider_ref, resource.name
    assert provider.parent == component.urn


def test_outputs_follow_the_stack_contract(stack: AwsRun) -> None:
    endpoint, job = stack.one(ENDPOINT), stack.one(TRAINING_JOB)
    assert stack.outputs["endpoints"] == {
        "xgboost": {"flavor": "sagemaker", "name": endpoint.inputs["name"], "region": REGION}
    }
    model = stack.outputs["models"]["xgboost"]
    assert model["artifact"] == stack.one(MODEL).inputs["primaryContainer"]["modelDataUrl"]
    assert model["metrics"] == {
        "training_job": job.inputs["trainingJobName"],
        "validation:merror": 0.03,
        "accuracy": 0.97,
    }
    assert model["champion"] == {
        "artifact": model["artifact"],
        "accuracy": 0.97,
        "source": job.inputs["trainingJobName"],
    }
    assert model["challenger"]["decision"] == "promoted"
    assert stack.outputs["bucket"] == _bucket_name(stack)
    assert stack.outputs["dataset"] == "mnist-t10k"
    registered = stack.run.component_outputs[stack.one(COMPONENT).urn]
    assert registered["endpoints"] == stack.outputs["endpoints"]


# -- options --------------------------------------------------------------------------------------


def test_two_training_instances_shard_the_train_channel(distributed_stack: AwsRun) -> None:
    prefix = _prefix(distributed_stack)
    keys = sorted(o.inputs["key"].removeprefix(f"{prefix}/") for o in distributed_stack.of_type(OBJECT))
    assert keys == ["train/train-000-of-002.csv", "train/train-001-of-002.csv", "validation/validation.csv"]
    job = distributed_stack.one(TRAINING_JOB)
    assert job.inputs["resourceConfig"]["instanceCount"] == 2
    distribution = {
        c["channelName"]: c["dataSource"]["s3DataSource"]["s3DataDistributionType"]
        for c in job.inputs["inputDataConfigs"]
    }
    assert distribution == {"train": "ShardedByS3Key", "validation": "FullyReplicated"}


def test_a_customer_kms_key_encrypts_bucket_training_and_endpoint(kms_stack: AwsRun) -> None:
    (rule,) = kms_stack.one(ENCRYPTION).inputs["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {
        "sseAlgorithm": "aws:kms",
        "kmsMasterKeyId": KMS_KEY,
    }
    assert rule["bucketKeyEnabled"] is True
    job = kms_stack.one(TRAINING_JOB)
    assert job.inputs["resourceConfig"]["volumeKmsKeyId"] == KMS_KEY
    assert job.inputs["outputDataConfig"]["kmsKeyId"] == KMS_KEY
    assert kms_stack.one(ENDPOINT_CONFIG).inputs["kmsKeyArn"] == KMS_KEY
    for name in ("training-access", "hosting-access"):
        key_use = _statement(kms_stack.policy(name), "UseStackKmsKey")
        assert key_use["Resource"] == KMS_KEY
        assert {"kms:Decrypt", "kms:GenerateDataKey"} <= set(key_use["Action"])
        grant = _statement(kms_stack.policy(name), "GrantKeyToSageMakerVolumesOnly")
        assert grant["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}


def test_no_public_api_unless_asked(stack: AwsRun) -> None:
    assert not stack.of_type(HTTP_API) and not stack.of_type(FUNCTION)


def test_public_api_is_throttled_and_its_function_may_only_invoke_this_endpoint(api_stack: AwsRun) -> None:
    endpoint = api_stack.one(ENDPOINT)
    api = api_stack.one(HTTP_API)
    assert api.inputs["protocolType"] == "HTTP"
    assert sorted(r.inputs["routeKey"] for r in api_stack.of_type(ROUTE)) == [
        "POST /endpoints/{name}/invocations",
        "POST /predict",
    ]
    # Route-level limits: each of the two routes gets half, so the API as a whole keeps 10/s, bursts of 20.
    settings = api_stack.one(STAGE).inputs["defaultRouteSettings"]
    assert settings == {"throttlingRateLimit": 5, "throttlingBurstLimit": 10}

    function = api_stack.one(FUNCTION)
    assert function.inputs["environment"] == {"variables": {"ENDPOINT_NAME": endpoint.inputs["name"]}}
    assert function.inputs["runtime"].startswith("python3")
    role = api_stack.one(ROLE, "api")
    (trust,) = _statements(json.loads(role.inputs["assumeRolePolicy"]))
    assert trust["Principal"] == {"Service": "lambda.amazonaws.com"}
    policy = api_stack.policy("api-invoke")
    invoke = _statement(policy, "InvokeThisEndpointOnly")
    assert invoke["Action"] == "sagemaker:InvokeEndpoint"
    assert invoke["Resource"] == endpoint.outputs["arn"]
    actions = {a for s in _statements(policy) for a in _as_list(s["Action"])}
    assert actions == {"sagemaker:InvokeEndpoint", "logs:CreateLogStream", "logs:PutLogEvents"}

    permission = api_stack.one(PERMISSION)
    assert permission.inputs["principal"] == "apigateway.amazonaws.com"
    assert permission.inputs["sourceArn"].startswith(api.outputs["executionArn"])
    entry = api_stack.outputs["endpoints"]["xgboost"]
    assert entry["url"].startswith("https://") and not entry["url"].endswith("/")
    assert function.inputs["timeout"] >= api_stack.one(INTEGRATION).inputs["timeoutMilliseconds"] / 1000


def test_public_api_routes_require_iam_authorization_by_default(api_stack: AwsRun) -> None:
    # `publicApi: true` (the earlier boolean) means the IAM-authorized API, as does `iam`.
    routes = api_stack.of_type(ROUTE)
    assert [r.inputs["authorizationType"] for r in routes] == ["AWS_IAM", "AWS_IAM"]
    assert api_stack.outputs["endpoints"]["xgboost"]["auth"] == "iam"


def test_an_open_public_api_is_anonymous_and_still_throttled(open_api_stack: AwsRun) -> None:
    routes = open_api_stack.of_type(ROUTE)
    assert [r.inputs["authorizationType"] for r in routes] == ["NONE", "NONE"]
    assert open_api_stack.one(STAGE).inputs["defaultRouteSettings"]["throttlingRateLimit"] * len(routes) == 10
    assert open_api_stack.outputs["endpoints"]["xgboost"]["auth"] == "none"


def test_lambda_ships_the_handler_file(api_stack: AwsRun) -> None:
    archive = api_stack.one(FUNCTION).inputs["code"]
    (name,) = archive.assets
    assert name == "handler.py"
    assert api_stack.one(FUNCTION).inputs["handler"] == "handler.handler"


# -- the policy pack ------------------------------------------------------------------------------


def _rules() -> ModuleType:
    """policy/rules.py, loaded by path (the repository root need not be on sys.path)."""
    name = "policy_rules_for_aws_tests"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "policy" / "rules.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses with postponed annotations look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize("stack_fixture", ["stack", "kms_stack", "api_stack", "distributed_stack"])
def test_the_stack_passes_the_policy_pack(stack_fixture: str, request: pytest.FixtureRequest) -> None:
    run: AwsRun = request.getfixturevalue(stack_fixture)
    rules = _rules()
    provider_props = run.one(PROVIDER).inputs
    provider_props = {**provider_props, "defaultTags": json.loads(provider_props["defaultTags"])}
    customer_key = stack_fixture == "kms_stack"
    violations: list[str] = []
    for resource in run.resources:
        if not resource.custom or resource.typ == PROVIDER:
            continue
        props = resource.inputs
        found = (
            rules.storage_private_violations(resource.typ, props)
            + rules.storage_encrypted_violations(resource.typ, props, customer_key)
            + rules.least_privilege_violations(resource.typ, props)
            + rules.training_bounds_violations(resource.typ, props)
            + rules.endpoint_bounds_violations(resource.typ, props)
            + rules.missing_tags_violations(resource.typ, props, provider_props)
            + rules.teardown_violations(resource.typ, props, "aws")
            + rules.plaintext_secret_violations(resource.typ, props)
        )
        violations += [f"{resource.name}: {v}" for v in found]
    assert violations == []

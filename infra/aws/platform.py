"""The SageMaker stack: what the SageMaker MNIST notebook does by hand, as declared resources.

bucket + data upload -> execution roles -> built-in XGBoost training job -> champion gate (the job's
model is served only if it passes the promotion rule, docs/gate.md) -> model -> endpoint
configuration -> endpoint (+ autoscaling, alarms, and optionally a public HTTP API). Every resource
is a native pulumi-aws resource; `pulumi destroy` removes all of them (see docs/aws.md for the few
records AWS itself keeps).

How updates roll forward (details and the provider issues behind them in docs/aws.md):

- The training job's name is `<prefix>-<hash>`, the hash covering everything the job is made of
  (image, hyperparameters, the data's content hashes, resources, role, bucket). Every argument of a
  SageMaker training job forces a replacement, and names are unique per account and region, so a
  changed job must have a new name; an unchanged job keeps its name and `pulumi up` changes nothing.
- Serving (infra/aws/serving.py) rolls forward to the new artifact without touching the endpoint's
  name: a new model and endpoint configuration are created beside the old ones, the endpoint is
  updated in place, and the old ones are deleted last (terraform-provider-aws #21811, #40048).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pulumi
import pulumi_aws as aws

from infra.aws.batch_transform import BatchPlan, declare_transform_job, plan_batch
from infra.aws.data import CSV_CONTENT_TYPE, StagedFile, dataset_prefix, stage_sagemaker_csv
from infra.aws.gate import CHAMPIONS_PREFIX, SageMakerGate, SageMakerGateArgs, require_merror
from infra.aws.iam import Account, bucket_tls_only_policy, service_trust_policy, training_role_policy
from infra.aws.names import (
    SAGEMAKER_NAME_MAX,
    model_artifact_uri,
    parse_image_uri,
    s3_uri,
    sagemaker_name,
    sagemaker_prefix,
)
from infra.aws.public_api import PublicPredictApi, PublicPredictApiArgs
from infra.aws.serving import ENDPOINT_DIGEST_LENGTH, SageMakerEndpoint, SageMakerEndpointArgs
from infra.aws.training_attempt import ATTEMPT_SUFFIX_ROOM, TrainingJobAttempt
from infra.aws.tuning import (
    TUNING_DIGEST_LENGTH,
    TUNING_JOB_NAME_MAX,
    SageMakerTuningResult,
    static_hyperparameters,
    tuning_budget_seconds,
    tuning_job_config,
)
from infra.gate import PromotionRule
from infra.gate_provider import models_entry
from infra.hashing import content_hash
from infra.settings import (
    PROJECT,
    TUNABLE_HYPERPARAMETERS,
    Dataset,
    Framework,
    ModelTuning,
    PublicApi,
    RolloutSettings,
    Settings,
)

MODEL_KEY = Framework.XGBOOST.value
TRAIN_CHANNEL = "train"
VALIDATION_CHANNEL = "validation"
OUTPUT_PREFIX = "output"
JOB_DIGEST_LENGTH = 12
# MNIST as CSV is < 250 MB; File mode copies the channels to this volume on every instance.
TRAINING_VOLUME_GB = 10
# The provider waits for the job to finish (Completed or Stopped) before `create` returns; allow the
# job's own max runtime plus time to provision instances and upload the model.
TRAINING_PROVISIONING_SLACK_MINUTES = 30


@dataclass
class SageMakerPlatformArgs:
    """Everything the SageMaker stack is built from, resolved and validated by `from_settings`."""

    stack: str
    """The Pulumi stack name: part of every physical name and the `stack` default tag."""
    region: str
    """The AWS region every resource is created in (`aws:region`)."""
    dataset: Dataset
    """Which dataset the staged files hold (exported as `dataset`)."""
    staged_files: Sequence[StagedFile]
    """The `train` and `validation` channel files on this machine, with their content hashes."""
    training_image: str
    """The built-in XGBoost image URI (from `sagemaker.core.image_uris`), for training and serving."""
    hyperparameters: Mapping[str, str]
    """The built-in algorithm's hyperparameters, as the strings SageMaker takes."""
    training_instance_type: str = "ml.m5.xlarge"
    """Instance type of the training job."""
    training_instance_count: int = 1
    """Training instances; more than one shards the `train` channel with ShardedByS3Key."""
    max_runtime_seconds: int = 3600
    """The training job's stopping condition."""
    endpoint_instance_type: str = "ml.m5.large"
    """Instance type of the endpoint's production variant."""
    endpoint_min_instances: int = 1
    """Autoscaling lower bound, also the variant's initial instance count."""
    endpoint_max_instances: int = 2
    """Autoscaling upper bound."""
    kms_key_arn: str | None = None
    """Customer KMS key for the bucket, the training volume and output, and the endpoint volume."""
    public_api: PublicApi = PublicApi.OFF
    """A throttled HTTP API (API Gateway + Lambda) in front of the endpoint: IAM-authorized or open."""
    batch: BatchPlan | None = None
    """`batch.xgboost`: a batch transform job of the champion's model (infra/aws/batch_transform.py)."""
    tags: Mapping[str, str] = field(default_factory=dict)
    """Extra default tags; `project` and `stack` are always set."""
    promotion: PromotionRule = field(default_factory=lambda: PromotionRule(min_accuracy=0.0))
    """The champion/challenger rule: when a new training job's model replaces the served one."""
    rollout: RolloutSettings | None = None
    """`rollout`: a canary update rolled back automatically on the endpoint's alarms; None: all at once."""
    tuning: ModelTuning | None = None
    """`tuning.xgboost`: a hyperparameter tuning job instead of the one training job (infra/aws/tuning.py)."""

    def __post_init__(self) -> None:
        channels = {f.channel for f in self.staged_files}
        if channels != {TRAIN_CHANNEL, VALIDATION_CHANNEL}:
            raise ValueError(
                f"staged_files must hold the train and validation channels, not {sorted(channels)}"
            )
        if self.endpoint_min_instances > self.endpoint_max_instances:
            raise ValueError("endpoint_min_instances must not exceed endpoint_max_instances")


class SageMakerPlatform(pulumi.ComponentResource):
    """MNIST on SageMaker: data in S3, a built-in XGBoost training job, and a live, autoscaled endpoint."""

    endpoints: pulumi.Output[dict]
    """`{"xgboost": {"flavor": "sagemaker", "name", "region"[, "url"]}}` (docs/architecture.md)."""
    models: pulumi.Output[dict]
    """`{"xgboost": {"artifact": <s3 model.tar.gz>, "metrics": {...}}}`."""
    bucket: pulumi.Output[str]
    """Name of the stack's bucket."""
    dataset: pulumi.Output[str]
    """The dataset the model was trained on (`mnist`, `mnist-t10k`, ...), as the local stack exports it."""
    training_job_name: pulumi.Output[str]
    endpoint_name: pulumi.Output[str]

    @classmethod
    def from_settings(cls, name: str, settings: Settings) -> SageMakerPlatform:
        """Resolve the image offline, stage the dataset and build the component from validated settings."""
        # Imported here: they are heavy (sagemaker-core, xgboost) and only the aws stack needs them.
        from sagemaker.core import image_uris

        from training.run import hyperparameters_for

        aws_settings = settings.aws
        if aws_settings is None:
            raise ValueError("the aws stack needs its settings (aws:region and the aws keys of Pulumi.yaml)")
        # The same defaults as a local run: the trainer's, the dataset's preset, then the stack's overrides;
        # the gate needs `validation:merror` among the metrics the job reports.
        hyperparameters = require_merror(
            hyperparameters_for(
                Framework.XGBOOST.value,
                settings.hyperparameters.get(Framework.XGBOOST, {}),
                dry_run=False,
                dataset=settings.dataset.value,
                preset=settings.training_preset.value,
            )
        )
        try:
            image = image_uris.retrieve("xgboost", aws_settings.region, aws_settings.xgboost_version)
        except ValueError as error:
            raise ValueError(
                f"config {PROJECT}:xgboostVersion {aws_settings.xgboost_version!r} has no SageMaker image in "
                f"{aws_settings.region}: {error}"
            ) from None
        staged = stage_sagemaker_csv(
            settings.dataset, settings.data_dir, shards=aws_settings.training_instance_count
        )
        args = SageMakerPlatformArgs(
            stack=settings.stack,
            region=aws_settings.region,
            dataset=settings.dataset,
            staged_files=staged,
            training_image=image,
            hyperparameters=hyperparameters.as_sagemaker(),
            training_instance_type=aws_settings.training_instance_type,
            training_instance_count=aws_settings.training_instance_count,
            max_runtime_seconds=aws_settings.max_runtime_seconds,
            endpoint_instance_type=aws_settings.endpoint_instance_type,
            endpoint_min_instances=aws_settings.endpoint_min_instances,
            endpoint_max_instances=aws_settings.endpoint_max_instances,
            kms_key_arn=aws_settings.kms_key_arn,
            public_api=aws_settings.public_api,
            promotion=settings.promotion.rule(Framework.XGBOOST),
            batch=plan_batch(settings, Framework.XGBOOST),
            rollout=settings.rollout,
            tuning=settings.tuning.get(Framework.XGBOOST),
        )
        return cls(name, args)

    def __init__(
        self, name: str, args: SageMakerPlatformArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mnist-platform:aws:SageMakerPlatform", name, None, opts)
        self._name = name
        self._args = args
        self.provider = aws.Provider(
            f"{name}-aws",
            region=args.region,
            default_tags={"tags": {**args.tags, "project": PROJECT, "stack": args.stack}},
            opts=pulumi.ResourceOptions(parent=self),
        )
        invoke = pulumi.InvokeOutputOptions(parent=self, provider=self.provider)
        identity = aws.get_caller_identity_output(opts=invoke)
        partition = aws.get_partition_output(opts=invoke)
        self._account = pulumi.Output.all(partition.partition, identity.account_id).apply(
            lambda values: Account(partition=values[0], region=args.region, account_id=values[1])
        )
        self._account_id = identity.account_id
        base = f"{name}-{args.stack}-{MODEL_KEY}"
        # Room for the hash and an attempt suffix (`-r1`, infra/aws/training_attempt.py) within 63 characters.
        self._job_prefix = sagemaker_prefix(base, JOB_DIGEST_LENGTH + ATTEMPT_SUFFIX_ROOM)
        self._endpoint_prefix = sagemaker_prefix(base, ENDPOINT_DIGEST_LENGTH)
        # A tuning job's name holds at most 32 characters; SageMaker names its trials `<tuning job>-NNN-<x>`.
        self._tuning_prefix = sagemaker_prefix(
            base, SAGEMAKER_NAME_MAX - TUNING_JOB_NAME_MAX + TUNING_DIGEST_LENGTH
        )
        self._data_prefix = dataset_prefix(args.staged_files)

        bucket, bucket_settings = self._storage()
        uploads = self._upload_dataset(bucket, depends_on=bucket_settings)
        training_role, training_policy = self._training_role(bucket)
        tuned: SageMakerTuningResult | None = None
        if args.tuning is None:
            job: pulumi.Resource = self._training_job(
                bucket, training_role, depends_on=[training_policy, *uploads]
            )
            challenger = cast(aws.sagemaker.TrainingJob, job).training_job_name
            artifact = pulumi.Output.all(bucket.bucket, challenger).apply(
                lambda values: model_artifact_uri(values[0], OUTPUT_PREFIX, values[1])
            )
        else:
            # The best trial of the tuning job is the challenger (infra/aws/tuning.py).
            job = tuned = self._tuning_job(
                args.tuning, bucket, training_role, depends_on=[training_policy, *uploads]
            )
            challenger, artifact = tuned.best_training_job, tuned.best_artifact
        # The endpoint serves the gate's champion, not the job's output (docs/gate.md).
        gate = SageMakerGate(
            f"{name}-{MODEL_KEY}-gate",
            SageMakerGateArgs(
                model=MODEL_KEY,
                training_job_name=challenger,
                challenger_artifact=artifact,
                region=args.region,
                bucket=bucket.bucket,
                rule=args.promotion,
                kms_key_arn=args.kms_key_arn,
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[job]),
        )
        serving = SageMakerEndpoint(
            f"{name}-{MODEL_KEY}",
            SageMakerEndpointArgs(
                provider=self.provider,
                account=self._account,
                bucket=bucket.bucket,
                output_prefix=OUTPUT_PREFIX,
                job_name_prefix=self._job_prefix,
                endpoint_name_prefix=self._endpoint_prefix,
                image=args.training_image,
                artifact=gate.champion_artifact,
                training_job=gate,
                instance_type=args.endpoint_instance_type,
                min_instances=args.endpoint_min_instances,
                max_instances=args.endpoint_max_instances,
                kms_key_arn=args.kms_key_arn,
                champion_prefix=CHAMPIONS_PREFIX,
                rollout=args.rollout,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        api = self._public_api(serving) if args.public_api is not PublicApi.OFF else None
        # Batch scoring with the champion's model (docs/batch.md): a new champion is a new Model, a new job.
        self.batch: pulumi.Output[dict] | None = None
        if args.batch is not None:
            transform = declare_transform_job(
                f"{name}-{MODEL_KEY}-batch",
                args.batch,
                region=args.region,
                bucket=bucket.bucket,
                model_name=serving.model_name,
                role_name=serving.hosting_role_name,
                account=self._account,
                job_prefix=sagemaker_prefix(f"{args.stack}-batch", 32),
                kms_key_arn=args.kms_key_arn,
                opts=self._opts(),
            )
            self.batch = transform.entry().apply(lambda entry: {MODEL_KEY: entry})

        self.bucket = bucket.bucket
        self.dataset = pulumi.Output.from_input(args.dataset.value)
        self.training_job_name = challenger
        self.endpoint_name = serving.endpoint_name
        self.endpoints = pulumi.Output.all(serving.endpoint_name, api.url if api else None).apply(
            lambda values: {MODEL_KEY: _endpoint_entry(values[0], args.region, values[1], args.public_api)}
        )
        # What the endpoint serves (the champion) and what the last training run made of the gate.
        self.models = pulumi.Output.all(
            models_entry(gate.champion, gate.challenger), tuned.summary if tuned else None
        ).apply(lambda values: {MODEL_KEY: {**values[0], **({"tuning": values[1]} if values[1] else {})}})
        self.register_outputs(
            {
                "endpoints": self.endpoints,
                "models": self.models,
                "bucket": self.bucket,
                "dataset": self.dataset,
                "training_job_name": self.training_job_name,
                "endpoint_name": self.endpoint_name,
                **({"batch": self.batch} if self.batch is not None else {}),
            }
        )

    # -- helpers -------------------------------------------------------------------------------

    def _opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Child options: parented to the component, on the stack's provider."""
        return pulumi.ResourceOptions(parent=self, provider=self.provider, **kwargs)

    def _storage(self) -> tuple[aws.s3.Bucket, list[pulumi.Resource]]:
        """A private, encrypted bucket that `pulumi destroy` empties and deletes, and its settings."""
        name, kms_key_arn = self._name, self._args.kms_key_arn
        bucket = aws.s3.Bucket(f"{name}-data", force_destroy=True, opts=self._opts())
        access_block = aws.s3.BucketPublicAccessBlock(
            f"{name}-data-private",
            bucket=bucket.id,
            block_public_acls=True,
            block_public_policy=True,
            ignore_public_acls=True,
            restrict_public_buckets=True,
            opts=self._opts(),
        )
        ownership = aws.s3.BucketOwnershipControls(
            f"{name}-data-ownership",
            bucket=bucket.id,
            rule={"object_ownership": "BucketOwnerEnforced"},
            opts=self._opts(),
        )
        encryption = aws.s3.BucketServerSideEncryptionConfigurationRuleApplyServerSideEncryptionByDefaultArgs(
            sse_algorithm="aws:kms" if kms_key_arn else "AES256",
            kms_master_key_id=kms_key_arn,
        )
        encryption_config = aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-data-encryption",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketServerSideEncryptionConfigurationRuleArgs(
                    apply_server_side_encryption_by_default=encryption,
                    # S3 Bucket Keys cut KMS requests (and cost) by ~99%; meaningless for SSE-S3.
                    bucket_key_enabled=bool(kms_key_arn),
                )
            ],
            opts=self._opts(),
        )
        tls_only = aws.s3.BucketPolicy(
            f"{name}-data-tls-only",
            bucket=bucket.id,
            policy=pulumi.Output.all(self._account, bucket.bucket).apply(
                lambda values: json.dumps(
                    bucket_tls_only_policy(cast(Account, values[0]).partition, values[1])
                )
            ),
            # A bucket policy is refused while the public access block is still being applied.
            opts=self._opts(depends_on=[access_block]),
        )
        return bucket, [access_block, ownership, encryption_config, tls_only]

    def _upload_dataset(
        self, bucket: aws.s3.Bucket, depends_on: Sequence[pulumi.Resource]
    ) -> list[aws.s3.BucketObjectv2]:
        """One object per staged file; `source_hash` makes a content change (and only that) re-upload.

        Uploads wait for the bucket's settings: an object written before the KMS default encryption
        is in place would stay encrypted with S3's own key.
        """
        uploads = []
        for staged in self._args.staged_files:
            uploads.append(
                aws.s3.BucketObjectv2(
                    # One logical name per key: a key that stays is never replaced, only updated.
                    f"{self._name}-s3-{staged.key.rsplit('/', 1)[-1].removesuffix('.csv')}",
                    bucket=bucket.id,
                    key=f"{self._data_prefix}/{staged.key}",
                    source=pulumi.FileAsset(str(staged.path)),
                    # etag is an MD5 only without SSE-KMS and multipart uploads; source_hash works always.
                    source_hash=staged.sha256,
                    content_type=CSV_CONTENT_TYPE,
                    opts=self._opts(depends_on=list(depends_on)),
                )
            )
        return uploads

    def _execution_role(self, suffix: str, description: str) -> aws.iam.Role:
        return aws.iam.Role(
            f"{self._name}-{suffix}",
            description=description,
            assume_role_policy=self._account_id.apply(
                lambda account_id: json.dumps(service_trust_policy("sagemaker.amazonaws.com", account_id))
            ),
            opts=self._opts(),
        )

    def _image_repository_arn(self, account: Account) -> str:
        return parse_image_uri(self._args.training_image).repository_arn(account.partition)

    def _training_role(self, bucket: aws.s3.Bucket) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        args = self._args
        role = self._execution_role("training", "mnist-platform: SageMaker training job execution role")
        policy = aws.iam.RolePolicy(
            f"{self._name}-training-access",
            role=role.id,
            policy=pulumi.Output.all(self._account, bucket.bucket).apply(
                lambda values: json.dumps(
                    training_role_policy(
                        account=values[0],
                        bucket=values[1],
                        data_prefixes=(
                            f"{self._data_prefix}/{TRAIN_CHANNEL}",
                            f"{self._data_prefix}/{VALIDATION_CHANNEL}",
                        ),
                        output_prefix=OUTPUT_PREFIX,
                        # With tuning, SageMaker names the trials after the tuning job.
                        job_name_prefix=self._tuning_prefix if args.tuning else self._job_prefix,
                        image_repository_arn=self._image_repository_arn(values[0]),
                        kms_key_arn=args.kms_key_arn,
                    )
                )
            ),
            opts=self._opts(),
        )
        return role, policy

    def _training_job(
        self, bucket: aws.s3.Bucket, role: aws.iam.Role, depends_on: Sequence[pulumi.Resource]
    ) -> aws.sagemaker.TrainingJob:
        args = self._args
        channels = self._channels()
        resources = {
            "instance_type": args.training_instance_type,
            "instance_count": args.training_instance_count,
            "volume_size_in_gb": TRAINING_VOLUME_GB,
        }
        spec = {
            "image": args.training_image,
            "hyperparameters": dict(args.hyperparameters),
            "data": {f.key: f.sha256 for f in args.staged_files},
            "channels": channels,
            "resources": resources,
            "max_runtime_seconds": args.max_runtime_seconds,
            "kms_key_arn": args.kms_key_arn,
            "network_isolation": True,
        }
        # Role and bucket are in the hash too: a job whose role or bucket changed is a new job, and a new
        # job needs a new name (every TrainingJob argument forces replacement; names are unique).
        base_name = pulumi.Output.all(role.arn, bucket.bucket).apply(
            lambda values: sagemaker_name(
                self._job_prefix,
                content_hash({**spec, "role": values[0], "bucket": values[1]}, JOB_DIGEST_LENGTH),
            )
        )
        # The name actually used: the base, or `<base>-r<n>` when a job under it failed (the provider keeps
        # no state for a failed job, so the same name would collide on the next `up`).
        attempt = TrainingJobAttempt(
            f"{self._name}-training-attempt", base_name, args.region, pulumi.ResourceOptions(parent=self)
        )
        create_timeout = f"{args.max_runtime_seconds // 60 + TRAINING_PROVISIONING_SLACK_MINUTES}m"
        return aws.sagemaker.TrainingJob(
            f"{self._name}-training",
            training_job_name=attempt.job_name,
            role_arn=role.arn,
            algorithm_specification={"training_image": args.training_image, "training_input_mode": "File"},
            hyper_parameters=dict(args.hyperparameters),
            input_data_configs=self._input_data_configs(bucket, channels),
            output_data_config=aws.sagemaker.TrainingJobOutputDataConfigArgs(
                s3_output_path=bucket.bucket.apply(lambda b: s3_uri(b, OUTPUT_PREFIX)),
                kms_key_id=args.kms_key_arn,
            ),
            resource_config=aws.sagemaker.TrainingJobResourceConfigArgs(
                instance_type=args.training_instance_type,
                instance_count=args.training_instance_count,
                volume_size_in_gb=TRAINING_VOLUME_GB,
                volume_kms_key_id=args.kms_key_arn,
            ),
            stopping_condition={"max_runtime_in_seconds": args.max_runtime_seconds},
            # The built-in algorithm needs no network: SageMaker moves the data and the model itself.
            enable_network_isolation=True,
            timeouts={"create": create_timeout, "delete": "30m"},
            opts=self._opts(
                depends_on=list(depends_on),
                custom_timeouts=pulumi.CustomTimeouts(create=create_timeout, delete="30m"),
            ),
        )

    def _channels(self) -> dict[str, str]:
        """Each channel's S3 data distribution."""
        sharded = self._args.training_instance_count > 1
        return {
            # ShardedByS3Key gives each instance its own train files (one shard per instance was staged);
            # every instance evaluates on the whole validation set.
            TRAIN_CHANNEL: "ShardedByS3Key" if sharded else "FullyReplicated",
            VALIDATION_CHANNEL: "FullyReplicated",
        }

    def _input_data_configs(self, bucket: aws.s3.Bucket, channels: Mapping[str, str]) -> list[Any]:
        return [
            {
                "channel_name": channel,
                "content_type": CSV_CONTENT_TYPE,
                "data_source": {
                    "s3_data_source": {
                        "s3_data_type": "S3Prefix",
                        "s3_uri": bucket.bucket.apply(
                            lambda b, c=channel: s3_uri(b, self._data_prefix, c, "")
                        ),
                        "s3_data_distribution_type": distribution,
                    }
                },
            }
            for channel, distribution in channels.items()
        ]

    def _tuning_job(
        self,
        tuning: ModelTuning,
        bucket: aws.s3.Bucket,
        role: aws.iam.Role,
        depends_on: Sequence[pulumi.Resource],
    ) -> SageMakerTuningResult:
        """A SageMaker hyperparameter tuning job whose every trial is the stack's training job with other
        hyperparameters, and the resource that waits for it and reads its best trial."""
        args = self._args
        channels = self._channels()
        config = tuning_job_config(tuning, TUNABLE_HYPERPARAMETERS[Framework.XGBOOST])
        static = static_hyperparameters(args.hyperparameters, tuning)
        resources = {
            "instance_type": args.training_instance_type,
            "instance_count": args.training_instance_count,
            "volume_size_in_gb": TRAINING_VOLUME_GB,
            "volume_kms_key_id": args.kms_key_arn,
        }
        spec = {
            "image": args.training_image,
            "static_hyperparameters": static,
            "config": config,
            "data": {f.key: f.sha256 for f in args.staged_files},
            "channels": channels,
            "resources": resources,
            "max_runtime_seconds": args.max_runtime_seconds,
            "kms_key_arn": args.kms_key_arn,
            "network_isolation": True,
        }
        # As a training job's: every argument forces a replacement and names are unique, so the name is a
        # hash of everything the tuning job is made of.
        name = pulumi.Output.all(role.arn, bucket.bucket).apply(
            lambda values: (
                f"{self._tuning_prefix}-"
                + content_hash({**spec, "role": values[0], "bucket": values[1]}, TUNING_DIGEST_LENGTH)
            )
        )
        job = aws.sagemaker.HyperParameterTuningJob(
            f"{self._name}-tuning",
            name=name,
            config=aws.sagemaker.HyperParameterTuningJobConfigArgs(**config),
            training_job_definition=aws.sagemaker.HyperParameterTuningJobTrainingJobDefinitionArgs(
                role_arn=role.arn,
                algorithm_specification=aws.sagemaker.HyperParameterTuningJobTrainingJobDefinitionAlgorithmSpecificationArgs(
                    training_image=args.training_image, training_input_mode="File"
                ),
                static_hyper_parameters=static,
                input_data_configs=self._input_data_configs(bucket, channels),
                output_data_config=aws.sagemaker.HyperParameterTuningJobTrainingJobDefinitionOutputDataConfigArgs(
                    s3_output_path=bucket.bucket.apply(lambda b: s3_uri(b, OUTPUT_PREFIX)),
                    kms_key_id=args.kms_key_arn,
                ),
                resource_config=aws.sagemaker.HyperParameterTuningJobTrainingJobDefinitionResourceConfigArgs(
                    instance_type=args.training_instance_type,
                    instance_count=args.training_instance_count,
                    volume_size_in_gb=TRAINING_VOLUME_GB,
                    volume_kms_key_id=args.kms_key_arn,
                ),
                stopping_condition=aws.sagemaker.HyperParameterTuningJobTrainingJobDefinitionStoppingConditionArgs(
                    max_runtime_in_seconds=args.max_runtime_seconds
                ),
                # The built-in algorithm needs no network: SageMaker moves the data and the model itself.
                enable_network_isolation=True,
            ),
            opts=self._opts(depends_on=list(depends_on)),
        )
        return SageMakerTuningResult(
            f"{self._name}-tuning-result",
            job.name,
            args.region,
            tuning_budget_seconds(tuning, args.max_runtime_seconds),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[job]),
        )

    def _public_api(self, serving: SageMakerEndpoint) -> PublicPredictApi:
        return PublicPredictApi(
            f"{self._name}-api",
            PublicPredictApiArgs(
                provider=self.provider,
                endpoint_name=serving.endpoint_name,
                endpoint_arn=serving.endpoint_arn,
                account_id=self._account_id,
                anonymous=self._args.public_api is PublicApi.OPEN,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )


def _endpoint_entry(name: str, region: str, url: str | None, public_api: PublicApi) -> dict[str, str]:
    entry = {"flavor": "sagemaker", "name": name, "region": region}
    if url:
        # The API speaks the SageMaker runtime path, so sagemaker-runtime clients can use it as endpoint_url;
        # `auth` tells them whether to sign (SigV4 for execute-api) or not.
        entry["url"] = url
        entry["auth"] = "iam" if public_api is PublicApi.IAM else "none"
    return entry

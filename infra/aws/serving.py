"""Serving on SageMaker: the hosting role, model, endpoint configuration and endpoint of one artifact,
with autoscaling and alarms.

Immutable configurations without failed updates (docs/aws.md, "Serving"): the model and the endpoint
configuration carry no fixed name, so every replacement gets a new generated name and is created
next to the old one (create-before-delete, stated explicitly below); the endpoint is updated in place
to the new configuration (UpdateEndpoint, a blue/green switch), and the old configuration and model
are deleted only at the end of the update. That is the design that avoids terraform-provider-aws
#21811 (a fixed-name configuration replaced delete-first) and #40048 (the old configuration deleted
before the endpoint used the new one).

The endpoint's own name is `<prefix>-<random suffix>`, the suffix kept while the instance type stays
(infra/aws/unique_suffix.py): SageMaker refuses an UpdateEndpoint that changes the instance type of a
variant registered with Application Auto Scaling, so a new instance type gets a new endpoint (created
first, the old one removed last) instead of a failed update; and because the suffix is random, neither
a redeploy after `destroy` nor a switch back to an earlier instance type reuses a name whose log group
SageMaker may have recreated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.aws.endpoint_check import EndpointUpdateCheck
from infra.aws.iam import ENDPOINT_LOG_GROUP_PREFIX, Account, hosting_role_policy, service_trust_policy
from infra.aws.names import parse_image_uri, sagemaker_name
from infra.aws.unique_suffix import SUFFIX_BYTES, UniqueSuffix
from infra.settings import PROJECT, RolloutSettings
from serving.constants import SAGEMAKER_DEPLOYED_INFERENCE_OUTPUT, SAGEMAKER_INFERENCE_OUTPUT_ENV

VARIANT_NAME = "AllTraffic"
ENDPOINT_DIGEST_LENGTH = 2 * SUFFIX_BYTES  # hex characters of the endpoint name's random suffix
ENDPOINT_LOG_RETENTION_DAYS = 30
# Target tracking on SageMakerVariantInvocationsPerInstance (invocations per instance per minute):
# ~10 requests/s per ml.m5.large, half of what a single small XGBoost model serves comfortably.
INVOCATIONS_PER_INSTANCE_TARGET = 600.0
SCALE_IN_COOLDOWN_SECONDS = 300
SCALE_OUT_COOLDOWN_SECONDS = 60
# Alarms: any 5xx in five minutes; p90 model latency above half a second (ModelLatency is in µs).
MODEL_LATENCY_P90_THRESHOLD_MICROSECONDS = 500_000.0
ALARM_PERIOD_SECONDS = 300
SAGEMAKER_METRICS_NAMESPACE = "AWS/SageMaker"
# With `rollout`: one-minute periods, so that an alarm can fire within a canary's bake.
CANARY_ALARM_PERIOD_SECONDS = 60
# SageMaker's bounds (botocore: WaitIntervalInSeconds 0..3600, MaximumExecutionTimeoutInSeconds 600..28800).
MAX_CANARY_WAIT_SECONDS = 3600
MIN_EXECUTION_TIMEOUT_SECONDS = 600
MAX_EXECUTION_TIMEOUT_SECONDS = 28800
# Starting the new fleet (instances, image, model) before the canary step: generous, an estimate.
FLEET_START_ALLOWANCE_SECONDS = 1800


@dataclass
class SageMakerEndpointArgs:
    """One trained artifact to serve, and how."""

    provider: aws.Provider
    """The stack's AWS provider (region and default tags)."""
    account: pulumi.Input[Account]
    """Partition, region and account id, for the role policy's ARNs and trust condition."""
    bucket: pulumi.Input[str]
    """The bucket holding the training jobs' output."""
    output_prefix: str
    """Where in the bucket the training jobs write (`output`)."""
    job_name_prefix: str
    """Every training job of the stack is `<job_name_prefix>-<hash>`: what the role may read from."""
    endpoint_name_prefix: str
    """The endpoint is `<endpoint_name_prefix>-<random suffix, new per deployment and instance type>`."""
    image: str
    """The serving image (the built-in XGBoost image serves what it trained)."""
    artifact: pulumi.Input[str]
    """`s3://…/model.tar.gz` of the training job."""
    training_job: pulumi.Resource
    """What provides `artifact` (the champion gate): the model is created only once it has decided."""
    instance_type: str = "ml.m5.large"
    """Instance type of the production variant."""
    min_instances: int = 1
    """Autoscaling lower bound and the variant's initial instance count."""
    max_instances: int = 2
    """Autoscaling upper bound."""
    kms_key_arn: str | None = None
    """Customer KMS key for the artifact and the endpoint's storage volume."""
    rollout: RolloutSettings | None = None
    """Canary rollout, rolled back automatically on the alarms (`rollout`); None: all at once."""
    champion_prefix: str = "champions"
    """Where the champion gate keeps what is served: the only artifacts the hosting role may read, and
    where the endpoint check removes the copies the endpoint no longer serves."""


class SageMakerEndpoint(pulumi.ComponentResource):
    """Model -> endpoint configuration -> endpoint, autoscaled, with 5xx and latency alarms."""

    endpoint_name: pulumi.Output[str]
    endpoint_arn: pulumi.Output[str]
    model_name: pulumi.Output[str]

    def __init__(
        self, name: str, args: SageMakerEndpointArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mnist-platform:aws:SageMakerEndpoint", name, None, opts)
        self._name = name
        self._args = args
        role, policy = self._hosting_role()
        self.hosting_role_name = role.name  # a batch transform job runs with the model's role too
        # `artifact` resolves only once the job resource is created, i.e. after the training finished.
        model = aws.sagemaker.Model(
            f"{name}-model",
            execution_role_arn=role.arn,
            primary_container=aws.sagemaker.ModelPrimaryContainerArgs(
                image=args.image,
                model_data_url=args.artifact,
                mode="SingleModel",
                # Selectable inference content of the built-in container: `Accept: application/json`
                # returns {"predictions": [{"probabilities": [10]}]}, text/csv one quoted list per line
                # (serving/payloads.py has both modes byte for byte; the local stack sets the same).
                environment={SAGEMAKER_INFERENCE_OUTPUT_ENV: SAGEMAKER_DEPLOYED_INFERENCE_OUTPUT},
            ),
            # The built-in algorithm's server needs no network: SageMaker downloads the model itself.
            enable_network_isolation=True,
            # No `name` (generated, so a replacement never collides); created before the old is deleted.
            # Retained: Pulumi would delete a replaced model even when SageMaker rolled the endpoint back
            # onto it; the EndpointUpdateCheck below removes it once the endpoint serves the new one.
            opts=self._opts(
                depends_on=[policy, args.training_job], delete_before_replace=False, retain_on_delete=True
            ),
        )
        config = aws.sagemaker.EndpointConfiguration(
            f"{name}-endpoint-config",
            production_variants=[
                aws.sagemaker.EndpointConfigurationProductionVariantArgs(
                    variant_name=VARIANT_NAME,
                    model_name=model.name,
                    instance_type=args.instance_type,
                    initial_instance_count=args.min_instances,
                    initial_variant_weight=1.0,
                )
            ],
            kms_key_arn=args.kms_key_arn,
            # No `name`: each replacement gets a fresh generated name, is created before the endpoint
            # switches to it, and the old one is deleted last (tf-provider-aws #21811, #40048), by the
            # EndpointUpdateCheck and only once the endpoint serves the new one (retained by Pulumi: a
            # rolled-back update leaves the endpoint on the old one, #48997).
            opts=self._opts(delete_before_replace=False, retain_on_delete=True),
        )
        suffix = UniqueSuffix(
            f"{name}-endpoint-suffix",
            keepers={"instance_type": args.instance_type},
            opts=pulumi.ResourceOptions(parent=self),
        )
        endpoint_name = suffix.suffix.apply(lambda s: sagemaker_name(args.endpoint_name_prefix, s))
        # Created before the endpoint so that the stack owns it (retention, tags, deleted on destroy).
        # CloudWatch Logs' own encryption: a customer key here would need a key policy for the logs service.
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-endpoint-logs",
            name=endpoint_name.apply(lambda n: f"{ENDPOINT_LOG_GROUP_PREFIX}/{n}"),
            retention_in_days=ENDPOINT_LOG_RETENTION_DAYS,
            opts=self._opts(),
        )
        # The alarms watch the endpoint by the name it will have, so they exist before it and its
        # deployment guardrails can roll an update back on them.
        alarms = self._alarms(endpoint_name)
        endpoint = aws.sagemaker.Endpoint(
            f"{name}-endpoint",
            name=endpoint_name,
            endpoint_config_name=config.name,
            deployment_config=canary_deployment(args.rollout, alarms) if args.rollout else None,
            opts=self._opts(depends_on=[log_group]),
        )
        # What SageMaker really serves after the update; then, and only then, what it replaced is removed.
        self.check = EndpointUpdateCheck(
            f"{name}-endpoint-check",
            region=pulumi.Output.from_input(args.account).apply(lambda a: a.region),
            endpoint_name=endpoint.name,
            endpoint_config_name=config.name,
            model_name=model.name,
            champion_artifact=args.artifact,
            bucket=args.bucket,
            champion_prefix=f"{args.champion_prefix}/",
            # Pulumi's generated names are `<logical name>-<random>`; the tags tell this stack's apart.
            config_name_prefix=f"{name}-endpoint-config-",
            model_name_prefix=f"{name}-model-",
            stack_tags={"project": PROJECT, "stack": pulumi.get_stack()},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[endpoint]),
        )
        self._autoscaling(endpoint)

        self.endpoint_name = endpoint.name
        self.endpoint_arn = endpoint.arn
        self.model_name = model.name
        self.register_outputs(
            {
                "endpoint_name": self.endpoint_name,
                "endpoint_arn": self.endpoint_arn,
                "model_name": self.model_name,
            }
        )

    def _opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Child options: parented to the component, on the stack's provider."""
        return pulumi.ResourceOptions(parent=self, provider=self._args.provider, **kwargs)

    def _hosting_role(self) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
        args = self._args
        account = pulumi.Output.from_input(args.account)
        role = aws.iam.Role(
            f"{self._name}-hosting",
            description="mnist-platform: SageMaker model (endpoint) execution role",
            assume_role_policy=account.apply(
                lambda a: json.dumps(service_trust_policy("sagemaker.amazonaws.com", a.account_id))
            ),
            opts=self._opts(),
        )
        policy = aws.iam.RolePolicy(
            f"{self._name}-hosting-access",
            role=role.id,
            policy=pulumi.Output.all(account, args.bucket).apply(
                lambda values: json.dumps(
                    hosting_role_policy(
                        account=values[0],
                        bucket=values[1],
                        output_prefix=args.output_prefix,
                        job_name_prefix=args.job_name_prefix,
                        endpoint_name_prefix=args.endpoint_name_prefix,
                        image_repository_arn=_repository_arn(args.image, values[0]),
                        kms_key_arn=args.kms_key_arn,
                        champion_prefix=args.champion_prefix,
                        rollback_alarm_prefix=self._name if args.rollout else None,
                    )
                )
            ),
            opts=self._opts(),
        )
        return role, policy

    def _autoscaling(self, endpoint: aws.sagemaker.Endpoint) -> None:
        args = self._args
        target = aws.appautoscaling.Target(
            f"{self._name}-scaling-target",
            service_namespace="sagemaker",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            resource_id=endpoint.name.apply(lambda n: f"endpoint/{n}/variant/{VARIANT_NAME}"),
            min_capacity=args.min_instances,
            max_capacity=args.max_instances,
            opts=self._opts(),
        )
        aws.appautoscaling.Policy(
            f"{self._name}-scaling-policy",
            policy_type="TargetTrackingScaling",
            service_namespace=target.service_namespace,
            scalable_dimension=target.scalable_dimension,
            resource_id=target.resource_id,
            target_tracking_scaling_policy_configuration={
                "target_value": INVOCATIONS_PER_INSTANCE_TARGET,
                "predefined_metric_specification": {
                    "predefined_metric_type": "SageMakerVariantInvocationsPerInstance"
                },
                "scale_in_cooldown": SCALE_IN_COOLDOWN_SECONDS,
                "scale_out_cooldown": SCALE_OUT_COOLDOWN_SECONDS,
            },
            opts=self._opts(),
        )

    def _alarms(self, endpoint_name: pulumi.Output[str]) -> list[aws.cloudwatch.MetricAlarm]:
        """5xx errors and p90 model latency of the variant. Without `rollout`: any 5xx in five minutes,
        latency in 2 of 3 five-minute periods (for a person to look at). With it, one-minute periods, so
        that they can fire within a canary's bake: the 5xx alarm on the error *rate* above maxErrorRate."""
        rollout = self._args.rollout
        dimensions = endpoint_name.apply(lambda n: {"EndpointName": n, "VariantName": VARIANT_NAME})
        period = CANARY_ALARM_PERIOD_SECONDS if rollout else ALARM_PERIOD_SECONDS
        if rollout is None:
            errors = aws.cloudwatch.MetricAlarm(
                f"{self._name}-5xx-errors",
                alarm_description="The MNIST endpoint answered with 5xx errors (model or container failures)",
                namespace=SAGEMAKER_METRICS_NAMESPACE,
                metric_name="Invocation5XXErrors",
                dimensions=dimensions,
                statistic="Sum",
                period=period,
                evaluation_periods=1,
                threshold=1.0,
                comparison_operator="GreaterThanOrEqualToThreshold",
                treat_missing_data="notBreaching",
                opts=self._opts(),
            )
        else:

            def metric(metric_name: str) -> aws.cloudwatch.MetricAlarmMetricQueryMetricArgs:
                return aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace=SAGEMAKER_METRICS_NAMESPACE,
                    metric_name=metric_name,
                    dimensions=dimensions,
                    period=period,
                    stat="Sum",
                )

            errors = aws.cloudwatch.MetricAlarm(
                f"{self._name}-5xx-errors",
                alarm_description=(
                    f"More than {rollout.max_error_rate:.2%} of the MNIST endpoint's answers in a minute "
                    "were 5xx errors: rolls a canary update back (rollout.maxErrorRate)"
                ),
                metric_queries=[
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="errors", metric=metric("Invocation5XXErrors"), return_data=False
                    ),
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="invocations", metric=metric("Invocations"), return_data=False
                    ),
                    aws.cloudwatch.MetricAlarmMetricQueryArgs(
                        id="error_rate",
                        expression="IF(invocations > 0, errors / invocations, 0)",
                        label="5xx share of invocations",
                        return_data=True,
                    ),
                ],
                evaluation_periods=1,
                threshold=rollout.max_error_rate,
                comparison_operator="GreaterThanThreshold",
                treat_missing_data="notBreaching",
                opts=self._opts(),
            )
        latency = aws.cloudwatch.MetricAlarm(
            f"{self._name}-model-latency",
            alarm_description="p90 model latency of the MNIST endpoint is above 0.5 s",
            namespace=SAGEMAKER_METRICS_NAMESPACE,
            metric_name="ModelLatency",
            dimensions=dimensions,
            extended_statistic="p90",
            period=period,
            evaluation_periods=3,
            datapoints_to_alarm=2,
            threshold=MODEL_LATENCY_P90_THRESHOLD_MICROSECONDS,
            comparison_operator="GreaterThanThreshold",
            treat_missing_data="notBreaching",
            opts=self._opts(),
        )
        return [errors, latency]


def canary_deployment(
    rollout: RolloutSettings, alarms: list[aws.cloudwatch.MetricAlarm]
) -> aws.sagemaker.EndpointDeploymentConfigArgs:
    """SageMaker's deployment guardrails for `rollout`: blue/green with a canary step of canaryPercent of the
    new fleet's capacity, baked for bakeMinutes, rolled back automatically when one of `alarms` fires."""
    bake = canary_bake_seconds(rollout)
    return aws.sagemaker.EndpointDeploymentConfigArgs(
        blue_green_update_policy=aws.sagemaker.EndpointDeploymentConfigBlueGreenUpdatePolicyArgs(
            traffic_routing_configuration=aws.sagemaker.EndpointDeploymentConfigBlueGreenUpdatePolicyTrafficRoutingConfigurationArgs(
                type="CANARY",
                canary_size=aws.sagemaker.EndpointDeploymentConfigBlueGreenUpdatePolicyTrafficRoutingConfigurationCanarySizeArgs(
                    type="CAPACITY_PERCENT", value=rollout.canary_percent
                ),
                wait_interval_in_seconds=bake,
            ),
            # The old fleet goes as soon as all traffic has moved: the canary's bake is the watch.
            termination_wait_in_seconds=0,
            # Room for the new fleet to start and the bake, within SageMaker's 600..28800 s.
            maximum_execution_timeout_in_seconds=min(
                max(bake + FLEET_START_ALLOWANCE_SECONDS, MIN_EXECUTION_TIMEOUT_SECONDS),
                MAX_EXECUTION_TIMEOUT_SECONDS,
            ),
        ),
        auto_rollback_configuration=aws.sagemaker.EndpointDeploymentConfigAutoRollbackConfigurationArgs(
            alarms=[
                aws.sagemaker.EndpointDeploymentConfigAutoRollbackConfigurationAlarmArgs(
                    alarm_name=alarm.name
                )
                for alarm in alarms
            ]
        ),
    )


def canary_bake_seconds(rollout: RolloutSettings) -> int:
    """bakeMinutes as SageMaker's WaitIntervalInSeconds (0..3600); a longer bake is refused, naming the key.
    minLiveAccuracy is not judged on aws (the guardrails watch CloudWatch alarms only): a warning says so."""
    if rollout.min_live_accuracy > 0:
        pulumi.log.warn(
            f"config mnist-platform:rollout.minLiveAccuracy ({rollout.min_live_accuracy:g}) is not judged on "
            "aws: SageMaker's deployment guardrails roll a canary back on the 5xx and latency alarms only"
        )
    bake = round(rollout.bake_minutes * 60)
    if bake > MAX_CANARY_WAIT_SECONDS:
        raise ValueError(
            f"config mnist-platform:rollout.bakeMinutes: {rollout.bake_minutes:g} is more than SageMaker's "
            f"canary wait allows on aws (at most {MAX_CANARY_WAIT_SECONDS // 60} minutes)"
        )
    return bake


def _repository_arn(image: str, account: Account) -> str:
    return parse_image_uri(image).repository_arn(account.partition)

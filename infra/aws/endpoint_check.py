"""After an endpoint update, what SageMaker really serves; only then, the removal of what it served before.

terraform-provider-aws's endpoint update calls UpdateEndpoint and waits for `InService`. When SageMaker
rolls the update back (the new model fails its health check, a canary alarm fires, capacity runs out),
the endpoint returns to `InService` on its *old* configuration, `FailureReason` sometimes empty, and the
provider reports success (hashicorp/terraform-provider-aws#48997, #46663). The model and configuration are
replaced create-before-delete, so Pulumi would then delete the old configuration and model, which the
endpoint still runs on; a failed `up` does not save them either, since Pulumi deletes a failed update's
replaced resources first thing in the next `up` (its "pending deletes"). And the champion gate would
delete the retired champion's copy, the artifact the endpoint really serves, at the next promotion.

So the stack never lets Pulumi or the gate delete those, and this resource does it instead, once it has
seen the truth:

- the Model and EndpointConfiguration are declared `retain_on_delete` (infra/aws/serving.py): a replaced
  one leaves Pulumi's state without a DeleteModel/DeleteEndpointConfig;
- the aws gate keeps every champion copy (infra/aws/gate.py, `discards_retired_on_promotion = False`);
- this resource depends on the endpoint. Its create and update read DescribeEndpoint (waiting while the
  endpoint is Creating/Updating/SystemUpdating/RollingBack) and fail `pulumi up` with SageMaker's status and
  FailureReason unless the endpoint is `InService` on the configuration just declared. Only when it is, they
  delete the stack's other endpoint configurations and models (found by name prefix and the stack's
  `project`/`stack` tags, so a configuration of a rolled-back update, which Pulumi already forgot, is found
  too) and every champion copy but the one the served model reads (DescribeModel's ModelDataUrl);
- its diff also asks SageMaker on every preview and `up`: an endpoint found on another configuration is a
  change, so the update runs, fails again and says why, until the cause is fixed;
- delete (destroy, or the resource leaving the program) removes the stack's configurations and models,
  which Pulumi retains; the gate's delete and the bucket's force_destroy remove the copies.

Nothing here creates anything: an interrupted create or update leaves nothing to adopt, and is simply run
again by the next `up` (its deletes treat "already gone" as done). It runs in the engine with the deploying
identity: DEPLOYER_ACTIONS below (docs/aws.md, deployer policy).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.aws.gate import NOT_FOUND_CODES, split_s3_uri, with_retries
from infra.dynamic import changed_keys, log, state_of

# What the provider calls with the deploying identity (docs/aws.md's deployer policy grants them).
DEPLOYER_ACTIONS = (
    "sagemaker:DescribeEndpoint",
    "sagemaker:DescribeEndpointConfig",
    "sagemaker:DescribeModel",
    "sagemaker:ListEndpointConfigs",
    "sagemaker:ListModels",
    "sagemaker:ListTags",
    "sagemaker:DeleteEndpointConfig",
    "sagemaker:DeleteModel",
    "s3:ListBucket",
    "s3:DeleteObject",
)
IN_SERVICE = "InService"
# Statuses an endpoint passes through on its way to a verdict: worth waiting for.
TRANSITIONAL = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack"})
POLL_SECONDS = 15.0
DEFAULT_WAIT_SECONDS = 3600.0
INPUT_KEYS = (
    "region",
    "endpoint_name",
    "endpoint_config_name",
    "model_name",
    "champion_artifact",
    "bucket",
    "champion_prefix",
    "config_name_prefix",
    "model_name_prefix",
    "stack_tags",
)


class EndpointUpdateError(Exception):
    """The endpoint does not serve what the stack declared; the message says what it serves and why."""


def sagemaker_client(region: str) -> Any:
    """A SageMaker control-plane client (tests may replace this)."""
    import boto3

    return boto3.client("sagemaker", region_name=region)


def s3_client(region: str) -> Any:
    import boto3

    return boto3.client("s3", region_name=region)


def _code(error: BaseException) -> str:
    return str((getattr(error, "response", None) or {}).get("Error", {}).get("Code", ""))


def _is_not_found(error: BaseException) -> bool:
    message = str((getattr(error, "response", None) or {}).get("Error", {}).get("Message", "")).lower()
    return _code(error) in NOT_FOUND_CODES or (
        _code(error) in {"ValidationException", "ResourceNotFound"} and "could not find" in message
    )


def served(props: Mapping[str, Any]) -> dict[str, Any]:
    """DescribeEndpoint once the endpoint has left its transitional states (or the wait ran out)."""
    sagemaker = sagemaker_client(str(props["region"]))
    name = str(props["endpoint_name"])
    deadline = time.monotonic() + DEFAULT_WAIT_SECONDS
    while True:
        endpoint = with_retries(lambda: sagemaker.describe_endpoint(EndpointName=name))
        if endpoint.get("EndpointStatus") not in TRANSITIONAL or time.monotonic() >= deadline:
            return endpoint
        log(f"endpoint {name} is {endpoint['EndpointStatus']}: waiting for SageMaker's verdict")
        time.sleep(POLL_SECONDS)


def verify(props: Mapping[str, Any]) -> dict[str, Any]:
    """The endpoint's description when it is InService on the declared configuration; else the error."""
    endpoint = served(props)
    name, declared = str(props["endpoint_name"]), str(props["endpoint_config_name"])
    status, actual = endpoint.get("EndpointStatus"), endpoint.get("EndpointConfigName")
    if status == IN_SERVICE and actual == declared:
        return endpoint
    reason = endpoint.get("FailureReason") or (
        "SageMaker gave no FailureReason (it may clear it after a rollback): see the endpoint's events "
        f"and the log group /aws/sagemaker/Endpoints/{name}"
    )
    kept = (
        f" The configuration it serves ({actual}), its model and its champion copy are kept; nothing the "
        "endpoint uses is deleted."
        if actual and actual != declared
        else ""
    )
    raise EndpointUpdateError(
        f"endpoint {name} does not serve the new configuration {declared}: SageMaker reports it {status} "
        f"on {actual}. Reason: {reason}.{kept} If SageMaker rolled the update back, the new model did not "
        "take: fix the cause (the model, the instance quota, a canary alarm), then run `pulumi up --refresh` "
        "so that Pulumi sees the configuration really served and updates the endpoint again."
    )


def _tags(sagemaker: Any, arn: str) -> dict[str, str]:
    answer = with_retries(lambda: sagemaker.list_tags(ResourceArn=arn))
    return {tag["Key"]: tag["Value"] for tag in answer.get("Tags") or []}


def _stack_owned(sagemaker: Any, kind: str, prefix: str, stack_tags: Mapping[str, str]) -> list[str]:
    """The endpoint configurations or models (`kind`) whose name starts with `prefix` (Pulumi's generated
    names are `<logical name>-<random>`) and that carry the stack's tags (another stack's have the same
    logical names)."""
    operation, key = {
        "EndpointConfig": ("list_endpoint_configs", "EndpointConfigs"),
        "Model": ("list_models", "Models"),
    }[kind]
    paginator = sagemaker.get_paginator(operation)
    pages = with_retries(lambda: list(paginator.paginate(NameContains=prefix)))
    owned = []
    for summary in [item for page in pages for item in page.get(key) or []]:
        name = str(summary[f"{kind}Name"])
        tags = _tags(sagemaker, str(summary[f"{kind}Arn"]))
        if name.startswith(prefix) and dict(stack_tags).items() <= tags.items():
            owned.append(name)
    return owned


def remove_superseded(props: Mapping[str, Any], keep_config: str | None, keep_model: str | None) -> None:
    """Delete the stack's endpoint configurations and models but the ones kept (None: keep none)."""
    from botocore.exceptions import ClientError

    sagemaker = sagemaker_client(str(props["region"]))
    stack_tags = dict(props.get("stack_tags") or {})
    for name in _stack_owned(sagemaker, "EndpointConfig", str(props["config_name_prefix"]), stack_tags):
        if name != keep_config:
            log(f"removing endpoint configuration {name}: the endpoint no longer uses it")
            try:
                with_retries(lambda n=name: sagemaker.delete_endpoint_config(EndpointConfigName=n))
            except ClientError as error:
                if not _is_not_found(error):
                    raise
    for name in _stack_owned(sagemaker, "Model", str(props["model_name_prefix"]), stack_tags):
        if name != keep_model:
            log(f"removing model {name}: the endpoint no longer serves it")
            try:
                with_retries(lambda n=name: sagemaker.delete_model(ModelName=n))
            except ClientError as error:
                if not _is_not_found(error):
                    raise


def remove_other_champion_copies(props: Mapping[str, Any], keep: Iterable[str]) -> None:
    """Delete every copy under the gate's champion prefix but `keep` (s3:// URIs)."""
    from botocore.exceptions import ClientError

    bucket, prefix = str(props["bucket"]), str(props["champion_prefix"])
    kept_keys = {split_s3_uri(uri)[1] for uri in keep if uri}
    s3 = s3_client(str(props["region"]))
    try:
        pages = with_retries(
            lambda: list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix))
        )
    except ClientError as error:
        if _code(error) == "NoSuchBucket":
            return
        raise
    for key in [item["Key"] for page in pages for item in page.get("Contents") or []]:
        if key not in kept_keys:
            log(f"removing champion copy s3://{bucket}/{key}: the endpoint no longer serves it")
            with_retries(lambda k=key: s3.delete_object(Bucket=bucket, Key=k))


def _served_model(props: Mapping[str, Any], config_name: str) -> tuple[str, str]:
    """The model the configuration runs, and the artifact that model reads."""
    sagemaker = sagemaker_client(str(props["region"]))
    config = with_retries(lambda: sagemaker.describe_endpoint_config(EndpointConfigName=config_name))
    model_name = str(config["ProductionVariants"][0]["ModelName"])
    model = with_retries(lambda: sagemaker.describe_model(ModelName=model_name))
    return model_name, str((model.get("PrimaryContainer") or {}).get("ModelDataUrl") or "")


class EndpointUpdateCheckProvider(ResourceProvider):
    """Fails `up` unless the endpoint serves the declared configuration; then removes what it replaced."""

    serialize_as_secret_always = False

    def _check_and_clean(self, props: dict[str, Any]) -> dict[str, Any]:
        endpoint = verify(props)
        config = str(endpoint["EndpointConfigName"])
        model, artifact = _served_model(props, config)
        remove_superseded(props, keep_config=config, keep_model=model)
        remove_other_champion_copies(props, keep=(artifact, str(props.get("champion_artifact") or "")))
        log(f"endpoint {props['endpoint_name']} serves {config} (model {model}, {artifact})")
        return {
            **state_of(props),
            "served_config": config,
            "served_model": model,
            "served_artifact": artifact,
        }

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props['endpoint_name']}-check", outs=self._check_and_clean(props))

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=self._check_and_clean(news))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changes = bool(changed_keys(olds, news, INPUT_KEYS))
        if not changes:
            # Nothing declared changed: still ask what is served (a rollback after the last `up`).
            from botocore.exceptions import ClientError

            try:
                endpoint = with_retries(
                    lambda: sagemaker_client(str(news["region"])).describe_endpoint(
                        EndpointName=str(news["endpoint_name"])
                    )
                )
            except ClientError as error:
                if not _is_not_found(error):
                    raise
                endpoint = {}
            changes = endpoint.get("EndpointConfigName") != news["endpoint_config_name"]
        # Never replaced: a delete would remove the stack's configurations and models.
        return DiffResult(changes=changes, replaces=[], delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        from botocore.exceptions import ClientError

        try:
            endpoint = sagemaker_client(str(props["region"])).describe_endpoint(
                EndpointName=str(props["endpoint_name"])
            )
        except ClientError as error:
            if _is_not_found(error):
                return ReadResult(None, {})
            raise
        return ReadResult(id_, {**props, "served_config": endpoint.get("EndpointConfigName")})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # The Model and EndpointConfiguration are retained by Pulumi: removing them is this resource's job.
        remove_superseded(props, keep_config=None, keep_model=None)


class EndpointUpdateCheck(pulumi.dynamic.Resource, module="aws", name="EndpointUpdateCheck"):
    """Proves the endpoint serves the declared configuration, then removes the configurations, models and
    champion copies it no longer uses."""

    served_config: pulumi.Output[str]
    served_model: pulumi.Output[str]
    served_artifact: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        region: pulumi.Input[str],
        endpoint_name: pulumi.Input[str],
        endpoint_config_name: pulumi.Input[str],
        model_name: pulumi.Input[str],
        champion_artifact: pulumi.Input[str],
        bucket: pulumi.Input[str],
        champion_prefix: str,
        config_name_prefix: str,
        model_name_prefix: str,
        stack_tags: Mapping[str, str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "region": region,
            "endpoint_name": endpoint_name,
            "endpoint_config_name": endpoint_config_name,
            "model_name": model_name,
            "champion_artifact": champion_artifact,
            "bucket": bucket,
            "champion_prefix": champion_prefix,
            "config_name_prefix": config_name_prefix,
            "model_name_prefix": model_name_prefix,
            "stack_tags": dict(stack_tags),
            "served_config": None,
            "served_model": None,
            "served_artifact": None,
        }
        super().__init__(EndpointUpdateCheckProvider(), name, props, opts)

"""The serving chain's native pulumi-aws resources (Model, EndpointConfiguration, Endpoint) in moto, as
terraform-provider-aws and the Pulumi engine handle them, for stack tests that run the dynamic resources
for real (tests/harness.py ProviderEngine) and so the EndpointUpdateCheck, which reads what SageMaker serves:

- a Model or EndpointConfiguration whose inputs change is replaced create-before-delete under a new generated
  name (`<logical name>-<random>`) with the provider's default tags; the replaced one is deleted at the end of
  a successful update (`finish(succeeded=True)`), and, when the update failed, at the start of the next one
  (`begin()`: Pulumi's pending deletes), unless it is declared `retain_on_delete` (read from the
  registration with `record_retain_on_delete`, as the engine would);
- an Endpoint whose name changes is replaced (created, the old one deleted at the end); one whose
  configuration changes is updated in place (UpdateEndpoint). moto has no UpdateEndpoint,
  so its record of the endpoint is set as SageMaker leaves it: on the new configuration, or, with
  `rollback_reason` set, `InService` on the old one with that FailureReason, while the provider records the
  new one (terraform-provider-aws#48997);
- `refresh()` is `pulumi refresh` of the endpoint: the state learns the configuration really served.

Every other resource goes to `others` (the test's own moto-backed outputs).
"""

from __future__ import annotations

import itertools
from typing import Any

import boto3
import harness
import pytest
from aws_mocks import ACCOUNT, ENDPOINT, ENDPOINT_CONFIG, MODEL, REGION
from harness import NewResource
from moto.sagemaker.models import sagemaker_backends
from pulumi.runtime.mocks import MockResourceArgs

from infra.hashing import content_hash


class NativeResources:
    """The pulumi-aws resources of the serving chain, as the provider and the engine handle them (above)."""

    def __init__(self, others: NewResource) -> None:
        self.others = others
        # logical name -> (hash of its inputs, id, outputs)
        self.state: dict[str, tuple[str, str, dict[str, Any]]] = {}
        self.retained: dict[str, bool] = {}  # logical name -> retain_on_delete, from the registration
        self.replaced: list[tuple[str, str, str]] = []  # (type, logical name, physical name)
        self.pending_deletes: list[tuple[str, str, str]] = []
        self.rollback_reason: str | None = None
        self._serial = itertools.count(1)
        self.sagemaker = boto3.client("sagemaker", region_name=REGION)

    def __call__(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if args.typ not in (MODEL, ENDPOINT_CONFIG, ENDPOINT):
            return self.others(args)
        digest = content_hash(args.inputs)
        recorded = self.state.get(args.name)
        if recorded and recorded[0] == digest:
            return recorded[1], recorded[2]
        if args.typ == ENDPOINT:
            id_, outputs = self._endpoint(args, recorded)
        else:
            if recorded:  # replaced: created beside the old one, which is deleted later (or retained)
                self.replaced.append((args.typ, args.name, recorded[1]))
            id_, outputs = self._create(args)
        self.state[args.name] = (digest, id_, outputs)
        return id_, outputs

    def _tags(self, args: MockResourceArgs) -> list[dict[str, str]]:
        # The stack's provider's default tags (infra/aws/platform.py).
        return [{"Key": "project", "Value": "mnist-platform"}, {"Key": "stack", "Value": "aws"}]

    def _create(self, args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        name = f"{args.name}-{next(self._serial):07x}"
        inputs = args.inputs
        if args.typ == MODEL:
            self.sagemaker.create_model(
                ModelName=name,
                ExecutionRoleArn=inputs["executionRoleArn"],
                PrimaryContainer={
                    "Image": inputs["primaryContainer"]["image"],
                    "ModelDataUrl": inputs["primaryContainer"]["modelDataUrl"],
                },
                Tags=self._tags(args),
            )
            kind = "model"
        else:
            variant = inputs["productionVariants"][0]
            self.sagemaker.create_endpoint_config(
                EndpointConfigName=name,
                ProductionVariants=[
                    {
                        "VariantName": variant["variantName"],
                        "ModelName": variant["modelName"],
                        "InstanceType": variant["instanceType"],
                        "InitialInstanceCount": int(variant["initialInstanceCount"]),
                    }
                ],
                Tags=self._tags(args),
            )
            kind = "endpoint-config"
        return name, {**inputs, "name": name, "arn": f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name}"}

    def _endpoint(
        self, args: MockResourceArgs, recorded: tuple[str, str, dict[str, Any]] | None
    ) -> tuple[str, dict[str, Any]]:
        name, config = args.inputs["name"], args.inputs["endpointConfigName"]
        if recorded is not None and recorded[1] != name:  # a new name replaces the endpoint
            self.replaced.append((args.typ, args.name, recorded[1]))
            recorded = None
        if recorded is None:
            self.sagemaker.create_endpoint(
                EndpointName=name, EndpointConfigName=config, Tags=self._tags(args)
            )
        else:
            live: Any = sagemaker_backends[ACCOUNT][REGION].endpoints[name]  # moto types it None-only
            if self.rollback_reason is None:
                live.endpoint_config_name, live.failure_reason = config, None
            else:  # rolled back: InService on the old configuration; the provider still reports success
                live.endpoint_status, live.failure_reason = "InService", self.rollback_reason
        arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/{name}"
        return name, {**args.inputs, "arn": arn}

    def _delete(self, typ: str, logical: str, physical: str) -> None:
        if self.retained.get(logical):
            return  # retain_on_delete: the engine drops it from the state and calls no delete
        if typ == MODEL:
            self.sagemaker.delete_model(ModelName=physical)
        elif typ == ENDPOINT:
            self.sagemaker.delete_endpoint(EndpointName=physical)
        else:
            self.sagemaker.delete_endpoint_config(EndpointConfigName=physical)

    def begin(self) -> None:
        """The start of an update: what a failed one left pending deletion goes first."""
        for pending in self.pending_deletes:
            self._delete(*pending)
        self.pending_deletes.clear()

    def finish(self, succeeded: bool) -> None:
        if succeeded:
            for replaced in reversed(self.replaced):
                self._delete(*replaced)
        else:
            self.pending_deletes.extend(self.replaced)
        self.replaced.clear()

    def refresh(self) -> None:
        """`pulumi refresh` of the endpoint: its state takes the configuration SageMaker really serves."""
        for logical, (_, id_, outputs) in list(self.state.items()):
            if outputs.get("endpointConfigName"):
                served = self.sagemaker.describe_endpoint(EndpointName=id_)["EndpointConfigName"]
                self.state[logical] = ("refreshed", id_, {**outputs, "endpointConfigName": served})


def record_retain_on_delete(natives: NativeResources, monkeypatch: pytest.MonkeyPatch) -> None:
    """Let `natives` see each registration's `retain_on_delete` (mocks' `new_resource` is not given it)."""
    register = harness.RecordingMonitor.RegisterResource

    def recording(monitor: Any, request: Any) -> Any:
        natives.retained[request.name] = bool(request.retainOnDelete)
        return register(monitor, request)

    monkeypatch.setattr(harness.RecordingMonitor, "RegisterResource", recording)

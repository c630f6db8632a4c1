"""Mocks for the SageMaker stack: plausible outputs (names, ARNs, URLs) for what the program formats.

`run_aws(overrides, data_dir)` runs the real program (`infra/__main__.py`) through `tests.harness`
with the config of `Pulumi.aws.yaml` plus `dataset: mnist-t10k` and `dataDir` (full MNIST is not
available offline), and also keeps which provider each resource was registered with (the engine
would apply that provider's default tags to it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import Resource, StackRun, promoted_gate_outputs, run_stack
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from infra.hashing import content_hash

ACCOUNT = "123456789012"
REGION = "us-east-1"
PARTITION = "aws"
API_ID = "a1b2c3d4e5"

PROVIDER = "pulumi:providers:aws"
BUCKET = "aws:s3/bucket:Bucket"
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
ENCRYPTION = "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration"
BUCKET_POLICY = "aws:s3/bucketPolicy:BucketPolicy"
OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
TRAINING_JOB = "aws:sagemaker/trainingJob:TrainingJob"
TUNING_JOB = "aws:sagemaker/hyperParameterTuningJob:HyperParameterTuningJob"
MODEL = "aws:sagemaker/model:Model"
ENDPOINT_CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
ENDPOINT = "aws:sagemaker/endpoint:Endpoint"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
SCALING_TARGET = "aws:appautoscaling/target:Target"
SCALING_POLICY = "aws:appautoscaling/policy:Policy"
FUNCTION = "aws:lambda/function:Function"
PERMISSION = "aws:lambda/permission:Permission"
HTTP_API = "aws:apigatewayv2/api:Api"
INTEGRATION = "aws:apigatewayv2/integration:Integration"
ROUTE = "aws:apigatewayv2/route:Route"
STAGE = "aws:apigatewayv2/stage:Stage"
COMPONENT = "mnist-platform:aws:SageMakerPlatform"
TRAINING_ATTEMPT = "pulumi-python:dynamic/aws:TrainingJobAttempt"
UNIQUE_SUFFIX = "pulumi-python:dynamic/aws:UniqueSuffix"
GATE = "pulumi-python:dynamic/aws:ChampionGate"
TUNING_RESULT = "pulumi-python:dynamic/aws:TuningJobResult"


def _suffixed(args: MockResourceArgs) -> str:
    """A generated physical name, as the provider's auto-naming would make one."""
    return f"{args.name}-0a1b2c3"


def _outputs(args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
    inputs = dict(args.inputs)
    state = dict(inputs)
    typ = args.typ
    if typ == BUCKET:
        name = inputs.get("bucket") or _suffixed(args)
        state.update(bucket=name, arn=f"arn:aws:s3:::{name}", id=name)
        return name, state
    if typ == ROLE:
        name = inputs.get("name") or _suffixed(args)
        state.update(name=name, arn=f"arn:aws:iam::{ACCOUNT}:role/{name}", id=name)
        return name, state
    if typ == TRAINING_ATTEMPT:
        # A first attempt: no job of that name exists (the provider's own tests cover the others).
        state.update(job_name=inputs["base_name"], attempt=0)
        return inputs["base_name"], state
    if typ == UNIQUE_SUFFIX:
        # The engine keeps the random suffix in the state while the keepers stay: a function of them here,
        # so that two runs of one configuration look like two `up`s of one deployment.
        suffix = content_hash(inputs["keepers"], 2 * int(inputs["length_bytes"]))
        state["suffix"] = suffix
        return suffix, state
    if typ == TRAINING_JOB:
        name = inputs["trainingJobName"]
        state["arn"] = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:training-job/{name}"
        return name, state
    if typ == TUNING_JOB:
        name = inputs["name"]
        state.update(
            arn=f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:hyper-parameter-tuning-job/{name}", status="InProgress"
        )
        return name, state
    if typ == TUNING_RESULT:
        # The tuning job's third trial won (SageMaker names trials `<tuning job>-NNN-<8 hex>`).
        best = f"{inputs['tuning_job_name']}-003-1a2b3c4d"
        artifact = f"s3://mnist-data-0a1b2c3/output/{best}/output/model.tar.gz"
        summary = {
            "service": "sagemaker",
            "job": inputs["tuning_job_name"],
            "trials": 4,
            "completed": 4,
            "strategy": "Bayesian",
            "objective": {"metric": "validation:merror", "goal": "Minimize"},
            "best_trial": best,
            "best_objective": 0.031,
            "best_hyperparameters": {"eta": "0.21"},
            "spread": {"min": 0.031, "median": 0.05, "max": 0.09},
        }
        state.update(best_training_job=best, best_artifact=artifact, summary=summary)
        return inputs["tuning_job_name"], state
    if typ in (MODEL, ENDPOINT_CONFIG, ENDPOINT):
        name = inputs.get("name") or _suffixed(args)
        kind = {MODEL: "model", ENDPOINT_CONFIG: "endpoint-config", ENDPOINT: "endpoint"}[typ]
        state.update(name=name, arn=f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{kind}/{name}")
        return name, state
    if typ == GATE:
        # The gate's first round: the challenger passes and is copied to the champions prefix.
        job = inputs["challenger_id"]
        copy = f"s3://{inputs['bucket']}/champions/{inputs['model']}/{job}/model.tar.gz"
        metrics = {"training_job": job, "validation:merror": 0.03}
        state.update(promoted_gate_outputs(inputs, copy, 0.97, metrics))
        return f"{args.name}-id", state
    if typ == LOG_GROUP:
        name = inputs.get("name") or _suffixed(args)
        state.update(name=name, arn=f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}")
        return name, state
    if typ == FUNCTION:
        name = inputs.get("name") or _suffixed(args)
        arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        invoke = f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/{arn}/invocations"
        state.update(name=name, arn=arn, invokeArn=invoke)
        return name, state
    if typ == HTTP_API:
        state.update(
            executionArn=f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}",
            apiEndpoint=f"https://{API_ID}.execute-api.{REGION}.amazonaws.com",
        )
        return API_ID, state
    if typ == STAGE:
        state["invokeUrl"] = f"https://{API_ID}.execute-api.{REGION}.amazonaws.com/"
        return f"{args.name}-id", state
    if typ.startswith("aws:"):
        state.setdefault("arn", f"arn:aws:{typ.split(':')[1].split('/')[0]}:{REGION}:{ACCOUNT}:{args.name}")
    return f"{args.name}-id", state


def _call(args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
        return {
            "accountId": ACCOUNT,
            "arn": f"arn:aws:iam::{ACCOUNT}:user/deployer",
            "userId": "AIDADEPLOYER",
            "id": ACCOUNT,
        }, []
    if args.token == "aws:index/getPartition:getPartition":
        return {
            "partition": PARTITION,
            "dnsSuffix": "amazonaws.com",
            "reverseDnsPrefix": "com.amazonaws",
            "id": "aws",
        }, []
    raise NotImplementedError(f"the aws stack made an unexpected call: {args.token}")


@dataclass
class AwsRun:
    """One run of the aws stack: what it declared, plus the provider each resource was given."""

    run: StackRun
    providers: dict[str, str | None]

    @property
    def outputs(self) -> dict[str, Any]:
        return self.run.outputs

    @property
    def resources(self) -> list[Resource]:
        return self.run.resources

    def of_type(self, typ: str) -> list[Resource]:
        return self.run.of_type(typ)

    def one(self, typ: str, name_contains: str = "") -> Resource:
        return self.run.one(typ, name_contains)

    def depends_on(self, dependent: Resource, dependency: Resource) -> bool:
        return self.run.depends_on(dependent, dependency)

    def policy(self, name_contains: str) -> dict[str, Any]:
        """The parsed document of the role policy whose resource name contains `name_contains`."""
        return json.loads(self.one(ROLE_POLICY, name_contains).inputs["policy"])


def run_aws(data_dir: Path, overrides: Mapping[str, Any] | None = None) -> AwsRun:
    providers: dict[str, str | None] = {}

    def new_resource(args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        providers[f"{args.typ}::{args.name}"] = args.provider
        return _outputs(args)

    config = {"dataset": "mnist-t10k", "dataDir": str(data_dir), **(overrides or {})}
    run = run_stack("aws", config, new_resource=new_resource, call=_call)
    return AwsRun(run=run, providers=providers)


def provider_of(run: AwsRun, resource: Resource) -> str | None:
    return run.providers.get(f"{resource.typ}::{resource.name}")

"""Mocks for the watsonx.ai stack: plausible outputs of its dynamic resources (what the real providers
compute, in the same shape), so that the program's outputs can be checked under Pulumi mocks."""

from __future__ import annotations

from typing import Any

from harness import promoted_gate_outputs
from pulumi.runtime.mocks import MockResourceArgs

PLATFORM = "mnist-platform:ibm:WatsonxPlatform"
INSTANCE = "pulumi-python:dynamic/ibm:ResourceInstance"
AUTHORIZATION = "pulumi-python:dynamic/ibm:ServiceAuthorization"
BUCKET = "pulumi-python:dynamic/ibm:CosBucket"
SPACE = "pulumi-python:dynamic/ibm:DeploymentSpace"
DATASET = "pulumi-python:dynamic/local:Dataset"
TRAINING_JOB = "pulumi-python:dynamic/ibm:TrainingJob"
GATE = "pulumi-python:dynamic/ibm:ChampionGate"
MODEL = "pulumi-python:dynamic/ibm:Model"
DEPLOYMENT = "pulumi-python:dynamic/ibm:Deployment"
API_KEY = "ibm-unit-test-key-0123456789abcdefghijklmnop"
ACCOUNT = "0123456789abcdef0123456789abcdef"
KP_INSTANCE = "11111111-2222-3333-4444-555555555555"
KMS_KEY_CRN = (
    f"crn:v1:bluemix:public:kms:us-south:a/{ACCOUNT}:{KP_INSTANCE}:key:66666666-7777-8888-9999-000000000000"
)


def plausible_outputs(args: MockResourceArgs) -> dict[str, Any]:
    """What the real providers compute, in the same shape, so the program's outputs can be checked."""
    inputs = args.inputs
    if args.typ == INSTANCE:
        guid = f"guid-{inputs['service']}"
        return {
            "crn": f"crn:v1:bluemix:public:{inputs['service']}:{inputs['target']}:a/{ACCOUNT}:{guid}::",
            "guid": guid,
        }
    if args.typ == BUCKET:
        return {"bucket": f"{inputs['prefix']}-0a1b2c3d"}
    if args.typ == SPACE:
        return {"space_id": "space-1"}
    if args.typ == DATASET:
        return {"path": f"{inputs['root']}/data/ds-1", "content_hash": "c0ffee"}
    if args.typ == TRAINING_JOB:
        prefix = "models/pytorch-1/"
        return {
            "job_id": "pytorch-1",
            "archive_key": prefix + "model.tar.gz",
            "artifact": f"cos://{inputs['bucket']}/{prefix}model.tar.gz",
            "artifact_hash": "hash-1",
            "metrics": {"accuracy": 0.985},
        }
    if args.typ == GATE:
        # The gate's first round: the challenger passes and is copied to the champions prefix.
        copy = f"cos://{inputs['bucket']}/champions/{inputs['model']}/{inputs['challenger_id']}/model.tar.gz"
        return promoted_gate_outputs(inputs, copy, 0.985, {"accuracy": 0.985})
    if args.typ == MODEL:
        # A shape unlike the default [1, 28, 28], so the test sees the model's own reach the endpoint.
        return {"model_id": "model-1", "input_shape": [28, 28, 1]}
    if args.typ == DEPLOYMENT:
        return {"deployment_id": "deployment-1", "url": "https://us-south.ml.cloud.ibm.com"}
    return {}

"""Mocks for the Vertex AI stack: plausible outputs (emails, names, job outputs) for what the program formats.

`run_gcp(data_dir, overrides)` runs the real program (`infra/__main__.py`) through `tests.harness` with
the config of `Pulumi.gcp.yaml` plus `dataset: mnist-t10k` and `dataDir` (full MNIST is not available
offline), keeping which provider each resource was registered with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import Resource, StackRun, promoted_gate_outputs, run_stack
from pulumi.runtime.mocks import MockCallArgs, MockResourceArgs

from infra.hashing import content_hash

PROJECT = "my-mnist-project"  # Pulumi.gcp.yaml
PROJECT_NUMBER = "123456789012"
REGION = "us-central1"
PROVIDER = "pulumi:providers:gcp"
COMPONENT = "mnist-platform:gcp:VertexPlatform"
SERVICE = "gcp:projects/service:Service"
SERVICE_IDENTITY = "gcp:projects/serviceIdentity:ServiceIdentity"
PROJECT_IAM = "gcp:projects/iAMMember:IAMMember"
BUCKET = "gcp:storage/bucket:Bucket"
BUCKET_IAM = "gcp:storage/bucketIAMMember:BucketIAMMember"
OBJECT = "gcp:storage/bucketObject:BucketObject"
REPOSITORY = "gcp:artifactregistry/repository:Repository"
REPOSITORY_IAM = "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember"
ACCOUNT = "gcp:serviceaccount/account:Account"
ACCOUNT_IAM = "gcp:serviceaccount/iAMMember:IAMMember"
KEY_IAM = "gcp:kms/cryptoKeyIAMMember:CryptoKeyIAMMember"
ENDPOINT = "gcp:vertex/aiEndpoint:AiEndpoint"
IMAGE = "pulumi-python:dynamic/cloudbuild:Image"
CUSTOM_JOB = "pulumi-python:dynamic/vertex:CustomJob"
TUNING_JOB = "pulumi-python:dynamic/vertex:HyperparameterTuningJob"
MODEL = "pulumi-python:dynamic/vertex:Model"
DEPLOYMENT = "pulumi-python:dynamic/vertex:Deployment"
GATE = "pulumi-python:dynamic/gcp:ChampionGate"
IAM_PROPAGATION = "pulumi-python:dynamic/gcp:IamPropagation"
BUCKET_NAME = "mnist-data-0a1b2c3"


def _outputs(args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
    state = dict(args.inputs)
    typ = args.typ
    if typ == BUCKET:
        state.update(name=BUCKET_NAME, url=f"gs://{BUCKET_NAME}")
        return BUCKET_NAME, state
    if typ == ACCOUNT:
        email = f"{state['accountId']}@{PROJECT}.iam.gserviceaccount.com"
        state.update(
            email=email,
            member=f"serviceAccount:{email}",
            name=f"projects/{PROJECT}/serviceAccounts/{email}",
        )
        return state["name"], state
    if typ == SERVICE_IDENTITY:
        agent = {"aiplatform.googleapis.com": "gcp-sa-aiplatform"}.get(
            state["service"], "gcp-sa-artifactregistry"
        )
        email = f"service-{PROJECT_NUMBER}@{agent}.iam.gserviceaccount.com"
        state.update(email=email, member=f"serviceAccount:{email}")
        return f"{args.name}-id", state
    if typ == REPOSITORY:
        state["name"] = state["repositoryId"]
        return state["repositoryId"], state
    if typ == ENDPOINT:
        return state["name"], state
    if typ == CUSTOM_JOB:
        # Vertex numbers each new job: a different job (display name) gets a different ID.
        job_id = str(int(content_hash(state["display_name"], 8), 16))
        name = f"projects/{PROJECT}/locations/{REGION}/customJobs/{job_id}"
        base = state["base_output_directory"]
        state.update(
            name=name,
            job_id=job_id,
            state="JOB_STATE_SUCCEEDED",
            model_dir=f"{base}/model",
            metrics_uri=f"{base}/metrics.json",
            metrics={"accuracy": 0.99},
        )
        return name, state
    if typ == TUNING_JOB:
        # Trial 2 of the tuning job won; Vertex writes each trial's model under `<base>/<trial id>/`.
        job_id = str(int(content_hash(state["display_name"], 8), 16))
        name = f"projects/{PROJECT}/locations/{REGION}/hyperparameterTuningJobs/{job_id}"
        base = state["base_output_directory"]
        summary = {
            "service": "vertex",
            "job": name,
            "trials": 2,
            "completed": 2,
            "strategy": "Bayesian",
            "objective": {"metric": "accuracy", "goal": "Maximize"},
            "best_trial": "2",
            "best_objective": 0.991,
            "best_hyperparameters": {"learning_rate": 0.004},
            "spread": {"min": 0.98, "median": 0.9855, "max": 0.991},
        }
        state.update(
            name=name,
            job_id=job_id,
            state="JOB_STATE_SUCCEEDED",
            best_trial="2",
            model_dir=f"{base}/2/model",
            metrics_uri=f"{base}/2/metrics.json",
            summary=summary,
        )
        return name, state
    if typ == GATE:
        # The gate's first round: the challenger passes and its SavedModel is copied to the champions prefix.
        job = state["challenger_id"]
        copy = f"gs://{state['bucket']}/champions/{state['model']}/{job.rsplit('/', 1)[-1]}/"
        state.update(promoted_gate_outputs(state, copy, 0.99, {"training_job": job, "accuracy": 0.99}))
        return f"{args.name}-id", state
    if typ == MODEL:
        model_id = str(int(content_hash(state["artifact_uri"], 8), 16))
        state.update(name=f"projects/{PROJECT}/locations/{REGION}/models/{model_id}", model_id=model_id)
        return state["name"], state
    if typ == DEPLOYMENT:
        state.update(
            deployed_model_id="888", endpoint_name=f"projects/{PROJECT}/locations/{REGION}/endpoints/1"
        )
        return f"{args.name}-id", state
    return f"{args.name}-id", state


DEPLOYER_EMAIL = "deployer@example.com"  # who runs `pulumi up` (gcp_fakes.base.DEPLOYER)


def _call(args: MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    if args.token == "gcp:organizations/getClientOpenIdUserInfo:getClientOpenIdUserInfo":
        return {"email": DEPLOYER_EMAIL, "id": DEPLOYER_EMAIL}, []
    if args.token == "gcp:storage/getProjectServiceAccount:getProjectServiceAccount":
        email = f"service-{PROJECT_NUMBER}@gs-project-accounts.iam.gserviceaccount.com"
        return {
            "emailAddress": email,
            "member": f"serviceAccount:{email}",
            "id": email,
            "project": PROJECT,
        }, []
    raise NotImplementedError(f"the gcp stack made an unexpected call: {args.token}")


@dataclass
class GcpRun:
    """One run of the gcp stack: what it declared, plus the provider each resource was given."""

    run: StackRun
    providers: dict[str, str | None]
    states: dict[str, dict[str, Any]]
    """What each resource would be recorded with in the state (the mock's outputs), by name."""

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


def run_gcp(data_dir: Path, overrides: Mapping[str, Any] | None = None) -> GcpRun:
    providers: dict[str, str | None] = {}
    states: dict[str, dict[str, Any]] = {}

    def new_resource(args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        providers[f"{args.typ}::{args.name}"] = args.provider
        id_, state = _outputs(args)
        states[args.name] = state
        return id_, state

    config = {"dataset": "mnist-t10k", "dataDir": str(data_dir), **(overrides or {})}
    run = run_stack("gcp", config, new_resource=new_resource, call=_call)
    return GcpRun(run=run, providers=providers, states=states)

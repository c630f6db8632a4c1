"""The Vertex AI stack end to end: its program under mocks, its dynamic providers executed for real
against the loopback fakes (tests/gcp/gcp_fakes) with Google's own clients.

`ProviderEngine` (tests/harness.py) plays the Pulumi engine for the dynamic resources (image build,
custom job, champion gate, model, deployment); the native pulumi-gcp resources are mocked, and the mock
puts what they would create where the fakes look for it (the uploaded objects in the Cloud Storage
fake, the AiEndpoint in the Vertex fake). The fake runs the custom job's container command (the TF
trainer) on mnist-t10k with Vertex's environment, the gate copies the SavedModel it exported to the
champions prefix, the fake serves the model uploaded from that copy with the model's serving command
under the AIP_* environment, and `mnistctl smoke` reaches it through
`aiplatform_v1.PredictionServiceClient`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gcp_mocks
import pulumi
import pytest
from gcp_fakes import CloudBuildFake, GcsFake, VertexFake
from gcp_fakes import clients as fake_clients
from gcp_fakes.base import DEPLOYER
from gcp_fakes.iam import IamModel
from gcp_mocks import (
    ACCOUNT_IAM,
    BUCKET_IAM,
    BUCKET_NAME,
    ENDPOINT,
    OBJECT,
    PROJECT_IAM,
    REPOSITORY_IAM,
)
from harness import ProviderEngine, StackRun, run_stack
from pulumi.runtime.mocks import MockResourceArgs

from infra.gcp import GcpApiEndpoints, VertexPlatform
from infra.settings import load_settings
from mnistctl.smoke import smoke

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DYNAMIC = (
    "mnist-iam-propagation",
    "mnist-image",
    "mnist-training",
    "mnist-gate",
    "mnist-model",
    "mnist-deployment",
)


@pytest.fixture(autouse=True)
def smoke_sends_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """`mnistctl smoke` sends no credentials to a plain-http URL (it takes one for a local server) and ADC's
    token to Google. The Vertex fake, like Google, refuses a request without a token: here the smoke client
    gets the placeholder token where it would have had ADC's."""
    from google.auth import credentials

    monkeypatch.setattr(credentials, "AnonymousCredentials", fake_clients.credentials)


@pytest.fixture(autouse=True)
def permissions_stay_denied_for_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """The providers retry a 403 for 7 minutes (a grant may still propagate); a missing one fails in 5 s."""
    from infra.gcp import clients

    monkeypatch.setattr(clients, "IAM_PROPAGATION_SECONDS", 5.0)


@pytest.fixture
def engine() -> Iterator[ProviderEngine]:
    engine = ProviderEngine()
    yield engine
    engine.destroy()


# The project as its owner hands it over before the first `pulumi up`: the deploying identity's roles
# (docs/gcp.md, "What the deploying identity needs"; actAs is not among them, the stack grants it) and the
# role Google gives the Vertex AI Service Agent when the API is enabled.
BUILD_ACCOUNT = "mnist-gcp-build@my-mnist-project.iam.gserviceaccount.com"  # gcp_mocks' account emails
DEPLOYER_ROLES = (
    "roles/storage.admin",
    "roles/aiplatform.user",
    "roles/cloudbuild.builds.editor",
    "roles/artifactregistry.admin",
    "roles/iam.serviceAccountAdmin",
)
# Where each IAM member resource binds, from its inputs (gcp_fakes.iam keys resources without a project).
BINDINGS = {
    BUCKET_IAM: lambda i: f"buckets/{i['bucket']}",
    REPOSITORY_IAM: lambda i: f"repositories/{i['repository']}",
    PROJECT_IAM: lambda i: f"projects/{i['project']}",
    ACCOUNT_IAM: lambda i: f"serviceAccounts/{i['serviceAccountId'].rsplit('/', 1)[-1]}",
}


class StackUnderFakes:
    """`pulumi up` of the gcp stack with every Google API it calls answered by a loopback fake, which
    enforce the IAM bindings the stack declares (each in effect `grants_propagate_in` seconds after the
    mocked IAM member resource is created)."""

    def __init__(
        self,
        engine: ProviderEngine,
        vertex: VertexFake,
        build: CloudBuildFake,
        gcs: GcsFake,
        grants_propagate_in: float = 0.3,
    ) -> None:
        self.engine, self.vertex, self.build, self.gcs = engine, vertex, build, gcs
        self.propagation = 0.5  # the stack's wait for new grants (two minutes in a real project)
        self.iam = IamModel(vertex.project, propagation_seconds=grants_propagate_in)
        for fake in (vertex, build, gcs):
            fake.iam = self.iam
        for role in DEPLOYER_ROLES:
            self.iam.grant(f"projects/{vertex.project}", role, DEPLOYER, propagated=True)
        self.iam.grant(
            f"projects/{vertex.project}",
            "roles/aiplatform.serviceAgent",
            vertex.service_agent,
            propagated=True,
        )
        engine.fallback = self._native
        self.endpoints = GcpApiEndpoints(
            vertex=vertex.api_endpoint,
            cloudbuild=build.api_endpoint,
            artifact_registry=build.api_endpoint,
            storage=gcs.api_endpoint,
        )

    def _native(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        """A native resource, as pulumi-gcp would leave it in the (faked) cloud."""
        id_, state = gcp_mocks._outputs(args)
        if args.typ == OBJECT:
            self.gcs.put(
                f"gs://{BUCKET_NAME}/{args.inputs['name']}", Path(args.inputs["source"].path).read_bytes()
            )
        elif args.typ == ENDPOINT and args.inputs["name"] not in self.vertex.endpoints:
            self.vertex.add_endpoint(args.inputs["name"])
        elif args.typ in BINDINGS:
            self.iam.grant(BINDINGS[args.typ](args.inputs), args.inputs["role"], args.inputs["member"])
        return id_, state

    def up(self, config: dict[str, Any]) -> StackRun:
        config = {"gcp:project": self.vertex.project, "gcp:region": self.vertex.location, **config}

        def program() -> None:
            settings = load_settings(
                "gcp", pulumi.Config(), aws_config=pulumi.Config("aws"), gcp_config=pulumi.Config("gcp")
            )
            platform = VertexPlatform.from_settings(
                "mnist", settings, self.endpoints, poll_seconds=0.5, iam_propagation_seconds=self.propagation
            )
            for key in ("endpoints", "models", "bucket", "dataset"):
                pulumi.export(key, getattr(platform, key))

        run = run_stack("gcp", config, new_resource=self.engine, call=gcp_mocks._call, program=program)
        self.engine.finish()
        return run


def test_gcp_stack_trains_on_vertex_serves_answers_and_rolls_forward_without_a_gap(
    engine: ProviderEngine,
    vertex_fake: VertexFake,
    cloudbuild_fake: CloudBuildFake,
    gcs_fake: GcsFake,
    t10k_dir: Path,
) -> None:
    stack = StackUnderFakes(engine, vertex_fake, cloudbuild_fake, gcs_fake)
    config: dict[str, Any] = {
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "hyperparameters": {"tensorflow": {"epochs": 4}},
        "minAccuracy": 0.95,  # 4 epochs on 8,000 digits, not MNIST's 0.98; the gate is tested on its own
    }
    started = time.monotonic()
    first = stack.up(config)
    print(f"\nup (image, job on 8,000 digits, gate, model, deployment): {time.monotonic() - started:.1f}s")
    assert [s for s in engine.steps if s[1] in DYNAMIC] == [("create", name) for name in DYNAMIC]

    # The image pushed under its content tag, the job trained for real, the gate scored it with the
    # trainer's metrics.json and copied its SavedModel, and the model is served from that copy.
    image = engine.live["mnist-image"].state["image"]
    assert image in cloudbuild_fake.tags()
    job = engine.live["mnist-training"].state
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    (gcs_fake.path_of(job["model_dir"]) / "saved_model.pb").stat()
    model = first.outputs["models"]["tensorflow"]
    champion = f"gs://{BUCKET_NAME}/champions/tensorflow/{job['job_id']}/"
    assert model["artifact"] == champion and model["metrics"]["accuracy"] >= 0.97
    assert model["challenger"]["decision"] == "promoted" and model["champion"]["source"] == job["name"]
    (gcs_fake.path_of(champion) / "saved_model.pb").stat()
    assert engine.live["mnist-model"].state["artifact_uri"] == champion
    entry = first.outputs["endpoints"]["tensorflow"]
    assert (entry["flavor"], entry["project"], entry["region"]) == ("vertex", "mnist-test", "us-central1")

    # `mnistctl smoke --stack gcp`: 200 held-out digits through aiplatform_v1.PredictionServiceClient.
    result = smoke(first.outputs, count=200, data_dir=t10k_dir, label="gcp")
    assert result.ok, [r.error for r in result.results]
    assert result.for_model("tensorflow").accuracy >= 0.98

    # A second `pulumi up` with nothing changed changes nothing.
    before = len(engine.steps)
    stack.up(config)
    assert [s for s in engine.steps[before:] if s[0] != "same"] == []

    # New hyperparameters and a floor the new model cannot reach: a new job, held back by the gate; the
    # model and the deployment stay, and the endpoint serves the champion as before.
    old_deployed = engine.live["mnist-deployment"].state["deployed_model_id"]
    config["hyperparameters"] = {"tensorflow": {"epochs": 1}}
    config["minAccuracy"] = 0.999
    before = len(engine.steps)
    held = stack.up(config)
    steps = [s for s in engine.steps[before:] if s[0] != "same"]
    assert steps == [("replace", "mnist-training"), ("update", "mnist-gate"), ("delete", "mnist-training")]
    assert held.outputs["models"]["tensorflow"]["challenger"]["decision"] == "held"
    assert held.outputs["models"]["tensorflow"]["artifact"] == champion
    (endpoint,) = vertex_fake.endpoints.values()
    assert list(endpoint.deployed) == [old_deployed]
    assert smoke(held.outputs, count=20, data_dir=t10k_dir).ok

    # forcePromotion serves it: a new model and deployment (no retraining); the new deployment exists
    # before the old one is undeployed, and the model goes after its deployment. Image, bucket and
    # endpoint stay.
    config["forcePromotion"] = True
    before = len(engine.steps)
    second = stack.up(config)
    steps = [s for s in engine.steps[before:] if s[0] != "same"]
    assert steps == [
        ("update", "mnist-gate"),
        ("replace", "mnist-model"),
        ("replace", "mnist-deployment"),
        ("delete", "mnist-deployment"),
        ("delete", "mnist-model"),
    ]
    assert second.outputs["models"]["tensorflow"]["challenger"]["decision"] == "forced"
    assert old_deployed not in endpoint.deployed
    assert list(endpoint.deployed) == [engine.live["mnist-deployment"].state["deployed_model_id"]]
    assert second.outputs["endpoints"] == first.outputs["endpoints"]
    assert smoke(second.outputs, count=20, data_dir=t10k_dir).ok

    # `pulumi destroy`: undeployed, model and job deleted, champion copies removed, image tag removed, no
    # process left.
    engine.destroy()
    assert not endpoint.deployed and not vertex_fake.models and not vertex_fake.jobs
    champions = gcs_fake.root / BUCKET_NAME / "champions"
    assert not [p for p in champions.rglob("*") if p.is_file()]
    assert cloudbuild_fake.tags() == {}
    assert not vertex_fake.running_processes()


def test_grants_used_before_they_propagate_are_refused_as_in_a_fresh_project(
    engine: ProviderEngine,
    vertex_fake: VertexFake,
    cloudbuild_fake: CloudBuildFake,
    gcs_fake: GcsFake,
    t10k_dir: Path,
) -> None:
    """Without the stack's wait, and with grants slower than the providers' retries (7 minutes in a real
    project, 5 s here), the first build is submitted before its actAs grant holds: Cloud Build answers 403
    until the provider gives up. The main e2e test runs the same stack with grants that propagate within
    its wait, and goes through."""
    stack = StackUnderFakes(engine, vertex_fake, cloudbuild_fake, gcs_fake, grants_propagate_in=60.0)
    stack.propagation = 0.0
    config: dict[str, Any] = {"dataset": "mnist-t10k", "dataDir": str(t10k_dir), "minAccuracy": 0.0}
    try:
        with pytest.raises(Exception, match=r"Permission 'iam\.serviceAccounts\.actAs' denied"):
            stack.up(config)
        refused = [r for r in cloudbuild_fake.requests_to("POST", r"/builds$") if r.token]
        assert len(refused) >= 2  # retried while the grant might still propagate
        assert (DEPLOYER, "iam.serviceAccounts.actAs") in {(m, p) for m, p, _ in stack.iam.denials}
        assert stack.iam.pending(DEPLOYER, "iam.serviceAccounts.actAs", "serviceAccounts/" + BUILD_ACCOUNT)
        assert not cloudbuild_fake.builds and not vertex_fake.jobs
    finally:
        engine.destroy()

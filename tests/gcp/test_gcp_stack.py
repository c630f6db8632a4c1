"""The Vertex AI stack's program under Pulumi mocks, with the config of `Pulumi.gcp.yaml`.

Full MNIST is not available offline, so every run uses `dataset: mnist-t10k` from tests/data.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pulumi_gcp as gcp
import pytest
from gcp_mocks import (
    ACCOUNT,
    ACCOUNT_IAM,
    BUCKET,
    BUCKET_IAM,
    BUCKET_NAME,
    COMPONENT,
    CUSTOM_JOB,
    DEPLOYER_EMAIL,
    DEPLOYMENT,
    ENDPOINT,
    GATE,
    IAM_PROPAGATION,
    IMAGE,
    KEY_IAM,
    MODEL,
    OBJECT,
    PROJECT,
    PROJECT_IAM,
    PROVIDER,
    REGION,
    REPOSITORY,
    REPOSITORY_IAM,
    SERVICE,
    GcpRun,
    run_gcp,
)
from harness import provider_props, unwrap_provider

from infra.gcp.custom_job import worker_pool_specs
from infra.gcp.iam_wait import IamPropagationProvider
from infra.gcp.image_context import SERVE_COMMAND, TRAIN_COMMAND, build_image_context
from infra.gcp.names import image_tag
from infra.gcp.platform import PROJECT_ROOT, repository_id
from training.formats import read_npz

KMS_KEY = f"projects/{PROJECT}/locations/{REGION}/keyRings/mnist/cryptoKeys/data"
LABELS = {"project": "mnist-platform", "stack": "gcp"}
BASIC_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}


@pytest.fixture(scope="module")
def stack(t10k_dir: Path) -> GcpRun:
    """The stack exactly as Pulumi.gcp.yaml declares it (with the offline dataset)."""
    return run_gcp(t10k_dir)


@pytest.fixture(scope="module")
def distributed_stack(t10k_dir: Path) -> GcpRun:
    return run_gcp(
        t10k_dir,
        {
            "trainingReplicaCount": 3,
            "trainingMachineType": "e2-standard-8",
            "servingMachineType": "e2-standard-4",
            "servingMinReplicas": 2,
            "servingMaxReplicas": 4,
            "kmsKeyName": KMS_KEY,
        },
    )


# -- APIs ----------------------------------------------------------------------------------------


def test_the_five_apis_are_enabled_and_kept_on_destroy(stack: GcpRun) -> None:
    services = stack.of_type(SERVICE)
    assert sorted(s.inputs["service"] for s in services) == [
        "aiplatform.googleapis.com",
        "artifactregistry.googleapis.com",
        "cloudbuild.googleapis.com",
        "iam.googleapis.com",
        "storage.googleapis.com",
    ]
    for service in services:
        assert service.inputs["disableOnDestroy"] is False, service.name
        assert service.inputs.get("disableDependentServices") is False


def test_everything_that_calls_an_api_waits_for_the_apis(stack: GcpRun) -> None:
    services = stack.of_type(SERVICE)
    waiting = [
        stack.one(BUCKET),
        stack.one(REPOSITORY),
        stack.one(ENDPOINT),
        *stack.of_type(ACCOUNT),
        stack.one(IMAGE),
        stack.one(CUSTOM_JOB),
        stack.one(GATE),
        stack.one(MODEL),
        stack.one(DEPLOYMENT),
    ]
    for resource in waiting:
        for service in services:
            assert stack.depends_on(resource, service), (resource.name, service.name)


# -- storage and data ----------------------------------------------------------------------------


def test_bucket_is_private_regional_labelled_and_force_destroyed(stack: GcpRun) -> None:
    bucket = stack.one(BUCKET)
    assert bucket.inputs["uniformBucketLevelAccess"] is True
    assert bucket.inputs["publicAccessPrevention"] == "enforced"
    assert bucket.inputs["forceDestroy"] is True
    assert bucket.inputs["location"] == "US-CENTRAL1"
    assert bucket.inputs["labels"] == LABELS
    assert "encryption" not in bucket.inputs  # Google-managed keys unless kmsKeyName is set


def test_dataset_is_uploaded_as_the_npz_files_the_tf_trainer_reads(stack: GcpRun, t10k_dir: Path) -> None:
    objects = {
        o.inputs["name"].rsplit("/", 1)[-1]: o
        for o in stack.of_type(OBJECT)
        if o.name.startswith("mnist-data-")
    }
    assert sorted(objects) == ["test.npz", "train.npz"]
    prefixes = {o.inputs["name"].rsplit("/", 1)[0] for o in objects.values()}
    assert len(prefixes) == 1 and next(iter(prefixes)).startswith("data/")
    x_train, y_train = read_npz(objects["train.npz"].inputs["source"].path)
    x_test, y_test = read_npz(objects["test.npz"].inputs["source"].path)
    assert x_train.shape == (8000, 28, 28) and y_train.shape == (8000,)  # the mnist-t10k protocol
    assert x_test.shape == (2000, 28, 28) and y_test.shape == (2000,)
    job_args = stack.one(CUSTOM_JOB).inputs["args"]
    assert job_args[:2] == ["--data", f"gs://{BUCKET_NAME}/{next(iter(prefixes))}"]


# -- identities ----------------------------------------------------------------------------------


def _roles_of(stack: GcpRun, account_id: str) -> set[tuple[str, str]]:
    member = f"serviceAccount:{account_id}@{PROJECT}.iam.gserviceaccount.com"
    grants = set()
    for typ in (BUCKET_IAM, PROJECT_IAM, REPOSITORY_IAM):
        for grant in stack.of_type(typ):
            if grant.inputs["member"] == member:
                grants.add((typ.split(":")[1].split("/")[0], grant.inputs["role"]))
    return grants


def test_service_accounts_hold_only_roles_on_the_stacks_own_bucket_and_repository(stack: GcpRun) -> None:
    assert sorted(a.inputs["accountId"] for a in stack.of_type(ACCOUNT)) == [
        "mnist-gcp-build",
        "mnist-gcp-serve",
        "mnist-gcp-train",
    ]
    assert _roles_of(stack, "mnist-gcp-train") == {
        ("storage", "roles/storage.objectUser"),
        ("storage", "roles/storage.legacyBucketReader"),  # TF's GCS filesystem reads bucket metadata
    }
    # Nothing on the bucket: the serving container reads only Vertex AI's own copy (AIP_STORAGE_URI).
    assert _roles_of(stack, "mnist-gcp-serve") == set()
    assert _roles_of(stack, "mnist-gcp-build") == {
        ("storage", "roles/storage.objectViewer"),
        ("artifactregistry", "roles/artifactregistry.writer"),
        ("projects", "roles/logging.logWriter"),
    }
    for grant in stack.of_type(BUCKET_IAM):
        assert grant.inputs["bucket"] == BUCKET_NAME
    every_role = {
        g.inputs["role"]
        for t in (BUCKET_IAM, PROJECT_IAM, REPOSITORY_IAM, ACCOUNT_IAM)
        for g in stack.of_type(t)
    }
    assert not every_role & BASIC_ROLES


def test_the_vertex_service_agent_may_run_the_serving_account_and_nothing_else(stack: GcpRun) -> None:
    (grant,) = [g for g in stack.of_type(ACCOUNT_IAM) if g.inputs["role"] != "roles/iam.serviceAccountUser"]
    assert grant.inputs["member"].endswith("@gcp-sa-aiplatform.iam.gserviceaccount.com")
    assert grant.inputs["serviceAccountId"].endswith(f"mnist-gcp-serve@{PROJECT}.iam.gserviceaccount.com")
    assert stack.depends_on(stack.one(DEPLOYMENT), grant)


def test_the_deploying_identity_may_act_as_each_of_the_three_accounts_and_no_other(stack: GcpRun) -> None:
    """Submitting a job, a deployment or a build that runs as an account needs actAs on it: the stack grants
    its deployer Service Account User on its own three accounts (not on the project)."""
    act_as = [g for g in stack.of_type(ACCOUNT_IAM) if g.inputs["role"] == "roles/iam.serviceAccountUser"]
    accounts = sorted(g.inputs["serviceAccountId"].split("/")[-1].split("@")[0] for g in act_as)
    assert accounts == ["mnist-gcp-build", "mnist-gcp-serve", "mnist-gcp-train"]
    assert {g.inputs["member"] for g in act_as} == {f"user:{DEPLOYER_EMAIL}"}
    assert not [g for g in stack.of_type(PROJECT_IAM) if g.inputs["role"] == "roles/iam.serviceAccountUser"]
    wait = stack.one(IAM_PROPAGATION)
    assert all(stack.depends_on(wait, g) for g in act_as)


def test_job_and_deployment_run_as_their_own_accounts(stack: GcpRun) -> None:
    assert (
        stack.one(CUSTOM_JOB).inputs["service_account"]
        == f"mnist-gcp-train@{PROJECT}.iam.gserviceaccount.com"
    )
    assert (
        stack.one(DEPLOYMENT).inputs["service_account"]
        == f"mnist-gcp-serve@{PROJECT}.iam.gserviceaccount.com"
    )
    assert stack.one(IMAGE).inputs["service_account"] == f"mnist-gcp-build@{PROJECT}.iam.gserviceaccount.com"
    for grant in stack.of_type(BUCKET_IAM):
        if "train" in grant.name:
            assert stack.depends_on(stack.one(CUSTOM_JOB), grant), grant.name


def test_build_job_and_deployment_wait_until_every_account_and_grant_has_propagated(stack: GcpRun) -> None:
    """IAM changes take minutes to reach every Google service; what uses them fails asynchronously (a
    FAILED job or build) if it starts first, so all three wait for the propagation pause."""
    wait = stack.one(IAM_PROPAGATION)
    grants = [g for t in (BUCKET_IAM, PROJECT_IAM, REPOSITORY_IAM, ACCOUNT_IAM) for g in stack.of_type(t)]
    assert grants and all(stack.depends_on(wait, g) for g in grants)
    assert all(stack.depends_on(wait, a) for a in stack.of_type(ACCOUNT))
    assert sorted(wait.inputs["grants"]) == sorted(g.id for g in grants)
    assert wait.inputs["seconds"] >= 60  # Google: "typically 2 minutes"
    for user in (IMAGE, CUSTOM_JOB, DEPLOYMENT):
        assert stack.depends_on(stack.one(user), wait), user


def test_the_propagation_wait_sleeps_once_per_set_of_grants() -> None:
    provider = IamPropagationProvider()
    olds = {"grants": ["a", "b"], "seconds": 0.3}
    started = time.monotonic()
    provider.create(olds)
    assert time.monotonic() - started >= 0.3
    assert not provider.diff("w", olds, {**olds, "seconds": 600.0}).changes  # no new grant: no new wait
    assert provider.diff("w", olds, {**olds, "grants": ["a", "b", "c"]}).replaces == ["grants"]


# -- image ---------------------------------------------------------------------------------------


def test_image_is_tagged_by_the_content_of_its_build_context(stack: GcpRun, tmp_path: Path) -> None:
    context = build_image_context(PROJECT_ROOT, tmp_path)
    image = stack.one(IMAGE)
    repository = stack.one(REPOSITORY)
    assert repository.inputs["format"] == "DOCKER" and repository.inputs["location"] == REGION
    assert repository.inputs["labels"] == LABELS
    assert image.inputs["image"] == (
        f"{REGION}-docker.pkg.dev/{PROJECT}/mnist-gcp/mnist-platform:{image_tag(context.sha256)}"
    )
    assert image.inputs["context_sha256"] == context.sha256
    source = stack.one(OBJECT, "image-context")
    assert image.inputs["source_object"] == source.inputs["name"]
    assert Path(source.inputs["source"].path).read_bytes() == context.archive.read_bytes()


def test_one_image_trains_and_serves(stack: GcpRun) -> None:
    image = stack.one(IMAGE).inputs["image"]
    job, model = stack.one(CUSTOM_JOB), stack.one(MODEL)
    assert job.inputs["image_uri"] == image and job.inputs["command"] == list(TRAIN_COMMAND)
    assert model.inputs["image_uri"] == image and model.inputs["command"] == list(SERVE_COMMAND)
    assert model.inputs["predict_route"] and model.inputs["health_route"] and model.inputs["port"]


def test_the_gate_judges_the_job_and_the_model_serves_the_gates_champion(stack: GcpRun) -> None:
    job, gate, model = stack.one(CUSTOM_JOB), stack.one(GATE), stack.one(MODEL)
    deployment = stack.one(DEPLOYMENT)
    job_name, job_id = job.outputs["name"], job.outputs["job_id"]
    base = job.inputs["base_output_directory"]
    # The gate reads the job's metrics.json and judges its SavedModel, with mnist-t10k's TF floor.
    assert gate.inputs["challenger_id"] == job_name
    assert gate.inputs["challenger_artifact"] == f"{base}/model"
    assert gate.inputs["metrics_uri"] == f"{base}/metrics.json"
    assert (gate.inputs["model"], gate.inputs["bucket"], gate.inputs["project"]) == (
        "tensorflow",
        BUCKET_NAME,
        PROJECT,
    )
    assert gate.inputs["min_accuracy"] == 0.98
    assert (gate.inputs["promotion_tolerance"], gate.inputs["force_promotion"]) == (0, False)
    assert stack.depends_on(gate, job)
    # The model is uploaded from the gate's champion copy (not from the job's output, which the next
    # training replaces), and only once the gate has decided; model and deployment are named after the
    # champion's job.
    champion = f"gs://{BUCKET_NAME}/champions/tensorflow/{job_id}/"
    assert model.inputs["artifact_uri"] == champion
    assert model.property_dependencies["artifact_uri"] == {gate.urn}
    assert stack.depends_on(model, gate) and not stack.depends_on(model, job)  # the job only through the gate
    name = f"mnist-gcp-tensorflow-{job_id}"
    assert model.inputs["display_name"] == deployment.inputs["display_name"] == name
    assert model.property_dependencies["display_name"] == {gate.urn}
    assert deployment.property_dependencies["display_name"] == {gate.urn}


# -- training and serving ------------------------------------------------------------------------


def test_training_uses_the_configured_machine_replicas_timeout_and_labels(stack: GcpRun) -> None:
    job = stack.one(CUSTOM_JOB)
    (pool,) = worker_pool_specs(provider_props(job.inputs))  # one replica: the chief alone
    assert pool["replica_count"] == 1
    assert job.inputs["instance_type"] == "n1-standard-4"
    assert job.inputs["instance_count"] == 1
    assert job.inputs["max_runtime_seconds"] == 3600
    assert job.inputs["labels"] == LABELS
    assert job.inputs["base_output_directory"].startswith(f"gs://{BUCKET_NAME}/jobs/")
    assert job.inputs.get("kms_key_name") is None


def test_the_endpoint_has_a_numeric_id_and_leaves_traffic_to_the_deployment(stack: GcpRun) -> None:
    endpoint = stack.one(ENDPOINT)
    assert endpoint.inputs["name"].isdigit() and len(endpoint.inputs["name"]) == 10
    assert not endpoint.inputs["name"].startswith("0")
    assert "trafficSplit" not in endpoint.inputs
    assert endpoint.inputs["location"] == REGION and endpoint.inputs["labels"] == LABELS
    deployment = stack.one(DEPLOYMENT)
    assert deployment.inputs["endpoint"] == endpoint.inputs["name"]
    assert stack.depends_on(deployment, endpoint) and stack.depends_on(deployment, stack.one(MODEL))
    assert (
        deployment.inputs["instance_type"],
        deployment.inputs["min_replicas"],
        deployment.inputs["max_replicas"],
    ) == (
        "n1-standard-2",
        1,
        2,
    )


def test_outputs_follow_the_design_contract(stack: GcpRun) -> None:
    endpoint_id = stack.one(ENDPOINT).inputs["name"]
    assert stack.outputs["endpoints"] == {
        "tensorflow": {"flavor": "vertex", "name": endpoint_id, "region": REGION, "project": PROJECT}
    }
    model = stack.outputs["models"]["tensorflow"]
    job = stack.one(CUSTOM_JOB).outputs
    assert model["artifact"] == f"gs://{BUCKET_NAME}/champions/tensorflow/{job['job_id']}/"
    assert model["artifact"] == stack.one(MODEL).inputs["artifact_uri"]
    assert model["metrics"] == {"training_job": job["name"], "accuracy": 0.99}
    assert model["champion"] == {"artifact": model["artifact"], "accuracy": 0.99, "source": job["name"]}
    assert model["challenger"]["decision"] == "promoted"
    assert model["challenger"]["artifact"] == job["model_dir"]
    assert stack.outputs["bucket"] == BUCKET_NAME and stack.outputs["dataset"] == "mnist-t10k"


def test_every_resource_is_a_child_of_the_component_on_its_provider(stack: GcpRun) -> None:
    component = stack.one(COMPONENT)
    provider = stack.one(PROVIDER)
    assert provider.inputs["project"] == PROJECT and provider.inputs["region"] == REGION
    for resource in stack.resources:
        if resource is component:
            continue
        assert resource.parent == component.urn, resource.name
        if resource.typ.startswith("gcp:"):
            assert stack.providers[f"{resource.typ}::{resource.name}"].startswith(provider.urn), resource.name


def test_grants_on_the_users_key_survive_destroy(t10k_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key is the user's: `pulumi destroy` must not revoke its grants (on a shared key that would cut
    the project's Storage agent off every other CMEK bucket). retain_on_delete leaves them on the key."""
    options = []
    declare = gcp.kms.CryptoKeyIAMMember.__init__

    def recording(self: Any, name: str, *args: Any, **kwargs: Any) -> None:
        options.append(kwargs.get("opts"))
        declare(self, name, *args, **kwargs)

    monkeypatch.setattr(gcp.kms.CryptoKeyIAMMember, "__init__", recording)
    run_gcp(t10k_dir, {"kmsKeyName": KMS_KEY})
    assert len(options) == 3 and all(o is not None and o.retain_on_delete for o in options)


@pytest.mark.parametrize(
    ("stack_name", "expected"),
    [
        ("gcp", "mnist-gcp"),
        ("team_a.dev", "mnist-team-a-dev"),
        ("Prod__EU", "mnist-prod-eu"),
        ("x" * 80, "mnist-" + "x" * 57),
    ],
)
def test_the_repository_id_is_valid_for_any_stack_name(stack_name: str, expected: str) -> None:
    # Artifact Registry: lowercase letters, digits and hyphens, a letter first, a letter or digit last, <= 63.
    assert repository_id(stack_name) == expected
    assert re.fullmatch(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?", expected)


def test_distributed_training_uses_the_configured_machines_replicas_and_customer_key(
    distributed_stack: GcpRun,
) -> None:
    job = distributed_stack.one(CUSTOM_JOB)
    assert (job.inputs["instance_type"], job.inputs["instance_count"]) == ("e2-standard-8", 3)
    assert job.inputs["kms_key_name"] == KMS_KEY
    chief, workers = worker_pool_specs(provider_props(job.inputs))
    assert chief["replica_count"] == 1 and workers["replica_count"] == 2
    assert chief["container_spec"] == workers["container_spec"]  # the full spec in both pools
    assert chief["machine_spec"] == workers["machine_spec"] == {"machine_type": "e2-standard-8"}
    deployment = distributed_stack.one(DEPLOYMENT)
    assert (
        deployment.inputs["instance_type"],
        deployment.inputs["min_replicas"],
        deployment.inputs["max_replicas"],
    ) == (
        "e2-standard-4",
        2,
        4,
    )
    assert distributed_stack.one(BUCKET).inputs["encryption"] == {"defaultKmsKeyName": KMS_KEY}
    assert distributed_stack.one(ENDPOINT).inputs["encryptionSpec"] == {"kmsKeyName": KMS_KEY}
    assert distributed_stack.one(REPOSITORY).inputs["kmsKeyName"] == KMS_KEY
    grants = distributed_stack.of_type(KEY_IAM)
    agents = sorted(g.inputs["member"].split("@")[1].split(".")[0] for g in grants)
    assert agents == ["gcp-sa-aiplatform", "gcp-sa-artifactregistry", "gs-project-accounts"]
    for grant in grants:
        assert grant.inputs["cryptoKeyId"] == KMS_KEY
        assert grant.inputs["role"] == "roles/cloudkms.cryptoKeyEncrypterDecrypter"
        assert distributed_stack.depends_on(distributed_stack.one(BUCKET), grant)


# -- updates -------------------------------------------------------------------------------------


def _replaced(before: GcpRun, after: GcpRun) -> list[str]:
    """The dynamic resources whose provider's diff, as the engine runs it on `pulumi up`, replaces them.

    The gate is left out: its diff checks its champion copy in Cloud Storage, so it is run against the
    Cloud Storage fake in test_gcp_gate.py (where a new job is an update of the gate, never a replacement)."""
    replaced = []
    for resource in after.resources:
        if not resource.typ.startswith("pulumi-python:dynamic") or resource.typ == GATE:
            continue
        provider, news = unwrap_provider(resource.inputs), provider_props(resource.inputs)
        if provider.diff(resource.name, before.states[resource.name], news).replaces:
            replaced.append(resource.name)
    return sorted(replaced)


def test_a_rerun_replaces_nothing_and_new_hyperparameters_replace_job_model_and_deployment(
    t10k_dir: Path,
) -> None:
    hp = {"tensorflow": {"epochs": 3}}
    first = run_gcp(t10k_dir, {"hyperparameters": hp})
    again = run_gcp(t10k_dir, {"hyperparameters": hp})
    assert _replaced(first, again) == []
    retuned = run_gcp(t10k_dir, {"hyperparameters": {"tensorflow": {"epochs": 4}}})
    # The image, bucket, data and endpoint stay; job, model and deployment are new (the mocked gate
    # promotes every challenger; test_gcp_gate.py holds one back).
    assert _replaced(first, retuned) == ["mnist-deployment", "mnist-model", "mnist-training"]
    assert retuned.one(CUSTOM_JOB).inputs["args"][2:] == ["--set", "epochs=4"]
    assert retuned.one(ENDPOINT).inputs == first.one(ENDPOINT).inputs
    assert retuned.one(BUCKET).inputs == first.one(BUCKET).inputs


def test_the_job_trains_with_the_datasets_preset_under_the_stacks_overrides(t10k_dir: Path) -> None:
    # The trainer in the container reads npz files and never learns the dataset's name, so the preset
    # must arrive spelled out: mnist-t10k's `long` is width 32 and 20 epochs; the stack's epochs win.
    long = run_gcp(t10k_dir, {"trainingPreset": "long", "hyperparameters": {"tensorflow": {"epochs": 3}}})
    assert long.one(CUSTOM_JOB).inputs["args"][2:] == ["--set", "epochs=3", "--set", "width=32"]

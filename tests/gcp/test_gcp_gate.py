"""The Vertex AI stack's champion gate: its provider with google-cloud-storage's real client against the
Cloud Storage fake (tests/gcp/gcp_fakes), and the whole stack under mocks with the gate executed for real
(tests/harness.py ProviderEngine) on what mocked custom jobs leave in that fake.

A "finished job" here is what the TF trainer leaves in the bucket: the SavedModel's objects under
`jobs/<id>/model/` and `metrics.json` beside that folder (training/tf_trainer.py).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gcp_mocks
import pulumi
import pytest
from gcp_fakes import GcsFake
from gcp_mocks import BUCKET_NAME, CUSTOM_JOB, DEPLOYMENT, GATE, MODEL
from harness import ProviderEngine, StackRun, gate_round, provider_inputs, replaced_by_diff, run_stack
from pulumi.runtime.mocks import MockResourceArgs

from infra.gate_provider import GateError
from infra.gcp import GcpApiEndpoints, VertexPlatform, clients
from infra.gcp.gate import VertexGateProvider
from infra.settings import load_settings

BUCKET = "mnist-gate-test"
PROJECT = "mnist-test"
JOBS = f"projects/{PROJECT}/locations/us-central1/customJobs"
SAVED_MODEL = ("saved_model.pb", "fingerprint.pb", "variables/variables.index")
Props = dict[str, Any]
SERVING = (MODEL, DEPLOYMENT)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # The providers' backoff policy, compressed: the tests prove they retry, not how long they sleep.
    monkeypatch.setattr(clients, "wait_exponential", lambda **_: lambda _state: 0.01)


@pytest.fixture
def job(gcs_fake: GcsFake) -> Callable[..., str]:
    """A finished custom job's output in the bucket; returns the job's id. `metrics`: what metrics.json
    holds (a dict as JSON, text as is, None: no file)."""

    def make(job_id: str, metrics: Any, bucket: str = BUCKET) -> str:
        base = f"gs://{bucket}/jobs/{job_id}"
        for name in SAVED_MODEL:
            gcs_fake.put(f"{base}/model/{name}", f"{name} of job {job_id}".encode())
        if metrics is not None:
            text = metrics if isinstance(metrics, str) else json.dumps(metrics)
            gcs_fake.put(f"{base}/metrics.json", text.encode())
        return job_id

    return make


def props(gcs: GcsFake, job_id: str, **rule: Any) -> Props:
    base = f"gs://{BUCKET}/jobs/{job_id}"
    return {
        "model": "tensorflow",
        "challenger_id": f"{JOBS}/{job_id}",
        "challenger_artifact": f"{base}/model",
        "metrics_uri": f"{base}/metrics.json",
        "project": PROJECT,
        "bucket": BUCKET,
        "storage_api_endpoint": gcs.api_endpoint,
        "min_accuracy": rule.get("min_accuracy", 0.95),
        "promotion_tolerance": rule.get("tolerance", 0.0),
        "force_promotion": rule.get("force", False),
    }


def champions(gcs: GcsFake) -> list[str]:
    """Every object under the bucket's champions/ prefix, relative to it."""
    folder = gcs.root / BUCKET / "champions"
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def copy_of(job_id: str) -> list[str]:
    return [f"tensorflow/{job_id}/{name}" for name in sorted(SAVED_MODEL)]


# -- the provider ----------------------------------------------------------------------------------


def test_a_first_good_job_is_scored_by_its_metrics_and_its_saved_model_copied(gcs_fake: GcsFake, job):
    # `trained` is when the job wrote metrics.json: inside this test's own window, to the second.
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    job_props = props(gcs_fake, job("101", {"accuracy": 0.985, "loss": 0.05}))
    written = dt.datetime.now(dt.UTC)
    state = gate_round(VertexGateProvider(), None, job_props)
    champion = state["champion"]
    copy = f"gs://{BUCKET}/champions/tensorflow/101/"
    assert state["champion_artifact"] == champion["artifact"] == copy
    assert champion["accuracy"] == 0.985 and champion["source"] == f"{JOBS}/101"
    assert champion["metrics"] == {"training_job": f"{JOBS}/101", "accuracy": 0.985, "loss": 0.05}
    assert started <= dt.datetime.fromisoformat(champion["trained"]) <= written
    assert champion["source_artifact"] == f"gs://{BUCKET}/jobs/101/model"
    assert state["challenger"]["decision"] == "promoted"
    assert champions(gcs_fake) == copy_of("101")
    saved = gcs_fake.path_of(f"{copy}saved_model.pb").read_bytes()
    assert saved == b"saved_model.pb of job 101"
    # Copied server-side, object by object, with Cloud Storage's rewrite.
    assert len(gcs_fake.requests_to("POST", r"/rewriteTo/b/")) == len(SAVED_MODEL)


def test_a_large_object_is_copied_in_as_many_rewrite_calls_as_cloud_storage_asks(gcs_fake: GcsFake, job):
    """Cloud Storage may answer a rewrite `done: false` with a token (a large object, another key or
    location): the copy is complete only after the calls that follow it."""
    gcs_fake.rewrite_bytes_per_call = 8
    gcs_fake.list_page_size = 2  # and the job's objects come in two pages
    job_id = job("101", {"accuracy": 0.985})
    sizes = [len(f"{name} of job {job_id}") for name in SAVED_MODEL]

    state = gate_round(VertexGateProvider(), None, props(gcs_fake, job_id))

    assert champions(gcs_fake) == copy_of("101")
    for name in SAVED_MODEL:
        copied = gcs_fake.path_of(f"{state['champion_artifact']}{name}").read_bytes()
        assert copied == gcs_fake.path_of(f"gs://{BUCKET}/jobs/101/model/{name}").read_bytes()
    calls = gcs_fake.requests_to("POST", r"/rewriteTo/b/")
    assert len(calls) == sum(-(-size // 8) for size in sizes)
    assert sum(1 for c in calls if c.query.get("rewriteToken")) == len(calls) - len(SAVED_MODEL)


def test_a_worse_job_is_held_a_better_one_promoted_and_delete_removes_every_copy(
    gcs_fake: GcsFake, job, warnings: list[str]
):
    provider = VertexGateProvider()
    first = gate_round(provider, None, props(gcs_fake, job("101", {"accuracy": 0.985})))
    held = gate_round(provider, first, props(gcs_fake, job("102", {"accuracy": 0.9})))
    assert held["champion"] == first["champion"] and held["champion_artifact"] == first["champion_artifact"]
    assert held["challenger"]["decision"] == "held"
    assert (
        "challenger accuracy 0.9000 < floor minAccuracy 0.9500 (champion accuracy 0.9850)"
        in (held["challenger"]["reason"])
    )
    assert any("held back" in w for w in warnings)
    assert champions(gcs_fake) == copy_of("101")  # nothing copied for a held challenger

    promoted = gate_round(provider, held, props(gcs_fake, job("103", {"accuracy": 0.99})))
    assert promoted["champion"]["source"] == f"{JOBS}/103"
    assert promoted["champion_artifact"] == f"gs://{BUCKET}/champions/tensorflow/103/"
    # The previous champion's copy stays one round: the endpoint may still be serving it.
    assert promoted["retired"]["source"] == f"{JOBS}/101"
    assert champions(gcs_fake) == copy_of("101") + copy_of("103")
    provider.delete("gate", promoted)
    assert champions(gcs_fake) == []
    provider.delete("gate", promoted)  # already gone: success


def test_force_promotion_serves_a_worse_job_and_says_so(gcs_fake: GcsFake, job, warnings: list[str]):
    provider = VertexGateProvider()
    first = gate_round(provider, None, props(gcs_fake, job("101", {"accuracy": 0.985})))
    forced = gate_round(provider, first, props(gcs_fake, job("102", {"accuracy": 0.6}), force=True))
    assert forced["challenger"]["decision"] == "forced"
    assert forced["champion_artifact"] == f"gs://{BUCKET}/champions/tensorflow/102/"
    assert any(w.startswith("gate tensorflow: ") and "forcePromotion is true" in w for w in warnings)


@pytest.mark.parametrize(
    ("metrics", "why"),
    [
        (None, "metrics.json does not exist"),
        ("{not json", "is not JSON"),
        ({"accuracy": "high"}, "has no accuracy in [0, 1]"),
        ({"accuracy": float("nan")}, "has no accuracy in [0, 1]"),
        ({"loss": 0.1}, "has no accuracy in [0, 1] (accuracy: None)"),
    ],
)
def test_a_job_whose_accuracy_cannot_be_read_is_never_promoted(gcs_fake: GcsFake, job, metrics, why):
    provider = VertexGateProvider()
    with pytest.raises(GateError) as first:
        provider.create(props(gcs_fake, job("100", metrics)))
    assert why in str(first.value) and "No endpoint is created for tensorflow" in str(first.value)
    assert champions(gcs_fake) == []

    state = gate_round(provider, None, props(gcs_fake, job("101", {"accuracy": 0.985})))
    held = gate_round(provider, state, props(gcs_fake, job("102", metrics), min_accuracy=0.0, tolerance=1.0))
    assert held["challenger"]["decision"] == "held"
    assert "could not be read" in held["challenger"]["reason"] and why in held["challenger"]["reason"]
    assert held["champion"] == state["champion"] and champions(gcs_fake) == copy_of("101")


def test_a_champion_copy_removed_behind_the_stacks_back_is_decided_again(
    gcs_fake: GcsFake, job, warnings: list[str]
):
    provider = VertexGateProvider()
    news = props(gcs_fake, job("101", {"accuracy": 0.985}))
    state = gate_round(provider, None, news)
    assert not provider.diff("gate", state, news).changes
    for path in (gcs_fake.root / BUCKET / "champions").rglob("*"):
        if path.is_file():
            path.unlink()
    assert provider.diff("gate", state, news).changes
    again = gate_round(provider, state, news)
    assert any("is gone (removed behind the stack's back)" in w for w in warnings)
    assert again["champion_artifact"] == state["champion_artifact"] and champions(gcs_fake) == copy_of("101")


def test_delete_takes_404_as_gone_and_a_deleted_bucket_as_no_copy_left(gcs_fake: GcsFake, job):
    provider = VertexGateProvider()
    state = gate_round(provider, None, props(gcs_fake, job("101", {"accuracy": 0.985})))
    # As if someone deleted that object between the gate's listing and its delete: 404, already gone.
    gcs_fake.fail_next("DELETE", r"/o/champions%2Ftensorflow%2F101%2Fsaved_model\.pb$", 404)
    provider.delete("gate", state)
    assert champions(gcs_fake) == ["tensorflow/101/saved_model.pb"]  # (the fake only answered 404)
    shutil.rmtree(gcs_fake.root / BUCKET)
    provider.delete("gate", state)  # the bucket itself is gone (404): so is every copy
    assert not provider.kept(state, state["champion_artifact"])


def test_429_and_503_are_retried(gcs_fake: GcsFake, job):
    gcs_fake.fail_next("GET", r"/o/jobs%2F101%2Fmetrics\.json$", 429)
    gcs_fake.fail_next("POST", r"/rewriteTo/b/", 429, times=2)
    gcs_fake.fail_next("DELETE", r"/o/champions%2F", 503)
    provider = VertexGateProvider()
    state = gate_round(provider, None, props(gcs_fake, job("101", {"accuracy": 0.985})))
    assert champions(gcs_fake) == copy_of("101")
    assert len(gcs_fake.requests_to("POST", r"/rewriteTo/b/")) == len(SAVED_MODEL) + 2
    provider.delete("gate", state)
    assert champions(gcs_fake) == []


def test_a_failed_copy_leaves_no_half_copy_and_names_the_permissions(
    gcs_fake: GcsFake, job, monkeypatch: pytest.MonkeyPatch
):
    # A 403 is retried while a fresh grant may still propagate (minutes; here half a second), then fails.
    monkeypatch.setattr(clients, "IAM_PROPAGATION_SECONDS", 0.5)
    gcs_fake.fail_next("POST", r"variables%2Fvariables\.index/rewriteTo/", 403, times=1000)
    with pytest.raises(GateError) as error:
        VertexGateProvider().create(props(gcs_fake, job("101", {"accuracy": 0.985})))
    assert "could not copy" in str(error.value) and "storage.objects" in str(error.value)
    assert champions(gcs_fake) == []


def test_the_gate_never_deletes_outside_one_champion_folder(gcs_fake: GcsFake, job):
    state = gate_round(VertexGateProvider(), None, props(gcs_fake, job("101", {"accuracy": 0.985})))
    for damaged in (
        f"gs://{BUCKET}/",
        f"gs://{BUCKET}/jobs/101/model",
        f"gs://{BUCKET}/champions/tensorflow/",
    ):
        with pytest.raises(GateError, match="not a champion copy"):
            VertexGateProvider().discard(state, damaged)
    assert champions(gcs_fake) == copy_of("101")
    assert gcs_fake.path_of(f"gs://{BUCKET}/jobs/101/model/saved_model.pb").is_file()


# -- the stack, with the gate executed for real ------------------------------------------------------

# What the mocked custom job's trainer "measured" for the epochs it was given (none: the default).
ACCURACY_BY_EPOCHS = {None: 0.985, "1": 0.60, "12": 0.995}


class StackWithRealGate:
    """`pulumi up` of the gcp stack under mocks; only the gate runs for real, against the Cloud Storage
    fake, where each mocked custom job leaves a SavedModel and metrics.json as the TF trainer would."""

    def __init__(self, gcs: GcsFake) -> None:
        self.gcs = gcs
        self.engine = ProviderEngine()
        self.registered: list[str] = []

    def _new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        self.registered.append(args.typ)
        if args.typ == GATE:
            return self.engine(args)
        id_, state = gcp_mocks._outputs(args)
        if args.typ == CUSTOM_JOB:
            sets = dict(v.split("=", 1) for k, v in itertools.pairwise(state["args"]) if k == "--set")
            accuracy = ACCURACY_BY_EPOCHS[sets.get("epochs")]
            base = state["base_output_directory"]
            self.gcs.put(f"{base}/model/saved_model.pb", state["display_name"].encode())
            self.gcs.put(f"{base}/metrics.json", json.dumps({"accuracy": accuracy}).encode())
        return id_, state

    def up(self, data_dir: Path, overrides: dict[str, Any] | None = None) -> StackRun:
        endpoints = GcpApiEndpoints(storage=self.gcs.api_endpoint)

        def program() -> None:
            settings = load_settings(
                "gcp", pulumi.Config(), aws_config=pulumi.Config("aws"), gcp_config=pulumi.Config("gcp")
            )
            platform = VertexPlatform.from_settings("mnist", settings, endpoints)
            for key in ("endpoints", "models", "bucket", "dataset"):
                pulumi.export(key, getattr(platform, key))

        config = {"dataset": "mnist-t10k", "dataDir": str(data_dir), **(overrides or {})}
        run = run_stack("gcp", config, new_resource=self._new_resource, call=gcp_mocks._call, program=program)
        self.engine.finish()
        return run


def serving(run: StackRun) -> dict[str, Props]:
    """The inputs of the model and the deployment, as their providers receive them."""
    return {typ: provider_inputs(run.one(typ)) for typ in SERVING}


@pytest.mark.slow
def test_a_losing_job_leaves_model_and_deployment_unchanged_a_winner_rolls_forward(
    gcs_fake: GcsFake, t10k_dir: Path, warnings: list[str]
):
    stack = StackWithRealGate(gcs_fake)
    first = stack.up(t10k_dir)
    job_1 = first.one(CUSTOM_JOB).outputs["job_id"]
    champion_1 = f"gs://{BUCKET_NAME}/champions/tensorflow/{job_1}/"
    assert first.one(MODEL).inputs["artifact_uri"] == champion_1
    assert first.outputs["models"]["tensorflow"]["champion"]["accuracy"] == 0.985
    assert gcs_fake.path_of(f"{champion_1}saved_model.pb").is_file()

    worse = stack.up(t10k_dir, {"hyperparameters": {"tensorflow": {"epochs": 1}}})
    assert worse.one(CUSTOM_JOB).outputs["job_id"] != job_1  # it did retrain
    assert ("update", "mnist-gate") in stack.engine.steps
    # Same inputs for the model and the deployment: Pulumi changes neither.
    assert serving(worse) == serving(first) and replaced_by_diff(first, worse, SERVING) == []
    model = worse.outputs["models"]["tensorflow"]
    assert model["artifact"] == champion_1 and model["challenger"]["decision"] == "held"
    assert "challenger accuracy 0.6000 < floor minAccuracy 0.9800" in model["challenger"]["reason"]
    assert any("held back" in w for w in warnings)

    better = stack.up(t10k_dir, {"hyperparameters": {"tensorflow": {"epochs": 12}}})
    job_3 = better.one(CUSTOM_JOB).outputs["job_id"]
    champion_3 = f"gs://{BUCKET_NAME}/champions/tensorflow/{job_3}/"
    assert better.one(MODEL).inputs["artifact_uri"] == champion_3
    assert better.one(DEPLOYMENT).inputs["display_name"] == f"mnist-gcp-tensorflow-{job_3}"
    assert better.outputs["models"]["tensorflow"]["challenger"]["decision"] == "promoted"
    # As before the gate: a new model and a new deployment behind the same endpoint.
    assert replaced_by_diff(worse, better, SERVING) == ["mnist-model", "mnist-deployment"]
    assert better.outputs["endpoints"] == first.outputs["endpoints"]

    stack.engine.destroy()
    assert not (gcs_fake.root / BUCKET_NAME / "champions").exists() or not any(
        p.is_file() for p in (gcs_fake.root / BUCKET_NAME / "champions").rglob("*")
    )


@pytest.mark.slow
def test_a_first_job_under_the_floor_fails_before_any_model_or_deployment(gcs_fake: GcsFake, t10k_dir: Path):
    stack = StackWithRealGate(gcs_fake)
    with pytest.raises(Exception, match="No endpoint is created for tensorflow"):
        stack.up(t10k_dir, {"hyperparameters": {"tensorflow": {"epochs": 1}}})
    assert GATE in stack.registered and MODEL not in stack.registered and DEPLOYMENT not in stack.registered

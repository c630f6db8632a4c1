"""The watsonx.ai stack's champion gate: its provider with ibm_boto3 (IBM's own COS SDK) against the
loopback fake of IBM Cloud (tests/ibm/fakes, HTTPS with the test CA), and the whole stack under mocks
with the gate executed for real (tests/harness.py ProviderEngine) on what mocked training jobs upload.

A "finished job" here is what the ibm stack's TrainingJob leaves in the bucket: `models/<job id>/` with
model.tar.gz, model.onnx and the trainer's metrics.json (infra/ibm/training_job.py).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import IbmCloudFake
from fakes import clients as ibm
from harness import ProviderEngine, StackRun, gate_round, provider_inputs, replaced_by_diff, run_stack
from ibm_mocks import BUCKET, DEPLOYMENT, GATE, MODEL, TRAINING_JOB, plausible_outputs
from pulumi.runtime.mocks import MockResourceArgs

from infra.gate_provider import GateError
from infra.hashing import content_hash
from infra.ibm import connection
from infra.ibm.gate import WatsonxGateProvider

TEST_BUCKET = "mnist-gate-test"
UPLOADED = ("metrics.json", "model.onnx", "model.tar.gz")
Props = dict[str, Any]
SERVING = (MODEL, DEPLOYMENT)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # The providers' backoff policy, compressed: the tests prove they retry, not how long they sleep.
    monkeypatch.setattr(connection, "wait_exponential", lambda **_: lambda _state: 0.01)


def endpoints(fake: IbmCloudFake) -> dict[str, str]:
    """The fake's URLs, as the stack's `ibmEndpoints` passes them to every provider."""
    names = ("iam_url", "resource_controller_url", "global_catalog_url", "iam_policy_url", "cos_url")
    return {
        **{name: getattr(fake, name) for name in names},
        "wml_url": fake.wml_url,
        "platform_url": fake.platform_url,
        "ca_file": fake.ca_file,
        "poll_seconds": "0.05",
    }


@pytest.fixture
def cos(ibm_cloud_fake: IbmCloudFake) -> Any:
    """An ibm_boto3 client of the fake's COS, with the test bucket in a COS instance of the account."""
    instance = ibm_cloud_fake.existing_instance("cloud-object-storage", "standard", "mnist-cos")
    s3 = ibm.cos(ibm_cloud_fake, instance["guid"])
    s3.create_bucket(
        Bucket=TEST_BUCKET, CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    return s3


@pytest.fixture
def job(cos: Any) -> Callable[..., str]:
    """A finished training job's upload; returns its id. `metrics`: what metrics.json holds (a dict as
    JSON, text as is, None: no file)."""

    def make(job_id: str, metrics: Any) -> str:
        for name in ("model.onnx", "model.tar.gz"):
            body = f"{name} of {job_id}".encode()
            cos.put_object(Bucket=TEST_BUCKET, Key=f"models/{job_id}/{name}", Body=body)
        if metrics is not None:
            text = metrics if isinstance(metrics, str) else json.dumps(metrics)
            cos.put_object(Bucket=TEST_BUCKET, Key=f"models/{job_id}/metrics.json", Body=text.encode())
        return job_id

    return make


def props(fake: IbmCloudFake, job_id: str, **rule: Any) -> Props:
    return {
        "model": "pytorch",
        "challenger_id": job_id,
        "challenger_artifact": f"cos://{TEST_BUCKET}/models/{job_id}/model.tar.gz",
        "bucket": TEST_BUCKET,
        "min_accuracy": rule.get("min_accuracy", 0.98),
        "promotion_tolerance": rule.get("tolerance", 0.0),
        "force_promotion": rule.get("force", False),
        "api_key": fake.api_key,
        "region": fake.region,
        "endpoints": endpoints(fake),
    }


def champions(fake: IbmCloudFake) -> list[str]:
    """Every object under the bucket's champions/ prefix, relative to it."""
    objects = fake.state.buckets[TEST_BUCKET].objects
    return sorted(k.removeprefix("champions/") for k in objects if k.startswith("champions/"))


def copy_of(job_id: str) -> list[str]:
    return [f"pytorch/{job_id}/{name}" for name in UPLOADED]


# -- the provider ----------------------------------------------------------------------------------


def test_a_first_good_job_is_scored_by_its_metrics_and_copied(ibm_cloud_fake: IbmCloudFake, job):
    # `trained` is when the job wrote metrics.json (its LastModified in COS): inside this test's window.
    started = dt.datetime.now(dt.UTC).replace(microsecond=0)
    job_props = props(ibm_cloud_fake, job("pytorch-1", {"accuracy": 0.985}))
    written = dt.datetime.now(dt.UTC)
    state = gate_round(WatsonxGateProvider(), None, job_props)
    champion = state["champion"]
    assert started <= dt.datetime.fromisoformat(champion["trained"]) <= written
    copy = f"cos://{TEST_BUCKET}/champions/pytorch/pytorch-1/model.tar.gz"
    assert state["champion_artifact"] == champion["artifact"] == copy
    assert (champion["accuracy"], champion["source"]) == (0.985, "pytorch-1")
    assert champion["metrics"] == {"accuracy": 0.985}
    assert state["challenger"]["decision"] == "promoted"
    assert champions(ibm_cloud_fake) == copy_of("pytorch-1")
    stored = ibm_cloud_fake.state.buckets[TEST_BUCKET].objects["champions/pytorch/pytorch-1/model.tar.gz"]
    assert stored.body == b"model.tar.gz of pytorch-1"
    # Copied server-side (CopyObject), never downloaded and uploaded again.
    copies = ibm_cloud_fake.requests_to("cos", "PUT", r"^/mnist-gate-test/champions/")
    assert len(copies) == len(UPLOADED)
    assert all("x-amz-copy-source" in {k.lower() for k in r.headers} for r in copies)


def test_a_worse_job_is_held_a_better_one_promoted_and_delete_removes_every_copy(
    ibm_cloud_fake: IbmCloudFake, job, warnings: list[str]
):
    provider = WatsonxGateProvider()
    first = gate_round(provider, None, props(ibm_cloud_fake, job("pytorch-1", {"accuracy": 0.985})))
    held = gate_round(provider, first, props(ibm_cloud_fake, job("pytorch-2", {"accuracy": 0.97})))
    assert held["champion"] == first["champion"] and held["champion_artifact"] == first["champion_artifact"]
    assert held["challenger"]["decision"] == "held"
    assert (
        "challenger accuracy 0.9700 < floor minAccuracy 0.9800 (champion accuracy 0.9850)"
        in (held["challenger"]["reason"])
    )
    assert any("held back" in w for w in warnings)
    assert champions(ibm_cloud_fake) == copy_of("pytorch-1")

    promoted = gate_round(provider, held, props(ibm_cloud_fake, job("pytorch-3", {"accuracy": 0.99})))
    assert promoted["champion"]["source"] == "pytorch-3"
    # The previous champion's copy stays one round: the deployment may still be serving it.
    assert promoted["retired"]["source"] == "pytorch-1"
    assert champions(ibm_cloud_fake) == copy_of("pytorch-1") + copy_of("pytorch-3")
    provider.delete("gate", promoted)
    assert champions(ibm_cloud_fake) == []
    provider.delete("gate", promoted)  # already gone: success


def test_force_promotion_serves_a_worse_job_and_says_so(
    ibm_cloud_fake: IbmCloudFake, job, warnings: list[str]
):
    provider = WatsonxGateProvider()
    first = gate_round(provider, None, props(ibm_cloud_fake, job("pytorch-1", {"accuracy": 0.985})))
    forced = gate_round(
        provider, first, props(ibm_cloud_fake, job("pytorch-2", {"accuracy": 0.6}), force=True)
    )
    assert forced["challenger"]["decision"] == "forced"
    assert forced["champion_artifact"] == f"cos://{TEST_BUCKET}/champions/pytorch/pytorch-2/model.tar.gz"
    assert any(w.startswith("gate pytorch: ") and "forcePromotion is true" in w for w in warnings)


@pytest.mark.parametrize(
    ("metrics", "why"),
    [
        (None, "metrics.json does not exist"),
        ("{not json", "is not JSON"),
        ({"accuracy": 98.5}, "has no accuracy in [0, 1] (accuracy: 98.5)"),
        ({"loss": 0.1}, "has no accuracy in [0, 1] (accuracy: None)"),
    ],
)
def test_a_job_whose_accuracy_cannot_be_read_is_never_promoted(
    ibm_cloud_fake: IbmCloudFake, job, metrics, why
):
    provider = WatsonxGateProvider()
    with pytest.raises(GateError) as first:
        provider.create(props(ibm_cloud_fake, job("pytorch-0", metrics)))
    assert why in str(first.value) and "No endpoint is created for pytorch" in str(first.value)
    assert champions(ibm_cloud_fake) == []

    state = gate_round(provider, None, props(ibm_cloud_fake, job("pytorch-1", {"accuracy": 0.985})))
    news = props(ibm_cloud_fake, job("pytorch-2", metrics), min_accuracy=0.0, tolerance=1.0)
    held = gate_round(provider, state, news)
    assert held["challenger"]["decision"] == "held"
    assert "could not be read" in held["challenger"]["reason"] and why in held["challenger"]["reason"]
    assert held["champion"] == state["champion"] and champions(ibm_cloud_fake) == copy_of("pytorch-1")


def test_a_champion_copy_removed_behind_the_stacks_back_is_decided_again(
    ibm_cloud_fake: IbmCloudFake, job, cos: Any, warnings: list[str]
):
    provider = WatsonxGateProvider()
    news = props(ibm_cloud_fake, job("pytorch-1", {"accuracy": 0.985}))
    state = gate_round(provider, None, news)
    assert not provider.diff("gate", state, news).changes
    cos.delete_object(Bucket=TEST_BUCKET, Key="champions/pytorch/pytorch-1/model.tar.gz")
    assert provider.diff("gate", state, news).changes
    again = gate_round(provider, state, news)
    assert any("is gone (removed behind the stack's back)" in w for w in warnings)
    assert again["champion_artifact"] == state["champion_artifact"]
    assert champions(ibm_cloud_fake) == copy_of("pytorch-1")


def test_delete_takes_404_as_gone_and_a_deleted_bucket_as_no_copy_left(
    ibm_cloud_fake: IbmCloudFake, job, cos: Any
):
    provider = WatsonxGateProvider()
    state = gate_round(provider, None, props(ibm_cloud_fake, job("pytorch-1", {"accuracy": 0.985})))
    ibm_cloud_fake.fail_next("POST", rf"^/{TEST_BUCKET}/?$", 404, service="cos")  # DeleteObjects
    provider.delete("gate", state)  # 404: already gone
    cos.delete_objects(
        Bucket=TEST_BUCKET,
        Delete={"Objects": [{"Key": k} for k in ibm_cloud_fake.state.buckets[TEST_BUCKET].objects]},
    )
    cos.delete_bucket(Bucket=TEST_BUCKET)
    provider.delete("gate", state)  # the bucket itself is gone (NoSuchBucket): so is every copy
    assert not provider.kept(state, state["champion_artifact"])


def test_429_and_503_are_retried(ibm_cloud_fake: IbmCloudFake, job):
    ibm_cloud_fake.fail_next("GET", r"/models/pytorch-1/metrics\.json$", 503, service="cos")
    ibm_cloud_fake.fail_next("PUT", r"/champions/", 429, times=2, service="cos")
    ibm_cloud_fake.fail_next("POST", rf"^/{TEST_BUCKET}/?$", 429, service="cos")  # DeleteObjects
    provider = WatsonxGateProvider()
    state = gate_round(provider, None, props(ibm_cloud_fake, job("pytorch-1", {"accuracy": 0.985})))
    assert champions(ibm_cloud_fake) == copy_of("pytorch-1")
    copies = ibm_cloud_fake.requests_to("cos", "PUT", r"^/mnist-gate-test/champions/")
    assert len(copies) == len(UPLOADED) + 2
    provider.delete("gate", state)
    assert champions(ibm_cloud_fake) == []


def test_a_failed_copy_leaves_no_half_copy_and_names_the_access_needed(ibm_cloud_fake: IbmCloudFake, job):
    ibm_cloud_fake.fail_next("PUT", r"/champions/pytorch/pytorch-1/model\.tar\.gz$", 403, service="cos")
    with pytest.raises(GateError) as error:
        WatsonxGateProvider().create(props(ibm_cloud_fake, job("pytorch-1", {"accuracy": 0.985})))
    assert "HTTP 403" in str(error.value) and "Writer on the COS instance" in str(error.value)
    assert champions(ibm_cloud_fake) == []


def test_the_gate_never_deletes_outside_one_champion_folder(ibm_cloud_fake: IbmCloudFake, job):
    state = gate_round(
        WatsonxGateProvider(), None, props(ibm_cloud_fake, job("pytorch-1", {"accuracy": 0.985}))
    )
    damaged = (
        f"cos://{TEST_BUCKET}/model.tar.gz",
        f"cos://{TEST_BUCKET}/models/pytorch-1/model.tar.gz",
        f"cos://{TEST_BUCKET}/champions/pytorch/model.tar.gz",
    )
    for artifact in damaged:
        with pytest.raises(GateError, match="not a champion copy"):
            WatsonxGateProvider().discard(state, artifact)
    assert champions(ibm_cloud_fake) == copy_of("pytorch-1")
    assert "models/pytorch-1/model.tar.gz" in ibm_cloud_fake.state.buckets[TEST_BUCKET].objects


def test_a_rotated_api_key_is_recorded_without_a_new_round_and_used_by_delete(
    ibm_cloud_fake: IbmCloudFake, job, warnings: list[str]
):
    provider = WatsonxGateProvider()
    first = gate_round(provider, None, props(ibm_cloud_fake, job("pytorch-1", {"accuracy": 0.985})))
    held = gate_round(provider, first, props(ibm_cloud_fake, job("pytorch-2", {"accuracy": 0.5})))
    warned = len(warnings)
    ibm_cloud_fake.state.api_keys.add("rotated-key")
    ibm_cloud_fake.state.api_keys.discard(ibm_cloud_fake.api_key)  # the old key no longer works
    rotated = {**props(ibm_cloud_fake, "pytorch-2"), "api_key": "rotated-key"}
    diff = provider.diff("gate", held, rotated)
    assert diff.changes and not diff.replaces  # a new key is no reason to decide (or copy) anything
    outs = provider.update("gate", held, rotated).outs or {}
    assert outs["api_key"] == "rotated-key" and len(warnings) == warned  # not held back a second time
    assert outs["champion"] == held["champion"] and outs["challenger"] == held["challenger"]
    provider.delete("gate", outs)
    assert champions(ibm_cloud_fake) == []


# -- the stack, with the gate executed for real ------------------------------------------------------

# What the mocked training job's trainer "measured" for the epochs it was given (none: the default).
ACCURACY_BY_EPOCHS = {None: 0.985, "1": 0.60, "12": 0.995}


class StackWithRealGate:
    """`pulumi up` of the ibm stack under mocks; only the gate runs for real, against the fake's COS,
    where each mocked training job uploads what the real one would."""

    def __init__(self, fake: IbmCloudFake, cos: Any, root: Path) -> None:
        self.fake, self.cos, self.root = fake, cos, root
        self.engine = ProviderEngine()
        self.registered: list[str] = []

    def _new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        self.registered.append(args.typ)
        if args.typ == GATE:
            return self.engine(args)
        state = {**args.inputs, **plausible_outputs(args)}
        if args.typ == BUCKET:
            state["bucket"] = TEST_BUCKET  # the fake's bucket (see the `cos` fixture)
        if args.typ == TRAINING_JOB:
            epochs = (args.inputs.get("hyperparameters") or {}).get("epochs")
            accuracy = ACCURACY_BY_EPOCHS[None if epochs is None else str(epochs)]
            job_id = f"pytorch-{content_hash(args.inputs['hyperparameters'], 8)}"
            prefix = f"models/{job_id}/"
            for name, body in (("model.tar.gz", job_id), ("model.onnx", job_id), ("metrics.json", "")):
                data = json.dumps({"accuracy": accuracy}) if name == "metrics.json" else body
                self.cos.put_object(Bucket=TEST_BUCKET, Key=prefix + name, Body=data.encode())
            state.update(
                job_id=job_id,
                archive_key=prefix + "model.tar.gz",
                artifact=f"cos://{TEST_BUCKET}/{prefix}model.tar.gz",
            )
        if args.typ == MODEL:
            state["model_id"] = f"model-{content_hash(args.inputs['archive_key'], 8)}"  # one per upload
        return f"{args.name}-id", state

    def up(self, data_dir: Path, overrides: dict[str, Any] | None = None) -> StackRun:
        config = {
            "ibm:apiKey": self.fake.api_key,
            "dataset": "mnist-t10k",
            "dataDir": str(data_dir),
            "localRoot": str(self.root),
            "ibmEndpoints": json.dumps(endpoints(self.fake)),
            **(overrides or {}),
        }
        run = run_stack("ibm", config, new_resource=self._new_resource)
        self.engine.finish()
        return run


def serving(run: StackRun) -> dict[str, Props]:
    """The inputs of the stored model and the deployment, as their providers receive them."""
    return {typ: provider_inputs(run.one(typ)) for typ in SERVING}


@pytest.mark.slow
def test_a_losing_job_leaves_model_and_deployment_unchanged_a_winner_rolls_forward(
    ibm_cloud_fake: IbmCloudFake, cos: Any, tmp_path: Path, t10k_dir: Path, warnings: list[str]
):
    stack = StackWithRealGate(ibm_cloud_fake, cos, tmp_path / "work")
    first = stack.up(t10k_dir)
    job_1 = first.one(TRAINING_JOB).outputs["job_id"]
    assert first.one(MODEL).props["archive_key"] == f"champions/pytorch/{job_1}/model.tar.gz"
    assert first.outputs["models"]["pytorch"]["champion"]["accuracy"] == 0.985

    worse = stack.up(t10k_dir, {"hyperparameters": {"pytorch": {"epochs": 1}}})
    assert worse.one(TRAINING_JOB).outputs["job_id"] != job_1  # it did retrain
    assert ("update", "mnist-pytorch-gate") in stack.engine.steps
    # Same inputs for the stored model and the deployment: Pulumi changes neither.
    assert serving(worse) == serving(first) and replaced_by_diff(first, worse, SERVING) == []
    model = worse.outputs["models"]["pytorch"]
    assert model["artifact"] == f"cos://{TEST_BUCKET}/champions/pytorch/{job_1}/model.tar.gz"
    assert model["challenger"]["decision"] == "held"
    assert "challenger accuracy 0.6000 < floor minAccuracy 0.9800" in model["challenger"]["reason"]
    assert any("held back" in w for w in warnings)

    better = stack.up(t10k_dir, {"hyperparameters": {"pytorch": {"epochs": 12}}})
    job_3 = better.one(TRAINING_JOB).outputs["job_id"]
    assert better.one(MODEL).props["archive_key"] == f"champions/pytorch/{job_3}/model.tar.gz"
    assert better.outputs["models"]["pytorch"]["challenger"]["decision"] == "promoted"
    # As before the gate: a new stored model, and a new deployment of it.
    assert replaced_by_diff(worse, better, SERVING) == [
        "mnist-pytorch-model",
        "mnist-pytorch-deployment",
    ]

    stack.engine.destroy()
    assert champions(ibm_cloud_fake) == []


@pytest.mark.slow
def test_a_first_job_under_the_floor_fails_before_any_model_or_deployment(
    ibm_cloud_fake: IbmCloudFake, cos: Any, tmp_path: Path, t10k_dir: Path
):
    stack = StackWithRealGate(ibm_cloud_fake, cos, tmp_path / "work")
    with pytest.raises(Exception, match="No endpoint is created for pytorch"):
        stack.up(t10k_dir, {"hyperparameters": {"pytorch": {"epochs": 1}}})
    assert GATE in stack.registered and MODEL not in stack.registered and DEPLOYMENT not in stack.registered

"""The local stack's program under Pulumi mocks, with the config of Pulumi.local.yaml.

What `pulumi up --stack local` would declare: one dataset, a training job and an endpoint per model,
all children of one LocalPlatform, chained by their inputs, and the outputs every client reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import PROJECT_ROOT, Resource, StackRun, run_stack
from pulumi.runtime.mocks import MockResourceArgs

from infra.dynamic import IDENTITY_SEED
from infra.local.dataset import LocalDatasetProvider
from infra.local.endpoint import LocalEndpointProvider
from infra.local.gate import LocalGateProvider
from infra.local.platform import training_code_hash
from infra.local.training_job import LocalTrainingJobProvider
from infra.local.ui import LocalUiProvider
from infra.settings import Framework

PLATFORM = "mnist-platform:local:LocalPlatform"
DATASET = "pulumi-python:dynamic/local:Dataset"
TRAINING_JOB = "pulumi-python:dynamic/local:TrainingJob"
ENDPOINT = "pulumi-python:dynamic/local:Endpoint"
GATE = "pulumi-python:dynamic/local:ChampionGate"
UI = "pulumi-python:dynamic/local:Ui"
MODELS = ("xgboost", "tensorflow", "pytorch")


def plausible_outputs(args: MockResourceArgs) -> dict[str, Any]:
    """What the real providers compute, in the same shape, so the program's outputs can be checked."""
    inputs = args.inputs
    if args.typ == DATASET:
        return {"path": f"{inputs['root']}/data/ds-1", "content_hash": "c0ffee", "files": {}, "n_train": 8000}
    if args.typ == TRAINING_JOB:
        out = f"{inputs['root']}/models/{inputs['framework']}-1"
        return {
            "out_dir": out,
            "artifact": f"{out}/artifact",
            "artifact_hash": f"hash-{inputs['framework']}",
            # A different figure per model, so that outputs wired to the wrong job would show.
            "metrics": {"accuracy": 0.97 + 0.01 * MODELS.index(inputs["framework"]), "train_seconds": 3.0},
        }
    if args.typ == GATE:
        artifact = f"{inputs['root']}/champions/{inputs['model']}/{inputs['challenger_id']}/artifact"
        # Per model, so that outputs wired to another model's gate would show.
        index = MODELS.index(inputs["model"])
        champion = {
            "source": inputs["challenger_id"],
            "artifact": artifact,
            "accuracy": 0.97 + 0.01 * index,
            "metrics": {"train_seconds": 3.0 + index},
        }
        return {
            "champion": champion,
            "champion_artifact": artifact,
            "challenger": {**champion, "decision": "promoted", "reason": "first"},
        }
    if args.typ == ENDPOINT:
        port = int(inputs.get("requested_port") or 0) or 40000 + MODELS.index(inputs["model"])
        return {"url": f"http://127.0.0.1:{port}", "port": port, "pid": 4242}
    if args.typ == UI:
        return {"url": "http://127.0.0.1:41000", "port": 41000, "pid": 4343}
    return {}


@pytest.fixture(scope="module")
def local_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-root")


@pytest.fixture(scope="module")
def run(local_root: Path) -> StackRun:
    root = local_root
    return run_stack(
        "local",
        {
            "localRoot": str(root),
            "hyperparameters": {"xgboost": {"num_round": 20}},
            "ports": {"pytorch": 8093},
        },
        outputs=plausible_outputs,
    )


def test_local_stack_declares_one_dataset_and_a_job_a_gate_and_an_endpoint_per_model(run: StackRun):
    assert len(run.of_type(PLATFORM)) == 1
    assert len(run.of_type(DATASET)) == 1
    assert sorted(r.props["framework"] for r in run.of_type(TRAINING_JOB)) == sorted(MODELS)
    assert sorted(r.props["model"] for r in run.of_type(GATE)) == sorted(MODELS)
    assert sorted(r.props["model"] for r in run.of_type(ENDPOINT)) == sorted(MODELS)


def test_every_resource_is_a_child_of_the_platform_named_after_it(run: StackRun):
    platform = run.one(PLATFORM)
    children = run.children_of(platform)
    assert len(children) == 11 == len(run.resources) - 1
    assert all(child.name.startswith(f"{platform.name}-") for child in children)
    assert run.one(DATASET).name == f"{platform.name}-data"
    assert run.one(TRAINING_JOB, "xgboost").name == f"{platform.name}-xgboost-training"
    assert run.one(ENDPOINT, "xgboost").name == f"{platform.name}-xgboost-endpoint"
    assert run.one(GATE, "xgboost").name == f"{platform.name}-xgboost-gate"
    assert run.one(UI).name == f"{platform.name}-ui"


def test_the_ui_page_is_fed_every_endpoint_and_exported_as_ui(run: StackRun):
    page = run.one(UI)
    assert all(run.depends_on(page, endpoint) for endpoint in run.of_type(ENDPOINT))
    assert page.props["endpoints"] == run.outputs["endpoints"]
    assert page.props["dataset"] == "mnist"
    assert page.props["stack"] == "local"
    assert run.outputs["ui"] == "http://127.0.0.1:41000"


def test_ui_false_declares_no_page_and_exports_no_ui(tmp_path: Path):
    run = run_stack("local", {"localRoot": str(tmp_path), "ui": False}, outputs=plausible_outputs)
    assert run.of_type(UI) == []
    assert "ui" not in run.outputs


@pytest.mark.parametrize("model", MODELS)
def test_endpoint_serves_the_gates_champion_and_the_gate_judges_the_training_job(run: StackRun, model: str):
    dataset, job, endpoint = run.one(DATASET), run.one(TRAINING_JOB, model), run.one(ENDPOINT, model)
    gate = run.one(GATE, model)
    assert run.depends_on(gate, job) and run.depends_on(job, dataset)
    # Through the inputs that carry the meaning: the champion the endpoint serves (never the job's own
    # output, which a retraining replaces), the challenger the gate judges, the data the job reads.
    assert endpoint.property_dependencies["model_dir"] == {gate.urn}
    assert endpoint.property_dependencies["artifact_hash"] == {gate.urn}
    assert not run.depends_on(endpoint, job)
    assert endpoint.props["model_dir"] == str(Path(gate.outputs["champion_artifact"]).parent)
    assert gate.props["challenger_id"] == job.id
    assert gate.props["challenger_artifact"] == job.outputs["artifact"]
    assert job.property_dependencies["data_hash"] == {dataset.urn}
    assert job.props["data_dir"] == dataset.outputs["path"]


def test_gates_apply_the_dataset_default_floor_and_the_configured_rule(run: StackRun, tmp_path: Path):
    floors = {r.props["model"]: r.props["min_accuracy"] for r in run.of_type(GATE)}
    assert floors == {"xgboost": 0.95, "tensorflow": 0.98, "pytorch": 0.98}  # mnist's defaults
    assert all(
        r.props["promotion_tolerance"] == 0 and r.props["force_promotion"] is False for r in run.of_type(GATE)
    )
    tuned = run_stack(
        "local",
        {
            "localRoot": str(tmp_path),
            "models": ["xgboost", "pytorch"],
            "dataset": "fashion-mnist",
            "minAccuracy": {"xgboost": 0.8},
            "promotionTolerance": 0.01,
            "forcePromotion": True,
        },
        outputs=plausible_outputs,
    )
    gates = {r.props["model"]: r.props for r in tuned.of_type(GATE)}
    assert gates["xgboost"]["min_accuracy"] == 0.8 and gates["pytorch"]["min_accuracy"] == 0.88
    assert all(g["promotion_tolerance"] == 0.01 and g["force_promotion"] is True for g in gates.values())


def test_training_jobs_carry_what_must_retrain_them(run: StackRun):
    xgboost = run.one(TRAINING_JOB, "xgboost")
    assert xgboost.props["dataset"] == "mnist"  # Pulumi.local.yaml's default
    assert xgboost.props["data_hash"] == "c0ffee"
    assert xgboost.props["code_hash"] == training_code_hash(Framework.XGBOOST)
    assert xgboost.props["hyperparameters"] == {"num_round": "20"}
    assert xgboost.props["dry_run"] is False
    assert xgboost.props["preset"] == "standard"  # Pulumi.yaml's trainingPreset reaches the trainer
    assert run.one(TRAINING_JOB, "pytorch").props["hyperparameters"] == {}


def test_endpoints_speak_the_contract_of_their_models_platform(run: StackRun):
    flavors = {r.props["model"]: r.props["flavor"] for r in run.of_type(ENDPOINT)}
    assert flavors == {"xgboost": "sagemaker", "tensorflow": "vertex", "pytorch": "watsonx"}
    ports = {r.props["model"]: r.props["requested_port"] for r in run.of_type(ENDPOINT)}
    assert ports == {"xgboost": 0, "tensorflow": 0, "pytorch": 8093}


def test_everything_the_stack_makes_lives_under_local_root(run: StackRun, local_root: Path):
    # What the program hands each provider: the configured localRoot, the one place a provider writes.
    dynamic = [r for r in run.resources if r.is_dynamic]
    assert len(dynamic) == 11  # the dataset, per model a training job, a gate and an endpoint, and the ui
    assert {r.name: r.props["root"] for r in dynamic} == {r.name: str(local_root) for r in dynamic}
    # ... and no provider is handed another place to write: the only other paths are what it reads
    # (the job reads the dataset's folder, the gate copies the job's artifact, the endpoint serves the
    # gate's champion copy).
    assert {key for r in dynamic for key, value in r.props.items() if str(value).startswith("/")} == {
        "root",
        "data_dir",
        "challenger_artifact",
        "model_dir",
    }


def test_outputs_follow_the_contract_every_client_reads(run: StackRun):
    endpoints = run.outputs["endpoints"]
    assert set(endpoints) == set(MODELS)
    assert endpoints["xgboost"] == {
        "flavor": "sagemaker",
        "name": "mnist-xgboost",
        "url": "http://127.0.0.1:40000",
        "region": "local",
    }
    assert endpoints["tensorflow"]["project"] == "local" and endpoints["tensorflow"]["flavor"] == "vertex"
    assert endpoints["pytorch"]["url"] == "http://127.0.0.1:8093"
    assert endpoints["pytorch"]["version"][:2] == "20" and len(endpoints["pytorch"]["version"]) == 10
    models = run.outputs["models"]
    assert set(models) == set(MODELS)
    assert set(models["xgboost"]) == {"artifact", "metrics", "champion", "challenger"}
    assert models["xgboost"]["metrics"]["accuracy"] == pytest.approx(0.97)
    champion = run.one(GATE, "xgboost").outputs["champion_artifact"]
    assert models["xgboost"]["artifact"] == models["xgboost"]["champion"]["artifact"] == champion
    assert models["xgboost"]["challenger"]["decision"] == "promoted"
    for model in MODELS:  # each model's entry is its own gate's champion, not another model's
        gate = run.one(GATE, model)
        champion = gate.outputs["champion"]
        assert models[model]["artifact"] == gate.outputs["champion_artifact"]
        assert models[model]["metrics"] == {**champion["metrics"], "accuracy": champion["accuracy"]}
    assert run.outputs["bucket"] == run.one(DATASET).outputs["path"]
    assert run.outputs["dataset"] == "mnist"


def test_component_registers_the_same_outputs_it_exposes(run: StackRun):
    registered = run.component_outputs[run.one(PLATFORM).urn]
    assert registered == run.outputs


@pytest.mark.parametrize(
    ("typ", "provider_class"),
    [
        (DATASET, LocalDatasetProvider),
        (TRAINING_JOB, LocalTrainingJobProvider),
        (ENDPOINT, LocalEndpointProvider),
        (GATE, LocalGateProvider),
        (UI, LocalUiProvider),
    ],
)
def test_each_dynamic_resource_carries_its_pickled_provider(run: StackRun, typ: str, provider_class: type):
    resource: Resource = run.of_type(typ)[0]
    assert isinstance(resource.provider(), provider_class)


def test_models_config_limits_what_is_declared(tmp_path: Path):
    run = run_stack("local", {"localRoot": str(tmp_path), "models": ["xgboost"]}, outputs=plausible_outputs)
    assert [r.props["framework"] for r in run.of_type(TRAINING_JOB)] == ["xgboost"]
    assert list(run.outputs["endpoints"]) == ["xgboost"]


def test_offline_config_reaches_the_dataset_and_the_trainers(tmp_path: Path, t10k_dir: Path):
    config = {"localRoot": str(tmp_path), "dataset": "mnist-t10k", "dataDir": str(t10k_dir), "dryRun": True}
    run = run_stack("local", config, outputs=plausible_outputs)
    assert run.one(DATASET).props == {
        "dataset": "mnist-t10k",
        "root": str(tmp_path),
        "stack": "local",
        "source_dir": str(t10k_dir),
        IDENTITY_SEED: run.one(DATASET).props[IDENTITY_SEED],
    }
    assert all(job.props["dry_run"] is True for job in run.of_type(TRAINING_JOB))
    assert run.outputs["dataset"] == "mnist-t10k"


def test_every_dynamic_resource_carries_an_identity_seed_of_its_own_stable_across_runs(tmp_path: Path):
    # What a create names what it makes with (infra/dynamic.py): one per resource, the same on the next
    # `pulumi up`, so that the next create finds what an interrupted one left.
    def seeds() -> dict[str, str]:
        run = run_stack("local", {"localRoot": str(tmp_path)}, outputs=plausible_outputs)
        return {r.name: r.props[IDENTITY_SEED] for r in run.resources if r.is_dynamic}

    first = seeds()
    assert len(first) == 11 and len(set(first.values())) == 11
    assert seeds() == first


def test_default_local_root_is_inside_the_project():
    run = run_stack("local", outputs=plausible_outputs)
    assert run.one(DATASET).props["root"] == str(PROJECT_ROOT / ".mnist-platform" / "local")


@pytest.mark.parametrize(
    ("stack", "config", "message"),
    [
        ("local", {"cloud": "azure"}, "cloud must be one of aws, gcp, ibm, local"),
        ("local", {"dataset": "cifar"}, "mnist-platform:dataset: Input should be 'mnist', 'mnist-t10k'"),
        ("local", {"models": ["jax"]}, "mnist-platform:models.0: Input should be 'xgboost'"),
        ("local", {"models": []}, "models must name at least one of"),
        ("local", {"ports": {"xgboost": 80}}, "port for xgboost must be between 1024 and 65535"),
        ("local", {"ports": "8080"}, "mnist-platform:ports"),
        ("local", {"hyperparameters": "{num_round: 3}"}, "hyperparameters must be JSON"),
    ],
)
def test_invalid_settings_fail_before_any_resource_with_what_to_fix(stack: str, config: dict, message: str):
    created: list[str] = []

    def new_resource(args: MockResourceArgs) -> tuple[str, dict]:
        created.append(args.name)
        return f"{args.name}-id", dict(args.inputs)

    with pytest.raises(ValueError, match=None) as error:
        run_stack(stack, config, new_resource=new_resource)
    assert message in str(error.value)
    assert created == []


def test_stack_file_sets_only_keys_the_project_documents():
    project = yaml.safe_load((PROJECT_ROOT / "Pulumi.yaml").read_text())
    stack = yaml.safe_load((PROJECT_ROOT / "Pulumi.local.yaml").read_text())
    keys = {key.split(":", 1)[1] for key in stack["config"] if key.startswith(f"{project['name']}:")}
    assert keys <= set(project["config"]), keys - set(project["config"])
    assert stack["config"]["mnist-platform:dataset"] == "mnist"


def test_training_code_hash_follows_the_sources_a_model_runs(tmp_path: Path):
    package = tmp_path / "training"
    package.mkdir()
    for module in ("run.py", "xgboost_trainer.py", "tf_trainer.py", "torch_trainer.py"):
        (package / module).write_text("EPOCHS = 1\n")
    before = {model: training_code_hash(model, package) for model in Framework}
    (package / "notes.txt").write_text("not code")
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "run.cpython-311.pyc").write_bytes(b"\0")
    assert {model: training_code_hash(model, package) for model in Framework} == before

    (package / "tf_trainer.py").write_text("EPOCHS = 2\n")  # only the TensorFlow model retrains
    assert training_code_hash(Framework.TENSORFLOW, package) != before[Framework.TENSORFLOW]
    assert training_code_hash(Framework.XGBOOST, package) == before[Framework.XGBOOST]
    (package / "run.py").write_text("EPOCHS = 2\n")  # shared code: every model retrains
    assert training_code_hash(Framework.XGBOOST, package) != before[Framework.XGBOOST]
    assert training_code_hash(Framework.PYTORCH, package) != before[Framework.PYTORCH]


def test_a_stack_run_after_a_failed_run_starts_clean(tmp_path: Path):
    """The SDK keeps outstanding RPCs and outputs process-wide; a failed run must not leak into the next."""

    def failing_training(args: MockResourceArgs) -> tuple[str, dict[str, Any]]:
        if args.typ == TRAINING_JOB:
            raise RuntimeError(f"training {args.inputs['framework']} crashed")
        return f"{args.name}-id", {**args.inputs, **plausible_outputs(args)}

    config = {"localRoot": str(tmp_path / "root")}
    with pytest.raises(RuntimeError, match="training xgboost crashed"):
        run_stack("local", config, new_resource=failing_training)

    after = run_stack("local", config, outputs=plausible_outputs)
    assert sorted(after.outputs["endpoints"]) == sorted(MODELS)


def test_a_stack_run_after_asyncio_run_left_no_event_loop_still_runs(tmp_path: Path):
    """`asyncio.run` (the load smoke's client does it) leaves the thread without a current loop; the
    harness gives the SDK one, so a later test's stack run raises its own error, not RuntimeError."""
    import asyncio

    asyncio.run(asyncio.sleep(0))
    with pytest.raises(ValueError, match="mnist-platform:dataset"):
        run_stack("local", {"localRoot": str(tmp_path / "root"), "dataset": "cifar"})
    asyncio.run(asyncio.sleep(0))
    assert sorted(
        run_stack("local", {"localRoot": str(tmp_path / "r")}, outputs=plausible_outputs).outputs["endpoints"]
    ) == sorted(MODELS)

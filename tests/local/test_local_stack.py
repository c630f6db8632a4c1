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

from infra.local.dataset import LocalDatasetProvider
from infra.local.endpoint import LocalEndpointProvider
from infra.local.platform import training_code_hash
from infra.local.training_job import LocalTrainingJobProvider
from infra.local.ui import LocalUiProvider
from infra.settings import Framework

PLATFORM = "mnist-platform:local:LocalPlatform"
DATASET = "pulumi-python:dynamic/local:Dataset"
TRAINING_JOB = "pulumi-python:dynamic/local:TrainingJob"
ENDPOINT = "pulumi-python:dynamic/local:Endpoint"
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
            "metrics": {"accuracy": 0.97, "train_seconds": 3.0},
        }
    if args.typ == ENDPOINT:
        port = int(inputs.get("requested_port") or 0) or 40000 + MODELS.index(inputs["model"])
        return {"url": f"http://127.0.0.1:{port}", "port": port, "pid": 4242}
    if args.typ == UI:
        return {"url": "http://127.0.0.1:41000", "port": 41000, "pid": 4343}
    return {}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> StackRun:
    root = tmp_path_factory.mktemp("local-root")
    return run_stack(
        "local",
        {
            "localRoot": str(root),
            "hyperparameters": {"xgboost": {"num_round": 20}},
            "ports": {"pytorch": 8093},
        },
        outputs=plausible_outputs,
    )


def test_local_stack_declares_one_dataset_and_a_job_and_an_endpoint_per_model(run: StackRun):
    assert len(run.of_type(PLATFORM)) == 1
    assert len(run.of_type(DATASET)) == 1
    assert sorted(r.props["framework"] for r in run.of_type(TRAINING_JOB)) == sorted(MODELS)
    assert sorted(r.props["model"] for r in run.of_type(ENDPOINT)) == sorted(MODELS)


def test_every_resource_is_a_child_of_the_platform_named_after_it(run: StackRun):
    platform = run.one(PLATFORM)
    children = run.children_of(platform)
    assert len(children) == 8 == len(run.resources) - 1
    assert all(child.name.startswith(f"{platform.name}-") for child in children)
    assert run.one(DATASET).name == f"{platform.name}-data"
    assert run.one(TRAINING_JOB, "xgboost").name == f"{platform.name}-xgboost-training"
    assert run.one(ENDPOINT, "xgboost").name == f"{platform.name}-xgboost-endpoint"
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
def test_endpoint_depends_on_its_training_job_which_depends_on_the_dataset(run: StackRun, model: str):
    dataset, job, endpoint = run.one(DATASET), run.one(TRAINING_JOB, model), run.one(ENDPOINT, model)
    assert run.depends_on(endpoint, job)
    assert run.depends_on(job, dataset)
    # Through the inputs that carry the meaning: the artifact the endpoint serves, the data the job reads.
    assert endpoint.property_dependencies["model_dir"] == {job.urn}
    assert endpoint.property_dependencies["artifact_hash"] == {job.urn}
    assert job.property_dependencies["data_hash"] == {dataset.urn}
    assert job.props["data_dir"] == dataset.outputs["path"]
    assert endpoint.props["model_dir"] == job.outputs["out_dir"]


def test_training_jobs_carry_what_must_retrain_them(run: StackRun):
    xgboost = run.one(TRAINING_JOB, "xgboost")
    assert xgboost.props["dataset"] == "mnist"  # Pulumi.local.yaml's default
    assert xgboost.props["data_hash"] == "c0ffee"
    assert xgboost.props["code_hash"] == training_code_hash(Framework.XGBOOST)
    assert xgboost.props["hyperparameters"] == {"num_round": "20"}
    assert xgboost.props["dry_run"] is False
    assert run.one(TRAINING_JOB, "pytorch").props["hyperparameters"] == {}


def test_endpoints_speak_the_contract_of_their_models_platform(run: StackRun):
    flavors = {r.props["model"]: r.props["flavor"] for r in run.of_type(ENDPOINT)}
    assert flavors == {"xgboost": "sagemaker", "tensorflow": "vertex", "pytorch": "watsonx"}
    ports = {r.props["model"]: r.props["requested_port"] for r in run.of_type(ENDPOINT)}
    assert ports == {"xgboost": 0, "tensorflow": 0, "pytorch": 8093}


def test_everything_the_stack_makes_lives_under_local_root(run: StackRun):
    roots = {r.props["root"] for r in run.resources if r.is_dynamic}
    assert len(roots) == 1
    (root,) = roots
    assert Path(root).is_absolute()
    assert all(
        str(r.outputs.get("path") or r.outputs.get("out_dir") or root).startswith(root) for r in run.resources
    )


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
    assert set(models["xgboost"]) == {"artifact", "metrics"}
    assert models["xgboost"]["metrics"]["accuracy"] == pytest.approx(0.97)
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
    }
    assert all(job.props["dry_run"] is True for job in run.of_type(TRAINING_JOB))
    assert run.outputs["dataset"] == "mnist-t10k"


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
    with pytest.raises(Exception, match="crashed"):
        run_stack("local", config, new_resource=failing_training)

    after = run_stack("local", config, outputs=plausible_outputs)
    assert sorted(after.outputs["endpoints"]) == sorted(MODELS)

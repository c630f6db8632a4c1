"""The local platform: the whole MNIST platform on this machine, no cloud account needed.

Per model: the dataset (one, shared) -> a training job (`mnistctl train` in a subprocess) -> a
champion gate (the job's model is served only if it passes the promotion rule, docs/gate.md) -> an
endpoint (a detached `mnistctl serve` process speaking the wire contract of the platform that model
is served on in the cloud: xgboost as SageMaker, tensorflow as Vertex AI, pytorch as watsonx.ai).
Everything lives under one folder, `localRoot`, which `pulumi destroy` removes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi

from infra.gate import PromotionRule
from infra.gate_provider import models_entry
from infra.hashing import content_hash, tree_sha256
from infra.local.batch import LocalBatchJob, LocalBatchJobArgs, input_content_hash
from infra.local.dataset import LocalDataset, LocalDatasetArgs
from infra.local.endpoint import LocalEndpoint, LocalEndpointArgs
from infra.local.front import LocalFront, LocalFrontArgs
from infra.local.gate import LocalGate, LocalGateArgs
from infra.local.training_job import LocalTrainingJob, LocalTrainingJobArgs
from infra.local.ui import LocalUi, LocalUiArgs
from infra.settings import Framework, ModelTuning, RolloutSettings, Settings
from mnistctl.client import DEFAULT_WATSONX_VERSION, LOCAL_VERTEX_PROJECT
from serving.constants import Flavor

TYPE = "mnist-platform:local:LocalPlatform"
REGION = "local"
# Which platform's wire contract each model speaks, as it is served in the cloud.
FLAVOR_BY_MODEL: dict[Framework, Flavor] = {
    Framework.XGBOOST: Flavor.SAGEMAKER,
    Framework.TENSORFLOW: Flavor.VERTEX,
    Framework.PYTORCH: Flavor.WATSONX,
}
TRAINING_PACKAGE = Path(__file__).resolve().parents[2] / "training"
# Each trainer module is one model's code; the rest of the training package is shared by all models.
TRAINER_MODULES: dict[Framework, str] = {
    Framework.XGBOOST: "xgboost_trainer.py",
    Framework.TENSORFLOW: "tf_trainer.py",
    Framework.PYTORCH: "torch_trainer.py",
}


PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What a local server runs: the endpoints run serving/ through mnistctl's `serve`, the page mnistctl's `ui`.
SERVING_SOURCES = ("serving", "mnistctl")
UI_SOURCES = ("mnistctl",)


def serving_code_hash(root: Path = PROJECT_ROOT) -> str:
    """Hash of the code the endpoints' servers run (serving/ and mnistctl/, the ui's page excepted):
    editing it restarts the endpoints on the next `pulumi up`."""
    return _sources_hash(root, SERVING_SOURCES, skip_ui=True)


def ui_code_hash(root: Path = PROJECT_ROOT) -> str:
    """Hash of the code the ui's server runs (mnistctl/, its page included): editing it restarts the ui."""
    return _sources_hash(root, UI_SOURCES, skip_ui=False)


def _sources_hash(root: Path, packages: tuple[str, ...], skip_ui: bool) -> str:
    parts = []
    for package in packages:
        folder = root / package
        ui_files = {
            path.relative_to(folder).as_posix() for path in (folder / "ui").rglob("*") if path.is_file()
        }
        parts.append(tree_sha256(folder, skip=ui_files if skip_ui else ()))
    return content_hash(parts, length=64)


def training_code_hash(model: Framework, package: Path = TRAINING_PACKAGE) -> str:
    """Hash of the training sources `model` runs (shared modules and its own trainer, not the other
    trainers): editing them retrains that model. A renamed trainer only means more retraining."""
    others = {module for framework, module in TRAINER_MODULES.items() if framework is not model}
    return tree_sha256(package, suffixes=(".py",), skip=others)


@dataclass
class LocalPlatformArgs:
    """What the local platform needs; `LocalPlatform.from_settings` fills it from the stack's settings."""

    root: pulumi.Input[str]
    """The one folder that holds everything the stack creates (absolute path)."""
    stack: pulumi.Input[str]
    """The stack's name, written into the root's marker file."""
    dataset: pulumi.Input[str]
    """Dataset name: mnist, mnist-t10k, kmnist or fashion-mnist."""
    models: Sequence[Framework]
    """The models to train and serve, one endpoint each."""
    training_code_hashes: Mapping[Framework, pulumi.Input[str]]
    """Per model, the hash of the training code it runs; a change retrains that model."""
    data_dir: pulumi.Input[str] | None = None
    """Where the dataset is read from or cached; the user cache dir when None."""
    hyperparameters: Mapping[Framework, Mapping[str, str]] = field(default_factory=dict)
    """Per model, overrides as the trainer takes them."""
    training_preset: pulumi.Input[str] = "standard"
    """The dataset's hyperparameter preset (training/presets.py): standard or long."""
    ports: Mapping[Framework, int] = field(default_factory=dict)
    """Per model, a fixed loopback port; a free port when absent."""
    dry_run: pulumi.Input[bool] = False
    """Train on a tiny subset (quick looks and tests), not for accuracy."""
    promotion: Mapping[Framework, PromotionRule] = field(default_factory=dict)
    """Per model, the champion/challenger rule; a model without one serves every new training run."""
    ui: bool = True
    """Serve the draw-a-digit page of the endpoints (`mnistctl ui`), exported as `ui`."""
    serving_code_hash: pulumi.Input[str] = ""
    """Hash of the serving code the endpoints run; a change restarts them."""
    ui_code_hash: pulumi.Input[str] = ""
    """Hash of the code the ui runs; a change restarts it."""
    rollout: RolloutSettings | None = None
    """Canary rollouts behind a traffic-splitting front per model (front.py, rollout.py); None: at once."""
    batch_inputs: Mapping[Framework, str] = field(default_factory=dict)
    """Per model, what its champion scores in batch (`test` or a path; mnistctl/batch.py); none when empty."""
    training_slots: int | None = None
    """How many trainings run at once on this machine (training/slots.py); one per 4 cores when None."""
    tuning: Mapping[Framework, str] = field(default_factory=dict)
    """Per model, its search as JSON (config `tuning`): the job tunes and hands the best trial to the gate."""


class LocalPlatform(pulumi.ComponentResource):
    """Dataset, one training job and one endpoint per model, all under localRoot."""

    endpoints: pulumi.Output[dict[str, Any]]
    models: pulumi.Output[dict[str, Any]]
    bucket: pulumi.Output[str]
    dataset: pulumi.Output[str]
    ui: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: LocalPlatformArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(TYPE, name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        self.data = LocalDataset(
            f"{name}-data",
            LocalDatasetArgs(
                dataset=args.dataset, root=args.root, stack=args.stack, source_dir=args.data_dir
            ),
            child,
        )
        self.training_jobs: dict[Framework, LocalTrainingJob] = {}
        self.gates: dict[Framework, LocalGate] = {}
        self.local_endpoints: dict[Framework, LocalEndpoint] = {}
        self.fronts: dict[Framework, LocalFront] = {}
        endpoint_names: dict[Framework, str] = {}
        for model in args.models:
            job = LocalTrainingJob(
                f"{name}-{model.value}-training",
                LocalTrainingJobArgs(
                    framework=model.value,
                    dataset=args.dataset,
                    data_dir=self.data.path,
                    data_hash=self.data.content_hash,
                    code_hash=args.training_code_hashes[model],
                    root=args.root,
                    hyperparameters=dict(args.hyperparameters.get(model, {})),
                    preset=args.training_preset,
                    dry_run=args.dry_run,
                    training_slots=args.training_slots,
                    tuning=args.tuning.get(model),
                ),
                child,
            )
            self.training_jobs[model] = job
            # The endpoint serves the gate's champion, not the job's output (docs/gate.md).
            gate = self.gates[model] = LocalGate(
                f"{name}-{model.value}-gate",
                LocalGateArgs(
                    model=model.value,
                    challenger_id=job.id,
                    challenger_artifact=job.artifact,
                    root=args.root,
                    rule=args.promotion.get(model, PromotionRule(min_accuracy=0.0)),
                ),
                child,
            )
            endpoint_names[model] = f"{name}-{model.value}"
            front = None
            if args.rollout is not None:
                # The front holds the endpoint's URL (and its fixed port) across model updates.
                front = self.fronts[model] = LocalFront(
                    f"{name}-{model.value}-front",
                    LocalFrontArgs(
                        name=endpoint_names[model],
                        root=args.root,
                        code_hash=args.serving_code_hash,
                        requested_port=args.ports.get(model, 0),
                    ),
                    # After the dataset, which claims localRoot (a front's files first would make it refuse).
                    pulumi.ResourceOptions(parent=self, depends_on=[self.data]),
                )
            self.local_endpoints[model] = LocalEndpoint(
                f"{name}-{model.value}-endpoint",
                LocalEndpointArgs(
                    model=model.value,
                    flavor=FLAVOR_BY_MODEL[model].value,
                    name=endpoint_names[model],
                    model_dir=gate.champion_dir,
                    artifact_hash=gate.champion_hash,
                    root=args.root,
                    code_hash=args.serving_code_hash,
                    requested_port=args.ports.get(model, 0) if front is None else 0,
                    **_behind(front, args, self.data.path),
                ),
                child,
            )

        self.endpoints = pulumi.Output.all(
            **{
                model.value: _endpoint_entry(
                    model, endpoint_names[model], self.fronts.get(model, endpoint).url
                )
                for model, endpoint in self.local_endpoints.items()
            }
        )
        self.models = pulumi.Output.all(
            **{
                model.value: with_tuning(
                    models_entry(gate.champion, gate.challenger), self.training_jobs[model].metrics
                )
                for model, gate in self.gates.items()
            }
        )
        self.bucket = self.data.path
        self.dataset = pulumi.Output.from_input(args.dataset)
        self.ui = None
        if args.ui:
            page = LocalUi(
                f"{name}-ui",
                LocalUiArgs(
                    endpoints=self.endpoints,
                    dataset=args.dataset,
                    root=args.root,
                    stack=args.stack,
                    code_hash=args.ui_code_hash,
                ),
                child,
            )
            self.ui = page.url
        # Batch scoring with each champion (docs/batch.md): a new champion or input scores again.
        self.batch_jobs = {
            model: LocalBatchJob(
                f"{name}-{model.value}-batch",
                LocalBatchJobArgs(
                    model=model.value,
                    flavor=FLAVOR_BY_MODEL[model].value,
                    champion_dir=self.gates[model].champion_dir,
                    champion_hash=self.gates[model].champion_hash,
                    input=source,
                    input_hash=self.data.content_hash if source == "test" else input_content_hash(source),
                    dataset=args.dataset,
                    data_dir=self.data.path,
                    root=args.root,
                ),
                child,
            )
            for model, source in args.batch_inputs.items()
        }
        self.batch = pulumi.Output.all(**{m.value: job.entry() for m, job in self.batch_jobs.items()})
        self.register_outputs(
            {
                "endpoints": self.endpoints,
                "models": self.models,
                "bucket": self.bucket,
                "dataset": self.dataset,
                **({"ui": self.ui} if self.ui is not None else {}),
                **({"batch": self.batch} if self.batch_jobs else {}),
            }
        )

    @classmethod
    def from_settings(cls, name: str, settings: Settings) -> LocalPlatform:
        """The component for a local stack (called by infra/platforms.py)."""
        if settings.local is None:
            raise ValueError("LocalPlatform needs local settings (cloud: local)")
        args = LocalPlatformArgs(
            root=str(settings.local.root),
            stack=settings.stack,
            dataset=settings.dataset.value,
            models=settings.models,
            training_code_hashes={model: training_code_hash(model) for model in settings.models},
            data_dir=str(settings.data_dir) if settings.data_dir else None,
            hyperparameters=settings.hyperparameters,
            training_preset=settings.training_preset.value,
            ports=settings.local.ports,
            dry_run=settings.local.dry_run,
            promotion={model: settings.promotion.rule(model) for model in settings.models},
            ui=settings.local.ui,
            serving_code_hash=serving_code_hash(),
            ui_code_hash=ui_code_hash(),
            rollout=settings.rollout,
            batch_inputs={model: job.input for model, job in settings.batch.items()},
            training_slots=settings.local.training_slots,
            tuning={model: search_json(search) for model, search in settings.tuning.items()},
        )
        return cls(name, args)


def _behind(
    front: LocalFront | None, args: LocalPlatformArgs, data_path: pulumi.Output[str]
) -> dict[str, Any]:
    """The endpoint's front inputs: none without `rollout`."""
    if front is None or args.rollout is None:
        return {}
    return {
        "front_url": front.url,
        "front_routes": front.routes,
        "rollout": args.rollout.model_dump(),
        "probe_dataset": args.dataset,
        "probe_data_dir": data_path,
    }


def search_json(search: ModelTuning) -> str:
    """A model's search as `mnistctl train --tune` takes it (its objective filled in by the settings)."""
    return json.dumps(search.model_dump(by_alias=True, mode="json"), sort_keys=True)


def with_tuning(entry: pulumi.Output[dict[str, Any]], metrics: pulumi.Input[dict]) -> pulumi.Output[dict]:
    """A `models` entry with the latest job's search, `tuning` (trials run, the best trial, its
    hyperparameters and objective, the spread), when it tuned."""

    def merge(values: list[Any]) -> dict[str, Any]:
        found = (values[1] or {}).get("tuning")
        return {**values[0], **({"tuning": found} if found else {})}

    return pulumi.Output.all(entry, metrics).apply(merge)


def _endpoint_entry(model: Framework, name: str, url: pulumi.Output[str]) -> pulumi.Output[dict[str, Any]]:
    """One entry of the `endpoints` output, in the shape every stack exports (docs/architecture.md)."""
    flavor = FLAVOR_BY_MODEL[model]
    extra: dict[str, str] = {}
    if flavor is Flavor.VERTEX:
        extra["project"] = LOCAL_VERTEX_PROJECT
    elif flavor is Flavor.WATSONX:
        extra["version"] = DEFAULT_WATSONX_VERSION
    return url.apply(lambda u: {"flavor": flavor.value, "name": name, "url": u, "region": REGION, **extra})

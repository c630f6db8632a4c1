"""One typed, validated settings object, read once from the stack's config.

Every config key of the project is read here and nowhere else, so a bad value fails `pulumi up`
before any resource exists, with a message naming the key and the allowed values. Components take
the parts of `Settings` they need; none of them reads `pulumi.Config` or the environment.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from infra import offerings
from infra.gate import PromotionRule
from training.slots import MAX_SLOTS

PROJECT = "mnist-platform"


class Cloud(StrEnum):
    AWS = "aws"
    GCP = "gcp"
    IBM = "ibm"
    LOCAL = "local"


class Framework(StrEnum):
    XGBOOST = "xgboost"
    TENSORFLOW = "tensorflow"
    PYTORCH = "pytorch"


class Dataset(StrEnum):
    MNIST = "mnist"
    MNIST_T10K = "mnist-t10k"
    KMNIST = "kmnist"
    FASHION_MNIST = "fashion-mnist"


class TrainingPreset(StrEnum):
    """training/presets.py: per-dataset hyperparameters every stack trains with."""

    STANDARD = "standard"
    LONG = "long"


class PublicApi(StrEnum):
    """aws: the optional HTTP API in front of the SageMaker endpoint."""

    OFF = "off"
    """No API: the endpoint is reached with AWS credentials through sagemaker-runtime."""
    IAM = "iam"
    """Routes with IAM authorization: callers sign with SigV4 (as boto3 does) and need execute-api:Invoke."""
    OPEN = "open"
    """Anonymous routes, throttled: a demo anyone with the URL can call (and spend your invocations)."""


# What each platform serves: SageMaker's built-in algorithm is XGBoost, Vertex serves the
# TensorFlow SavedModel, watsonx.ai the ONNX export of the PyTorch CNN; local runs all three.
DEFAULT_MODELS: dict[Cloud, tuple[Framework, ...]] = {
    Cloud.AWS: (Framework.XGBOOST,),
    Cloud.GCP: (Framework.TENSORFLOW,),
    Cloud.IBM: (Framework.PYTORCH,),
    Cloud.LOCAL: (Framework.XGBOOST, Framework.TENSORFLOW, Framework.PYTORCH),
}
SUPPORTED_MODELS: dict[Cloud, frozenset[Framework]] = {
    Cloud.AWS: frozenset({Framework.XGBOOST}),
    Cloud.GCP: frozenset({Framework.TENSORFLOW}),
    Cloud.IBM: frozenset({Framework.PYTORCH}),
    Cloud.LOCAL: frozenset(Framework),
}


# The default floor (minAccuracy) per dataset and model: a little under what each trainer reaches on
# that dataset's held-out test set (bench/results/train.json for MNIST; the published Fashion-MNIST and
# Kuzushiji-MNIST benchmarks for the others, where the same models score several points lower).
DEFAULT_MIN_ACCURACY: dict[Dataset, dict[Framework, float]] = {
    Dataset.MNIST: {Framework.XGBOOST: 0.95, Framework.TENSORFLOW: 0.98, Framework.PYTORCH: 0.98},
    Dataset.MNIST_T10K: {Framework.XGBOOST: 0.95, Framework.TENSORFLOW: 0.98, Framework.PYTORCH: 0.98},
    Dataset.FASHION_MNIST: {Framework.XGBOOST: 0.85, Framework.TENSORFLOW: 0.88, Framework.PYTORCH: 0.88},
    Dataset.KMNIST: {Framework.XGBOOST: 0.85, Framework.TENSORFLOW: 0.92, Framework.PYTORCH: 0.92},
}


def _offered(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(
            f"{value!r} is not one of the {what} instance types; allowed: {offerings.closest(value, allowed)}"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# localTrainingSlots (local and ibm stacks): how many trainings run at once on this machine, sharing its
# cores (training/slots.py); one per 4 cores when absent. A whole number, not a string or a boolean.
def _training_slots(value: Any) -> int | None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SLOTS
    ):
        raise ValueError(
            f"must be a whole number of trainings run at once on this machine, from 1 to {MAX_SLOTS} "
            "(unset: one per 4 cores)"
        )
    return value


TrainingSlots = Annotated[
    int | None,
    BeforeValidator(_training_slots),
    Field(
        default=None,
        description="How many trainings run at once on this machine; one per 4 cores when absent.",
    ),
]


class LocalSettings(_Strict):
    """The local stack: everything it creates lives under `root`."""

    root: Path = Field(description="The one folder that holds everything the local stack creates.")
    ports: dict[Framework, int] = Field(
        default_factory=dict, description="Fixed loopback port per model; a free port when absent."
    )
    dry_run: bool = Field(default=False, description="Train on a tiny subset (tests and quick looks).")
    ui: bool = Field(
        default=True, description="Serve the draw-a-digit page (`mnistctl ui`) of the endpoints."
    )
    training_slots: TrainingSlots = None

    @field_validator("ports")
    @classmethod
    def _ports_in_range(cls, ports: dict[Framework, int]) -> dict[Framework, int]:
        for model, port in ports.items():
            if not 1024 <= port <= 65535:
                raise ValueError(f"port for {model} must be between 1024 and 65535, got {port}")
        return ports


class AwsSettings(_Strict):
    """The SageMaker stack. Instance types and counts are cost decisions: the defaults are the small ones."""

    region: str = Field(description="aws:region, where every resource is created.")
    xgboost_version: str = Field(
        default="1.7-1", description="Version of SageMaker's built-in XGBoost image (image_uris)."
    )
    training_instance_type: str = "ml.m5.xlarge"
    training_instance_count: int = Field(default=1, ge=1, le=offerings.MAX_INSTANCE_COUNT)
    max_runtime_seconds: int = Field(default=3600, ge=60, le=offerings.SAGEMAKER_MAX_RUNTIME_SECONDS)
    endpoint_instance_type: str = "ml.m5.large"
    endpoint_min_instances: int = Field(default=1, ge=1, le=offerings.MAX_INSTANCE_COUNT)
    endpoint_max_instances: int = Field(default=2, ge=1, le=offerings.MAX_INSTANCE_COUNT)
    kms_key_arn: str | None = Field(default=None, description="Customer KMS key; SSE-S3 when absent.")
    public_api: PublicApi = Field(
        default=PublicApi.OFF, description="An HTTP API + Lambda in front of the endpoint: off, iam or open."
    )

    @field_validator("public_api", mode="before")
    @classmethod
    def _public_api_from_boolean(cls, value: Any) -> Any:
        # Earlier stacks set `publicApi: true|false`; true now means the IAM-authorized API.
        if isinstance(value, bool):
            return PublicApi.IAM if value else PublicApi.OFF
        return value

    @field_validator("training_instance_type")
    @classmethod
    def _training_instance_type_offered(cls, value: str) -> str:
        return _offered(
            value,
            offerings.sagemaker_training_instance_types(),
            "SageMaker training (x86-64, as the built-in XGBoost image needs)",
        )

    @field_validator("endpoint_instance_type")
    @classmethod
    def _endpoint_instance_type_offered(cls, value: str) -> str:
        return _offered(
            value,
            offerings.sagemaker_endpoint_instance_types(),
            "SageMaker endpoint (x86-64, as the built-in XGBoost image needs)",
        )


class PromotionSettings(_Strict):
    """The champion/challenger gate (infra/gate.py): when a retrained model may replace the served one."""

    min_accuracy: dict[Framework, float] = Field(
        default_factory=dict, description="minAccuracy per model: the floor; 0 for a model not listed."
    )
    tolerance: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="promotionTolerance: how much worse than the champion may win.",
    )
    force: bool = Field(default=False, description="forcePromotion: promote the next challenger whatever.")

    @field_validator("min_accuracy")
    @classmethod
    def _floors_are_accuracies(cls, floors: dict[Framework, float]) -> dict[Framework, float]:
        for model, floor in floors.items():
            if not 0.0 <= floor <= 1.0:
                raise ValueError(f"the floor of {model.value} must be between 0 and 1, got {floor}")
        return floors

    def rule(self, model: Framework) -> PromotionRule:
        return PromotionRule(
            min_accuracy=self.min_accuracy.get(model, 0.0), tolerance=self.tolerance, force=self.force
        )


class ScalingType(StrEnum):
    """How a numeric range is searched, as SageMaker names it (Vertex: UNIT_LINEAR_SCALE, UNIT_LOG_SCALE,
    UNIT_REVERSE_LOG_SCALE, SCALE_TYPE_UNSPECIFIED for Auto; Optuna: log=True for Logarithmic)."""

    AUTO = "Auto"
    LINEAR = "Linear"
    LOGARITHMIC = "Logarithmic"
    REVERSE_LOGARITHMIC = "ReverseLogarithmic"


class TuningStrategy(StrEnum):
    """The search, as SageMaker names it. Vertex: Bayesian = ALGORITHM_UNSPECIFIED (its default Bayesian
    optimization), Random = RANDOM_SEARCH, Grid = GRID_SEARCH; it has no Hyperband. Local and ibm search with
    Optuna: Bayesian = TPE, Random = random sampling, Grid = every combination, Hyperband = TPE with
    Optuna's Hyperband pruner."""

    BAYESIAN = "Bayesian"
    RANDOM = "Random"
    GRID = "Grid"
    HYPERBAND = "Hyperband"


class ObjectiveGoal(StrEnum):
    MINIMIZE = "Minimize"
    MAXIMIZE = "Maximize"


# The metrics a tuning job may optimize, per model, each with the only sensible direction. xgboost's are
# the built-in algorithm's validation-channel metrics (what SageMaker's tuner reads); the CNNs report
# `accuracy` on the validation split (the cloudml-hypertune tag on Vertex, the epoch's score locally).
TUNING_OBJECTIVES: dict[Framework, dict[str, ObjectiveGoal]] = {
    Framework.XGBOOST: {
        "validation:merror": ObjectiveGoal.MINIMIZE,
        "validation:mlogloss": ObjectiveGoal.MINIMIZE,
    },
    Framework.TENSORFLOW: {"accuracy": ObjectiveGoal.MAXIMIZE},
    Framework.PYTORCH: {"accuracy": ObjectiveGoal.MAXIMIZE},
}
DEFAULT_TUNING_OBJECTIVE: dict[Framework, str] = {
    Framework.XGBOOST: "validation:merror",
    Framework.TENSORFLOW: "accuracy",
    Framework.PYTORCH: "accuracy",
}

# The hyperparameters a tuning job may search and their types: the fields of each trainer's Hyperparameters
# dataclass (training/*_trainer.py; tests/unit/test_tuning_settings.py keeps the two in step) except those
# that define the model's contract with the gate and the servers (xgboost's objective, num_class and
# eval_metric). Listed here, not imported, so that reading the config never imports TensorFlow or PyTorch.
_CNN_TUNABLE: dict[str, type] = {
    "epochs": int,
    "batch_size": int,
    "learning_rate": float,
    "weight_decay": float,
    "dropout": float,
    "augment": bool,
    "flip": bool,
    "label_smoothing": float,
    "shift": int,
    "width": int,
    "convs": int,
    "hidden": int,
    "average_mirrored": bool,
    "seed": int,
}
TUNABLE_HYPERPARAMETERS: dict[Framework, dict[str, type]] = {
    Framework.XGBOOST: {
        "num_round": int,
        "max_depth": int,
        "eta": float,
        "gamma": float,
        "min_child_weight": float,
        "subsample": float,
        "colsample_bytree": float,
        "max_bin": int,
        "tree_method": str,
        "seed": int,
    },
    Framework.TENSORFLOW: _CNN_TUNABLE,
    Framework.PYTORCH: _CNN_TUNABLE,
}
# SageMaker's limits (botocore: at most 30 ranges of each kind, a categorical range of 1-30 values).
MAX_TUNING_CHOICES = 30
MAX_TUNING_TRIALS = 500


class TuningRange(_Strict):
    """A numeric range of one hyperparameter: `{"min": 0.05, "max": 0.5, "scale": "Logarithmic"}`."""

    min: float
    max: float
    scale: ScalingType = ScalingType.AUTO

    @model_validator(mode="after")
    def _ordered_and_scalable(self) -> TuningRange:
        if not self.min < self.max:
            raise ValueError(f"min ({self.min:g}) must be less than max ({self.max:g})")
        if self.scale is ScalingType.LOGARITHMIC and self.min <= 0:
            raise ValueError(f"a Logarithmic range needs min > 0, got min {self.min:g}")
        if self.scale is ScalingType.REVERSE_LOGARITHMIC and not (self.min >= 0 and self.max < 1):
            raise ValueError(
                f"a ReverseLogarithmic range must lie within 0 <= x < 1, got {self.min:g} to {self.max:g}"
            )
        return self


TuningChoices = list[bool | int | float | str]


def _search_kind(value: Any) -> str | None:
    if isinstance(value, list):
        return "choices"
    return "range" if isinstance(value, dict | TuningRange) else None


# A dict is a range, a list the choices: told apart by shape, so an error speaks of the one meant.
TuningSearch = Annotated[
    Annotated[TuningRange, Tag("range")] | Annotated[TuningChoices, Tag("choices")],
    Discriminator(
        _search_kind,
        custom_error_type="tuning_search",
        custom_error_message='expected a range {"min": .., "max": .., "scale": ..} or a list of choices',
    ),
]
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "a boolean", str: "a string"}


class TuningObjective(_Strict):
    """The normalized objective: a metric name and its direction, e.g. validation:merror / Minimize."""

    metric: str
    goal: ObjectiveGoal


class ModelTuning(_Strict):
    """One model's search: `{"maxTrials": 20, "parallelTrials": 2, "objective": "validation:merror",
    "ranges": {"eta": {"min": 0.05, "max": 0.5, "scale": "Logarithmic"}, "max_depth": [4, 6, 8]},
    "strategy": "Bayesian"}`. The objective is a metric name (its goal implied) or {metric, goal}."""

    max_trials: int = Field(alias="maxTrials", ge=1, le=MAX_TUNING_TRIALS)
    parallel_trials: int = Field(default=1, alias="parallelTrials", ge=1)
    objective: TuningObjective | None = None
    ranges: dict[str, TuningSearch] = Field(min_length=1)
    strategy: TuningStrategy = TuningStrategy.BAYESIAN

    @field_validator("objective", mode="before")
    @classmethod
    def _objective_from_name(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"metric": value, "goal": _goal_of(value)}
        return value

    @field_validator("ranges")
    @classmethod
    def _choices_sized(cls, ranges: dict[str, Any]) -> dict[str, Any]:
        for name, searched in ranges.items():
            if isinstance(searched, list) and not 1 <= len(searched) <= MAX_TUNING_CHOICES:
                raise ValueError(
                    f"{name}: a list of choices holds 1 to {MAX_TUNING_CHOICES} values, got {len(searched)}"
                )
        return ranges

    @model_validator(mode="after")
    def _parallel_within_budget(self) -> ModelTuning:
        if self.parallel_trials > self.max_trials:
            raise ValueError(
                f"parallelTrials ({self.parallel_trials}) must not exceed maxTrials ({self.max_trials})"
            )
        if self.strategy is TuningStrategy.GRID:
            numeric = sorted(name for name, found in self.ranges.items() if isinstance(found, TuningRange))
            if numeric:
                raise ValueError(
                    f"strategy Grid searches lists of choices only (as SageMaker and Vertex require), "
                    f"but {', '.join(numeric)} {'is a range' if len(numeric) == 1 else 'are ranges'}: "
                    "give them as lists, e.g. [4, 6, 8]"
                )
        return self

    def checked_for(self, model: Framework) -> ModelTuning:
        """This search, its hyperparameter names, value types and objective checked against `model`'s
        trainer; the objective filled in with the model's default when absent."""
        allowed = TUNABLE_HYPERPARAMETERS[model]
        for name, searched in self.ranges.items():
            if name not in allowed:
                raise ValueError(f"no tunable hyperparameter {name!r}; allowed: {', '.join(allowed)}")
            kind = allowed[name]
            if isinstance(searched, TuningRange):
                if kind not in (int, float):
                    raise ValueError(
                        f"{name} is {_TYPE_WORDS[kind]}: give a list of choices, not a min/max range"
                    )
                if kind is int and not (searched.min.is_integer() and searched.max.is_integer()):
                    raise ValueError(
                        f"{name} is an integer: min and max must be whole numbers, got "
                        f"{searched.min:g} to {searched.max:g}"
                    )
            else:
                for value in searched:
                    if not _fits(kind, value):
                        raise ValueError(f"{name} is {_TYPE_WORDS[kind]}: the choice {value!r} is not one")
        objectives = TUNING_OBJECTIVES[model]
        objective = self.objective or TuningObjective(
            metric=DEFAULT_TUNING_OBJECTIVE[model], goal=objectives[DEFAULT_TUNING_OBJECTIVE[model]]
        )
        wanted = objectives.get(objective.metric)
        if wanted is None:
            raise ValueError(
                f"cannot be tuned on {objective.metric!r}; allowed objectives: "
                + ", ".join(f"{metric} ({goal.value})" for metric, goal in objectives.items())
            )
        if objective.goal is not wanted:
            raise ValueError(
                f"{objective.metric} is to {wanted.value.lower()}, not to {objective.goal.value.lower()}"
            )
        return self.model_copy(update={"objective": objective})


def _goal_of(metric: str) -> str:
    for objectives in TUNING_OBJECTIVES.values():
        if metric in objectives:
            return objectives[metric].value
    allowed = sorted({m for objectives in TUNING_OBJECTIVES.values() for m in objectives})
    raise ValueError(f"unknown objective {metric!r}; allowed: {', '.join(allowed)}")


def _fits(kind: type, value: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


# Google's prebuilt TF prediction images and the day each one stops being available (Vertex AI docs,
# "Prebuilt containers for prediction", read 2026-12-01). The stack serves with the project's own image
# by default: none of these runs TF 2.21 / Keras 3 code, and the newest prebuilt TF *training* image
# (tf-cpu.2-17.py310) reached its end of availability on 2026-07-11, so training always uses it.
PROJECT_IMAGE = "project"
PREBUILT_SERVING_IMAGES: dict[str, date] = {"tf2-cpu.2-15": date(2027, 1, 14)}


def check_prebuilt_image(name: str, today: date) -> None:
    """Raise when `name` is neither the project's image nor a prebuilt image still available on `today`."""
    if name == PROJECT_IMAGE:
        return
    allowed = ", ".join([PROJECT_IMAGE, *PREBUILT_SERVING_IMAGES])
    if name not in PREBUILT_SERVING_IMAGES:
        raise ValueError(f"unknown serving image {name!r}; allowed: {allowed}")
    end = PREBUILT_SERVING_IMAGES[name]
    if today > end:
        raise ValueError(
            f"the prebuilt image {name} reached its end of availability on {end.isoformat()}; "
            f"use {PROJECT_IMAGE!r} (the project's own image, built by the stack)"
        )


class GcpSettings(_Strict):
    """The Vertex AI stack. Machine types and replica counts are cost decisions: the defaults are small."""

    project: str = Field(description="gcp:project, the project every resource is created in.")
    region: str = Field(default="us-central1", description="gcp:region, the Vertex AI location.")
    training_machine_type: str = "n1-standard-4"
    training_replica_count: int = Field(default=1, ge=1, le=16)
    training_timeout_seconds: int = Field(default=3600, ge=60, le=604_800)
    serving_machine_type: str = "n1-standard-2"
    serving_min_replicas: int = Field(default=1, ge=1, le=10)
    serving_max_replicas: int = Field(default=2, ge=1, le=10)
    kms_key_name: str | None = Field(default=None, description="CMEK key; Google-managed keys when absent.")
    serving_image: str = Field(
        default=PROJECT_IMAGE, description="project, or a prebuilt TF prediction image."
    )

    @field_validator("training_machine_type", "serving_machine_type")
    @classmethod
    def _vertex_machine_type(cls, value: str) -> str:
        problem = offerings.vertex_machine_type_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("project")
    @classmethod
    def _project_id(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", value):
            raise ValueError(f"a project ID is 6-30 lowercase letters, digits or hyphens, got {value!r}")
        return value

    @field_validator("kms_key_name")
    @classmethod
    def _key_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(
            r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+", value
        ):
            raise ValueError(f"expected projects/P/locations/L/keyRings/R/cryptoKeys/K, got {value!r}")
        return value

    @field_validator("serving_image")
    @classmethod
    def _image_available(cls, value: str) -> str:
        check_prebuilt_image(value, date.today())
        return value

    @model_validator(mode="after")
    def _replicas_ordered(self) -> GcpSettings:
        if self.serving_min_replicas > self.serving_max_replicas:
            raise ValueError(
                f"servingMinReplicas ({self.serving_min_replicas}) must not exceed "
                f"servingMaxReplicas ({self.serving_max_replicas})"
            )
        return self


class IbmRegion(StrEnum):
    """Regions where watsonx.ai Runtime (service `pm-20`) is offered."""

    US_SOUTH = "us-south"
    EU_DE = "eu-de"
    EU_GB = "eu-gb"
    JP_TOK = "jp-tok"
    AU_SYD = "au-syd"
    CA_TOR = "ca-tor"


class CosPlan(StrEnum):
    STANDARD = "standard"
    LITE = "lite"


class RuntimePlan(StrEnum):
    """watsonx.ai Runtime plans: v2-standard bills per capacity-unit-hour, lite is the free tier."""

    V2_STANDARD = "v2-standard"
    LITE = "lite"


class HardwareSpec(StrEnum):
    """watsonx.ai hardware specifications for online deployments (small to large): the sizes IBM's
    compute table for deployments lists (XS 1 CPU / 4 GB, S 2 / 8, M 4 / 16, L 8 / 32, XL 16 / 64).
    The platform's list of hardware specifications holds more (XXS among them), but not for deployments."""

    XS = "XS"
    S = "S"
    M = "M"
    L = "L"
    XL = "XL"


# crn:v1:bluemix:public:kms:us-south:a/<account>:<instance guid>:key:<key id> (Key Protect or HPCS).
KMS_KEY_CRN = re.compile(
    r"^crn:v1:bluemix:public:(?P<service>kms|hs-crypto):(?P<region>[a-z0-9-]+):a/(?P<account>[0-9a-f]{32}):"
    r"(?P<instance>[0-9a-f-]{36}):key:(?P<key>[0-9a-f-]{36})$"
)
IBM_API_KEY_ENVS = ("IC_API_KEY", "IBMCLOUD_API_KEY")
# The stack name becomes part of COS bucket names (`mnist-platform-<stack>-<8 hex>`), which COS allows
# 3-63 characters long, of lowercase letters, digits and hyphens, starting and ending with a letter or digit.
IBM_STACK_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,37}[a-z0-9])?$")
# Endpoint overrides (private endpoints, or the loopback fakes of the tests); production leaves them unset.
IBM_ENDPOINT_KEYS = (
    "iam_url",
    "resource_controller_url",
    "global_catalog_url",
    "iam_policy_url",
    "cos_url",
    "wml_url",
    "platform_url",
    "ca_file",
    "poll_seconds",
)


class IbmSettings(_Strict):
    """The watsonx.ai stack. Plans and the hardware spec are cost decisions: the defaults are small."""

    region: IbmRegion = Field(
        default=IbmRegion.US_SOUTH, description="ibm:region, watsonx.ai Runtime region."
    )
    resource_group: str = Field(default="Default", min_length=1, description="Resource group name or id.")
    cos_plan: CosPlan = CosPlan.STANDARD
    runtime_plan: RuntimePlan = RuntimePlan.V2_STANDARD
    hardware_spec: HardwareSpec = HardwareSpec.XS
    deployment_replicas: int = Field(default=1, ge=1, le=4, description="Nodes of the online deployment.")
    kms_key_crn: str | None = Field(
        default=None, description="Key Protect root key; COS-managed keys when absent."
    )
    dry_run: bool = Field(default=False, description="Train on a tiny subset (tests and quick looks).")
    endpoints: dict[str, str] = Field(default_factory=dict, description="IBM API URL overrides.")
    training_slots: TrainingSlots = None
    work_root: Path = Field(description="Folder on this machine where the model is trained (localRoot).")

    @field_validator("kms_key_crn")
    @classmethod
    def _key_protect_crn(cls, value: str | None) -> str | None:
        if value is not None and not KMS_KEY_CRN.match(value):
            raise ValueError(
                "must be a Key Protect or Hyper Protect Crypto Services root key CRN "
                f"(crn:v1:bluemix:public:kms:<region>:a/<account>:<instance>:key:<key>), got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _key_in_the_buckets_region(self) -> IbmSettings:
        # A regional bucket can only be encrypted with a root key of a Key Protect (or HPCS) instance in
        # its own region; COS refuses the bucket otherwise, after the instances are already created.
        key = KMS_KEY_CRN.match(self.kms_key_crn or "")
        if key is not None and key["region"] != self.region.value:
            raise ValueError(
                f"kmsKeyCrn names a key in {key['region']}, but the bucket is in ibm:region "
                f"{self.region.value}: use a root key of a Key Protect instance in the same region"
            )
        return self

    @field_validator("endpoints", mode="before")
    @classmethod
    def _known_endpoints(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(IBM_ENDPOINT_KEYS))
            if unknown:
                raise ValueError(f"unknown keys {unknown}; allowed: {', '.join(IBM_ENDPOINT_KEYS)}")
            return {k: str(v) for k, v in value.items()}
        return value


ROLLOUT_KEYS = ("canaryPercent", "bakeMinutes", "maxErrorRate", "minLiveAccuracy")


class RolloutSettings(_Strict):
    """`rollout`: how a promoted model replaces the served one (docs/gate.md). Absent: all at once.

    The new model first takes `canaryPercent` of the traffic beside the old one for `bakeMinutes`; it
    is rolled back when more than `maxErrorRate` of its answers are server errors or when its accuracy
    on labelled digits sent through the endpoint falls under `minLiveAccuracy`; otherwise it takes all
    the traffic.
    """

    canary_percent: int = Field(
        default=10, ge=1, le=99, alias="canaryPercent", description="Share of requests the new model gets."
    )
    bake_minutes: float = Field(
        default=10.0, ge=0.0, alias="bakeMinutes", description="How long the canary is watched."
    )
    max_error_rate: float = Field(
        default=0.01, ge=0.0, le=1.0, alias="maxErrorRate", description="Most 5xx share of its answers."
    )
    min_live_accuracy: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        alias="minLiveAccuracy",
        description="Least accuracy on labelled digits sent through the endpoint; 0 = not judged.",
    )

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(ROLLOUT_KEYS))
            if unknown:
                raise ValueError(f"unknown keys {unknown}; allowed: {', '.join(ROLLOUT_KEYS)}")
            flags = sorted(key for key, number in value.items() if isinstance(number, bool))
            if flags:
                # pydantic would read true as 1 (100 % live accuracy, a 1-minute bake): refuse instead.
                raise ValueError(f"{', '.join(flags)} must be numbers, not true/false")
        elif not isinstance(value, RolloutSettings):
            raise ValueError(
                f'must be a JSON map such as {{"canaryPercent": 10, "bakeMinutes": 10}} '
                f"with keys {', '.join(ROLLOUT_KEYS)}, got {value!r}"
            )
        return value

    @property
    def bake_seconds(self) -> float:
        return self.bake_minutes * 60.0


BATCH_KEYS = ("input", "instanceType", "instanceCount")
BATCH_TEST_SPLIT = "test"
"""`batch.<model>.input` naming the stack dataset's held-out test split (labelled) rather than a file."""
# What each cloud runs a batch job on, and the default (the smallest that fits the model).
DEFAULT_BATCH_INSTANCE_TYPE: dict[Cloud, str] = {
    Cloud.AWS: "ml.m5.large",
    Cloud.GCP: "n1-standard-2",
    Cloud.IBM: HardwareSpec.XS.value,
    Cloud.LOCAL: "local",
}


class BatchSettings(_Strict):
    """`batch.<model>`: score a whole input offline with the model's champion (docs/batch.md).

    `input` is `test` (the stack dataset's held-out test split, with its labels) or a path on this
    machine: an IDX image file (labels read from the matching labels file beside it), an .npz (x_test,
    y_test), a CSV of 784 pixels a row (a 785th, first, column is a label) or a folder of PNGs. The
    instance type and count are checked per cloud by `Settings` (only it knows the cloud)."""

    input: str = Field(min_length=1, description="test, or a dataset file, CSV or PNG folder here.")
    instance_type: str | None = Field(
        default=None, alias="instanceType", description="The job's machine; the cloud's smallest if absent."
    )
    instance_count: int = Field(
        default=1, ge=1, le=offerings.MAX_INSTANCE_COUNT, alias="instanceCount", description="Its machines."
    )

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = sorted(set(value) - set(BATCH_KEYS))
            if unknown:
                raise ValueError(f"unknown keys {unknown}; allowed: {', '.join(BATCH_KEYS)}")
        elif not isinstance(value, BatchSettings):
            raise ValueError(
                'must be a JSON map such as {"input": "test", "instanceType": "ml.m5.large", '
                '"instanceCount": 1} '
                f"with keys {', '.join(BATCH_KEYS)}, got {value!r}"
            )
        return value

    def is_test_split(self) -> bool:
        return self.input == BATCH_TEST_SPLIT

    def resolved_instance_type(self, cloud: Cloud) -> str:
        return self.instance_type or DEFAULT_BATCH_INSTANCE_TYPE[cloud]


def batch_instance_problem(cloud: Cloud, instance_type: str, count: int) -> str | None:
    """Why `instance_type` x `count` cannot run a batch job on `cloud`, or None."""
    if cloud is Cloud.AWS:
        allowed = offerings.sagemaker_transform_instance_types()
        if instance_type not in allowed:
            return (
                f"instanceType {instance_type!r} is not a SageMaker batch transform instance type the "
                f"built-in XGBoost image runs on; allowed: {offerings.closest(instance_type, allowed)}"
            )
    elif cloud is Cloud.GCP:
        problem = offerings.vertex_machine_type_problem(instance_type)
        if problem is not None:
            return f"instanceType {problem}"
    elif cloud is Cloud.IBM:
        if instance_type not in {spec.value for spec in HardwareSpec}:
            return (
                f"instanceType {instance_type!r} is not a watsonx.ai hardware specification for deployments; "
                f"allowed: {', '.join(spec.value for spec in HardwareSpec)}"
            )
    elif instance_type != DEFAULT_BATCH_INSTANCE_TYPE[Cloud.LOCAL] or count != 1:
        return (
            "the local stack scores in this process: instanceType must be 'local' (or absent) and "
            f"instanceCount 1, got {instance_type!r} x {count}"
        )
    return None


class BudgetSettings(_Strict):
    """The `budget` policy's limits (policy/rules.py, docs/cost.md): with one set, the policy is mandatory."""

    max_hourly_cost: float | None = Field(
        default=None, gt=0, description="maxHourlyCost: USD per hour of serving at the autoscaling maximum."
    )
    max_run_cost: float | None = Field(
        default=None, gt=0, description="maxRunCost: USD per training run at the jobs' maximum runtime."
    )


class Settings(_Strict):
    """Everything a stack program needs, validated."""

    stack: str
    cloud: Cloud
    dataset: Dataset = Dataset.MNIST
    data_dir: Path | None = Field(default=None, description="Dataset cache; the user cache dir when absent.")
    models: tuple[Framework, ...]
    hyperparameters: dict[Framework, dict[str, str]] = Field(
        default_factory=dict, description="Per model, hyperparameter overrides as strings."
    )
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    rollout: RolloutSettings | None = Field(
        default=None, description="Canary rollout of a promoted model; all at once when absent."
    )
    training_preset: TrainingPreset = Field(
        default=TrainingPreset.STANDARD,
        description="The dataset's hyperparameter preset (training/presets.py), under the overrides.",
    )
    batch: dict[Framework, BatchSettings] = Field(
        default_factory=dict, description="Per model, a batch scoring job of its champion; none when absent."
    )
    tuning: dict[Framework, ModelTuning] = Field(
        default_factory=dict, description="Per model, the hyperparameter search; no tuning when absent."
    )
    local: LocalSettings | None = None
    aws: AwsSettings | None = None
    gcp: GcpSettings | None = None
    ibm: IbmSettings | None = None

    @field_validator("hyperparameters", mode="before")
    @classmethod
    def _hyperparameters_as_strings(cls, value: Any) -> Any:
        # Pulumi config numbers arrive as ints/floats; SageMaker takes hyperparameters as strings.
        if isinstance(value, dict):
            return {
                model: {str(k): str(v) for k, v in hp.items()} if isinstance(hp, dict) else hp
                for model, hp in value.items()
            }
        return value

    @field_validator("batch")
    @classmethod
    def _batch_runs_here(
        cls, batch: dict[Framework, BatchSettings], info: ValidationInfo
    ) -> dict[Framework, BatchSettings]:
        cloud, models = info.data.get("cloud"), info.data.get("models")
        if cloud is None or models is None:
            return batch  # the cloud's or the models' own error says what is wrong
        for model, job in batch.items():
            if model not in models:
                raise ValueError(
                    f"names {model.value}, which this stack does not serve; "
                    f"allowed: {', '.join(m.value for m in models)}"
                )
            problem = batch_instance_problem(cloud, job.resolved_instance_type(cloud), job.instance_count)
            if problem is not None:
                raise ValueError(f"{model.value}.{problem}")
            if not job.is_test_split() and not Path(job.input).exists():
                raise ValueError(
                    f"{model.value}.input {job.input!r} does not exist; give {BATCH_TEST_SPLIT!r} (the "
                    "dataset's held-out test split) or a path on this machine: an IDX or .npz dataset "
                    "file, a CSV of 784 pixels a row, or a folder of PNGs"
                )
        return batch

    @model_validator(mode="after")
    def _models_run_on_cloud(self) -> Settings:
        unsupported = [m.value for m in self.models if m not in SUPPORTED_MODELS[self.cloud]]
        if unsupported:
            allowed = ", ".join(sorted(m.value for m in SUPPORTED_MODELS[self.cloud]))
            raise ValueError(f"models {unsupported} cannot run on {self.cloud.value}; allowed: {allowed}")
        if not self.models:
            raise ValueError("models must name at least one of: xgboost, tensorflow, pytorch")
        return self

    @field_validator("tuning")
    @classmethod
    def _tuning_fits_trainers(cls, tuning: dict[Framework, ModelTuning]) -> dict[Framework, ModelTuning]:
        checked: dict[Framework, ModelTuning] = {}
        for model, search in tuning.items():
            try:
                checked[model] = search.checked_for(model)
            except ValueError as error:
                raise ValueError(f"{model.value}: {error}") from None
        return checked

    @model_validator(mode="after")
    def _tuning_fits_models(self) -> Settings:
        untrained = sorted(m.value for m in self.tuning if m not in self.models)
        if untrained:
            raise ValueError(
                f"tuning names {untrained}, which this stack does not train; allowed: "
                + ", ".join(m.value for m in self.models)
            )
        for model, search in self.tuning.items():
            if self.cloud is Cloud.GCP and search.strategy is TuningStrategy.HYPERBAND:
                raise ValueError(
                    f"tuning.{model.value}.strategy 'Hyperband' is not one Vertex AI offers; allowed on gcp: "
                    "Bayesian, Random, Grid"
                )
        return self


class ConfigSource(Protocol):
    """The part of `pulumi.Config` settings need (a protocol, so tests can pass a dict-backed fake)."""

    def get(self, key: str) -> str | None: ...


def _get_json(config: ConfigSource, key: str) -> Any:
    raw = config.get(key)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"config {PROJECT}:{key} must be JSON, got {raw!r} ({exc.msg})") from None


def _pick(config: ConfigSource, keys: dict[str, str]) -> dict[str, Any]:
    """Read `configKey -> field_name`, keeping only keys that are set (defaults live in the models)."""
    values: dict[str, Any] = {}
    for key, field in keys.items():
        raw = config.get(key)
        if raw is None:
            continue
        try:
            values[field] = json.loads(raw)
        except json.JSONDecodeError:
            values[field] = raw
    return values


def _describe(error: ValidationError) -> str:
    """Name each problem by the config key a user sets, not by the Python field behind it."""
    lines = []
    for item in error.errors():
        loc = [str(p) for p in item["loc"]]
        if loc and loc[0] in _SECTION_KEYS and len(loc) > 1:
            loc = [_SECTION_KEYS[loc[0]].get(loc[1], loc[1]), *loc[2:]]
        elif loc:
            loc = [_TOP_KEYS.get(loc[0], loc[0]), *loc[1:]]
        key = ".".join(loc)
        where = (key if ":" in key else f"{PROJECT}:{key}") if loc else "settings"
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input")
        # Name the value unless the message already does (a custom validator's message quotes it).
        if isinstance(value, str | int | float) and repr(value) not in message:
            message = f"{message}, got {value!r}"
        lines.append(f"  {where}: {message}")
    return "invalid stack configuration:\n" + "\n".join(lines)


_AWS_KEYS = {
    "xgboostVersion": "xgboost_version",
    "trainingInstanceType": "training_instance_type",
    "trainingInstanceCount": "training_instance_count",
    "maxRuntimeSeconds": "max_runtime_seconds",
    "endpointInstanceType": "endpoint_instance_type",
    "endpointMinInstances": "endpoint_min_instances",
    "endpointMaxInstances": "endpoint_max_instances",
    "kmsKeyArn": "kms_key_arn",
    "publicApi": "public_api",
}
_GCP_KEYS = {
    "trainingMachineType": "training_machine_type",
    "trainingReplicaCount": "training_replica_count",
    "trainingTimeoutSeconds": "training_timeout_seconds",
    "servingMachineType": "serving_machine_type",
    "servingMinReplicas": "serving_min_replicas",
    "servingMaxReplicas": "serving_max_replicas",
    "kmsKeyName": "kms_key_name",
    "servingImage": "serving_image",
}
_LOCAL_KEYS = {
    "localRoot": "root",
    "ports": "ports",
    "dryRun": "dry_run",
    "ui": "ui",
    "localTrainingSlots": "training_slots",
}
_PROMOTION_KEYS = {
    "minAccuracy": "min_accuracy",
    "promotionTolerance": "tolerance",
    "forcePromotion": "force",
}
_IBM_KEYS = {
    "resourceGroup": "resource_group",
    "cosPlan": "cos_plan",
    "runtimePlan": "runtime_plan",
    "hardwareSpec": "hardware_spec",
    "deploymentReplicas": "deployment_replicas",
    "kmsKeyCrn": "kms_key_crn",
    "dryRun": "dry_run",
    "ibmEndpoints": "endpoints",
    "localTrainingSlots": "training_slots",
}
_BUDGET_KEYS = {"maxHourlyCost": "max_hourly_cost", "maxRunCost": "max_run_cost"}
_TOP_KEYS = {"data_dir": "dataDir", "training_preset": "trainingPreset"}
_SECTION_KEYS = {
    "aws": {field: key for key, field in _AWS_KEYS.items()},
    "ibm": {"region": "ibm:region", **{field: key for key, field in _IBM_KEYS.items()}},
    "local": {field: key for key, field in _LOCAL_KEYS.items()},
    "promotion": {field: key for key, field in _PROMOTION_KEYS.items()},
    "budget": {field: key for key, field in _BUDGET_KEYS.items()},
    "gcp": {"project": "gcp:project", "region": "gcp:region", **{f: k for k, f in _GCP_KEYS.items()}},
}


def _promotion(config: ConfigSource, values: dict[str, Any]) -> dict[str, Any]:
    """The gate's settings; minAccuracy is one number for every model or a JSON map model -> number.

    Models without an explicit floor get the dataset's default (DEFAULT_MIN_ACCURACY), or none at all in
    a dry run (a tiny subset is not trained for accuracy).
    """
    promotion = _pick(config, {k: f for k, f in _PROMOTION_KEYS.items() if k != "minAccuracy"})
    raw = _get_json(config, "minAccuracy")
    models = [m for m in values["models"] if m in set(Framework)]
    try:
        dataset = Dataset(values.get("dataset", Dataset.MNIST))
    except ValueError:
        return promotion  # the dataset's own error names the allowed values
    dry_run = _pick(config, {"dryRun": "dry_run"}).get("dry_run") is True
    floors: dict[str, Any] = {
        m: (0.0 if dry_run else DEFAULT_MIN_ACCURACY[dataset][Framework(m)]) for m in models
    }
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - set(models))
        if unknown:
            raise ValueError(
                f"config {PROJECT}:minAccuracy names {unknown}, which this stack does not train; "
                f"allowed: {', '.join(str(m) for m in models)}"
            )
        floors.update(raw)
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        floors = dict.fromkeys(models, raw)
    elif raw is not None:
        raise ValueError(
            f"config {PROJECT}:minAccuracy must be a number between 0 and 1 or a JSON map such as "
            f'{{"xgboost": 0.95}}, got {raw!r}'
        )
    return {**promotion, "min_accuracy": floors}


def _batch(config: ConfigSource, project_root: Path | None) -> Any:
    """`batch` as a JSON map model -> job, each job's input path made absolute (from the project root)."""
    raw = _get_json(config, "batch")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValueError(
            f"config {PROJECT}:batch must be a JSON map model -> job such as "
            '{"xgboost": {"input": "test"}} '
            f"with job keys {', '.join(BATCH_KEYS)}, got {raw!r}"
        )
    jobs = {}
    for model, job in raw.items():
        named = job.get("input") if isinstance(job, dict) else None
        if isinstance(named, str) and named not in ("", BATCH_TEST_SPLIT):
            path = Path(named).expanduser()
            job = {**job, "input": str(path if path.is_absolute() else (project_root or Path.cwd()) / path)}
        jobs[model] = job
    return jobs


def load_settings(
    stack: str,
    config: ConfigSource,
    aws_config: ConfigSource | None = None,
    project_root: Path | None = None,
    gcp_config: ConfigSource | None = None,
    ibm_config: ConfigSource | None = None,
) -> Settings:
    """Read and validate the settings of `stack`; raise ValueError with every problem at once."""
    cloud_raw = config.get("cloud") or stack
    try:
        cloud = Cloud(cloud_raw)
    except ValueError:
        allowed = ", ".join(c.value for c in Cloud)
        raise ValueError(
            f"config {PROJECT}:cloud must be one of {allowed} (it defaults to the stack name), "
            f"got {cloud_raw!r}"
        ) from None

    models_raw = _get_json(config, "models")
    if models_raw is not None and not isinstance(models_raw, list):
        raise ValueError(
            f'config {PROJECT}:models must be a JSON list such as ["xgboost"], got {models_raw!r}'
        )
    values: dict[str, Any] = {
        "stack": stack,
        "cloud": cloud,
        "models": tuple(models_raw) if models_raw is not None else DEFAULT_MODELS[cloud],
    }
    if (dataset := config.get("dataset")) is not None:
        values["dataset"] = dataset
    if (data_dir := config.get("dataDir")) is not None:
        values["data_dir"] = Path(data_dir).expanduser()
    if (hyperparameters := _get_json(config, "hyperparameters")) is not None:
        values["hyperparameters"] = hyperparameters
    if (preset := config.get("trainingPreset")) is not None:
        values["training_preset"] = preset
    if (tuning := _get_json(config, "tuning")) is not None:
        if not isinstance(tuning, dict):
            raise ValueError(
                f"config {PROJECT}:tuning must be a JSON map of model -> search such as "
                '{"xgboost": {"maxTrials": 4, "ranges": {"eta": {"min": 0.05, "max": 0.5}}}}, '
                f"got {tuning!r}"
            )
        values["tuning"] = tuning
    if (rollout := _get_json(config, "rollout")) is not None:
        values["rollout"] = rollout

    values["promotion"] = _promotion(config, values)
    values["budget"] = _pick(config, _BUDGET_KEYS)
    if (batch := _batch(config, project_root)) is not None:
        values["batch"] = batch

    root = Path(config.get("localRoot") or f".{PROJECT}/{stack}").expanduser()
    if not root.is_absolute():
        root = (project_root or Path.cwd()) / root
    if cloud is Cloud.LOCAL:
        local = _pick(config, {k: f for k, f in _LOCAL_KEYS.items() if k != "localRoot"})
        values["local"] = {"root": root, **local}
    elif cloud is Cloud.AWS:
        region = aws_config.get("region") if aws_config is not None else None
        if not region:
            raise ValueError(
                "config aws:region is required for the aws stack "
                "(e.g. `pulumi config set aws:region us-east-1`)"
            )
        values["aws"] = {"region": region, **_pick(config, _AWS_KEYS)}
    elif cloud is Cloud.GCP:
        project = gcp_config.get("project") if gcp_config is not None else None
        if not project:
            raise ValueError(
                "config gcp:project is required for the gcp stack "
                "(e.g. `pulumi config set gcp:project my-project`; docs/gcp.md lists what it needs)"
            )
        region = (gcp_config.get("region") if gcp_config is not None else None) or "us-central1"
        values["gcp"] = {"project": project, "region": region, **_pick(config, _GCP_KEYS)}
    elif cloud is Cloud.IBM:
        if not IBM_STACK_NAME.match(stack):
            raise ValueError(
                f"the ibm stack's name {stack!r} becomes part of its COS bucket name "
                f"({PROJECT}-{stack}-<8 hex digits>), which COS allows only in lowercase letters, digits and "
                "hyphens, starting and ending with a letter or digit, at most 63 characters: name the "
                "stack with 1-39 of those (e.g. `pulumi stack init ibm-dev`)"
            )
        region = ibm_config.get("region") if ibm_config is not None else None
        values["ibm"] = {
            **({"region": region} if region else {}),
            "work_root": root,
            **_pick(config, _IBM_KEYS),
        }

    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise ValueError(_describe(exc)) from None
    if settings.aws is not None and settings.aws.endpoint_min_instances > settings.aws.endpoint_max_instances:
        raise ValueError(
            f"config {PROJECT}:endpointMinInstances ({settings.aws.endpoint_min_instances}) must not exceed "
            f"endpointMaxInstances ({settings.aws.endpoint_max_instances})"
        )
    if settings.rollout is not None and settings.cloud is Cloud.IBM:
        raise ValueError(
            f"config {PROJECT}:rollout is not available on the ibm stack: a watsonx.ai online deployment "
            "serves one model asset and splits no traffic; unset it (an update is still verified, "
            "docs/ibm.md); allowed on: aws, local"
        )
    if settings.rollout is not None and settings.cloud is Cloud.GCP:
        raise ValueError(
            f"config {PROJECT}:rollout is not available on the gcp stack yet: its canary through Vertex AI's "
            "trafficSplit is not implemented (docs/gate.md), and an update would silently go all at once; "
            "unset it; allowed on: aws, local"
        )
    return settings


def ibm_api_key_from(value: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The IBM Cloud API key: `ibm:apiKey` (a secret) or, as IBM's own tools read it, IC_API_KEY /
    IBMCLOUD_API_KEY. The caller wraps it in a secret Output at once; it is never logged."""
    key = value or next((environ[name] for name in IBM_API_KEY_ENVS if environ.get(name)), None)
    if not key:
        raise ValueError(
            "the ibm stack needs an IBM Cloud API key: `pulumi config set --secret ibm:apiKey <key>` "
            f"(or export {' or '.join(IBM_API_KEY_ENVS)}); docs/ibm.md lists the access it needs"
        )
    return key

"""One typed, validated settings object, read once from the stack's config.

Every config key of the project is read here and nowhere else, so a bad value fails `pulumi up`
before any resource exists, with a message naming the key and the allowed values. Components take
the parts of `Settings` they need; none of them reads `pulumi.Config` or the environment.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from infra import offerings

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


def _offered(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(
            f"{value!r} is not one of the {what} instance types; allowed: {offerings.closest(value, allowed)}"
        )
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


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
    public_api: bool = Field(default=False, description="An HTTP API + Lambda in front of the endpoint.")

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
    local: LocalSettings | None = None
    aws: AwsSettings | None = None

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

    @model_validator(mode="after")
    def _models_run_on_cloud(self) -> Settings:
        unsupported = [m.value for m in self.models if m not in SUPPORTED_MODELS[self.cloud]]
        if unsupported:
            allowed = ", ".join(sorted(m.value for m in SUPPORTED_MODELS[self.cloud]))
            raise ValueError(f"models {unsupported} cannot run on {self.cloud.value}; allowed: {allowed}")
        if not self.models:
            raise ValueError("models must name at least one of: xgboost, tensorflow, pytorch")
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
        where = f"{PROJECT}:{'.'.join(loc)}" if loc else "settings"
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
_LOCAL_KEYS = {"localRoot": "root", "ports": "ports", "dryRun": "dry_run", "ui": "ui"}
_TOP_KEYS = {"data_dir": "dataDir"}
_SECTION_KEYS = {
    "aws": {field: key for key, field in _AWS_KEYS.items()},
    "local": {field: key for key, field in _LOCAL_KEYS.items()},
}


def load_settings(
    stack: str,
    config: ConfigSource,
    aws_config: ConfigSource | None = None,
    project_root: Path | None = None,
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

    if cloud is Cloud.LOCAL:
        root = Path(config.get("localRoot") or f".{PROJECT}/{stack}").expanduser()
        if not root.is_absolute():
            root = (project_root or Path.cwd()) / root
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

    try:
        settings = Settings.model_validate(values)
    except ValidationError as exc:
        raise ValueError(_describe(exc)) from None
    if settings.aws is not None and settings.aws.endpoint_min_instances > settings.aws.endpoint_max_instances:
        raise ValueError(
            f"config {PROJECT}:endpointMinInstances ({settings.aws.endpoint_min_instances}) must not exceed "
            f"endpointMaxInstances ({settings.aws.endpoint_max_instances})"
        )
    return settings

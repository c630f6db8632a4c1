"""What a stack will cost, before `up`: its plan (infra/plan.py) priced from the price tables (infra/prices/).

Every billed resource the program would declare becomes one `BilledLine`: what it is (type, size, count,
region) and the price row that prices it. Lines fall in groups that bill differently:

- serving: endpoints and deployments, per hour while they exist, between the autoscaling minimum and
  maximum (SageMaker production variants x Application Auto Scaling target, Vertex deployments' replicas,
  watsonx.ai deployments' capacity units per hour x the plan's price of a capacity unit hour);
- training: per run, instance-hours from the job's maximum runtime x its instances, and from the last
  measured run time when the stack's outputs hold one;
- storage: per month, for the bytes the program uploads (sizes known before `up`);
- requests and builds: billed by use that cannot be known before `up` (API requests, Cloud Build
  minutes); listed with their unit price, never in a total;
- own machine: what the local stack (and the ibm stack's training) runs here: zero, it is your machine.

A price the table does not know is `None` and shows as unknown, never as zero: every total that would
need it is unknown too, with the resources it is waiting for named.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from importlib import resources as package_files
from typing import Any

from infra.plan import RegisteredResource

HOURS_PER_MONTH = 730  # both AWS's and Google's calculators count a month as 730 hours
MAX_PRICE_AGE_DAYS = 180
UNKNOWN = "unknown"
ANY_REGION = "*"
PRICE_COLUMNS = ("region", "sku", "unit", "price", "currency", "read_on", "source", "note")
CLOUDS_WITH_PRICES = ("aws", "gcp", "ibm")

# Resource types (wire tokens) the lines are read from.
SAGEMAKER_ENDPOINT = "aws:sagemaker/endpoint:Endpoint"
SAGEMAKER_ENDPOINT_CONFIG = "aws:sagemaker/endpointConfiguration:EndpointConfiguration"
SAGEMAKER_TRAINING_JOB = "aws:sagemaker/trainingJob:TrainingJob"
SAGEMAKER_TUNING_JOB = "aws:sagemaker/hyperParameterTuningJob:HyperParameterTuningJob"
SAGEMAKER_TRANSFORM_JOB = "pulumi-python:dynamic/aws:TransformJob"
VERTEX_TUNING_JOB = "pulumi-python:dynamic/vertex:HyperparameterTuningJob"
SCALING_TARGET = "aws:appautoscaling/target:Target"
S3_BUCKET = "aws:s3/bucket:Bucket"
S3_OBJECT = "aws:s3/bucketObjectv2:BucketObjectv2"
LAMBDA_FUNCTION = "aws:lambda/function:Function"
HTTP_API = "aws:apigatewayv2/api:Api"
VERTEX_DEPLOYMENT = "pulumi-python:dynamic/vertex:Deployment"
VERTEX_CUSTOM_JOB = "pulumi-python:dynamic/vertex:CustomJob"
GCS_BUCKET = "gcp:storage/bucket:Bucket"
GCS_OBJECT = "gcp:storage/bucketObject:BucketObject"
ARTIFACT_REPOSITORY = "gcp:artifactregistry/repository:Repository"
CLOUD_BUILD_IMAGE = "pulumi-python:dynamic/cloudbuild:Image"
IBM_INSTANCE = "pulumi-python:dynamic/ibm:ResourceInstance"
IBM_DEPLOYMENT = "pulumi-python:dynamic/ibm:Deployment"
IBM_TRAINING_JOB = "pulumi-python:dynamic/ibm:TrainingJob"
LOCAL_PREFIX = "pulumi-python:dynamic/local:"
SAGEMAKER_VARIANT_COUNT = "sagemaker:variant:DesiredInstanceCount"
WATSONX_RUNTIME_SERVICE = "pm-20"
COS_SERVICE = "cloud-object-storage"


class PriceTableError(ValueError):
    """A price table is malformed; the message names the file, the row and the column."""


class Group(StrEnum):
    SERVING = "serving"
    TRAINING = "training"
    STORAGE = "storage"
    USAGE = "usage"
    OWN_MACHINE = "own machine"


@dataclass(frozen=True)
class Price:
    """One row of a price table: `amount` per `unit` in `currency`, None when unknown."""

    cloud: str
    region: str
    sku: str
    unit: str
    amount: float | None
    currency: str
    read_on: date
    source: str
    note: str = ""


@dataclass(frozen=True)
class PriceTable:
    cloud: str
    rows: tuple[Price, ...]

    def find(self, region: str, sku: str) -> Price | None:
        """The row for `sku` in `region`, else the row that holds in any region (`*`)."""
        for wanted in (region, ANY_REGION):
            for row in self.rows:
                if row.sku == sku and row.region == wanted:
                    return row
        return None

    def stale(self, today: date, max_age_days: int = MAX_PRICE_AGE_DAYS) -> list[Price]:
        return [row for row in self.rows if (today - row.read_on).days > max_age_days]


def parse_price_table(text: str, cloud: str, origin: str = "") -> PriceTable:
    """Read a price table's CSV; refuse a row without a date, a source or a number (or `unknown`)."""
    where = origin or f"infra/prices/{cloud}.csv"
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != PRICE_COLUMNS:
        raise PriceTableError(
            f"{where}: the columns must be {','.join(PRICE_COLUMNS)}, got {reader.fieldnames}"
        )
    rows = []
    for number, raw in enumerate(reader, start=2):
        try:
            read_on = date.fromisoformat(raw["read_on"])
        except ValueError:
            raise PriceTableError(
                f"{where} line {number}: read_on must be a date (YYYY-MM-DD), got {raw['read_on']!r}"
            ) from None
        if raw["price"] == UNKNOWN:
            amount = None
        else:
            try:
                amount = float(raw["price"])
            except ValueError:
                amount = -1.0
            if not math.isfinite(amount) or amount < 0:
                raise PriceTableError(
                    f"{where} line {number}: price must be a number >= 0 or {UNKNOWN!r}, got {raw['price']!r}"
                )
        if not raw["source"].startswith("https://"):
            raise PriceTableError(
                f"{where} line {number}: source must be the https:// page the price was read on, "
                f"got {raw['source']!r}"
            )
        rows.append(
            Price(
                cloud=cloud,
                region=raw["region"],
                sku=raw["sku"],
                unit=raw["unit"],
                amount=amount,
                currency=raw["currency"],
                read_on=read_on,
                source=raw["source"],
                note=raw["note"],
            )
        )
    return PriceTable(cloud, tuple(rows))


def load_price_table(cloud: str) -> PriceTable:
    """The table installed with the package (infra/prices/<cloud>.csv)."""
    text = package_files.files("infra.prices").joinpath(f"{cloud}.csv").read_text(encoding="utf-8")
    return parse_price_table(text, cloud)


# --------------------------------------------------------------------------------------------------
# Lines
# --------------------------------------------------------------------------------------------------


@dataclass
class BilledLine:
    """One billed resource of the plan, priced."""

    group: Group
    resource: str
    """The resource's logical name in the program."""
    type: str
    size: str
    """Instance or machine type, hardware spec, plan, or GB stored."""
    region: str
    sku: str
    price: Price | None
    count_min: float = 1
    count_max: float = 1
    hours_per_run: float | None = None
    """training: the job's maximum runtime in hours."""
    measured_hours: float | None = None
    """training: the last measured run time in hours, when the stack's outputs hold one."""
    gigabytes: float | None = None
    rate: Price | None = None
    """ibm: capacity units per hour of the hardware spec (`price` is then the price of one capacity unit
    hour)."""
    note: str = ""

    @property
    def unit_price(self) -> float | None:
        """Per instance-hour (serving, training), per GB-month (storage), per unit of use (usage)."""
        if self.group is Group.OWN_MACHINE:
            return 0.0
        if self.price is None or self.price.amount is None:
            return None
        if self.rate is not None:
            return None if self.rate.amount is None else self.rate.amount * self.price.amount
        return self.price.amount

    def hourly(self, count: float) -> float | None:
        if self.group is Group.OWN_MACHINE:
            return 0.0
        price = self.unit_price
        return None if price is None else price * count

    @property
    def per_run_max(self) -> float | None:
        price = self.unit_price
        if price is None or self.hours_per_run is None:
            return None
        return price * self.count_max * self.hours_per_run

    @property
    def per_run_measured(self) -> float | None:
        price = self.unit_price
        if price is None or self.measured_hours is None:
            return None
        return price * self.count_max * self.measured_hours

    @property
    def monthly(self) -> float | None:
        price = self.unit_price
        if price is None or self.gigabytes is None:
            return None
        return price * self.gigabytes


def _number(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _find(table: PriceTable | None, region: str, sku: str) -> Price | None:
    return table.find(region, sku) if table is not None else None


def _asset_bytes(resource: RegisteredResource) -> int | None:
    """The size of the file an object uploads (a FileAsset known before `up`), else None."""
    from pathlib import Path

    source = resource.inputs.get("source")
    path = source.get("asset", {}).get("path") if isinstance(source, dict) else None
    if isinstance(path, str) and Path(path).is_file():
        return Path(path).stat().st_size
    return None


def _stored_gigabytes(resources: Sequence[RegisteredResource], object_type: str) -> float | None:
    objects = [r for r in resources if r.resource_type == object_type]
    sizes = [_asset_bytes(r) for r in objects]
    if not objects or any(size is None for size in sizes):
        return None
    return sum(size or 0 for size in sizes) / 1e9


def _aws_region(resource: RegisteredResource, default: str) -> str:
    if resource.provider is not None and isinstance(resource.provider.props.get("region"), str):
        return resource.provider.props["region"]
    return default


def _aws_lines(
    resources: Sequence[RegisteredResource], table: PriceTable | None, region: str
) -> list[BilledLine]:
    lines: list[BilledLine] = []
    configs = {
        str(r.outputs.get("name") or r.name): r
        for r in resources
        if r.resource_type == SAGEMAKER_ENDPOINT_CONFIG
    }
    targets = {
        str(r.inputs.get("resourceId")): r
        for r in resources
        if r.resource_type == SCALING_TARGET and r.inputs.get("scalableDimension") == SAGEMAKER_VARIANT_COUNT
    }
    billed_configs = []
    for endpoint in (r for r in resources if r.resource_type == SAGEMAKER_ENDPOINT):
        config = configs.get(str(endpoint.inputs.get("endpointConfigName")))
        if config is None:
            continue
        billed_configs.append(config)
        endpoint_name = str(endpoint.outputs.get("name") or endpoint.name)
        where = _aws_region(endpoint, region)
        for variant in [
            *(config.inputs.get("productionVariants") or []),
            *(config.inputs.get("shadowProductionVariants") or []),
        ]:
            instance_type = str(variant.get("instanceType") or "")
            initial = _number(variant.get("initialInstanceCount"), 1.0)
            target = targets.get(f"endpoint/{endpoint_name}/variant/{variant.get('variantName')}")
            low = _number(target.inputs.get("minCapacity"), initial) if target else initial
            high = _number(target.inputs.get("maxCapacity"), initial) if target else initial
            if not instance_type:  # a serverless variant bills per request and duration
                lines.append(
                    BilledLine(
                        Group.USAGE,
                        endpoint.name,
                        SAGEMAKER_ENDPOINT,
                        "serverless",
                        where,
                        "sagemaker-serverless",
                        None,
                        note="billed per request and duration",
                    )
                )
                continue
            sku = f"sagemaker-hosting:{instance_type}"
            lines.append(
                BilledLine(
                    Group.SERVING,
                    endpoint.name,
                    SAGEMAKER_ENDPOINT,
                    instance_type,
                    where,
                    sku,
                    _find(table, where, sku),
                    count_min=low,
                    count_max=high,
                )
            )
    for job in (r for r in resources if r.resource_type == SAGEMAKER_TRAINING_JOB):
        config = job.inputs.get("resourceConfig") or {}
        instance_type = str(config.get("instanceType") or "")
        runtime = _number((job.inputs.get("stoppingCondition") or {}).get("maxRuntimeInSeconds"), math.nan)
        where = _aws_region(job, region)
        sku = f"sagemaker-training:{instance_type}"
        count = _number(config.get("instanceCount"), 1.0)
        lines.append(
            BilledLine(
                Group.TRAINING,
                job.name,
                SAGEMAKER_TRAINING_JOB,
                instance_type,
                where,
                sku,
                _find(table, where, sku),
                count_min=count,
                count_max=count,
                hours_per_run=None if math.isnan(runtime) else runtime / 3600,
            )
        )
    for tuning in (r for r in resources if r.resource_type == SAGEMAKER_TUNING_JOB):
        definition = tuning.inputs.get("trainingJobDefinition") or {}
        config = definition.get("resourceConfig") or {}
        trials = _number(
            ((tuning.inputs.get("config") or {}).get("resourceLimits") or {}).get("maxNumberOfTrainingJobs"),
            math.nan,
        )
        runtime = _number((definition.get("stoppingCondition") or {}).get("maxRuntimeInSeconds"), math.nan)
        lines.append(
            _tuning_line(
                tuning,
                SAGEMAKER_TUNING_JOB,
                "sagemaker-training",
                str(config.get("instanceType") or ""),
                _number(config.get("instanceCount"), 1.0),
                trials,
                runtime,
                _aws_region(tuning, region),
                table,
            )
        )
    for transform in (r for r in resources if r.resource_type == SAGEMAKER_TRANSFORM_JOB):
        instance_type = str(transform.inputs.get("instance_type") or "")
        where = str(transform.inputs.get("region") or region)
        sku = f"sagemaker-transform:{instance_type}"
        lines.append(
            BilledLine(
                Group.USAGE,
                transform.name,
                SAGEMAKER_TRANSFORM_JOB,
                instance_type,
                where,
                sku,
                _find(table, where, sku),
                count_min=_number(transform.inputs.get("instance_count"), 1.0),
                count_max=_number(transform.inputs.get("instance_count"), 1.0),
                note="batch transform: billed per instance-hour while it runs, for a time not known before",
            )
        )
    gigabytes = _stored_gigabytes(resources, S3_OBJECT)
    for bucket in (r for r in resources if r.resource_type == S3_BUCKET):
        where = _aws_region(bucket, region)
        lines.append(
            BilledLine(
                Group.STORAGE,
                bucket.name,
                S3_BUCKET,
                _gigabytes_text(gigabytes),
                where,
                "s3-standard",
                _find(table, where, "s3-standard"),
                gigabytes=gigabytes,
                note="the uploaded dataset; model artifacts add a few MB",
            )
        )
    for typ, sku in ((LAMBDA_FUNCTION, "lambda-requests"), (HTTP_API, "apigateway-http-requests")):
        for resource in (r for r in resources if r.resource_type == typ):
            where = _aws_region(resource, region)
            lines.append(
                BilledLine(
                    Group.USAGE,
                    resource.name,
                    typ,
                    "per request",
                    where,
                    sku,
                    _find(table, where, sku),
                    note="billed per request: depends on traffic",
                )
            )
    return lines


def _tuning_line(
    job: RegisteredResource,
    typ: str,
    prefix: str,
    instance_type: str,
    count: float,
    trials: float,
    runtime: float,
    region: str,
    table: PriceTable | None,
) -> BilledLine:
    """A tuning job bills up to `trials` training jobs of `count` instances, each up to `runtime` seconds."""
    sku = f"{prefix}:{instance_type}"
    bounded = not (math.isnan(trials) or math.isnan(runtime))
    return BilledLine(
        Group.TRAINING,
        job.name,
        typ,
        f"{instance_type}, {trials:g} trials" if bounded else instance_type,
        region,
        sku,
        _find(table, region, sku),
        count_min=count,
        count_max=count,
        hours_per_run=trials * runtime / 3600 if bounded else None,
        note="a hyperparameter search: every trial is a training job of its own",
    )


def _gigabytes_text(gigabytes: float | None) -> str:
    return f"{gigabytes:.3f} GB" if gigabytes is not None else "size unknown"


def _gcp_lines(
    resources: Sequence[RegisteredResource], table: PriceTable | None, region: str
) -> list[BilledLine]:
    lines: list[BilledLine] = []
    for deployment in (r for r in resources if r.resource_type == VERTEX_DEPLOYMENT):
        machine = str(deployment.inputs.get("instance_type") or "")
        where = str(deployment.inputs.get("region") or region)
        sku = f"vertex-prediction:{machine}"
        lines.append(
            BilledLine(
                Group.SERVING,
                deployment.name,
                VERTEX_DEPLOYMENT,
                machine,
                where,
                sku,
                _find(table, where, sku),
                count_min=_number(deployment.inputs.get("min_replicas"), 1.0),
                count_max=_number(deployment.inputs.get("max_replicas"), 1.0),
            )
        )
    for job in (r for r in resources if r.resource_type == VERTEX_CUSTOM_JOB):
        machine = str(job.inputs.get("instance_type") or "")
        where = str(job.inputs.get("region") or region)
        sku = f"vertex-training:{machine}"
        count = _number(job.inputs.get("instance_count"), 1.0)
        runtime = _number(job.inputs.get("max_runtime_seconds"), math.nan)
        lines.append(
            BilledLine(
                Group.TRAINING,
                job.name,
                VERTEX_CUSTOM_JOB,
                machine,
                where,
                sku,
                _find(table, where, sku),
                count_min=count,
                count_max=count,
                hours_per_run=None if math.isnan(runtime) else runtime / 3600,
            )
        )
    for tuning in (r for r in resources if r.resource_type == VERTEX_TUNING_JOB):
        lines.append(
            _tuning_line(
                tuning,
                VERTEX_TUNING_JOB,
                "vertex-training",
                str(tuning.inputs.get("instance_type") or ""),
                _number(tuning.inputs.get("instance_count"), 1.0),
                _number(tuning.inputs.get("max_trial_count"), math.nan),
                _number(tuning.inputs.get("max_runtime_seconds"), math.nan),
                str(tuning.inputs.get("region") or region),
                table,
            )
        )
    gigabytes = _stored_gigabytes(resources, GCS_OBJECT)
    for bucket in (r for r in resources if r.resource_type == GCS_BUCKET):
        where = str(bucket.inputs.get("location") or region).lower()
        lines.append(
            BilledLine(
                Group.STORAGE,
                bucket.name,
                GCS_BUCKET,
                _gigabytes_text(gigabytes),
                where,
                "gcs-standard",
                _find(table, where, "gcs-standard"),
                gigabytes=gigabytes,
                note="data and build context; the model adds a few MB",
            )
        )
    for repository in (r for r in resources if r.resource_type == ARTIFACT_REPOSITORY):
        where = str(repository.inputs.get("location") or region)
        lines.append(
            BilledLine(
                Group.STORAGE,
                repository.name,
                ARTIFACT_REPOSITORY,
                "image size unknown",
                where,
                "artifact-registry",
                _find(table, where, "artifact-registry"),
                note="the project's image: its size is known after the build",
            )
        )
    for image in (r for r in resources if r.resource_type == CLOUD_BUILD_IMAGE):
        where = str(image.inputs.get("region") or region)
        sku = "cloud-build:e2-standard-2"
        lines.append(
            BilledLine(
                Group.USAGE,
                image.name,
                CLOUD_BUILD_IMAGE,
                "per build-minute",
                where,
                sku,
                _find(table, where, sku),
                note="each build of a changed image",
            )
        )
    return lines


def _ibm_lines(
    resources: Sequence[RegisteredResource], table: PriceTable | None, region: str
) -> list[BilledLine]:
    lines: list[BilledLine] = []
    runtime_plan = next(
        (
            str(r.inputs.get("plan"))
            for r in resources
            if r.resource_type == IBM_INSTANCE and r.inputs.get("service") == WATSONX_RUNTIME_SERVICE
        ),
        None,
    )
    for deployment in (r for r in resources if r.resource_type == IBM_DEPLOYMENT):
        spec = str(deployment.inputs.get("instance_type") or "")
        where = str(deployment.inputs.get("region") or region)
        sku = f"wml-cuh:{runtime_plan}"
        lines.append(
            BilledLine(
                Group.SERVING,
                deployment.name,
                IBM_DEPLOYMENT,
                f"{spec} ({runtime_plan})",
                where,
                sku,
                _find(table, where, sku),
                count_min=_number(deployment.inputs.get("min_replicas"), 1.0),
                count_max=_number(deployment.inputs.get("max_replicas"), 1.0),
                rate=_find(table, where, f"wml-capacity:{spec}"),
            )
        )
    for job in (r for r in resources if r.resource_type == IBM_TRAINING_JOB):
        lines.append(
            BilledLine(
                Group.OWN_MACHINE,
                job.name,
                IBM_TRAINING_JOB,
                "this machine",
                "here",
                "own-machine",
                None,
                note="trains on the deploying machine (no managed PyTorch training on IBM Cloud)",
            )
        )
    for instance in (
        r for r in resources if r.resource_type == IBM_INSTANCE and r.inputs.get("service") == COS_SERVICE
    ):
        plan = str(instance.inputs.get("plan"))
        where = str(instance.inputs.get("target") or "global")
        sku = f"cos-{plan}"
        lines.append(
            BilledLine(
                Group.STORAGE,
                instance.name,
                IBM_INSTANCE,
                f"COS {plan}, size unknown",
                where,
                sku,
                _find(table, where, sku),
                note="the model archive (a few MB), uploaded by the training job",
            )
        )
    return lines


def _local_lines(resources: Sequence[RegisteredResource]) -> list[BilledLine]:
    return [
        BilledLine(
            Group.OWN_MACHINE,
            r.name,
            r.resource_type,
            "this machine",
            "here",
            "own-machine",
            None,
            note="your machine: no bill",
        )
        for r in resources
        if r.resource_type.startswith(LOCAL_PREFIX)
        and r.resource_type.split(":")[-1] in ("TrainingJob", "Endpoint")
    ]


def billed_lines(
    resources: Sequence[RegisteredResource], cloud: str, region: str, table: PriceTable | None
) -> list[BilledLine]:
    """Every billed resource of a plan, priced from `table` (None for the local stack)."""
    if cloud == "aws":
        return _aws_lines(resources, table, region)
    if cloud == "gcp":
        return _gcp_lines(resources, table, region)
    if cloud == "ibm":
        return _ibm_lines(resources, table, region)
    return _local_lines(resources)


def measured_run_hours(outputs: Mapping[str, Any] | None) -> float | None:
    """The last run's measured training time, in hours, from a stack's outputs (`models.<m>.challenger`
    or `.champion` metrics: `train_seconds`, as every trainer writes it), the longest of the models."""
    seconds = []
    for entry in ((outputs or {}).get("models") or {}).values():
        if not isinstance(entry, Mapping):
            continue
        for role in ("challenger", "champion"):
            metrics = (entry.get(role) or {}).get("metrics") if isinstance(entry.get(role), Mapping) else None
            value = metrics.get("train_seconds") if isinstance(metrics, Mapping) else None
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                seconds.append(float(value))
                break
    return max(seconds) / 3600 if seconds else None


# --------------------------------------------------------------------------------------------------
# Totals
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sum:
    """A total over lines: the known part, and the resources whose price is unknown (then the total is)."""

    known: float
    unknown: tuple[str, ...] = ()

    @property
    def value(self) -> float | None:
        return None if self.unknown else self.known

    def __add__(self, other: Sum) -> Sum:
        return Sum(self.known + other.known, tuple(dict.fromkeys([*self.unknown, *other.unknown])))

    def times(self, factor: float) -> Sum:
        return Sum(self.known * factor, self.unknown if factor else ())

    def to_json(self) -> dict[str, Any]:
        return {"value": _round(self.value), "known_part": _round(self.known), "unknown": list(self.unknown)}


def _sum(lines: Iterable[BilledLine], amount: Any) -> Sum:
    total, unknown = 0.0, []
    for line in lines:
        value = amount(line)
        if value is None:
            unknown.append(line.resource)
        else:
            total += value
    return Sum(total, tuple(dict.fromkeys(unknown)))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


@dataclass
class CostReport:
    stack: str
    cloud: str
    region: str
    lines: list[BilledLine]
    hours: float
    runs: float
    tables: list[PriceTable] = field(default_factory=list)

    def _of(self, *groups: Group) -> list[BilledLine]:
        return [line for line in self.lines if line.group in groups]

    @property
    def hourly_min(self) -> Sum:
        return _sum(self._of(Group.SERVING, Group.OWN_MACHINE), lambda line: line.hourly(line.count_min))

    @property
    def hourly_max(self) -> Sum:
        return _sum(self._of(Group.SERVING, Group.OWN_MACHINE), lambda line: line.hourly(line.count_max))

    @property
    def per_run_max(self) -> Sum:
        return _sum(self._of(Group.TRAINING), lambda line: line.per_run_max)

    @property
    def per_run_measured(self) -> Sum | None:
        """From the last measured run; None when no training line has a measured time."""
        training = self._of(Group.TRAINING)
        if not training or any(line.measured_hours is None for line in training):
            return None
        return _sum(training, lambda line: line.per_run_measured)

    @property
    def storage_per_month(self) -> Sum:
        return _sum(self._of(Group.STORAGE), lambda line: line.monthly)

    def total(self, high: bool) -> Sum:
        """`hours` of serving (at the autoscaling minimum, or maximum when `high`), `runs` training runs (the
        measured time when known and not `high`, else the maximum runtime) and the storage for `hours`."""
        serving = (self.hourly_max if high else self.hourly_min).times(self.hours)
        measured = self.per_run_measured
        runs = (self.per_run_max if high or measured is None else measured).times(self.runs)
        return serving + runs + self.storage_per_month.times(self.hours / HOURS_PER_MONTH)

    def to_json(self) -> dict[str, Any]:
        measured = self.per_run_measured
        return {
            "stack": self.stack,
            "cloud": self.cloud,
            "region": self.region,
            "currency": "USD",
            "hours": self.hours,
            "runs": self.runs,
            "lines": [_line_json(line) for line in self.lines],
            "hourly": {"min": self.hourly_min.to_json(), "max": self.hourly_max.to_json()},
            "per_run": {
                "from_max_runtime": self.per_run_max.to_json(),
                "from_last_measured_run": measured.to_json() if measured is not None else None,
            },
            "storage_per_month": self.storage_per_month.to_json(),
            "total": {"min": self.total(high=False).to_json(), "max": self.total(high=True).to_json()},
            "prices": [
                {"cloud": table.cloud, "oldest_read_on": min(r.read_on for r in table.rows).isoformat()}
                for table in self.tables
                if table.rows
            ],
        }


def _price_json(price: Price | None) -> dict[str, Any] | None:
    if price is None:
        return None
    return {
        "sku": price.sku,
        "region": price.region,
        "unit": price.unit,
        "price": price.amount,
        "currency": price.currency,
        "read_on": price.read_on.isoformat(),
        "source": price.source,
    }


def _line_json(line: BilledLine) -> dict[str, Any]:
    return {
        "group": line.group.value,
        "resource": line.resource,
        "type": line.type,
        "size": line.size,
        "region": line.region,
        "count_min": line.count_min,
        "count_max": line.count_max,
        "sku": line.sku,
        "unit_price": _round(line.unit_price),
        "price": _price_json(line.price),
        "rate": _price_json(line.rate),
        "hourly_min": _round(line.hourly(line.count_min))
        if line.group in (Group.SERVING, Group.OWN_MACHINE)
        else None,
        "hourly_max": _round(line.hourly(line.count_max))
        if line.group in (Group.SERVING, Group.OWN_MACHINE)
        else None,
        "per_run_max": _round(line.per_run_max),
        "per_run_measured": _round(line.per_run_measured),
        "hours_per_run": line.hours_per_run,
        "measured_hours": line.measured_hours,
        "monthly": _round(line.monthly),
        "gigabytes": line.gigabytes,
        "note": line.note,
    }


# --------------------------------------------------------------------------------------------------
# From a stack to its report
# --------------------------------------------------------------------------------------------------

# The ibm program reads its API key as it starts. Planning calls no IBM API (dynamic providers are never
# created under mocks), so a stack without a key is planned with this stand-in, which goes nowhere.
PLAN_IBM_API_KEY = {"secure": "v1:plan-only-no-key-needed"}


def estimate(
    stack: str,
    *,
    root: Any = None,
    overrides: Mapping[str, Any] | None = None,
    hours: float = 24.0,
    runs: float = 1.0,
    outputs: Mapping[str, Any] | None = None,
    timeout: float = 600,
) -> CostReport:
    """Plan `stack` (its `Pulumi.<stack>.yaml`, `overrides` on top) without a cloud call and price it."""
    from pathlib import Path

    from infra.plan import PROJECT, collect, find_project_root, stack_config

    project = Path(root) if root is not None else find_project_root()
    given = {(k if ":" in k else f"{PROJECT}:{k}"): v for k, v in (overrides or {}).items()}
    config = {**stack_config(stack, project), **given}
    cloud = str(config.get(f"{PROJECT}:cloud") or stack)
    if cloud == "ibm" and "ibm:apiKey" not in config:
        given["ibm:apiKey"] = PLAN_IBM_API_KEY
    region = str(config.get("aws:region") or config.get("gcp:region") or config.get("ibm:region") or "")
    if cloud == "gcp" and not region:
        region = "us-central1"  # the stack's default (infra/settings.py)
    if cloud == "ibm" and not region:
        region = "us-south"
    resources = collect(stack, root=project, overrides=given, timeout=timeout)
    table = load_price_table(cloud) if cloud in CLOUDS_WITH_PRICES else None
    lines = billed_lines(resources, cloud, region, table)
    measured = measured_run_hours(outputs)
    for line in lines:
        if line.group is Group.TRAINING:
            line.measured_hours = measured
    return CostReport(stack, cloud, region, lines, hours, runs, [table] if table is not None else [])

"""What each platform offers, kept in one place and taken from the vendor's own data where a package
ships it, so that a typo in an instance type stops `pulumi up` before any resource exists (and not
after the bucket, the roles and the upload).

Vertex AI: no installed package lists the machine types Vertex accepts (they vary by region and are
checked by the service when the job or deployment is created). What is checked here is what cannot
be right: a name outside the Compute Engine CPU machine series Vertex trains and serves on
(`<series>-<shape>-<vCPUs>`, e.g. `n1-standard-4`), so `n1-standrad-4` or `n1-standard` fails at once.

SageMaker: botocore's service model of the `sagemaker` API lists every instance type the API accepts
(`TrainingInstanceType`, `ProductionVariantInstanceType`); the built-in XGBoost image is built for
x86-64, so Graviton (arm64), Inferentia and Trainium types, which the list also holds, are left out.
"""

from __future__ import annotations

import re
from functools import cache

# Families the x86-64 XGBoost image cannot run on: Graviton (c6g, m7g, r8g, ...: a `g` after the
# generation number), AWS Inferentia / Trainium (inf*, trn*) and Habana Gaudi (dl1).
_NOT_FOR_XGBOOST = re.compile(r"^ml\.(?:[a-z]+\d+g[a-z]*|inf\d+|trn\d+n?|dl\d+)\.")

# SageMaker's own bound (CreateTrainingJob StoppingCondition): a job runs at most 28 days.
SAGEMAKER_MAX_RUNTIME_SECONDS = 28 * 24 * 3600
# The project's ceiling on instances of one job or endpoint. The platforms' own limits are account
# quotas, not API bounds; the policy pack's cost limits (docs/policy.md, default 4) are stricter.
MAX_INSTANCE_COUNT = 10


@cache
def _sagemaker_enum(shape: str) -> tuple[str, ...]:
    import botocore.session  # the aws stack's dependency; imported only when an aws stack is read

    model = botocore.session.get_session().get_service_model("sagemaker")
    values = model.shape_for(shape).enum
    return tuple(v for v in values if not _NOT_FOR_XGBOOST.match(v))


def sagemaker_training_instance_types() -> tuple[str, ...]:
    """Instance types a SageMaker training job with the built-in XGBoost image can use."""
    return _sagemaker_enum("TrainingInstanceType")


def sagemaker_endpoint_instance_types() -> tuple[str, ...]:
    """Instance types a SageMaker real-time endpoint serving the built-in XGBoost image can use."""
    return _sagemaker_enum("ProductionVariantInstanceType")


def sagemaker_transform_instance_types() -> tuple[str, ...]:
    """Instance types a SageMaker batch transform job with the built-in XGBoost image can use."""
    return _sagemaker_enum("TransformInstanceType")


def closest(value: str, allowed: tuple[str, ...], shown: int = 6) -> str:
    """`allowed` as a message: the values closest to `value` first (a typo finds its fix), then how
    many more there are."""
    import difflib

    near = difflib.get_close_matches(value, allowed, n=shown, cutoff=0.0)
    more = len(allowed) - len(near)
    return ", ".join(near) + (f" (and {more} more)" if more > 0 else "")


# Compute Engine CPU machine series and shapes Vertex AI custom training and online prediction use;
# accelerator-optimised series (a2, a3, g2) need GPUs, which this project does not configure.
VERTEX_CPU_SERIES = ("e2", "n1", "n2", "n2d", "c2", "c2d", "c3", "n4", "m1")
VERTEX_CPU_SHAPES = ("standard", "highmem", "highcpu", "ultramem", "megamem")
_VERTEX_MACHINE = re.compile(rf"^({'|'.join(VERTEX_CPU_SERIES)})-({'|'.join(VERTEX_CPU_SHAPES)})-(\d+)$")


def vertex_machine_type_problem(value: str) -> str | None:
    """Why `value` cannot be a Vertex AI CPU machine type, or None when it has the form of one."""
    match = _VERTEX_MACHINE.match(value)
    if match is None:
        return (
            f"{value!r} is not a Compute Engine CPU machine type Vertex AI trains or serves on: "
            f"<series>-<shape>-<vCPUs> with series {', '.join(VERTEX_CPU_SERIES)} and shape "
            f"{', '.join(VERTEX_CPU_SHAPES)} (e.g. n1-standard-4, e2-standard-8)"
        )
    vcpus = int(match.group(3))
    if vcpus < 2 or vcpus % 2:
        return f"{value!r}: {vcpus} vCPUs is not a machine size (an even count, e.g. 2, 4, 8, 16, 32, 96)"
    return None

"""The price tables and the arithmetic of infra/cost.py, on hand-built plans (no program run).

`tests/client/test_mnistctl_cost.py` prices the stacks' real plans through `mnistctl cost`.
"""

from __future__ import annotations

from datetime import date

import pytest

from infra.cost import (
    CLOUDS_WITH_PRICES,
    MAX_PRICE_AGE_DAYS,
    SAGEMAKER_ENDPOINT,
    SAGEMAKER_ENDPOINT_CONFIG,
    SAGEMAKER_TRAINING_JOB,
    SAGEMAKER_TRANSFORM_JOB,
    SAGEMAKER_TUNING_JOB,
    SAGEMAKER_VARIANT_COUNT,
    SCALING_TARGET,
    VERTEX_TUNING_JOB,
    CostReport,
    PriceTableError,
    billed_lines,
    load_price_table,
    measured_run_hours,
    parse_price_table,
)
from infra.plan import RegisteredResource

HEADER = "region,sku,unit,price,currency,read_on,source,note\n"
PAGE = "https://example.com/pricing"


def table(*rows: str):
    return parse_price_table(HEADER + "".join(f"{row}\n" for row in rows), "aws", "test.csv")


PRICED = table(
    f"us-east-1,sagemaker-hosting:ml.m5.large,instance-hour,0.115,USD,2026-12-08,{PAGE},",
    f"us-east-1,sagemaker-training:ml.m5.xlarge,instance-hour,0.23,USD,2026-12-08,{PAGE},",
)


def resource(typ: str, name: str, inputs: dict, outputs: dict | None = None) -> RegisteredResource:
    return RegisteredResource(typ, name, f"urn:{name}", True, inputs, {**inputs, **(outputs or {})})


def aws_plan(
    initial: int = 1, low: int = 1, high: int = 2, runtime: float = 3600.0
) -> list[RegisteredResource]:
    """What the aws stack declares for one endpoint and one training job, in the shape infra/plan.py gives."""
    variant = {
        "variantName": "AllTraffic",
        "instanceType": "ml.m5.large",
        "initialInstanceCount": float(initial),
    }
    return [
        resource(SAGEMAKER_ENDPOINT_CONFIG, "cfg", {"productionVariants": [variant]}, {"name": "cfg-1"}),
        resource(SAGEMAKER_ENDPOINT, "ep", {"endpointConfigName": "cfg-1", "name": "ep-1"}),
        resource(
            SCALING_TARGET,
            "target",
            {
                "resourceId": "endpoint/ep-1/variant/AllTraffic",
                "scalableDimension": SAGEMAKER_VARIANT_COUNT,
                "minCapacity": float(low),
                "maxCapacity": float(high),
            },
        ),
        resource(
            SAGEMAKER_TRAINING_JOB,
            "job",
            {
                "resourceConfig": {"instanceType": "ml.m5.xlarge", "instanceCount": 2.0},
                "stoppingCondition": {"maxRuntimeInSeconds": runtime},
            },
        ),
    ]


def report(resources, prices=PRICED, hours=10.0, runs=2.0) -> CostReport:
    return CostReport(
        "aws", "aws", "us-east-1", billed_lines(resources, "aws", "us-east-1", prices), hours, runs
    )


@pytest.mark.parametrize("cloud", CLOUDS_WITH_PRICES)
def test_every_price_is_dated_sourced_and_read_at_most_180_days_ago(cloud):
    prices = load_price_table(cloud)
    assert prices.rows
    stale = prices.stale(date.today(), MAX_PRICE_AGE_DAYS)
    assert stale == [], (
        f"infra/prices/{cloud}.csv has prices read more than {MAX_PRICE_AGE_DAYS} days ago: "
        + ", ".join(f"{row.sku} ({row.read_on})" for row in stale)
        + ". Refresh them (scripts/refresh_prices.py) or read them again by hand and date them."
    )
    assert all(row.source.startswith("https://") for row in prices.rows)


def test_a_table_is_stale_one_day_past_the_limit():
    prices = table(f"us-east-1,s3-standard,GB-month,0.023,USD,2026-01-01,{PAGE},")
    assert prices.stale(date(2026, 6, 30), 180) == []  # 180 days
    assert [row.sku for row in prices.stale(date(2026, 7, 1), 180)] == ["s3-standard"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (
            f"us-east-1,x,hour,0.1,USD,last week,{PAGE},",
            "test.csv line 2: read_on must be a date (YYYY-MM-DD)",
        ),
        (
            f"us-east-1,x,hour,-1,USD,2026-12-08,{PAGE},",
            "test.csv line 2: price must be a number >= 0 or 'unknown'",
        ),
        (f"us-east-1,x,hour,free,USD,2026-12-08,{PAGE},", "got 'free'"),
        ("us-east-1,x,hour,0.1,USD,2026-12-08,from memory,", "source must be the https:// page"),
    ],
)
def test_a_row_without_a_date_a_price_or_a_source_is_refused(row, message):
    with pytest.raises(PriceTableError, match=message.replace("(", r"\(").replace(")", r"\)")):
        table(row)


def test_serving_is_priced_between_the_autoscaling_minimum_and_maximum():
    priced = report(aws_plan(initial=1, low=1, high=2))
    (endpoint,) = [line for line in priced.lines if line.resource == "ep"]
    assert (endpoint.size, endpoint.count_min, endpoint.count_max) == ("ml.m5.large", 1, 2)
    assert priced.hourly_min.value == pytest.approx(0.115)
    assert priced.hourly_max.value == pytest.approx(0.23)


def test_the_autoscaling_minimum_is_what_serves_when_it_differs_from_the_initial_count():
    (endpoint, _) = report(aws_plan(initial=1, low=2, high=4)).lines
    assert (endpoint.count_min, endpoint.count_max) == (2, 4)


def test_three_times_the_instances_is_three_times_the_hourly_line():
    one = report(aws_plan(initial=1, low=1, high=2))
    three = report(aws_plan(initial=3, low=3, high=6))
    assert three.hourly_min.value == pytest.approx(3 * (one.hourly_min.value or 0))
    assert three.hourly_max.value == pytest.approx(3 * (one.hourly_max.value or 0))


def test_training_is_priced_per_run_from_max_runtime_and_instances_and_from_the_measured_run():
    priced = report(aws_plan(runtime=1800.0))
    assert priced.per_run_max.value == pytest.approx(0.23 * 2 * 0.5)
    assert priced.per_run_measured is None  # no outputs, no measured run
    for line in priced.lines:
        line.measured_hours = 0.1
    assert priced.per_run_measured is not None
    assert priced.per_run_measured.value == pytest.approx(0.23 * 2 * 0.1)


def test_the_total_is_hours_of_serving_plus_runs():
    priced = report(aws_plan(), hours=10.0, runs=2.0)
    assert priced.total(high=False).value == pytest.approx(10 * 0.115 + 2 * 0.23 * 2)
    assert priced.total(high=True).value == pytest.approx(10 * 0.23 + 2 * 0.23 * 2)


def test_an_unknown_price_makes_every_total_that_needs_it_unknown_never_zero():
    prices = table(
        f"us-east-1,sagemaker-hosting:ml.m5.large,instance-hour,unknown,USD,2026-12-08,{PAGE},",
        f"us-east-1,sagemaker-training:ml.m5.xlarge,instance-hour,0.23,USD,2026-12-08,{PAGE},",
    )
    priced = report(aws_plan(), prices)
    assert priced.hourly_min.value is None
    assert priced.hourly_min.unknown == ("ep",)
    assert priced.total(high=False).value is None
    assert priced.total(high=False).known == pytest.approx(2 * 0.23 * 2)  # what is known of it
    assert priced.per_run_max.value == pytest.approx(0.46)  # training does not need the unknown price
    as_json = priced.to_json()
    assert as_json["hourly"]["min"] == {"value": None, "known_part": 0.0, "unknown": ["ep"]}


def test_an_instance_type_missing_from_the_table_is_unknown():
    priced = report(
        aws_plan(),
        table(f"us-east-1,sagemaker-training:ml.m5.xlarge,instance-hour,0.23,USD,2026-12-08,{PAGE},"),
    )
    assert priced.hourly_max.value is None
    assert priced.hourly_max.unknown == ("ep",)


def test_the_last_measured_run_is_read_from_the_stack_outputs():
    outputs = {
        "models": {
            # The last run is the challenger's, even when the champion (an earlier run) took longer.
            "tensorflow": {
                "challenger": {"metrics": {"train_seconds": 540.0}},
                "champion": {"metrics": {"train_seconds": 900.0}},
            },
            "pytorch": {"champion": {"metrics": {"train_seconds": 180.0}}},
        }
    }
    assert measured_run_hours(outputs) == pytest.approx(540 / 3600)
    assert (
        measured_run_hours({"models": {"xgboost": {"challenger": {"metrics": {"validation:merror": 0.03}}}}})
        is None
    )
    assert measured_run_hours(None) is None


def test_a_tuning_job_is_priced_as_its_trials_each_a_bounded_training_job():
    tuning = resource(
        SAGEMAKER_TUNING_JOB,
        "tuning",
        {
            "config": {"resourceLimits": {"maxNumberOfTrainingJobs": 10.0, "maxParallelTrainingJobs": 2.0}},
            "trainingJobDefinition": {
                "resourceConfig": {"instanceType": "ml.m5.xlarge", "instanceCount": 2.0},
                "stoppingCondition": {"maxRuntimeInSeconds": 1800.0},
            },
        },
    )
    (line,) = report([tuning]).lines
    assert (line.size, line.count_max, line.hours_per_run) == ("ml.m5.xlarge, 10 trials", 2.0, 5.0)
    assert line.per_run_max == pytest.approx(0.23 * 2 * 10 * 0.5)


def test_a_vertex_tuning_job_is_priced_from_the_training_machine():
    prices = parse_price_table(
        HEADER + f"us-central1,vertex-training:n1-standard-4,node-hour,0.2,USD,2026-12-08,{PAGE},\n", "gcp"
    )
    tuning = resource(
        VERTEX_TUNING_JOB,
        "tuning",
        {
            "instance_type": "n1-standard-4",
            "instance_count": 1.0,
            "max_trial_count": 6.0,
            "max_runtime_seconds": 600.0,
        },
    )
    (line,) = billed_lines([tuning], "gcp", "us-central1", prices)
    assert line.per_run_max == pytest.approx(0.2 * 6 * 600 / 3600)


def test_a_batch_transform_is_listed_per_use_and_stays_out_of_the_totals():
    transform = resource(
        SAGEMAKER_TRANSFORM_JOB, "batch", {"instance_type": "ml.m5.large", "instance_count": 1.0}
    )
    priced = report([*aws_plan(), transform])
    (line,) = [line for line in priced.lines if line.resource == "batch"]
    assert (line.group.value, line.size, line.unit_price) == ("usage", "ml.m5.large", None)
    assert priced.total(high=True).value == pytest.approx(10 * 0.23 + 2 * 0.23 * 2)

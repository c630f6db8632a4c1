"""`mnistctl cost` on the project's own stacks: each program planned under mocks (no cloud, no credentials),
priced from the installed price tables. The dataset is pointed at the offline MNIST protocol (a download is
something this machine cannot do); which images a stack uploads changes only its storage line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from infra.cost import MAX_PRICE_AGE_DAYS, load_price_table

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def offline_data(tmp_path_factory) -> list[str]:
    copy = tmp_path_factory.mktemp("cost-data") / "mnist"
    shutil.copytree(REPO / "tests" / "data" / "mnist", copy, ignore=shutil.ignore_patterns("staging"))
    return ["--set", "dataset=mnist-t10k", "--set", f"dataDir={copy}"]


def mnistctl_cost(*args: str) -> subprocess.CompletedProcess[str]:
    # No IBM key, no cloud credentials in the environment: planning needs neither.
    return subprocess.run(
        [sys.executable, "-m", "mnistctl", "cost", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )


def cost_json(*args: str) -> dict:
    run = mnistctl_cost(*args, "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def serving_line(report: dict) -> dict:
    (line,) = [line for line in report["lines"] if line["group"] == "serving"]
    return line


@pytest.fixture(scope="module")
def aws(offline_data) -> dict:
    return cost_json("--stack", "aws", *offline_data)


def test_aws_endpoint_has_a_positive_hourly_figure_from_dated_prices(aws):
    endpoint = serving_line(aws)
    assert (endpoint["type"], endpoint["size"], endpoint["count_min"], endpoint["count_max"]) == (
        "aws:sagemaker/endpoint:Endpoint",
        "ml.m5.large",
        1,
        2,
    )
    assert endpoint["hourly_min"] > 0
    assert aws["hourly"]["min"]["value"] == endpoint["hourly_min"]
    assert aws["hourly"]["max"]["value"] == pytest.approx(2 * endpoint["hourly_min"])
    (training,) = [line for line in aws["lines"] if line["group"] == "training"]
    assert (training["size"], training["hours_per_run"]) == ("ml.m5.xlarge", 1.0)
    assert training["per_run_max"] > 0
    for line in aws["lines"]:
        read_on = date.fromisoformat(line["price"]["read_on"])
        assert (date.today() - read_on).days <= MAX_PRICE_AGE_DAYS, line


def test_three_times_the_endpoint_instances_triples_its_hourly_line(aws, offline_data):
    tripled = cost_json(
        "--stack", "aws", *offline_data, "--set", "endpointMinInstances=3", "--set", "endpointMaxInstances=6"
    )
    before, after = serving_line(aws), serving_line(tripled)
    assert (after["count_min"], after["count_max"]) == (3, 6)
    assert after["hourly_min"] == pytest.approx(3 * before["hourly_min"])
    assert after["hourly_max"] == pytest.approx(3 * before["hourly_max"])


@pytest.mark.parametrize(
    ("stack", "sku", "size", "replicas"),
    [
        ("gcp", "vertex-prediction:n1-standard-2", "n1-standard-2", (1, 2)),
        ("ibm", "wml-cuh:v2-standard", "XS (v2-standard)", (1, 1)),
    ],
)
def test_gcp_and_ibm_endpoints_are_priced_from_their_table_or_shown_unknown(
    stack, sku, size, replicas, offline_data
):
    report = cost_json("--stack", stack, *offline_data)
    line = serving_line(report)
    assert (line["size"], line["count_min"], line["count_max"]) == (size, *replicas)
    row = load_price_table(stack).find(line["region"], sku)
    assert row is not None, f"infra/prices/{stack}.csv has no row {sku} for {line['region']}"
    if row.amount is None:
        # Not found in any source readable from here (docs/cost.md): unknown, never zero.
        assert line["hourly_min"] is None
        assert report["hourly"]["min"] == {"value": None, "known_part": 0.0, "unknown": [line["resource"]]}
    else:
        rate = (line["rate"] or {}).get("price") or 1.0
        assert line["hourly_min"] == pytest.approx(row.amount * rate * replicas[0])
        assert line["hourly_min"] > 0


def test_unknown_prices_print_as_unknown_and_a_measured_run_is_priced(offline_data, tmp_path):
    outputs = tmp_path / "gcp-outputs.json"
    outputs.write_text(
        json.dumps({"models": {"tensorflow": {"challenger": {"metrics": {"train_seconds": 540}}}}})
    )
    run = mnistctl_cost("--stack", "gcp", *offline_data, "--outputs", str(outputs))
    assert run.returncode == 0, run.stderr[-3000:]
    assert "unknown (known part" in run.stdout
    assert "not counted: data transfer" in run.stdout
    price = load_price_table("gcp").find("us-central1", "vertex-training:n1-standard-4")
    assert price is not None and price.amount is not None
    measured = f"{price.amount * 540 / 3600:,.4f} USD at the last measured run time"
    assert measured in run.stdout
    assert "(9.0 min)" in run.stdout


def test_the_local_stack_costs_nothing_it_is_your_machine(offline_data):
    report = cost_json("--stack", "local", *offline_data)
    assert {line["group"] for line in report["lines"]} == {"own machine"}
    assert report["hourly"]["max"]["value"] == 0.0
    assert report["total"]["max"]["value"] == 0.0
    text = mnistctl_cost("--stack", "local", *offline_data).stdout
    assert "your machine" in text
    assert "unknown" not in text


def test_a_stack_without_a_stack_file_is_refused_by_name():
    run = mnistctl_cost("--stack", "nosuchstack")
    assert run.returncode == 2
    assert "no Pulumi.nosuchstack.yaml" in run.stderr

"""Reading stacks (`mnistctl.stacks`) and the commands built on them: smoke and compare.

The servers here run in a thread of the test (serving.app.serve_in_thread) with a tiny real model;
the clients are the real ones, including boto3's path to a "cloud" SageMaker endpoint redirected to
the local server by the standard AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME variable.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from tiny_models import train_tiny_xgboost
from typer.testing import CliRunner

from mnistctl import stack_commands
from mnistctl.compare import compare, comparison_table, write_chart
from mnistctl.smoke import smoke, smoke_table
from mnistctl.stacks import StackOutputsError, endpoints, load_outputs, pulumi_env
from serving.app import create_app, serve_in_thread

ENDPOINT_NAME = "mnist-xgboost"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, t10k_dir: Path) -> Path:
    return train_tiny_xgboost(tmp_path_factory.mktemp("xgboost"), t10k_dir, images=3000, rounds=10)


@pytest.fixture(scope="module")
def server_url(model_dir: Path) -> Iterator[str]:
    with serve_in_thread(create_app("sagemaker", model_dir, ENDPOINT_NAME)) as url:
        yield url


@pytest.fixture
def local_outputs(server_url: str, model_dir: Path) -> dict[str, Any]:
    """Outputs shaped as the local stack exports them."""
    return {
        "endpoints": {
            "xgboost": {"flavor": "sagemaker", "name": ENDPOINT_NAME, "url": server_url, "region": "local"}
        },
        "models": {
            "xgboost": {
                "artifact": str(model_dir / "model.tar.gz"),
                "metrics": {"accuracy": 0.9, "train_seconds": 1.5},
            }
        },
        "bucket": "/nonexistent/data",
        "dataset": "mnist-t10k",
    }


def test_smoke_sends_held_out_digits_and_reports_accuracy_and_latency(local_outputs: dict, t10k_dir: Path):
    result = smoke(local_outputs, count=10, data_dir=t10k_dir, label="local")
    (xgboost,) = result.results
    assert result.ok, xgboost.error
    assert xgboost.count == 10 and len(xgboost.latencies_ms) == 10
    assert xgboost.correct >= 8  # a tiny but real model on digits it never saw
    assert all(0 < ms < 5_000 for ms in xgboost.latencies_ms)  # one measured round trip per digit
    assert xgboost.latency_ms(50) == pytest.approx(float(np.percentile(xgboost.latencies_ms, 50)))
    assert xgboost.latency_ms(99) == pytest.approx(float(np.percentile(xgboost.latencies_ms, 99)))
    table = smoke_table(result)
    assert [column.header for column in table.columns][3:5] == ["correct", "accuracy"]
    assert table.columns[3]._cells == [f"{xgboost.correct}/10"]
    assert table.columns[4]._cells == [f"{xgboost.correct / 10:.0%}"]


def test_smoke_reaches_a_cloud_sagemaker_entry_through_boto3s_endpoint_variable(
    server_url: str, t10k_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    # What `mnistctl smoke --stack aws` reads: no url, a region; boto3 resolves the endpoint itself.
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", server_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    aws_outputs = {
        "endpoints": {"xgboost": {"flavor": "sagemaker", "name": ENDPOINT_NAME, "region": "us-east-1"}}
    }
    result = smoke(aws_outputs, count=10, data_dir=t10k_dir, label="aws")
    assert result.ok, result.results[0].error
    assert result.for_model("xgboost").correct >= 8


def test_smoke_reports_an_unreachable_endpoint_and_still_tests_the_others(
    local_outputs: dict, t10k_dir: Path
):
    outputs = dict(local_outputs)
    outputs["endpoints"] = {
        **local_outputs["endpoints"],
        "pytorch": {"flavor": "watsonx", "name": "gone", "url": "http://127.0.0.1:9", "region": "local"},
    }
    result = smoke(outputs, count=3, data_dir=t10k_dir)
    assert result.for_model("xgboost").ok
    assert not result.ok and "ConnectionError" in (result.for_model("pytorch").error or "")


def test_compare_lines_stacks_up_in_a_table_and_a_png(local_outputs: dict, t10k_dir: Path, tmp_path: Path):
    rows = compare([("local", local_outputs), ("again", local_outputs)], count=5, data_dir=t10k_dir)
    assert [row.label for row in rows] == ["local/xgboost", "again/xgboost"]
    assert rows[0].artifact_bytes == (Path(local_outputs["models"]["xgboost"]["artifact"])).stat().st_size
    assert rows[0].train_seconds == 1.5 and rows[0].trained_accuracy == 0.9
    # The live accuracy is the endpoint's own answer on the same five digits, as smoke measures it.
    alone = smoke(local_outputs, count=5, data_dir=t10k_dir).for_model("xgboost")
    assert rows[0].accuracy == alone.accuracy == rows[1].accuracy
    assert rows[0].p50_ms is not None and 0 < rows[0].p50_ms <= (rows[0].p99_ms or 0)
    table = comparison_table(rows)
    assert table.columns[0]._cells == ["local", "again"]
    assert table.columns[1]._cells == ["xgboost", "xgboost"]
    chart = write_chart(rows, tmp_path / "charts" / "compare.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_smoke_and_compare_commands_read_outputs_files(local_outputs: dict, t10k_dir: Path, tmp_path: Path):
    app = typer.Typer()
    stack_commands.register(app)
    outputs_file = tmp_path / "local.json"
    outputs_file.write_text(json.dumps(local_outputs))
    runner = CliRunner()

    smoked = runner.invoke(
        app, ["smoke", "--outputs", str(outputs_file), "--data-dir", str(t10k_dir), "-n", "5"]
    )
    assert smoked.exit_code == 0, smoked.output
    assert "xgboost" in smoked.output and "/5" in smoked.output

    strict = runner.invoke(
        app,
        [
            "smoke",
            "--outputs",
            str(outputs_file),
            "--data-dir",
            str(t10k_dir),
            "--min-accuracy",
            "1.0",
            "-n",
            "200",
        ],
    )
    measured = smoke(local_outputs, count=200, data_dir=t10k_dir).for_model("xgboost").accuracy
    assert measured is not None and 0.5 < measured < 1.0
    at_the_floor = ["--min-accuracy", str(measured)]
    met = runner.invoke(
        app,
        ["smoke", "--outputs", str(outputs_file), "--data-dir", str(t10k_dir), "-n", "200", *at_the_floor],
    )
    assert met.exit_code == 0, met.output  # exactly at the floor passes
    assert strict.exit_code == 1, strict.output  # the tiny model misses some of 200 digits
    assert "accuracy below 100%: xgboost" in strict.output
    chart = tmp_path / "cmp.png"
    compared = runner.invoke(
        app,
        [
            "compare",
            "--outputs",
            str(outputs_file),
            "--data-dir",
            str(t10k_dir),
            "-n",
            "3",
            "--chart",
            str(chart),
        ],
    )
    assert compared.exit_code == 0, compared.output
    assert chart.is_file()


def test_outputs_file_problems_say_how_to_make_a_good_one(tmp_path: Path):
    with pytest.raises(StackOutputsError, match="cannot read the outputs file"):
        load_outputs(outputs_file=tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("endpoints:")
    with pytest.raises(StackOutputsError, match="pulumi stack output --json"):
        load_outputs(outputs_file=bad)
    with pytest.raises(StackOutputsError, match="one of them"):
        load_outputs()
    with pytest.raises(StackOutputsError, match="hold no endpoints"):
        endpoints({"models": {}})
    with pytest.raises(StackOutputsError, match="lacks flavor/name"):
        endpoints({"endpoints": {"xgboost": {"url": "http://127.0.0.1:1"}}})


def test_without_the_pulumi_cli_a_stack_name_points_to_outputs_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(StackOutputsError, match="--outputs FILE"):
        load_outputs(stack="local")


def test_stack_outputs_come_from_the_cli_with_the_makefiles_backend(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "call.json"
    fake = bin_dir / "pulumi"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'backend': os.environ.get('PULUMI_BACKEND_URL'),"
        f" 'passphrase': os.environ.get('PULUMI_CONFIG_PASSPHRASE')}}, open({str(record)!r}, 'w'))\n"
        "print(json.dumps({'endpoints': {'xgboost': {'flavor': 'sagemaker', 'name': 'n', 'url': 'u'}}}))\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)

    outputs = load_outputs(stack="local")

    assert endpoints(outputs)["xgboost"]["name"] == "n"
    call = json.loads(record.read_text())
    assert call["argv"][:5] == ["stack", "output", "--json", "--stack", "local"]
    assert call["backend"].startswith("file://") and call["backend"].endswith("/.pulumi-state")
    assert call["passphrase"] == ""


def test_only_the_local_stack_gets_an_empty_passphrase(tmp_path: Path):
    assert pulumi_env("local", tmp_path, {})["PULUMI_CONFIG_PASSPHRASE"] == ""
    assert "PULUMI_CONFIG_PASSPHRASE" not in pulumi_env("aws", tmp_path, {})


def test_cloud_stacks_read_state_where_make_up_keeps_it(tmp_path: Path):
    """As scripts/stack does: the repo's folder only for local (or LOCAL_STATE=1), else the user's."""
    assert pulumi_env("local", tmp_path, {})["PULUMI_BACKEND_URL"] == f"file://{tmp_path}/.pulumi-state"
    assert "PULUMI_BACKEND_URL" not in pulumi_env("aws", tmp_path, {})
    assert pulumi_env("aws", tmp_path, {"PULUMI_BACKEND_URL": "s3://b"})["PULUMI_BACKEND_URL"] == "s3://b"
    with_local_state = pulumi_env("gcp", tmp_path, {"LOCAL_STATE": "1"})
    assert with_local_state["PULUMI_BACKEND_URL"] == f"file://{tmp_path}/.pulumi-state"

"""The local stack's SageMaker-flavor server runs with what the aws stack sets on its SageMaker model
(SAGEMAKER_INFERENCE_OUTPUT=probabilities), so both answer alike (DESIGN.md, wire contracts)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from harness import run_stack

from infra.local import endpoint as local_endpoint
from infra.local import support
from infra.local.servers import start_server
from infra.local.support import LocalProviderError

ENDPOINT = "pulumi-python:dynamic/local:Endpoint"


def test_the_sagemaker_endpoint_declares_the_aws_models_environment(tmp_path: Path) -> None:
    run = run_stack("local", {"localRoot": str(tmp_path), "models": ["xgboost", "pytorch"]})
    environments = {e.inputs["model"]: e.inputs["environment"] for e in run.of_type(ENDPOINT)}
    assert environments == {"xgboost": {"SAGEMAKER_INFERENCE_OUTPUT": "probabilities"}, "pytorch": {}}


def test_the_server_process_is_started_with_that_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def popen(command: list[str], **kwargs: Any) -> subprocess.Popen:
        seen.update(kwargs)
        raise OSError("not started in this test")

    monkeypatch.setattr(support.subprocess, "Popen", popen)
    props = {
        "model": "xgboost",
        "flavor": "sagemaker",
        "name": "mnist-xgboost",
        "model_dir": str(tmp_path),
        "root": str(tmp_path),
        "environment": local_endpoint.serving_environment("sagemaker"),
    }
    with pytest.raises(LocalProviderError):
        start_server(local_endpoint._spec(props, "mnist-xgboost-1"), 40123)
    assert seen["env"]["SAGEMAKER_INFERENCE_OUTPUT"] == "probabilities"

"""`pulumi up` / smoke / `pulumi destroy` of the Vertex AI stack in a real Google Cloud project.

Costs money (a Cloud Build of the image, an n1-standard-4 custom job for a few minutes and an
n1-standard-2 deployment for ~20 minutes: about 1 USD in us-central1) and takes ~40 minutes, so it runs
only when asked for by marker (`pytest -m live tests/live/test_gcp_live.py`), with the Pulumi CLI,
Application Default Credentials and `MNIST_PLATFORM_GCP_PROJECT` naming a project with billing enabled.
The project runs from a scratch copy of its Pulumi files (infra/ and .venv linked in) with a file backend
in the scratch folder, under a unique stack name. After `destroy`, the Vertex AI clients check that the
endpoint, model and job are gone.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mnistctl.smoke import smoke
from mnistctl.stacks import find_pulumi

pytestmark = pytest.mark.live

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PULUMI = find_pulumi()
PROJECT_ENV = "MNIST_PLATFORM_GCP_PROJECT"
T10K_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _adc_reason() -> str | None:
    try:
        import google.auth

        google.auth.default()
    except Exception as error:  # noqa: BLE001 any failure to find credentials means: skip, saying why
        return f"no Application Default Credentials (`gcloud auth application-default login`): {error}"
    return None


@pytest.fixture
def live_gcp(request: pytest.FixtureRequest) -> str:
    """The project to deploy to; skip, saying why, unless this run asked for live tests and can reach it."""
    if "live" not in (request.config.getoption("markexpr") or ""):
        pytest.skip(
            "deploys to Google Cloud and costs money: "
            "run it with `pytest -m live tests/live/test_gcp_live.py`"
        )
    if PULUMI is None:
        pytest.skip(
            "the Pulumi CLI is not installed (not on PATH, not in ~/.pulumi/bin); `make up` installs it"
        )
    project = os.environ.get(PROJECT_ENV)
    if not project:
        pytest.skip(f"set {PROJECT_ENV} to a project with billing enabled (docs/gcp.md, 'Prerequisites')")
    reason = _adc_reason()
    if reason:
        pytest.skip(reason)
    return project


@pytest.fixture
def project_copy(tmp_path: Path, t10k_dir: Path) -> Iterator[tuple[Path, Path]]:
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(PROJECT_ROOT / "Pulumi.yaml", work / "Pulumi.yaml")
    for name in ("infra", ".venv"):
        (work / name).symlink_to(PROJECT_ROOT / name, target_is_directory=True)
    data = tmp_path / "data"
    data.mkdir()
    for name in T10K_FILES:
        shutil.copy(t10k_dir / name, data / name)
    yield work, data


def _stack_config(project: str, data_dir: Path) -> dict[str, str]:
    """Pulumi.gcp.yaml with the live project and the offline dataset (a shorter, cheaper job)."""
    document = yaml.safe_load((PROJECT_ROOT / "Pulumi.gcp.yaml").read_text())
    config = {key: v if isinstance(v, str) else json.dumps(v) for key, v in document["config"].items()}
    config["gcp:project"] = project
    config["mnist-platform:dataset"] = "mnist-t10k"
    config["mnist-platform:dataDir"] = str(data_dir)
    return config


def test_gcp_stack_trains_serves_ten_digits_and_destroy_leaves_nothing(
    live_gcp: str, project_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    from google.api_core import exceptions
    from pulumi import automation as auto

    from infra.gcp.clients import endpoint_service, job_service, model_service

    assert PULUMI is not None
    work, data_dir = project_copy
    stack_name = f"gcp-live-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    state.mkdir()
    env = {"PULUMI_BACKEND_URL": f"file://{state}", "PULUMI_CONFIG_PASSPHRASE": "live-test"}
    options = auto.LocalWorkspaceOptions(
        env_vars=env, pulumi_command=auto.PulumiCommand(root=str(Path(PULUMI).parent.parent))
    )
    stack = auto.create_or_select_stack(stack_name, work_dir=str(work), opts=options)
    config = _stack_config(live_gcp, data_dir)
    region = config["gcp:region"]
    outputs: dict[str, Any] = {}
    try:
        stack.set_all_config({key: auto.ConfigValue(value) for key, value in config.items()})
        result = stack.up(on_output=print)
        outputs = {name: output.value for name, output in result.outputs.items()}
        entry = outputs["endpoints"]["tensorflow"]
        assert (entry["flavor"], entry["project"], entry["region"]) == ("vertex", live_gcp, region)
        smoked = smoke(outputs, count=10, data_dir=data_dir, label=stack_name)
        assert smoked.ok, smoked.for_model("tensorflow").error
        assert (smoked.for_model("tensorflow").accuracy or 0) >= 0.8
        preview = stack.preview()
        assert set(preview.change_summary) <= {"same"}, (
            f"a second look wants changes: {preview.change_summary}"
        )
    finally:
        stack.destroy(on_output=print)
        stack.workspace.remove_stack(stack_name)

    if outputs:
        endpoint = (
            f"projects/{live_gcp}/locations/{region}/endpoints/{outputs['endpoints']['tensorflow']['name']}"
        )
        with pytest.raises(exceptions.NotFound):
            endpoint_service(region, None).get_endpoint(name=endpoint)
        job = outputs["models"]["tensorflow"]["metrics"]["training_job"]
        with pytest.raises(exceptions.NotFound):
            job_service(region, None).get_custom_job(name=job)
        parent = f"projects/{live_gcp}/locations/{region}"
        left = [
            m.name
            for m in model_service(region, None).list_models(parent=parent)
            if stack_name in m.display_name
        ]
        assert not left, f"models left behind: {left}"

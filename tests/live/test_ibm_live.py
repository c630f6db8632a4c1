"""`pulumi up` / smoke / `pulumi destroy` of the watsonx.ai stack in a real IBM Cloud account.

Costs a little (a COS Standard instance, a watsonx.ai Runtime v2-standard instance billed per
capacity-unit-hour, an XS deployment for ~15 minutes; docs/ibm.md has the prices) and takes ~20
minutes, so it runs only when asked for by marker (`pytest -m live tests/live/test_ibm_live.py`) and
when the Pulumi CLI and an IBM Cloud API key (IC_API_KEY or IBMCLOUD_API_KEY) exist. The project
runs from a scratch copy of its Pulumi files with a file backend, under a unique stack name, and the
key is set as a secret (`ibm:apiKey`). After `destroy`, the Resource Controller is asked whether any
instance of the stack is left (reclaimed, not only soft-deleted).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from infra.settings import IBM_API_KEY_ENVS
from mnistctl.smoke import smoke
from mnistctl.stacks import find_pulumi

pytestmark = pytest.mark.live

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PULUMI = find_pulumi()
T10K_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _api_key() -> str | None:
    return next((os.environ[name] for name in IBM_API_KEY_ENVS if os.environ.get(name)), None)


@pytest.fixture
def live_ibm(request: pytest.FixtureRequest) -> str:
    """The API key, or a skip saying why this run cannot reach IBM Cloud."""
    if "live" not in (request.config.getoption("markexpr") or ""):
        pytest.skip(
            "deploys to IBM Cloud and costs money: run it with `pytest -m live tests/live/test_ibm_live.py`"
        )
    if PULUMI is None:
        pytest.skip(
            "the Pulumi CLI is not installed (not on PATH, not in ~/.pulumi/bin); `make up` installs it"
        )
    key = _api_key()
    if key is None:
        pytest.skip(f"no IBM Cloud API key: export {' or '.join(IBM_API_KEY_ENVS)} (docs/ibm.md)")
    return key


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


def test_ibm_stack_trains_serves_digits_and_destroy_leaves_nothing(
    live_ibm: str, project_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
    from ibm_platform_services import ResourceControllerV2
    from pulumi import automation as auto

    assert PULUMI is not None
    work, data_dir = project_copy
    stack_name = f"ibm-live-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    state.mkdir()
    env = {"PULUMI_BACKEND_URL": f"file://{state}", "PULUMI_CONFIG_PASSPHRASE": "live-test"}
    options = auto.LocalWorkspaceOptions(
        env_vars=env, pulumi_command=auto.PulumiCommand(root=str(Path(PULUMI).parent.parent))
    )
    stack = auto.create_or_select_stack(stack_name, work_dir=str(work), opts=options)
    document = yaml.safe_load((PROJECT_ROOT / "Pulumi.ibm.yaml").read_text())
    config = {key: v if isinstance(v, str) else json.dumps(v) for key, v in document["config"].items()}
    config.update(
        {
            "mnist-platform:cloud": "ibm",
            "mnist-platform:dataset": "mnist-t10k",
            "mnist-platform:dataDir": str(data_dir),
            "mnist-platform:localRoot": str(tmp_path / "work"),
        }
    )
    try:
        stack.set_all_config({key: auto.ConfigValue(value) for key, value in config.items()})
        stack.set_config("ibm:apiKey", auto.ConfigValue(live_ibm, secret=True))
        result = stack.up(on_output=print)
        outputs = {name: output.value for name, output in result.outputs.items()}
        entry = outputs["endpoints"]["pytorch"]
        assert entry["flavor"] == "watsonx" and entry["region"] == config["ibm:region"]
        assert live_ibm not in json.dumps(stack.export_stack().deployment)  # a secret in the state
        smoked = smoke(outputs, count=200, data_dir=data_dir, label=stack_name)
        assert smoked.ok, smoked.for_model("pytorch").error
        assert smoked.for_model("pytorch").correct >= 196
        preview = stack.preview()
        changes = preview.change_summary
        assert set(changes) <= {"same"}, f"a second look wants changes: {changes}"
    finally:
        stack.destroy(on_output=print)
        stack.workspace.remove_stack(stack_name)

    from infra.ibm.connection import api_result

    controller = ResourceControllerV2(authenticator=IAMAuthenticator(live_ibm))
    prefix = f"mnist-platform-{stack_name}"
    left = [
        i["name"]
        for i in api_result(controller.list_resource_instances)["resources"]
        if str(i.get("name", "")).startswith(prefix)
    ]
    assert left == [], f"instances of the stack remain: {left}"
    reclamations = api_result(controller.list_reclamations)["resources"]
    pending = [r for r in reclamations if prefix in json.dumps(r)]
    assert pending == [], "a soft-deleted instance of the stack was not reclaimed"

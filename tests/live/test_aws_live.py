"""`pulumi up` / smoke / `pulumi destroy` of the SageMaker stack in a real AWS account.

Costs money (a training job on ml.m5.xlarge and an ml.m5.large endpoint for ~15 minutes, well under
1 USD in us-east-1) and takes ~20 minutes, so it runs only when asked for by marker
(`pytest -m live tests/live/test_aws_live.py`) and when the Pulumi CLI and AWS credentials exist.
The project runs from a scratch copy of its Pulumi files (infra/ and .venv linked in) with a file
backend in the scratch folder, under a unique stack name, so neither the repo's stack files nor a
user's `aws` stack is touched. After `destroy`, boto3 checks that nothing of the stack is left.
"""

from __future__ import annotations

import json
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
T10K_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
SAGEMAKER_TYPES = {
    "aws:sagemaker/endpoint:Endpoint": "endpoint",
    "aws:sagemaker/endpointConfiguration:EndpointConfiguration": "endpoint_config",
    "aws:sagemaker/model:Model": "model",
}


def _aws_credentials_reason() -> str | None:
    try:
        import boto3

        if boto3.Session().get_credentials() is None:
            return "no AWS credentials (environment, ~/.aws or an instance role)"
    except Exception as error:  # noqa: BLE001 any failure to find credentials means: skip, saying why
        return f"AWS credentials cannot be loaded: {error}"
    return None


@pytest.fixture
def live_aws(request: pytest.FixtureRequest) -> None:
    """Skip, saying why, unless this run asked for live tests and can reach AWS."""
    if "live" not in (request.config.getoption("markexpr") or ""):
        pytest.skip(
            "deploys to AWS and costs money: run it with `pytest -m live tests/live/test_aws_live.py`"
        )
    if PULUMI is None:
        pytest.skip(
            "the Pulumi CLI is not installed (not on PATH, not in ~/.pulumi/bin); `make up` installs it"
        )
    reason = _aws_credentials_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def project_copy(tmp_path: Path, t10k_dir: Path) -> Iterator[tuple[Path, Path]]:
    work = tmp_path / "project"
    work.mkdir()
    shutil.copy(PROJECT_ROOT / "Pulumi.yaml", work / "Pulumi.yaml")
    for name in ("infra", ".venv"):
        (work / name).symlink_to(PROJECT_ROOT / name, target_is_directory=True)
    data = tmp_path / "data"  # the staged CSV cache is written beside the dataset's files
    data.mkdir()
    for name in T10K_FILES:
        shutil.copy(t10k_dir / name, data / name)
    yield work, data


def _stack_config(data_dir: Path) -> dict[str, str]:
    """Pulumi.aws.yaml, with the offline dataset (smaller: a shorter, cheaper job)."""
    document = yaml.safe_load((PROJECT_ROOT / "Pulumi.aws.yaml").read_text())
    # As the CLI hands config to a program: strings as they are, everything else as JSON.
    config = {key: v if isinstance(v, str) else json.dumps(v) for key, v in document["config"].items()}
    config["mnist-platform:dataset"] = "mnist-t10k"
    config["mnist-platform:dataDir"] = str(data_dir)
    return config


def _sagemaker_names(deployment: dict[str, Any]) -> dict[str, list[str]]:
    names: dict[str, list[str]] = {kind: [] for kind in SAGEMAKER_TYPES.values()}
    for resource in deployment.get("resources", []):
        kind = SAGEMAKER_TYPES.get(resource.get("type"))
        if kind:
            names[kind].append(resource["outputs"]["name"])
    return names


def _gone(call: Any, **kwargs: Any) -> bool:
    from botocore.exceptions import ClientError

    try:
        call(**kwargs)
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        return code in {"ValidationException", "ResourceNotFound", "404", "NoSuchBucket", "NotFound"}
    return False


def test_aws_stack_trains_serves_ten_digits_and_destroy_leaves_nothing(
    live_aws: None, project_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    import boto3
    from pulumi import automation as auto

    assert PULUMI is not None
    work, data_dir = project_copy
    stack_name = f"aws-live-{uuid.uuid4().hex[:6]}"
    state = tmp_path / "state"
    state.mkdir()
    env = {"PULUMI_BACKEND_URL": f"file://{state}", "PULUMI_CONFIG_PASSPHRASE": "live-test"}
    options = auto.LocalWorkspaceOptions(
        env_vars=env, pulumi_command=auto.PulumiCommand(root=str(Path(PULUMI).parent.parent))
    )
    stack = auto.create_or_select_stack(stack_name, work_dir=str(work), opts=options)
    config = _stack_config(data_dir)
    region = config["aws:region"]
    names: dict[str, list[str]] = {}
    outputs: dict[str, Any] = {}
    try:
        stack.set_all_config({key: auto.ConfigValue(value) for key, value in config.items()})
        result = stack.up(on_output=print)
        outputs = {name: output.value for name, output in result.outputs.items()}
        names = _sagemaker_names(stack.export_stack().deployment or {})

        entry = outputs["endpoints"]["xgboost"]
        assert entry["flavor"] == "sagemaker" and entry["region"] == region
        smoked = smoke(outputs, count=10, data_dir=data_dir, label=stack_name)
        scored = smoked.for_model("xgboost")
        assert smoked.ok, scored.error
        assert scored.accuracy is not None and scored.accuracy >= 0.8

        preview = stack.preview()
        assert set(preview.change_summary) <= {"same"}, (
            f"a second look wants changes: {preview.change_summary}"
        )
    finally:
        stack.destroy(on_output=print)
        stack.workspace.remove_stack(stack_name)

    sagemaker = boto3.client("sagemaker", region_name=region)
    for name in names.get("endpoint", []):
        assert _gone(sagemaker.describe_endpoint, EndpointName=name), f"endpoint {name} remains"
    for name in names.get("endpoint_config", []):
        assert _gone(sagemaker.describe_endpoint_config, EndpointConfigName=name), f"config {name} remains"
    for name in names.get("model", []):
        assert _gone(sagemaker.describe_model, ModelName=name), f"model {name} remains"
    if outputs.get("bucket"):
        s3 = boto3.client("s3", region_name=region)
        assert _gone(s3.head_bucket, Bucket=outputs["bucket"]), f"bucket {outputs['bucket']} remains"
    logs = boto3.client("logs", region_name=region)
    for name in names.get("endpoint", []):
        groups = logs.describe_log_groups(logGroupNamePrefix=f"/aws/sagemaker/Endpoints/{name}")["logGroups"]
        assert not groups, f"log group of endpoint {name} remains"

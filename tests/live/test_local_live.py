"""`pulumi up` / `pulumi destroy` of the local stack through the Automation API, with the real CLI.

Skipped where the Pulumi CLI is absent (our machines, CI): there the offline suite proves the same
providers through tests/local/test_local_stack_e2e.py. The project is run from a scratch copy of its
Pulumi files (infra/ and .venv linked in), with a file backend in the scratch folder, so neither the
repo's stack file nor the user's `make up` state is touched.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mnistctl.smoke import smoke
from mnistctl.stacks import find_pulumi, pulumi_env

pytestmark = pytest.mark.live

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PULUMI = find_pulumi()


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    work = tmp_path / "project"
    work.mkdir()
    for name in ("Pulumi.yaml", "Pulumi.local.yaml"):
        shutil.copy(PROJECT_ROOT / name, work / name)
    for name in ("infra", ".venv"):
        (work / name).symlink_to(PROJECT_ROOT / name, target_is_directory=True)
    return work


@pytest.mark.skipif(
    PULUMI is None,
    reason="the Pulumi CLI is not installed (not on PATH, not in ~/.pulumi/bin); `make up` installs it. "
    "Offline, tests/local/test_local_stack_e2e.py runs the same providers under mocks.",
)
def test_local_stack_up_answers_and_destroy_removes_everything(
    project_copy: Path, t10k_dir: Path, tmp_path: Path
):
    from pulumi import automation as auto

    assert PULUMI is not None
    root = tmp_path / "local-root"
    env = pulumi_env("local", project_copy, {})
    env["PULUMI_BACKEND_URL"] = f"file://{tmp_path / 'state'}"
    (tmp_path / "state").mkdir()
    options = auto.LocalWorkspaceOptions(
        env_vars=env, pulumi_command=auto.PulumiCommand(root=str(Path(PULUMI).parent.parent))
    )
    stack = auto.create_or_select_stack("local", work_dir=str(project_copy), opts=options)
    try:
        stack.set_all_config(
            {
                "mnist-platform:dataset": auto.ConfigValue("mnist-t10k"),
                "mnist-platform:dataDir": auto.ConfigValue(str(t10k_dir)),
                "mnist-platform:dryRun": auto.ConfigValue("true"),
                "mnist-platform:localRoot": auto.ConfigValue(str(root)),
            }
        )
        result = stack.up(on_output=print)
        outputs = {name: output.value for name, output in result.outputs.items()}
        assert set(outputs["endpoints"]) == {"xgboost", "tensorflow", "pytorch"}
        answered = smoke(outputs, count=50, data_dir=t10k_dir)
        # Dry-run models (512 images, 2 epochs) reach ~0.7; chance is 0.1, a broken path far less.
        assert {r.model: r.accuracy is not None and r.accuracy >= 0.5 for r in answered.results} == {
            model: True for model in ("xgboost", "tensorflow", "pytorch")
        }, answered.results

        summary = stack.preview().change_summary  # a second look: nothing to do
        assert {op: n for op, n in summary.items() if op != auto.OpType.SAME} == {}, summary
    finally:
        stack.destroy(on_output=print)
        stack.workspace.remove_stack("local")
    assert not root.exists()

"""A clone of the repository alone runs the data-dependent tests: nothing beside it is needed.

The files git tracks (as they are in the work tree) are copied into a folder with no `shared/` beside it,
and the tests that read real MNIST digits run there, in a child pytest: they must pass, not skip.
Untracked files stay behind, as they do from a clone: a data file left on disk after `git rm --cached`
would otherwise keep this test green while a real clone of that commit fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from harness import PROJECT_ROOT

DATA_TESTS = ["tests/training/test_datasets.py", "tests/training/test_formats.py"]


def copy_of_the_repository(destination: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "-z"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = PROJECT_ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_data_dependent_tests_run_from_a_clone_with_nothing_beside_it(tmp_path: Path):
    clone = copy_of_the_repository(tmp_path / "lonely" / "mnist-platform")
    assert not (clone.parent / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *DATA_TESTS],
        cwd=clone,
        env={**env, "PYTHONPATH": str(clone)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert re.search(r"\d+ passed", summary), summary
    assert "skipped" not in summary, summary

"""The build context the gcp stack uploads for Cloud Build: what the job and the server import, nothing
secret, and the same bytes and hash for the same tree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest

from infra.gcp.image_context import (
    SERVE_COMMAND,
    TRAIN_COMMAND,
    ImageContext,
    build_image_context,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("training", "serving", "mnistctl")


def _members(context: ImageContext) -> dict[str, bytes]:
    with tarfile.open(context.archive, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def _copy_project(dest: Path) -> Path:
    dest.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", dest / "pyproject.toml")
    shutil.copy(REPO_ROOT / "LICENSE", dest / "LICENSE")
    (dest / "container").mkdir()
    shutil.copy(REPO_ROOT / "container" / "Dockerfile", dest / "container" / "Dockerfile")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_context_holds_the_dockerfile_at_its_root_and_the_project_sources(tmp_path: Path) -> None:
    context = build_image_context(REPO_ROOT, tmp_path)
    members = _members(context)
    assert set(members) == set(context.files)
    assert members["Dockerfile"] == (REPO_ROOT / "container" / "Dockerfile").read_bytes()
    for package in PACKAGES:
        sources = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / package).rglob("*.py")}
        assert sources and sources <= set(members), f"{package} sources missing from the context"
    outside = {n for n in members if n not in {"Dockerfile", "pyproject.toml", "README.md", "LICENSE"}}
    assert {n.split("/")[0] for n in outside} == set(PACKAGES)


def test_the_license_files_pyproject_names_are_in_the_context_and_copied_before_pip_install(
    tmp_path: Path,
) -> None:
    """`pip install .` builds the project with setuptools, which needs every `license-files` entry (a warning
    today, an error from 2027-02-18): the context carries them and the Dockerfile copies them in."""
    named = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["license-files"]
    members = _members(build_image_context(REPO_ROOT, tmp_path))
    for name in named:
        assert members[name] == (REPO_ROOT / name).read_bytes()
    lines = (REPO_ROOT / "container" / "Dockerfile").read_text().splitlines()
    install = next(i for i, line in enumerate(lines) if line.startswith("RUN pip install"))
    copied = {word for line in lines[:install] if line.startswith("COPY ") for word in line.split()[1:-1]}
    assert set(named) <= copied


def test_dockerfile_builds_a_python_311_image_that_runs_as_a_non_root_user() -> None:
    lines = [ln.strip() for ln in (REPO_ROOT / "container" / "Dockerfile").read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    assert instructions[0] == "FROM python:3.11-slim"
    users = [ln.split()[1] for ln in instructions if ln.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert any(ln.startswith("RUN pip install") and ".[vertex]" in ln for ln in instructions)
    assert not any(word in ln.upper() for ln in instructions for word in ("SECRET", "TOKEN", "PASSWORD"))


def test_context_leaves_out_tests_state_caches_and_keys(tmp_path: Path) -> None:
    root = _copy_project(tmp_path / "project")
    planted = [
        ".env",
        "key.json",
        "tests/test_something.py",
        ".venv/lib/site.py",
        ".pulumi-state/stack.json",
        ".mnist-platform/local/model.bin",
        "training/__pycache__/tf_trainer.cpython-311.pyc",
        "training/service-account.json",
        "serving/tls.key",
        "mnistctl/.netrc",
    ]
    for name in planted:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("not for the image")
    names = set(_members(build_image_context(root, tmp_path / "out")))
    assert not names & set(planted)
    assert all(
        n in {"Dockerfile", "pyproject.toml", "README.md", "LICENSE"} or n.endswith(".py") for n in names
    )


def test_same_tree_gives_the_same_archive_and_hash_and_a_change_gives_a_new_hash(tmp_path: Path) -> None:
    root = _copy_project(tmp_path / "project")
    first = build_image_context(root, tmp_path / "a")
    (root / "training" / "tf_trainer.py").touch()  # a new mtime alone changes nothing
    shutil.rmtree(root / "serving")
    shutil.copytree(REPO_ROOT / "serving", root / "serving", ignore=shutil.ignore_patterns("__pycache__"))
    second = build_image_context(root, tmp_path / "b")
    assert first.archive.read_bytes() == second.archive.read_bytes()
    assert first.sha256 == second.sha256

    with (root / "serving" / "app.py").open("a") as f:
        f.write("\n# changed\n")
    assert build_image_context(root, tmp_path / "c").sha256 != first.sha256


@pytest.mark.slow
def test_every_module_the_job_and_the_server_import_comes_from_the_context(tmp_path: Path) -> None:
    context = build_image_context(REPO_ROOT, tmp_path)
    unpacked = tmp_path / "unpacked"
    with tarfile.open(context.archive, "r:gz") as tar:
        tar.extractall(unpacked, filter="data")
    modules = sorted(
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in context.files
        if name.endswith(".py") and not name.endswith("/__main__.py")  # run, not imported: `app()` at import
    )
    # The job's entry point and the console script behind the serving command must be among them.
    assert TRAIN_COMMAND[-1] in modules and "mnistctl.cli" in modules and SERVE_COMMAND[0] == "mnistctl"
    assert "mnistctl/__main__.py" in context.files
    probe = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps({n: getattr(m, '__file__', None) for n, m in sys.modules.items()"
        f" if n.split('.')[0] in {PACKAGES!r}}}))\n"
    )
    # cwd first on sys.path, as WORKDIR + pip install give in the image; no PYTHONPATH to the checkout.
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=unpacked, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(modules) <= set(loaded)
    inside = unpacked.resolve()
    strays = {n: f for n, f in loaded.items() if f and not Path(f).resolve().is_relative_to(inside)}
    assert not strays, f"imported from outside the context: {strays}"


def test_a_docs_edit_does_not_change_the_image(tmp_path: Path) -> None:
    """The repository's README is not in the context (a stand-in is): editing it must not rebuild the
    image, which would retrain the model."""
    root = _copy_project(tmp_path / "project")
    (root / "README.md").write_text("# the project\n")
    first = build_image_context(root, tmp_path / "a")
    (root / "README.md").write_text("# the project, with a new paragraph\n")
    assert build_image_context(root, tmp_path / "b").sha256 == first.sha256
    assert _members(first)["README.md"] != (root / "README.md").read_bytes()

"""The build context the gcp stack uploads for Cloud Build: what the job and the server import, nothing
secret, and the same bytes and hash for the same tree."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from infra.gcp.image_context import (
    CONSTRAINTS,
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
    shutil.copy(REPO_ROOT / CONSTRAINTS, dest / CONSTRAINTS)
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
    outside = {
        n
        for n in members
        if n not in {"Dockerfile", "constraints.txt", "pyproject.toml", "README.md", "LICENSE"}
    }
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
    install = next(i for i, line in enumerate(lines) if line.startswith("RUN ") and "pip install" in line)
    copied = {word for line in lines[:install] if line.startswith("COPY ") for word in line.split()[1:-1]}
    assert set(named) <= copied


def vertex_extra_versions() -> dict[str, str]:
    """Every distribution `pip install ".[vertex]"` installs (the closure of the extra's requirements, markers
    evaluated for this Linux and Python), at the version installed here: what the tests run."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pinned: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(project["name"], frozenset({"vertex"}))]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        if (name, extras) in done:
            continue
        done.add((name, extras))
        if canonicalize_name(name) == project["name"]:  # the project as pyproject.toml says, not as installed
            requires = [
                *project["dependencies"],
                *(r for e in extras for r in project["optional-dependencies"][e]),
            ]
        else:
            dist = metadata.distribution(name)
            pinned[canonicalize_name(dist.metadata["Name"])] = dist.version
            requires = dist.requires or []
        for text in requires:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in (*extras, "")):
                todo.append((requirement.name, frozenset(requirement.extras)))
    return dict(sorted(pinned.items()))


def test_the_image_installs_exactly_the_versions_the_tests_run() -> None:
    expected = "".join(f"{name}=={version}\n" for name, version in vertex_extra_versions().items())
    pins = [
        line
        for line in (REPO_ROOT / CONSTRAINTS).read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert "\n".join(pins) + "\n" == expected, (
        f"write this to {CONSTRAINTS} (after its comments):\n{expected}"
    )
    assert not {"xgboost", "onnxruntime", "nvidia-nccl-cu12"} & set(vertex_extra_versions())


def test_dockerfile_builds_on_the_tests_python_and_runs_as_a_non_root_user() -> None:
    lines = [ln.strip() for ln in (REPO_ROOT / "container" / "Dockerfile").read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    python = ".".join(map(str, sys.version_info[:3]))
    assert instructions[0] == f"FROM python:{python}-slim-bookworm"  # an exact version, not a moving tag
    assert any("PIP_CONSTRAINT=constraints.txt pip install" in ln for ln in instructions)
    users = [ln.split()[1] for ln in instructions if ln.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}
    assert any(ln.startswith("RUN ") and 'pip install ".[vertex]"' in ln for ln in instructions)
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
        n in {"Dockerfile", "constraints.txt", "pyproject.toml", "README.md", "LICENSE"} or n.endswith(".py")
        for n in names
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


@pytest.mark.slow
def test_what_the_image_runs_imports_without_the_distributions_it_leaves_out(tmp_path: Path) -> None:
    """The vertex extra has no xgboost, onnxruntime or torch: the trainer the job runs and the server the
    deployment runs must not need them."""
    probe = (
        "import sys\n"
        "for absent in ('xgboost', 'onnxruntime', 'torch'):\n"
        "    sys.modules[absent] = None  # import fails, as in the image\n"
        f"import importlib; importlib.import_module({TRAIN_COMMAND[-1]!r})\n"
        "import mnistctl.cli, serving.app, serving.vertex_container\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]

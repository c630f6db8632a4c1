"""The build context of the project's own image, and how Vertex AI runs that image.

Cloud Build builds the image from a .tar.gz source in the bucket (no Docker on the user's machine). The
context holds exactly what the image installs: `container/Dockerfile` (at its root, as `Dockerfile`),
`pyproject.toml` and the `LICENSE` it names, a fixed stand-in `README.md` (the project's `readme`,
which `pip install` reads) and the three packages the custom job and the serving container import
(`training`, `serving`, `mnistctl`). Nothing else: no tests, virtualenv, stack state, caches or keys.
The archive is byte-for-byte reproducible and `sha256` covers names and bytes, so an unchanged tree
gives the same image tag and no rebuild.

One image serves twice: as the custom job's container (`TRAIN_COMMAND`, the TF trainer) and as the
model's custom serving container (`SERVE_COMMAND`, which reads Vertex's `AIP_*` environment).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

DOCKERFILE = Path("container") / "Dockerfile"
# Every distribution `pip install ".[vertex]"` puts in the image, pinned to the version the tests run
# (tests/gcp/test_image_context.py compares it with the test environment and prints the file to write).
CONSTRAINTS = Path("container") / "constraints.txt"
# LICENSE: pyproject.toml's `license-files`; setuptools warns that a missing one becomes an error after
# 2027-02-18, and `pip install .` in the image would then fail.
TOP_LEVEL_FILES = ("pyproject.toml", "LICENSE")
# pyproject.toml names README.md as the package's readme, so `pip install` in the image needs one; the
# repository's own README changes with every docs edit, and a docs edit must not rebuild the image
# (and so retrain the model). The context carries this fixed stand-in instead.
README_MEMBER = "README.md"
README_STAND_IN = (
    b"mnist-platform: the training and serving image of the gcp stack (see the repository's README).\n"
)
PACKAGES = ("training", "serving", "mnistctl")
PACKAGE_SUFFIXES = frozenset({".py"})
ARCHIVE_NAME = "image-context.tar.gz"

# The custom job's container command; the stack adds the trainer's arguments (`--data gs://...`, `--set`).
# The trainer reads AIP_MODEL_DIR and TF_CONFIG that Vertex AI sets.
TRAIN_COMMAND: tuple[str, ...] = ("python", "-m", "training.tf_trainer")
# The model's serving container command: port, routes and model location come from the AIP_* env.
SERVE_COMMAND: tuple[str, ...] = ("mnistctl", "serve", "--flavor", "vertex")
# What the model's containerSpec declares (ports, healthRoute, predictRoute); Vertex AI passes them back
# to the container as AIP_HTTP_PORT, AIP_HEALTH_ROUTE and AIP_PREDICT_ROUTE.
SERVING_PORT = 8080
HEALTH_ROUTE = "/health"
PREDICT_ROUTE = "/predict"

_SKIPPED_PARTS = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


@dataclass(frozen=True)
class ImageContext:
    """A built context: the archive, the hash that tags the image, and the names inside it."""

    archive: Path
    sha256: str  # over names and bytes of the files (not the gzip wrapping)
    files: tuple[str, ...]  # archive member names, sorted


def context_files(project_root: Path) -> dict[str, Path]:
    """Archive member name -> file on disk, for everything the image needs (and only that)."""
    project_root = Path(project_root)
    dockerfile = project_root / DOCKERFILE
    if not dockerfile.is_file():
        raise FileNotFoundError(f"{dockerfile} is missing: the image cannot be built without it")
    constraints = project_root / CONSTRAINTS
    if not constraints.is_file():
        raise FileNotFoundError(f"{constraints} is missing: the image would resolve its dependencies afresh")
    members = {"Dockerfile": dockerfile, "constraints.txt": constraints}
    for name in TOP_LEVEL_FILES:
        path = project_root / name
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: `pip install` of the project in the image needs it")
        members[name] = path
    for package in PACKAGES:
        folder = project_root / package
        if not (folder / "__init__.py").is_file():
            raise FileNotFoundError(f"{folder} is not a Python package (no __init__.py)")
        for path in folder.rglob("*"):
            relative = path.relative_to(project_root)
            if not path.is_file() or _SKIPPED_PARTS.intersection(relative.parts):
                continue
            if path.suffix in PACKAGE_SUFFIXES:
                members[relative.as_posix()] = path
    return dict(sorted(members.items()))


def build_image_context(project_root: Path, out_dir: Path) -> ImageContext:
    """Write `out_dir/image-context.tar.gz` from `project_root` and return it with its content hash."""
    contents = {name: path.read_bytes() for name, path in context_files(project_root).items()}
    contents[README_MEMBER] = README_STAND_IN
    members = dict(sorted(contents.items()))
    digest = hashlib.sha256()
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644  # the owner and times of the user's checkout must not change the archive
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / ARCHIVE_NAME
    with archive.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(tar_bytes.getvalue())
    return ImageContext(archive=archive, sha256=digest.hexdigest(), files=tuple(members))

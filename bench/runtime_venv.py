"""Throwaway virtualenvs that hold the older runtimes the clouds serve models with, built once and cached.

    python bench/runtime_venv.py onnxruntime==1.16.3 "numpy<2"     # prints the interpreter's path

watsonx.ai's ``onnxruntime_opset_19`` specification runs ONNX Runtime 1.16, which cannot live in the
project's virtualenv beside the current onnxruntime; the tests and ``bench/train.py --interop-python``
load artifacts with it from such a venv instead. A venv is keyed by this Python's version and the
requirements, built in a scratch folder and renamed into place when pip succeeded (so an interrupted
build is never reused), under ``$MNIST_PLATFORM_RUNTIME_VENVS`` or the user cache dir.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

CACHE_ENV = "MNIST_PLATFORM_RUNTIME_VENVS"
WATSONX_ONNX_RUNTIME = (
    "onnxruntime==1.16.3",
    "numpy<2",
)  # onnxruntime_opset_19 (model type onnxruntime_1.16)
READY_MARKER = "mnist-platform-ready"
PIP_TIMEOUT_SECONDS = 900
# What pip prints when it cannot reach the package index (or finds no file for this platform there).
UNREACHABLE_MARKERS = (
    "NewConnectionError",
    "Max retries exceeded",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No matching distribution found",
    "Could not find a version that satisfies",
    "ConnectTimeoutError",
)


class RegistryUnreachable(RuntimeError):
    """pip could not get the requirements from the package index; callers skip rather than fail."""


def default_cache_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get(CACHE_ENV) or Path(user_cache_dir("mnist-platform")) / "runtime-venvs")


def venv_python(requirements: Sequence[str], cache_dir: Path | None = None) -> Path:
    """The interpreter of a cached venv holding exactly ``requirements``; built (pip, minutes) on first use.

    Raises ``RegistryUnreachable`` when pip cannot reach the index, ``RuntimeError`` with pip's output for
    any other failure."""
    cache = Path(cache_dir or default_cache_dir())
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    key = hashlib.sha256("\n".join([version, *sorted(requirements)]).encode()).hexdigest()[:16]
    target = cache / f"py{version}-{key}"
    if (target / READY_MARKER).is_file():
        return target / "bin" / "python"
    cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".building-{key}-", dir=cache))
    try:
        subprocess.run([sys.executable, "-m", "venv", str(scratch)], check=True, capture_output=True)
        done = subprocess.run(
            [str(scratch / "bin" / "python"), "-m", "pip", "install", "--quiet", *requirements],
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT_SECONDS,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            tail = " | ".join(output.splitlines()[-3:])
            if any(marker in output for marker in UNREACHABLE_MARKERS):
                raise RegistryUnreachable(
                    f"pip could not get {' '.join(requirements)} from the index: {tail}"
                )
            raise RuntimeError(f"pip install {' '.join(requirements)} failed ({done.returncode}): {tail}")
        (scratch / READY_MARKER).write_text("\n".join(requirements) + "\n")
        try:
            scratch.rename(target)
        except OSError:  # another process finished the same venv first: use theirs
            if not (target / READY_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target / "bin" / "python"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "requirements", nargs="*", default=list(WATSONX_ONNX_RUNTIME), help="pip requirements of the venv"
    )
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help=f"default: ${CACHE_ENV} or the user cache"
    )
    args = parser.parse_args(argv)
    try:
        print(venv_python(args.requirements, args.cache_dir))
    except RegistryUnreachable as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

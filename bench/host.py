"""What the benchmarks record about the machine they ran on: the CPU, and the versions of the packages.

Our VMs name their CPU only "AMD EPYC", and the same benchmark has taken half the CPU seconds on one VM
that it took on another (docs/training.md). The family, model and stepping tell host generations apart
(AMD family 25 is Zen 3 and 4, 26 is Zen 5), so a result can be compared with those of the same kind.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
_FIELDS = {"model name": "name", "cpu family": "family", "model": "model", "stepping": "stepping"}


def cpu_description(cpuinfo: str | None = None) -> dict[str, str]:
    """The first processor's name, family, model and stepping from /proc/cpuinfo (``cpuinfo``: its text),
    as far as it lists them; the name is "unknown" where it has none (ARM kernels, macOS, Windows)."""
    if cpuinfo is None:
        cpuinfo = CPUINFO.read_text() if CPUINFO.exists() else ""
    found = {"name": "unknown"}
    for line in cpuinfo.splitlines():
        if not line.strip():  # the end of the first processor's block
            break
        key, _, value = line.partition(":")
        field = _FIELDS.get(key.strip())
        if field is not None:
            found[field] = value.strip()
    return found


def cpu_line(cpu: dict[str, str]) -> str:
    """``cpu_description()`` in one line: "AMD EPYC (family 26, model 2, stepping 1)"."""
    details = ", ".join(f"{field} {cpu[field]}" for field in ("family", "model", "stepping") if field in cpu)
    return f"{cpu['name']} ({details})" if details else cpu["name"]


def package_versions(packages: Iterable[str]) -> dict[str, str | None]:
    """Each package's installed version; None for one that is not installed."""
    versions: dict[str, str | None] = {}
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def machine() -> dict[str, Any]:
    """What every benchmark's result says of the machine: OS, Python, CPU, cores and how busy they were."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_description(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }

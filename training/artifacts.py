"""Artifact archives: gzipped tars whose bytes depend only on their content."""

from __future__ import annotations

import gzip
import io
import tarfile
from collections.abc import Mapping
from pathlib import Path


def write_tar_gz(path: Path, members: Mapping[str, bytes]) -> None:
    """A gzipped tar with fixed timestamps and owners: equal content gives equal bytes (and upload hashes)."""
    with (
        path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))


def read_tar_member(archive: Path, name: str) -> bytes:
    """The bytes of member ``name`` of a gzipped tar; ``FileNotFoundError`` naming both if it is absent."""
    with tarfile.open(archive, "r:gz") as tar:
        try:
            member = tar.extractfile(name)
        except KeyError:
            member = None
        if member is None:
            raise FileNotFoundError(
                f"{archive} has no member {name!r} (members: {', '.join(tar.getnames())})"
            )
        return member.read()

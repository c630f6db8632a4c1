"""Fixtures of the gcp tests: loopback fakes of Cloud Storage, Vertex AI and Cloud Build
(tests/gcp/gcp_fakes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from gcp_fakes import CloudBuildFake, GcsFake, VertexFake


@pytest.fixture
def gcs_fake(tmp_path: Path) -> Iterator[GcsFake]:
    """The Cloud Storage JSON API over `tmp_path/gcs/<bucket>/<object>`."""
    fake = GcsFake(tmp_path / "gcs").start()
    try:
        yield fake
    finally:
        fake.close()


@pytest.fixture
def vertex_fake(tmp_path: Path, gcs_fake: GcsFake) -> Iterator[VertexFake]:
    """The Vertex AI v1 API; its jobs and model servers are local processes, stopped at teardown."""
    fake = VertexFake(tmp_path / "vertex", gcs_fake).start()
    try:
        yield fake
    finally:
        fake.close()
        assert not fake.running_processes(), "the Vertex fake left processes running"


@pytest.fixture
def cloudbuild_fake(gcs_fake: GcsFake) -> Iterator[CloudBuildFake]:
    """Cloud Build v1 and Artifact Registry v1 (tags, versions) on one loopback server; builds read their
    source from `gcs_fake`."""
    fake = CloudBuildFake(gcs_fake).start()
    try:
        yield fake
    finally:
        fake.close()

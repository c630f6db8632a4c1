"""Loopback fakes of the Google Cloud APIs the gcp stack calls: Vertex AI (which runs jobs and model
servers for real), Cloud Build with Artifact Registry, and Cloud Storage.

Imported as `gcp_fakes` (tests/gcp is on sys.path for its tests): `fakes` is tests/ibm's package.
"""

from gcp_fakes.base import ApiError, FakeServer, RecordedRequest
from gcp_fakes.cloudbuild import CloudBuildFake
from gcp_fakes.gcs import GcsFake
from gcp_fakes.vertex import VertexFake

__all__ = ["ApiError", "CloudBuildFake", "FakeServer", "GcsFake", "RecordedRequest", "VertexFake"]

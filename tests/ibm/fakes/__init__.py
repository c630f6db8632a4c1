"""Loopback fakes of the IBM Cloud APIs the ibm stack calls, one module per service, over HTTPS with a
test CA so that IBM's own SDKs run against them unchanged (see docs in `tests/ibm/README.md`)."""

from .cloud import IbmCloudFake
from .server import RecordedRequest
from .state import ACCOUNT_ID, API_KEY

__all__ = ["ACCOUNT_ID", "API_KEY", "IbmCloudFake", "RecordedRequest"]

"""watsonx.ai Runtime v4 (<region>.ml.cloud.ibm.com): placeholder, filled in next."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from .server import FakeService
from .state import CloudState


class WmlService(FakeService):
    name = "wml"

    def __init__(self, state: CloudState, ssl_context: ssl.SSLContext, work_dir: Path) -> None:
        self.work_dir = work_dir
        super().__init__(state, ssl_context)

    def routes(self) -> None:
        pass

    def stop_deployments(self) -> None:
        pass


class Deployment:
    space_id: str
    state: str
    extra: dict[str, Any]

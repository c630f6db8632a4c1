"""`IbmCloudFake`: every fake IBM Cloud service over HTTPS on 127.0.0.1 with one test CA, one shared
account state, failure injection and scenario switches. The fixture `ibm_cloud_fake` builds one."""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import trustme

from .global_catalog import GlobalCatalogService
from .iam import IamService
from .resource_controller import ResourceControllerService
from .server import FakeService, InjectedFailure, RecordedRequest
from .state import API_KEY, CloudState


class IbmCloudFake:
    """The services and where they listen. Attribute names are the fixture's interface: keep them."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        ca = trustme.CA()
        server_cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = str(self.work_dir / "ibm-fake-ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_cert.configure_cert(context)
        self.state = CloudState()
        self.api_key = API_KEY
        self.account_id = self.state.account_id
        self.resource_group_id = self.state.resource_group_id
        self.region = "us-south"
        from .cos import CosService
        from .spaces import DataPlatformService
        from .wml import WmlService

        self.iam = IamService(self.state, context)
        self.global_catalog = GlobalCatalogService(self.state, context)
        self.resource_controller = ResourceControllerService(self.state, context)
        self.cos = CosService(self.state, context)
        self.platform = DataPlatformService(self.state, context)
        self.wml = WmlService(self.state, context, self.work_dir / "wml")
        self._services: list[FakeService] = [
            self.iam,
            self.global_catalog,
            self.resource_controller,
            self.cos,
            self.platform,
            self.wml,
        ]
        for service in self._services:
            service.start()

    # Where the services listen (what a client is given instead of IBM Cloud's URLs) -------------------
    @property
    def iam_url(self) -> str:
        """IAMAuthenticator(url=...); the token endpoint is `token_url` (ibm_boto3 ibm_auth_endpoint)."""
        return self.iam.url

    @property
    def token_url(self) -> str:
        return self.iam.url + "/identity/token"

    @property
    def iam_policy_url(self) -> str:
        """IamPolicyManagementV1's service URL (IAM serves policies on its own host, as in IBM Cloud)."""
        return self.iam.url

    @property
    def global_catalog_url(self) -> str:
        return self.global_catalog.url + GlobalCatalogService.base

    @property
    def resource_controller_url(self) -> str:
        return self.resource_controller.url

    @property
    def cos_url(self) -> str:
        return self.cos.url

    @property
    def wml_url(self) -> str:
        return self.wml.url

    @property
    def url(self) -> str:
        """ibm_watsonx_ai Credentials(url=...): the watsonx.ai Runtime (WML) API."""
        return self.wml.url

    @property
    def platform_url(self) -> str:
        """ibm_watsonx_ai Credentials(platform_url=...): the data platform API (spaces)."""
        return self.platform.url

    # Recorded requests ------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self.state.lock:
            return list(self.state.requests)

    def requests_to(self, service: str, method: str | None = None, path: str = "") -> list[RecordedRequest]:
        """Recorded requests to `service` (iam, global-catalog, resource-controller, cos, platform, wml),
        optionally only `method` ones whose path matches the regex `path`."""
        pattern = re.compile(path)
        return [
            r
            for r in self.requests
            if r.service == service and method in (None, r.method) and pattern.search(r.path)
        ]

    # Failure injection and scenario switches ---------------------------------------------------------
    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int = 429,
        times: int = 1,
        *,
        service: str | None = None,
        headers: dict[str, str] | None = None,
        after_commit: bool = False,
    ) -> None:
        """The next `times` requests `method` whose path matches `path_regex` (of `service`, else any)
        answer `status` with the service's error shape, before anything else happens; or, with
        `after_commit`, after the request was carried out (the create landed, its answer was lost)."""
        self.state.add_failure(
            InjectedFailure(
                method.upper(), re.compile(path_regex), status, times, service, headers or {}, after_commit
            )
        )

    def slow_provisioning(self, polls: int = 2, space_polls: int | None = None) -> None:
        """New instances answer `provisioning` for `polls` GETs; new spaces `preparing` for `space_polls`."""
        self.state.scenario.provisioning_polls = polls
        self.state.scenario.space_preparing_polls = polls if space_polls is None else space_polls

    def fail_deployments(self, message: str = "Deployment failed: the model could not be loaded.") -> None:
        """New deployments go `initializing` -> `failed` with `message` instead of serving."""
        self.state.scenario.deployment_failure = message

    def stuck_deployments(self) -> None:
        """New deployments stay `initializing` and never serve (a capacity shortage that never clears)."""
        self.state.scenario.deployment_stuck = True

    def short_token_expiry(self, seconds: int = 3) -> None:
        """IAM issues tokens that expire after `seconds` (IBM's last an hour)."""
        self.state.scenario.token_lifetime_seconds = seconds

    def caller_holds(self, service: str, *roles: str) -> None:
        """The caller's IAM roles on `service` from now on (by default what docs/ibm.md asks for)."""
        self.state.scenario.caller_roles[service] = set(roles)

    def slow_reclamations(self, listings: int | None = 2) -> None:
        """A deleted instance's reclamation shows only after `listings` listings (None: never)."""
        self.state.scenario.reclamation_lists_before_visible = listings

    def missing_user_profile(self, missing: bool = True) -> None:
        """The caller is a first-time user without a data-platform profile: creating a space fails."""
        self.state.scenario.user_profile_missing = missing

    def existing_instance(
        self, service: str, plan: str, name: str = "existing", target: str | None = None
    ) -> dict[str, Any]:
        """An instance already in the account (e.g. the one Lite instance of `pm-20` a user may hold)."""
        return self.resource_controller.add_instance(
            service,
            plan,
            name,
            target or ("global" if service == "cloud-object-storage" else self.region),
            created_by="iam-someone-else",
        )

    def close(self) -> None:
        """Stop the services and every model server a deployment started."""
        self.wml.stop_deployments()
        for service in self._services:
            service.stop()

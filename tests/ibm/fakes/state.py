"""What the fake IBM Cloud holds: one account's resources, shared by every fake service, behind one lock.

Scenario switches (`Scenario`) change how the services behave for the rest of a test: slow
provisioning, a deployment that fails, short-lived tokens, a user without a data-platform profile.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import jwt

if TYPE_CHECKING:
    from .server import InjectedFailure, RecordedRequest

ACCOUNT_ID = "0123456789abcdef0123456789abcdef"
API_KEY = "fake-ibm-cloud-api-key-0123456789"
SERVICE_ID = "ServiceId-5f1c7a52-1c6c-4bd5-9bd5-3b8e2a0f6f11"
DEFAULT_RESOURCE_GROUP_ID = "5c49eabc1f8d4c1e8a8bd1d0a8b9e0f1"


@dataclass
class Scenario:
    """How the fake behaves; tests flip these through the fixture's switches."""

    # GETs of a new resource instance that still answer `provisioning` before it is `active`.
    provisioning_polls: int = 0
    # GETs of a new space that still answer `preparing` before it is `active`.
    space_preparing_polls: int = 0
    # When set, a new deployment goes `initializing` -> `failed` with this message.
    deployment_failure: str | None = None
    # New deployments stay `initializing` for ever (no model server is started).
    deployment_stuck: bool = False
    # Lifetime of the IAM access tokens the fake issues (IBM's is 3600 s).
    token_lifetime_seconds: int = 3600
    # The caller has no data-platform user profile yet (a first-time user): spaces cannot be created.
    user_profile_missing: bool = False
    # The IAM roles the caller (the API key's identity) holds, per service: what docs/ibm.md asks a user
    # to grant. The fakes check them where IBM Cloud does (see tests/ibm/README.md).
    caller_roles: dict[str, set[str]] = field(
        default_factory=lambda: {"cloud-object-storage": {"Editor", "Manager"}, "pm-20": {"Editor"}}
    )
    # Reclamation listings of a deleted instance that still come back empty: Resource Controller opens
    # the reclamation after the delete, not with it. None: it never appears.
    reclamation_lists_before_visible: int | None = 0


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_guid() -> str:
    return str(uuid.uuid4())


class TokenIssuer:
    """IAM's side of tokens: JWT access tokens carrying what the IBM SDKs decode (exp, iat, iam_id, sub,
    account.bss). Signed with a secret of the fake; the clients do not verify signatures, the fake does."""

    def __init__(self, state: CloudState) -> None:
        self._state = state
        self._secret = uuid.uuid4().hex
        self.refresh_tokens: set[str] = set()
        self.issued = 0

    def issue(self) -> dict[str, Any]:
        lifetime = self._state.scenario.token_lifetime_seconds
        iat = int(time.time())
        claims = {
            "iam_id": f"iam-{SERVICE_ID}",
            "id": f"iam-{SERVICE_ID}",
            "realmid": "iam",
            "identifier": SERVICE_ID,
            "sub": SERVICE_ID,
            "sub_type": "ServiceId",
            "account": {"valid": True, "bss": ACCOUNT_ID, "frozen": True},
            "iat": iat,
            "exp": iat + lifetime,
            "iss": "https://iam.cloud.ibm.com/identity",
            "grant_type": "urn:ibm:params:oauth:grant-type:apikey",
            "scope": "ibm openid",
            "client_id": "default",
            "acr": 1,
            "amr": ["pwd"],
            "jti": uuid.uuid4().hex,
        }
        refresh_token = uuid.uuid4().hex
        with self._state.lock:
            self.refresh_tokens.add(refresh_token)
            self.issued += 1
        return {
            "access_token": jwt.encode(claims, self._secret, algorithm="HS256"),
            "refresh_token": refresh_token,
            "ims_user_id": 0,
            "token_type": "Bearer",
            "expires_in": lifetime,
            "expiration": iat + lifetime,
            "scope": "ibm openid",
        }

    def claims_of(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this fake issued and that has not expired; None otherwise."""
        try:
            return jwt.decode(token, self._secret, algorithms=["HS256"], options={"require": ["exp", "iat"]})
        except jwt.PyJWTError:
            return None


class CloudState:
    """Every resource of the fake account, keyed by id; every service reads and writes it under `lock`."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.scenario = Scenario()
        self.api_keys = {API_KEY}
        self.account_id = ACCOUNT_ID
        self.resource_group_id = DEFAULT_RESOURCE_GROUP_ID
        self.iam = TokenIssuer(self)
        self.requests: list[RecordedRequest] = []
        self.failures: list[InjectedFailure] = []
        # Resource Controller
        self.instances: dict[str, dict[str, Any]] = {}  # guid -> resource instance
        self.instance_polls: dict[str, int] = {}  # guid -> GETs left while provisioning
        self.reclamations: dict[str, dict[str, Any]] = {}
        # IAM Policy Management
        self.policies: dict[str, dict[str, Any]] = {}
        # COS
        self.buckets: dict[str, Bucket] = {}
        # watsonx.ai
        self.spaces: dict[str, dict[str, Any]] = {}
        self.space_polls: dict[str, int] = {}
        self.models: dict[str, dict[str, Any]] = {}
        self.model_content: dict[str, bytes] = {}
        self.deployments: dict[str, Any] = {}  # id -> wml.Deployment

    def record(self, entry: RecordedRequest) -> None:
        with self.lock:
            self.requests.append(entry)

    def take_failure(
        self, service: str, method: str, path: str, *, after_commit: bool
    ) -> InjectedFailure | None:
        with self.lock:
            for failure in self.failures:
                if failure.service not in (None, service) or failure.method.upper() != method.upper():
                    continue
                if failure.after_commit != after_commit:
                    continue
                if failure.path.search(path) and failure.times > 0:
                    failure.times -= 1
                    if failure.times == 0:
                        self.failures.remove(failure)
                    return failure
        return None

    def add_failure(self, failure: InjectedFailure) -> None:
        with self.lock:
            self.failures.append(failure)

    def require_role(self, service: str, roles: set[str], what: str) -> None:
        """403 unless the caller holds one of `roles` on `service` (IBM's words: the action and the role)."""
        from .server import IbmApiError

        held = self.scenario.caller_roles.get(service, set())
        if not held & roles:
            raise IbmApiError(
                403,
                "forbidden",
                f"You are not authorized to {what}: it needs the {' or '.join(sorted(roles))} role on "
                f"{service}, and the caller holds {', '.join(sorted(held)) or 'none'}",
            )

    def crn(self, service: str, region: str, guid: str, suffix: str = "::") -> str:
        return f"crn:v1:bluemix:public:{service}:{region}:a/{self.account_id}:{guid}{suffix}"


@dataclass
class StoredObject:
    body: bytes
    etag: str
    last_modified: datetime
    content_type: str
    metadata: dict[str, str]
    version_id: str = "null"  # S3's id of the one version an unversioned bucket keeps


@dataclass
class Bucket:
    name: str
    location_constraint: str
    service_instance_id: str
    created: datetime
    kp_algorithm: str | None = None
    kp_root_key_crn: str | None = None
    objects: dict[str, StoredObject] = field(default_factory=dict)  # the current version of each key
    versioning: str | None = None  # None (never configured), "Enabled" or "Suspended"
    # Older versions of a versioned bucket and its delete markers (object None), oldest first
    noncurrent: list[tuple[str, str, StoredObject | None]] = field(default_factory=list)
    markers: dict[str, str] = field(default_factory=dict)  # key -> version id of its latest delete marker

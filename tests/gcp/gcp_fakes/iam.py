"""Who may do what, as the fakes see it: IAM bindings, the permissions of the roles they name, and
propagation.

The e2e harness feeds it the bindings the stack declares (the mocked `BucketIAMMember`,
`RepositoryIamMember`, `projects.IAMMember` and `serviceaccount.IAMMember`, as each is "created") and the
ones a project starts with (the deployer's roles, the Vertex AI service agent's). A binding takes effect
`propagation_seconds` after it is added: Google documents "typically 2 minutes, could take 7 minutes or
longer". A fake given this model (`fake.iam = model`) answers a call without the permission with Google's
403 PERMISSION_DENIED naming the permission, or fails the job or build that needed it.

Resources are keyed without their project (the fakes serve one): `projects/<id>`, `buckets/<name>`,
`repositories/<id>`, `serviceAccounts/<email>`. A project binding holds on everything.

ROLE_PERMISSIONS lists, for each predefined role the stack or the harness uses, the permissions of that
role that the fakes check (from Google's "IAM roles and permissions index"); the real roles hold more.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from gcp_fakes.base import ApiError

_OBJECTS_READ = frozenset({"storage.objects.get", "storage.objects.list"})
_OBJECTS_WRITE = frozenset({"storage.objects.create", "storage.objects.delete", "storage.objects.update"})
_VERTEX_USE = frozenset(
    {
        "aiplatform.customJobs.create",
        "aiplatform.customJobs.get",
        "aiplatform.customJobs.list",
        "aiplatform.customJobs.cancel",
        "aiplatform.customJobs.delete",
        "aiplatform.models.upload",
        "aiplatform.models.get",
        "aiplatform.models.list",
        "aiplatform.models.delete",
        "aiplatform.endpoints.create",
        "aiplatform.endpoints.get",
        "aiplatform.endpoints.delete",
        "aiplatform.endpoints.deploy",
        "aiplatform.endpoints.undeploy",
        "aiplatform.endpoints.predict",
    }
)
ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "roles/storage.admin": _OBJECTS_READ | _OBJECTS_WRITE | {"storage.buckets.get"},
    "roles/storage.objectUser": _OBJECTS_READ | _OBJECTS_WRITE,
    "roles/storage.objectViewer": _OBJECTS_READ,
    "roles/storage.legacyBucketReader": frozenset({"storage.buckets.get", "storage.objects.list"}),
    "roles/artifactregistry.writer": frozenset(
        {"artifactregistry.repositories.uploadArtifacts", "artifactregistry.repositories.downloadArtifacts"}
    ),
    "roles/artifactregistry.admin": frozenset(
        {
            "artifactregistry.repositories.uploadArtifacts",
            "artifactregistry.repositories.downloadArtifacts",
            "artifactregistry.tags.get",
            "artifactregistry.tags.delete",
            "artifactregistry.versions.get",
            "artifactregistry.versions.delete",
        }
    ),
    "roles/cloudbuild.builds.editor": frozenset(
        {
            "cloudbuild.builds.create",
            "cloudbuild.builds.get",
            "cloudbuild.builds.list",
            "cloudbuild.builds.update",
        }
    ),
    "roles/aiplatform.user": _VERTEX_USE,
    "roles/logging.logWriter": frozenset({"logging.logEntries.create"}),
    "roles/iam.serviceAccountUser": frozenset({"iam.serviceAccounts.actAs"}),
    # Google grants the Vertex AI Service Agent this role on the project when the API is enabled; among
    # much else it reads Cloud Storage (a model's artifactUri) in the project.
    "roles/aiplatform.serviceAgent": _OBJECTS_READ | {"storage.buckets.get"},
    # Not actAs: creating accounts and setting their IAM policies (the deployer grants itself actAs).
    "roles/iam.serviceAccountAdmin": frozenset(
        {"iam.serviceAccounts.setIamPolicy", "iam.serviceAccounts.get"}
    ),
}


@dataclass(frozen=True)
class Binding:
    resource: str
    role: str
    member: str
    effective_at: float


class IamModel:
    """The bindings of one project; `allows` and `require` answer as Google would at this moment."""

    def __init__(self, project: str, propagation_seconds: float = 0.0) -> None:
        self.project = project
        self.propagation_seconds = propagation_seconds
        self.bindings: list[Binding] = []
        self.denials: list[tuple[str, str, str]] = []  # (member, permission, resource) refused, for tests
        self._lock = threading.Lock()

    def grant(self, resource: str, role: str, member: str, propagated: bool = False) -> None:
        """A binding, in effect after the propagation delay (`propagated`: at once, as a project's
        bindings before the stack, or the grants Vertex AI makes on its own copies)."""
        if role not in ROLE_PERMISSIONS:
            raise ValueError(
                f"the IAM model does not know {role}: add its checked permissions to ROLE_PERMISSIONS"
            )
        delay = 0.0 if propagated else self.propagation_seconds
        with self._lock:
            self.bindings.append(Binding(resource, role, member, time.monotonic() + delay))

    def revoke(self, resource: str, role: str, member: str) -> None:
        with self._lock:
            self.bindings = [
                b for b in self.bindings if (b.resource, b.role, b.member) != (resource, role, member)
            ]

    def allows(self, member: str | None, permission: str, resource: str) -> bool:
        now = time.monotonic()
        scopes = {resource, f"projects/{self.project}"}
        with self._lock:
            return any(
                b.member == member
                and b.resource in scopes
                and b.effective_at <= now
                and permission in ROLE_PERMISSIONS[b.role]
                for b in self.bindings
            )

    def pending(self, member: str | None, permission: str, resource: str) -> bool:
        """Whether a binding that would allow it exists but has not propagated yet."""
        scopes = {resource, f"projects/{self.project}"}
        with self._lock:
            return any(
                b.member == member and b.resource in scopes and permission in ROLE_PERMISSIONS[b.role]
                for b in self.bindings
            )

    def require(self, member: str | None, permission: str, resource: str, message: str) -> None:
        """Raise Google's 403 PERMISSION_DENIED with `message` unless `member` holds `permission` there."""
        if not self.allows(member, permission, resource):
            with self._lock:
                self.denials.append((str(member), permission, resource))
            raise ApiError(403, message)

    def require_act_as(self, member: str | None, account: str | None) -> None:
        """Running something as a user-managed account (a job, a deployment, a build) needs actAs on it."""
        if account:
            self.require(
                member, "iam.serviceAccounts.actAs", f"serviceAccounts/{account}", act_as_message(account)
            )


def email_of(member: str | None) -> str:
    return str(member or "anonymous caller").split(":", 1)[-1]


def act_as_message(account: str) -> str:
    """What Vertex AI and Cloud Build answer when the caller may not act as the account."""
    return (
        f"Permission 'iam.serviceAccounts.actAs' denied on service account {account} (or it may not exist)."
    )


def storage_message(member: str | None, permission: str) -> str:
    """Cloud Storage's words for a missing permission."""
    return (
        f"{email_of(member)} does not have {permission} access to the Google Cloud Storage object. "
        f"Permission '{permission}' denied on resource (or it may not exist)."
    )

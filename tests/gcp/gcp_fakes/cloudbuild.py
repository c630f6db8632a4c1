"""A loopback fake of Cloud Build v1 (builds from a Cloud Storage source) and of the part of Artifact
Registry v1 that holds what the builds push (tags and versions of Docker images).

It runs no Docker: a build is recorded with its source (the archive's member names, when the object
is in the Cloud Storage fake), goes QUEUED -> WORKING -> SUCCESS and "pushes" its `images` (a version
named by a digest, and the tag); or ends FAILURE when a test asks for it. As the service, it pushes only
images that a step produced: an `images` entry that no `docker build -t/--tag` (or `docker tag`) step
named fails the build with Cloud Build's "failed to find one or more images after execution of build
steps". Builds are long-running
operations (`BuildOperationMetadata`); a failed build's operation ends with an error, as the service's.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from gcp_fakes.base import (
    RPC_CODES,
    Call,
    FakeServer,
    Operation,
    equality_filter,
    failed_precondition,
    invalid_argument,
    not_found,
    now,
)
from gcp_fakes.gcs import GcsFake
from gcp_fakes.iam import storage_message
from gcp_fakes.vertex import PROJECT_NUMBER

BUILD_STATUSES = {
    "STATUS_UNKNOWN": 0,
    "QUEUED": 1,
    "WORKING": 2,
    "SUCCESS": 3,
    "FAILURE": 4,
    "INTERNAL_ERROR": 5,
    "TIMEOUT": 6,
    "CANCELLED": 7,
    "EXPIRED": 9,
    "PENDING": 10,
}
TERMINAL = frozenset({"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"})
BUILD_TYPE = "type.googleapis.com/google.devtools.cloudbuild.v1."
REGISTRY_TYPE = "type.googleapis.com/google.devtools.artifactregistry.v1."
_IMAGE = re.compile(
    r"(?P<location>[a-z0-9-]+)-docker\.pkg\.dev/(?P<project>[^/]+)/(?P<repository>[^/]+)/(?P<package>[^:@]+):(?P<tag>[\w.-]+)"
)
DEFAULT_FAILURE = 'Build step 0 "gcr.io/cloud-builders/docker" failed: step exited with non-zero status: 1'
# Cloud Build's own words when `images` names something no step built (kubeflow/pipelines #1839).
IMAGES_NOT_FOUND = "failed to find one or more images after execution of build steps: {images}"
DOCKER_BUILDERS = ("gcr.io/cloud-builders/docker", "docker")
_PROJECT = r"/v1/projects/(?P<project>[^/]+)"
_REGIONAL = _PROJECT + r"/locations/(?P<location>[^/]+)"
_PACKAGE = _REGIONAL + r"/repositories/(?P<repository>[^/]+)/packages/(?P<package>[^/]+)"


@dataclass
class RecordedBuild:
    id: str
    resource: dict[str, Any]
    operation: Operation
    status: str = "QUEUED"
    source_files: tuple[str, ...] = ()  # member names of the source archive, if the fake could read it
    fail_with: str | None = None


@dataclass
class _Version:
    digest: str
    tags: set[str] = field(default_factory=set)


class CloudBuildFake(FakeServer):
    def __init__(
        self, gcs: GcsFake | None = None, project: str = "mnist-test", build_seconds: float = 0.2
    ) -> None:
        from gcp_fakes.discovery import Contract

        super().__init__("cloud-build", Contract(("cloudbuild", "v1"), ("artifactregistry", "v1")))
        self.project = project
        self.project_number = PROJECT_NUMBER
        self.gcs = gcs
        self.build_seconds = build_seconds
        self.builds: dict[str, RecordedBuild] = {}
        # Artifact Registry: package name (projects/p/locations/l/repositories/r/packages/pkg) -> versions
        self.packages: dict[str, dict[str, _Version]] = {}
        self._fail_builds: list[str] = []
        # The permission each method needs (roles/cloudbuild.builds.editor, roles/artifactregistry.admin).
        tags, versions = (
            "artifactregistry.projects.locations.repositories.packages.tags.",
            ("artifactregistry.projects.locations.repositories.packages.versions."),
        )
        self.method_permissions = {
            "cloudbuild.projects.builds.create": "cloudbuild.builds.create",
            "cloudbuild.projects.locations.builds.create": "cloudbuild.builds.create",
            "cloudbuild.projects.builds.get": "cloudbuild.builds.get",
            "cloudbuild.projects.builds.list": "cloudbuild.builds.list",
            "cloudbuild.projects.locations.builds.list": "cloudbuild.builds.list",
            "cloudbuild.projects.locations.builds.get": "cloudbuild.builds.get",
            "cloudbuild.projects.builds.cancel": "cloudbuild.builds.update",
            "cloudbuild.projects.locations.builds.cancel": "cloudbuild.builds.update",
            tags + "get": "artifactregistry.tags.get",
            tags + "delete": "artifactregistry.tags.delete",
            versions + "get": "artifactregistry.versions.get",
            versions + "delete": "artifactregistry.versions.delete",
        }
        self._threads: list[threading.Thread] = []
        for prefix in (_PROJECT, _REGIONAL):
            self.route("POST", prefix + r"/builds", self._create_build)
            self.route("GET", prefix + r"/builds", self._list_builds)
            self.route("GET", prefix + r"/builds/(?P<id>[\w-]+)", self._get_build)
            self.route("POST", prefix + r"/builds/(?P<id>[\w-]+):cancel", self._cancel_build)
        self.route("GET", r"/v1/(?P<name>operations/build/.+)", self._get_operation)
        self.route(
            "GET", r"/v1/(?P<name>projects/[^/]+/locations/[^/]+/operations/[^/]+)", self._get_operation
        )
        self.route("GET", _PACKAGE + r"/tags/(?P<tag>[^/]+)", self._get_tag)
        self.route("DELETE", _PACKAGE + r"/tags/(?P<tag>[^/]+)", self._delete_tag)
        self.route("GET", _PACKAGE + r"/versions/(?P<version>[^/]+)", self._get_version)
        self.route("DELETE", _PACKAGE + r"/versions/(?P<version>[^/]+)", self._delete_version)

    # -- helpers for tests -------------------------------------------------------------------------
    def fail_next_build(
        self,
        detail: str = DEFAULT_FAILURE,
    ) -> None:
        """The next build ends FAILURE with this statusDetail."""
        self._fail_builds.append(detail)

    def tags(self) -> dict[str, str]:
        """Image URI with tag -> the digest it points to, for every pushed image not deleted since."""
        out = {}
        for package, versions in self.packages.items():
            m = re.fullmatch(
                r"projects/([^/]+)/locations/([^/]+)/repositories/([^/]+)/packages/(.+)", package
            )
            assert m is not None
            image = f"{m[2]}-docker.pkg.dev/{m[1]}/{m[3]}/{m[4].replace('%2F', '/')}"
            for version in versions.values():
                out.update({f"{image}:{tag}": version.digest for tag in version.tags})
        return out

    def close(self) -> None:
        for thread in self._threads:
            thread.join(10)
        super().close()

    # -- builds ------------------------------------------------------------------------------------
    def _create_build(self, call: Call, match: re.Match[str]) -> Any:
        build = dict(call.json)
        storage = (build.get("source") or {}).get("storageSource") or {}
        if not storage.get("bucket") or not storage.get("object"):
            raise invalid_argument("invalid build: source.storageSource needs a bucket and an object")
        if not build.get("steps"):
            raise invalid_argument("invalid build: a build needs at least one step")
        if self.iam is not None:  # running the build as an account needs actAs on it
            account = str(build.get("serviceAccount") or "").rsplit("/", 1)[-1]
            self.iam.require_act_as(self.principal(call), account)
        location = match.groupdict().get("location") or "global"
        build_id = str(uuid.uuid4())
        name = f"projects/{self.project_number}/locations/{location}/builds/{build_id}"
        build |= {
            "id": build_id,
            "name": name,
            "projectId": match["project"],
            "createTime": now(),
            "logUrl": f"https://console.cloud.google.com/cloud-build/builds;region={location}/{build_id}?project={self.project_number}",
        }
        if location == "global":
            op_name = f"operations/build/{match['project']}/{uuid.uuid4().hex}"
        else:
            op_name = f"projects/{self.project_number}/locations/{location}/operations/{uuid.uuid4().hex}"
        operation = self.new_operation(
            op_name, {"@type": BUILD_TYPE + "BuildOperationMetadata", "build": build}
        )
        record = RecordedBuild(build_id, build, operation, source_files=self._source_files(storage))
        if self._fail_builds:
            record.fail_with = self._fail_builds.pop(0)
        with self.lock:
            self.builds[build_id] = record
            self._publish(call, record)
        thread = threading.Thread(target=self._run, args=(call, record), daemon=True)
        self._threads.append(thread)
        thread.start()
        return operation.document(count_poll=False)

    def _source_files(self, storage: dict[str, Any]) -> tuple[str, ...]:
        if self.gcs is None:
            return ()
        path = self.gcs.root / storage["bucket"] / storage["object"]
        if not path.is_file():
            return ()
        with tarfile.open(fileobj=io.BytesIO(path.read_bytes()), mode="r:*") as tar:
            return tuple(m.name for m in tar.getmembers() if m.isfile())

    def _publish(self, call: Call, record: RecordedBuild) -> None:
        """Write the build's current status into its resource and its operation's metadata."""
        record.resource["status"] = BUILD_STATUSES[record.status] if call.ints_for_enums else record.status
        record.operation.metadata["build"] = record.resource

    def _run(self, call: Call, record: RecordedBuild) -> None:
        time.sleep(self.build_seconds / 2)
        with self.lock:
            if record.status in TERMINAL:
                return
            record.status = "WORKING"
            record.resource["startTime"] = now()
            self._publish(call, record)
        time.sleep(self.build_seconds / 2)
        with self.lock:
            if record.status in TERMINAL:
                return
            record.resource["finishTime"] = now()
            if record.fail_with is not None:
                self._fail(call, record)
                return
            denied = self._build_account_denied(record.resource)
            if denied is not None:
                record.fail_with = denied
                self._fail(call, record)
                return
            wanted = list(record.resource.get("images") or [])
            built = images_built_by(record.resource.get("steps") or [])
            unbuilt = [image for image in wanted if image not in built]
            if unbuilt:
                record.fail_with = IMAGES_NOT_FOUND.format(images=json.dumps(unbuilt))
                self._fail(call, record)
                return
            record.status = "SUCCESS"
            images = []
            for image in wanted:
                digest = "sha256:" + hashlib.sha256(f"{record.id}/{image}".encode()).hexdigest()
                images.append({"name": image, "digest": digest})
                self._push(image, digest)
            record.resource["results"] = {"images": images}
            self._publish(call, record)
            record.operation.finish({"@type": BUILD_TYPE + "Build", **record.resource})

    def _build_account_denied(self, build: dict[str, Any]) -> str | None:
        """What the build's account may not do that the build does: write its logs, fetch its source, push
        its images. Cloud Build fails the build with it (the caller got a 200 long before)."""
        if self.iam is None:
            return None
        account = str(build.get("serviceAccount") or "").rsplit("/", 1)[-1]
        member = (
            f"serviceAccount:{account}"
            if account
            else f"serviceAccount:{self.project_number}@cloudbuild.gserviceaccount.com"
        )
        if not self.iam.allows(member, "logging.logEntries.create", f"projects/{self.iam.project}"):
            return (
                f"The service account {account} does not have permission to write logs to Cloud Logging. "
                "To fix this, grant the Logs Writer (roles/logging.logWriter) role to the service account."
            )
        storage = (build.get("source") or {}).get("storageSource") or {}
        if storage and not self.iam.allows(member, "storage.objects.get", f"buckets/{storage.get('bucket')}"):
            return f"failed to fetch source: {storage_message(member, 'storage.objects.get')}"
        for image in build.get("images") or []:
            m = _IMAGE.fullmatch(image)
            repository = f"repositories/{m['repository']}" if m else ""
            if m and not self.iam.allows(member, "artifactregistry.repositories.uploadArtifacts", repository):
                where = f"projects/{m['project']}/locations/{m['location']}/{repository}"
                return (
                    f"failed to push {image}: denied: Permission "
                    f'"artifactregistry.repositories.uploadArtifacts" denied on resource "{where}" '
                    "(or it may not exist)"
                )
        return None

    def _fail(self, call: Call, record: RecordedBuild) -> None:
        record.status = "FAILURE"
        record.resource["statusDetail"] = record.fail_with
        record.resource["failureInfo"] = {
            "type": 3 if call.ints_for_enums else "USER_BUILD_STEP",
            "detail": record.fail_with,
        }
        self._publish(call, record)
        record.operation.finish(
            error={"code": RPC_CODES["UNKNOWN"], "message": "Build failed; check build logs for details"}
        )

    def _push(self, image: str, digest: str) -> None:
        m = _IMAGE.fullmatch(image)
        if m is None:
            return  # not an Artifact Registry image; nothing to record
        package = (
            f"projects/{m['project']}/locations/{m['location']}/repositories/{m['repository']}/packages/"
            + m["package"].replace("/", "%2F")
        )
        versions = self.packages.setdefault(package, {})
        for version in versions.values():
            version.tags.discard(m["tag"])  # a tag points to one version
        versions.setdefault(digest, _Version(digest)).tags.add(m["tag"])

    def _build(self, build_id: str) -> RecordedBuild:
        record = self.builds.get(build_id)
        if record is None:
            raise not_found(f"Build {build_id}")
        return record

    def _get_build(self, call: Call, match: re.Match[str]) -> Any:
        with self.lock:
            return self._document(call, self._build(match["id"]))

    @staticmethod
    def _document(call: Call, record: RecordedBuild) -> dict[str, Any]:
        document = dict(record.resource)
        document["status"] = BUILD_STATUSES[record.status] if call.ints_for_enums else record.status
        return document

    def _list_builds(self, call: Call, match: re.Match[str]) -> Any:
        """builds.list with a `tags="T"` filter (a build's tags hold T), in the location asked, one page."""
        terms = equality_filter(call.query.get("filter", ""), re.compile("tags"))
        location = match.groupdict().get("location") or "global"
        with self.lock:
            found = [
                self._document(call, record)
                for record in self.builds.values()
                if record.resource["name"].split("/")[3] == location
                and all(value in (record.resource.get("tags") or []) for value in terms.values())
            ]
        return {"builds": found} if found else {}

    def _cancel_build(self, call: Call, match: re.Match[str]) -> Any:
        with self.lock:
            record = self._build(match["id"])
            if record.status not in TERMINAL:
                record.status = "CANCELLED"
                record.resource["finishTime"] = now()
                self._publish(call, record)
                record.operation.finish(
                    error={"code": RPC_CODES["CANCELLED"], "message": "Build was cancelled"}
                )
            return self._get_build(call, match)

    def _get_operation(self, call: Call, match: re.Match[str]) -> Any:
        return self.operation_reply(match["name"])

    # -- Artifact Registry -------------------------------------------------------------------------
    def _package(self, match: re.Match[str]) -> tuple[str, dict[str, _Version]]:
        name = (
            f"projects/{match['project']}/locations/{match['location']}/repositories/{match['repository']}"
            f"/packages/{match['package']}"
        )
        versions = self.packages.get(name)
        if versions is None:
            raise not_found(f"Package {name}")
        return name, versions

    def _get_tag(self, call: Call, match: re.Match[str]) -> Any:
        with self.lock:
            package, versions = self._package(match)
            for version in versions.values():
                if match["tag"] in version.tags:
                    return {
                        "name": f"{package}/tags/{match['tag']}",
                        "version": f"{package}/versions/{version.digest}",
                    }
        raise not_found(f"Tag {package}/tags/{match['tag']}")

    def _delete_tag(self, call: Call, match: re.Match[str]) -> Any:
        with self.lock:
            package, versions = self._package(match)
            for version in versions.values():
                if match["tag"] in version.tags:
                    version.tags.discard(match["tag"])
                    return {}
        raise not_found(f"Tag {package}/tags/{match['tag']}")

    def _get_version(self, call: Call, match: re.Match[str]) -> Any:
        with self.lock:
            package, versions = self._package(match)
            version = versions.get(match["version"])
            if version is None:
                raise not_found(f"Version {package}/versions/{match['version']}")
            return {"name": f"{package}/versions/{version.digest}", "createTime": now(), "updateTime": now()}

    def _delete_version(self, call: Call, match: re.Match[str]) -> Any:
        with self.lock:
            package, versions = self._package(match)
            version = versions.get(match["version"])
            if version is None:
                raise not_found(f"Version {package}/versions/{match['version']}")
            if version.tags and call.query.get("force") != "true":
                raise failed_precondition(
                    f"Version {package}/versions/{version.digest} has tags {sorted(version.tags)}; "
                    "delete them "
                    "first or set force"
                )
            del versions[version.digest]
        operation = self.new_operation(
            f"projects/{match['project']}/locations/{match['location']}/operations/{uuid.uuid4()}",
            {"@type": REGISTRY_TYPE + "OperationMetadata"},
        )
        operation.finish()
        return operation.document(count_poll=False)


def images_built_by(steps: list[dict[str, Any]]) -> set[str]:
    """The image names the build's docker steps leave in the worker's local daemon: `docker build -t X`
    / `--tag X` / `--tag=X`, and `docker tag SOURCE X`."""
    built: set[str] = set()
    for step in steps:
        if step.get("name") not in DOCKER_BUILDERS:
            continue
        args = [str(a) for a in step.get("args") or []]
        if args[:1] == ["build"]:
            for i, arg in enumerate(args):
                if arg in ("-t", "--tag") and i + 1 < len(args):
                    built.add(args[i + 1])
                elif arg.startswith(("-t=", "--tag=")):
                    built.add(arg.split("=", 1)[1])
        elif args[:1] == ["tag"] and len(args) == 3:
            built.add(args[2])
    return built

"""Names, URIs and console links of the Vertex AI stack, derived (never looked up) from its inputs."""

from __future__ import annotations

from dataclasses import dataclass

from infra.hashing import content_hash

IMAGE_PACKAGE = "mnist-platform"
IMAGE_TAG_LENGTH = 12
# AiEndpoint.name: numeric, no leading zero, at most 10 digits (the API's form; Pulumi's auto-name is not).
ENDPOINT_ID_MIN = 1_000_000_000
ENDPOINT_ID_SPAN = 9_000_000_000


def endpoint_id(project: str, region: str, stack: str, name: str) -> str:
    """A stable 10-digit endpoint ID for this stack: the same on every `pulumi up`, another per stack."""
    digest = int(content_hash({"project": project, "region": region, "stack": stack, "name": name}, 16), 16)
    return str(ENDPOINT_ID_MIN + digest % ENDPOINT_ID_SPAN)


def image_tag(context_sha256: str) -> str:
    """The image's tag is the content hash of its build context: new code, new tag; same code, same tag."""
    return context_sha256[:IMAGE_TAG_LENGTH]


def image_uri(region: str, project: str, repository: str, tag: str) -> str:
    return f"{region}-docker.pkg.dev/{project}/{repository}/{IMAGE_PACKAGE}:{tag}"


@dataclass(frozen=True)
class ImageRef:
    """An Artifact Registry Docker image URI, taken apart."""

    location: str
    project: str
    repository: str
    package: str
    tag: str

    @classmethod
    def parse(cls, uri: str) -> ImageRef:
        host, project, repository, rest = uri.split("/", 3)
        if not host.endswith("-docker.pkg.dev") or ":" not in rest:
            raise ValueError(f"not an Artifact Registry image with a tag: {uri!r}")
        package, tag = rest.rsplit(":", 1)
        return cls(host.removesuffix("-docker.pkg.dev"), project, repository, package, tag)

    @property
    def package_name(self) -> str:
        # Artifact Registry's resource name escapes '/' in package names as %2F.
        package = self.package.replace("/", "%2F")
        repository = f"projects/{self.project}/locations/{self.location}/repositories/{self.repository}"
        return f"{repository}/packages/{package}"

    @property
    def tag_name(self) -> str:
        return f"{self.package_name}/tags/{self.tag}"


def gs_uri(bucket: str, *parts: str) -> str:
    path = "/".join(p.strip("/") for p in parts if p)
    return f"gs://{bucket}/{path}" if path else f"gs://{bucket}"


def custom_job_console_url(project: str, region: str, job_id: str) -> str:
    console = "https://console.cloud.google.com/vertex-ai"
    return f"{console}/locations/{region}/training/{job_id}/cpu?project={project}"


def resource_id(name: str) -> str:
    """`123` of `projects/p/locations/l/customJobs/123`."""
    return name.rsplit("/", 1)[-1]

"""Physical names and ARNs for the SageMaker stack, as pure functions (the unit tests call them directly)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# CreateTrainingJob / CreateEndpoint: 1-63 characters, ^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$.
SAGEMAKER_NAME_MAX = 63
_SAGEMAKER_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_IMAGE_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/(?P<repository>[^:@]+)[:@].+$"
)


def sagemaker_prefix(prefix: str, digest_length: int) -> str:
    """`prefix` cleaned to SageMaker's characters and cut so that `<prefix>-<digest>` fits in 63."""
    cleaned = re.sub(r"[^a-zA-Z0-9-]+", "-", prefix)
    cleaned = re.sub(r"-{2,}", "-", cleaned).strip("-")
    room = SAGEMAKER_NAME_MAX - digest_length - 1
    if room < 1 or not cleaned:
        raise ValueError(
            f"cannot make a SageMaker name prefix of {prefix!r} for a {digest_length}-char digest"
        )
    return cleaned[:room].rstrip("-")


def sagemaker_name(prefix: str, digest: str) -> str:
    """`<prefix>-<digest>` within SageMaker's 63 characters, keeping the whole digest.

    The digest carries the identity (a new digest is a new job or endpoint); the prefix only makes the
    name readable in the console, so it is the part that gets shortened. IAM policies scope to
    `sagemaker_prefix(prefix, len(digest)) + "-*"`, which matches every name built here.
    """
    name = f"{sagemaker_prefix(prefix, len(digest))}-{digest}"
    if not _SAGEMAKER_NAME.match(name):
        raise ValueError(f"cannot build a SageMaker name from prefix {prefix!r} and digest {digest!r}")
    return name


@dataclass(frozen=True)
class ImageRef:
    """Where an ECR image lives: what an IAM policy scopes its pull permissions to."""

    account: str
    region: str
    repository: str

    def repository_arn(self, partition: str) -> str:
        return f"arn:{partition}:ecr:{self.region}:{self.account}:repository/{self.repository}"


def parse_image_uri(image_uri: str) -> ImageRef:
    """`<account>.dkr.ecr.<region>.amazonaws.com/<repository>:<tag>` -> account, region, repository."""
    match = _IMAGE_URI.match(image_uri)
    if match is None:
        raise ValueError(f"not an ECR image URI: {image_uri!r}")
    return ImageRef(match["account"], match["region"], match["repository"])


def s3_uri(bucket: str, *parts: str) -> str:
    """`s3://bucket/a/b/` style URIs; a trailing slash is kept when the last part has one."""
    return "s3://" + "/".join([bucket, *parts])


def model_artifact_uri(bucket: str, output_prefix: str, job_name: str) -> str:
    """Where SageMaker writes a training job's model: `<S3OutputPath>/<job>/output/model.tar.gz`."""
    return s3_uri(bucket, output_prefix, job_name, "output", "model.tar.gz")

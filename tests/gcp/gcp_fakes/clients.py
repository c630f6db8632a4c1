"""The real Google clients, pointed at a fake the way the stack's providers point them (a placeholder
bearer token: the fakes refuse a request without one, as Google does)."""

from __future__ import annotations

from typing import Any

from infra.gcp.clients import LOOPBACK_ACCESS_TOKEN


def credentials(token: str = LOOPBACK_ACCESS_TOKEN) -> Any:
    """Static OAuth credentials: sent as `Authorization: Bearer <token>`, never refreshed."""
    from google.oauth2.credentials import Credentials

    return Credentials(token=token)


def client_kwargs(fake: Any, token: str | None = LOOPBACK_ACCESS_TOKEN) -> dict[str, Any]:
    """`transport`, `credentials` and `client_options` for a google-cloud v1 client of `fake`; `token=None`
    gives anonymous credentials (no Authorization header)."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return {
        "transport": "rest",
        "credentials": credentials(token) if token else AnonymousCredentials(),
        "client_options": ClientOptions(api_endpoint=fake.api_endpoint),
    }


def job_client(fake: Any, token: str | None = LOOPBACK_ACCESS_TOKEN) -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1.JobServiceClient(**client_kwargs(fake, token))


def model_client(fake: Any) -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1.ModelServiceClient(**client_kwargs(fake))


def endpoint_client(fake: Any) -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1.EndpointServiceClient(**client_kwargs(fake))


def prediction_client(fake: Any) -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1.PredictionServiceClient(**client_kwargs(fake))


def storage_client(fake: Any, token: str | None = LOOPBACK_ACCESS_TOKEN) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="mnist-test",
        credentials=credentials(token) if token else AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=fake.api_endpoint),
    )


def build_client(fake: Any) -> Any:
    from google.cloud.devtools import cloudbuild_v1

    return cloudbuild_v1.CloudBuildClient(**client_kwargs(fake))


def registry_client(fake: Any) -> Any:
    from google.cloud import artifactregistry_v1

    return artifactregistry_v1.ArtifactRegistryClient(**client_kwargs(fake))

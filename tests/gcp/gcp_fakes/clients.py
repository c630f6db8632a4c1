"""The real Google clients, pointed at a fake the way the stack's providers point them."""

from __future__ import annotations

from typing import Any


def client_kwargs(fake: Any) -> dict[str, Any]:
    """`transport`, `credentials` and `client_options` for a google-cloud v1 client of `fake`."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return {
        "transport": "rest",
        "credentials": AnonymousCredentials(),
        "client_options": ClientOptions(api_endpoint=fake.api_endpoint),
    }


def job_client(fake: Any) -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1.JobServiceClient(**client_kwargs(fake))


def model_client(fake: Any) -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1.ModelServiceClient(**client_kwargs(fake))


def endpoint_client(fake: Any) -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1.EndpointServiceClient(**client_kwargs(fake))


def prediction_client(fake: Any) -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1.PredictionServiceClient(**client_kwargs(fake))


def storage_client(fake: Any) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="mnist-test",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=fake.api_endpoint),
    )


def build_client(fake: Any) -> Any:
    from google.cloud.devtools import cloudbuild_v1

    return cloudbuild_v1.CloudBuildClient(**client_kwargs(fake))


def registry_client(fake: Any) -> Any:
    from google.cloud import artifactregistry_v1

    return artifactregistry_v1.ArtifactRegistryClient(**client_kwargs(fake))

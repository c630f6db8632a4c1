"""`mnistctl smoke --stack gcp` reaches the stack's endpoint output as it is: regional API endpoint,
the user's Application Default Credentials, the endpoint's resource path from project/region/name."""

from __future__ import annotations

import google.auth
import pytest
from google.auth.credentials import AnonymousCredentials

from mnistctl.client import VertexEndpointClient, client_for


def test_a_cloud_vertex_entry_uses_the_regional_endpoint_and_adc(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[object] = []

    def default(*args: object, **kwargs: object) -> tuple[AnonymousCredentials, str]:
        asked.append(kwargs.get("scopes") or args)
        return AnonymousCredentials(), "my-mnist-project"

    monkeypatch.setattr(google.auth, "default", default)
    entry = {
        "flavor": "vertex",
        "name": "1813407041",
        "region": "europe-west4",
        "project": "my-mnist-project",
    }
    client = client_for(entry)
    assert isinstance(client, VertexEndpointClient)
    assert asked, "no Application Default Credentials were asked for"
    transport = client._client._transport
    assert transport._host.rstrip("/").endswith("europe-west4-aiplatform.googleapis.com")
    assert client._path == "projects/my-mnist-project/locations/europe-west4/endpoints/1813407041"

"""Fixtures of the ibm tests: the loopback fake of IBM Cloud (tests/ibm/fakes) and clients of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import IbmCloudFake


@pytest.fixture
def ibm_cloud_fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[IbmCloudFake]:
    """Every fake IBM Cloud service on 127.0.0.1 over HTTPS. Its test CA is trusted for the test through
    REQUESTS_CA_BUNDLE (requests: IAM tokens, ibm-cloud-sdk-core services, ibm-watsonx-ai) and
    AWS_CA_BUNDLE (ibm_boto3's S3 calls); `.ca_file` is there for an explicit `verify=`."""
    fake = IbmCloudFake(tmp_path / "ibm-cloud-fake")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_file)
    monkeypatch.setenv("AWS_CA_BUNDLE", fake.ca_file)
    try:
        yield fake
    finally:
        fake.close()

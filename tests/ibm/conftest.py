"""Fixtures of the ibm tests: the loopback fake of IBM Cloud (tests/ibm/fakes) and clients of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import IbmCloudFake
from harness import ProviderEngine


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


@pytest.fixture(scope="session")
def onnx_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The PyTorch CNN, untrained (its answers do not matter to the fakes), exported as `mnistctl train`
    writes it: model.onnx and the model.tar.gz that watsonx.ai stores. Seconds, where training takes more."""
    import torch

    from training.artifacts import write_tar_gz
    from training.torch_trainer import MODEL_ARCHIVE, ONNX_FILE, Net, export_onnx

    out = tmp_path_factory.mktemp("ibm-onnx-model")
    torch.manual_seed(0)
    onnx_path = export_onnx(Net().eval(), out)
    write_tar_gz(out / MODEL_ARCHIVE, {ONNX_FILE: onnx_path.read_bytes()})
    return out


@pytest.fixture
def runtime_instances(ibm_cloud_fake: IbmCloudFake) -> tuple[dict, dict]:
    """An active COS instance and an active watsonx.ai Runtime (pm-20) instance in the fake account."""
    cos = ibm_cloud_fake.existing_instance("cloud-object-storage", "standard", "mnist-cos")
    runtime = ibm_cloud_fake.existing_instance("pm-20", "v2-standard", "mnist-runtime")
    return cos, runtime


@pytest.fixture
def engine(ibm_cloud_fake: IbmCloudFake) -> Iterator[ProviderEngine]:
    """The stand-in Pulumi engine (tests/harness.py) of the end-to-end tests; whatever a test leaves
    behind is destroyed (before the fake stops)."""
    engine = ProviderEngine()
    yield engine
    engine.destroy()

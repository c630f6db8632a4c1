"""The watsonx.ai fakes (data platform spaces and specifications, v4 models, deployments, scoring)
driven by ibm-watsonx-ai's APIClient in IBM Cloud mode and by mnistctl's WatsonxEndpointClient."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import requests
from fakes import IbmCloudFake
from fakes import clients as ibm
from ibm_watsonx_ai import APIClient
from ibm_watsonx_ai.wml_client_error import WMLClientError

from mnistctl import client as endpoint_clients
from serving.constants import Flavor
from training.datasets import load_dataset

ONNX_TYPE = "onnxruntime_1.16"
ONNX_SPEC = "onnxruntime_opset_19"


def create_space(client: APIClient, cos: dict, runtime: dict) -> str:
    names = client.spaces.ConfigurationMetaNames
    details = client.spaces.store(
        {
            names.NAME: "mnist-platform",
            names.STORAGE: {"resource_crn": cos["crn"]},
            names.COMPUTE: {"name": runtime["name"], "crn": runtime["crn"]},
        },
        background_mode=True,
    )
    return client.spaces.get_id(details)


def store_model(
    client: APIClient, model_dir: Path, model_type: str = ONNX_TYPE, spec: str = ONNX_SPEC
) -> str:
    names = client.repository.ModelMetaNames
    details = client.repository.store_model(
        str(model_dir / "model.tar.gz"),
        meta_props={
            names.NAME: "mnist-pytorch",
            names.TYPE: model_type,
            names.SOFTWARE_SPEC_ID: client.software_specifications.get_id_by_name(spec),
        },
    )
    return client.repository.get_model_id(details)


def deploy(client: APIClient, model_id: str, background: bool = False, hardware: dict | None = None) -> str:
    names = client.deployments.ConfigurationMetaNames
    details = client.deployments.create(
        model_id,
        meta_props={
            names.NAME: "mnist-pytorch",
            names.ONLINE: {},
            names.HARDWARE_SPEC: hardware or {"name": "XS"},
        },
        background_mode=background,
    )
    return client.deployments.get_id(details)


@pytest.fixture
def space_client(ibm_cloud_fake: IbmCloudFake, runtime_instances: tuple[dict, dict]) -> APIClient:
    client = ibm.watsonx(ibm_cloud_fake)
    client.set.default_space(create_space(client, *runtime_instances))
    return client


@pytest.fixture(scope="module")
def test_images(t10k_dir: Path) -> np.ndarray:
    return load_dataset("mnist-t10k", t10k_dir).x_test[:20].reshape(-1, 784).astype(np.float32) / 255.0


def test_space_prepares_then_is_active_and_owns_a_bucket_in_the_cos_instance(
    ibm_cloud_fake: IbmCloudFake, runtime_instances: tuple[dict, dict]
) -> None:
    cos, runtime = runtime_instances
    ibm_cloud_fake.slow_provisioning(polls=0, space_polls=1)
    client = ibm.watsonx(ibm_cloud_fake)
    space_id = create_space(client, cos, runtime)
    states = [client.spaces.get_details(space_id)["entity"]["status"]["state"] for _ in range(2)]
    assert states == ["preparing", "active"]
    entity = client.spaces.get_details(space_id)["entity"]
    assert entity["compute"][0] == {
        "name": runtime["name"],
        "crn": runtime["crn"],
        "guid": runtime["guid"],
        "type": "machine_learning",
    }
    bucket = entity["storage"]["properties"]["bucket_name"]
    assert ibm_cloud_fake.state.buckets[bucket].service_instance_id == cos["guid"]
    assert client.spaces.delete(space_id) == "SUCCESS"
    assert bucket not in ibm_cloud_fake.state.buckets


def test_a_space_needs_a_cos_instance_as_storage(
    ibm_cloud_fake: IbmCloudFake, runtime_instances: tuple[dict, dict]
) -> None:
    _, runtime = runtime_instances
    with pytest.raises(WMLClientError, match="is not a cloud-object-storage instance"):
        create_space(ibm.watsonx(ibm_cloud_fake), runtime, runtime)


def test_a_first_time_user_gets_the_user_profile_error(
    ibm_cloud_fake: IbmCloudFake, runtime_instances: tuple[dict, dict]
) -> None:
    ibm_cloud_fake.missing_user_profile()
    with pytest.raises(WMLClientError, match="no user profile"):
        create_space(ibm.watsonx(ibm_cloud_fake), *runtime_instances)


def test_software_specifications_carry_their_life_cycle(space_client: APIClient) -> None:
    specs = space_client.software_specifications
    by_name = {s["metadata"]["name"]: s["metadata"] for s in specs.get_details(state_info=True)["resources"]}
    assert "supported" in by_name["onnxruntime_opset_19"]["life_cycle"]
    assert "deprecated" in by_name["onnxruntime_opset_17"]["life_cycle"]
    assert by_name["onnxruntime_opset_17"]["life_cycle"]["replacement_name"] == "onnxruntime_opset_19"
    assert specs.get_id_by_name(ONNX_SPEC) == by_name[ONNX_SPEC]["asset_id"]
    hardware = space_client.hardware_specifications
    assert hardware.get_details(hardware.get_id_by_name("XS"))["metadata"]["name"] == "XS"


@pytest.mark.parametrize(
    ("model_type", "spec", "message"),
    [
        (ONNX_TYPE, "onnxruntime_opset_15", "retired: use onnxruntime_opset_19"),
        ("onnxruntime_1.17", ONNX_SPEC, "Unsupported model type and software specification combination"),
    ],
)
def test_a_model_type_and_software_spec_must_go_together(
    space_client: APIClient, onnx_model_dir: Path, model_type: str, spec: str, message: str
) -> None:
    with pytest.raises(WMLClientError, match=message):
        store_model(space_client, onnx_model_dir, model_type, spec)


def test_an_onnx_model_archive_must_hold_an_onnx_file(space_client: APIClient, tmp_path: Path) -> None:
    from training.artifacts import write_tar_gz

    write_tar_gz(tmp_path / "model.tar.gz", {"model.pt": b"a TorchScript file, not ONNX"})
    with pytest.raises(WMLClientError, match=r"exactly one \.onnx file"):
        store_model(space_client, tmp_path)


@pytest.mark.slow
def test_online_deployment_serves_the_stored_model_to_both_clients(
    ibm_cloud_fake: IbmCloudFake,
    space_client: APIClient,
    onnx_model_dir: Path,
    test_images: np.ndarray,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_id = store_model(space_client, onnx_model_dir)
    deployment_id = deploy(space_client, model_id)
    assert space_client.deployments.get_details(deployment_id)["entity"]["status"]["state"] == "ready"
    session = onnxruntime.InferenceSession(str(onnx_model_dir / "model.onnx"))
    expected = session.run(None, {"input": test_images.reshape(-1, 1, 28, 28)})[0]

    # As IBM's ONNX samples score: each image in the shape the model declares, [1, 28, 28].
    as_declared = test_images.reshape(-1, 1, 28, 28).tolist()
    scored = space_client.deployments.score(deployment_id, {"input_data": [{"values": as_declared}]})
    np.testing.assert_allclose(scored["predictions"][0]["values"], expected, atol=1e-5)
    # The runtime does not reshape: flat pixels are refused in onnxruntime's words, through the SDK too.
    with pytest.raises(WMLClientError, match=r"Invalid rank for input: input Got: 2 Expected: 4"):
        space_client.deployments.score(deployment_id, {"input_data": [{"values": test_images.tolist()}]})

    monkeypatch.setattr(endpoint_clients, "IBM_IAM_TOKEN_URL", ibm_cloud_fake.token_url)
    monkeypatch.setenv("IBMCLOUD_API_KEY", ibm_cloud_fake.api_key)
    ibm_cloud_fake.fail_next("POST", r"/predictions$", 429)  # the client retries a throttled call
    endpoint = endpoint_clients.Endpoint(
        flavor=Flavor.WATSONX, name=deployment_id, url=ibm_cloud_fake.wml_url, region="us-south"
    )
    probabilities = endpoint_clients.client_for(endpoint).predict(test_images)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    # the SDK twice (as declared, flat and refused), then the client: 429, retry
    assert len(ibm_cloud_fake.requests_to("wml", "POST", r"/predictions$")) == 4

    server = ibm_cloud_fake.state.deployments[deployment_id].process
    with pytest.raises(WMLClientError):  # a model still deployed cannot go first
        space_client.repository.delete(model_id)
    assert space_client.deployments.delete(deployment_id) == "SUCCESS"
    assert server is not None and server.poll() is not None  # the model server was stopped
    assert space_client.repository.delete(model_id) == "SUCCESS"


def test_a_failing_deployment_reports_its_own_message(
    ibm_cloud_fake: IbmCloudFake, space_client: APIClient, onnx_model_dir: Path
) -> None:
    ibm_cloud_fake.fail_deployments("Deployment failed: not enough capacity for hardware spec XS.")
    deployment_id = deploy(space_client, store_model(space_client, onnx_model_dir), background=True)
    states = [space_client.deployments.get_details(deployment_id)["entity"]["status"] for _ in range(2)]
    assert [s["state"] for s in states] == ["initializing", "failed"]
    assert states[1]["failure"]["errors"][0]["message"] == (
        "Deployment failed: not enough capacity for hardware spec XS."
    )


def test_a_deployment_keeps_the_hardware_spec_and_node_count_it_was_asked_for(
    space_client: APIClient, onnx_model_dir: Path
) -> None:
    model_id = store_model(space_client, onnx_model_dir)
    deployment_id = deploy(space_client, model_id, background=True, hardware={"name": "S", "num_nodes": 3})
    hardware = space_client.deployments.get_details(deployment_id)["entity"]["hardware_spec"]
    assert (hardware["name"], hardware["num_nodes"]) == ("S", 3)


@pytest.mark.parametrize(
    ("hardware", "words"),
    [({"name": "XXS"}, "not supported for deployments"), ({"name": "XS", "num_nodes": 0}, "num_nodes")],
)
def test_hardware_a_deployment_cannot_use_is_refused(
    space_client: APIClient, onnx_model_dir: Path, hardware: dict, words: str
) -> None:
    model_id = store_model(space_client, onnx_model_dir)
    with pytest.raises(WMLClientError, match=words):
        deploy(space_client, model_id, background=True, hardware=hardware)


def test_v4_calls_need_a_version_a_token_and_a_known_id(
    ibm_cloud_fake: IbmCloudFake, space_client: APIClient
) -> None:
    url = f"{ibm_cloud_fake.wml_url}/ml/v4/deployments/no-such-deployment"
    token = ibm.authenticator(ibm_cloud_fake).token_manager.get_token()
    auth = {"Authorization": f"Bearer {token}"}
    space = space_client.default_space_id
    no_version = requests.get(url, params={"space_id": space}, headers=auth, timeout=10)
    assert no_version.status_code == 400
    assert no_version.json()["errors"][0]["code"] == "missing_query_parameter"
    assert (
        requests.get(url, params={"version": "2024-05-01", "space_id": space}, timeout=10).status_code == 401
    )
    for method in ("GET", "DELETE"):
        missing = requests.request(
            method, url, params={"version": "2024-05-01", "space_id": space}, headers=auth, timeout=10
        )
        assert missing.status_code == 404, method
    scoring = requests.post(
        f"{url}/predictions", params={"version": "2024-05-01"}, headers=auth, json={}, timeout=10
    )
    assert scoring.status_code == 404

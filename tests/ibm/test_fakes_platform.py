"""The IAM, Global Catalog, Resource Controller and IAM Policy fakes, driven by IBM's own SDK clients
(ibm-cloud-sdk-core's IAMAuthenticator, ibm-platform-services) over HTTPS with the test CA."""

from __future__ import annotations

import time

import jwt
import pytest
import requests
from fakes import ACCOUNT_ID, IbmCloudFake
from fakes import clients as ibm
from ibm_cloud_sdk_core import ApiException

READER = "crn:v1:bluemix:public:iam::::serviceRole:Reader"


def plan_id(fake: IbmCloudFake, service: str, plan: str) -> str:
    """Resolve a plan id by names through Global Catalog, as the stack must (no hard-coded ids)."""
    catalog = ibm.global_catalog(fake)
    (entry,) = catalog.list_catalog_entries(q=f"name:{service} active:true").get_result()["resources"]
    plans = catalog.get_child_objects(id=entry["id"], kind="plan").get_result()["resources"]
    return next(p["id"] for p in plans if p["name"] == plan)


def create_instance(fake: IbmCloudFake, service: str, plan: str, target: str) -> dict:
    return (
        ibm.resource_controller(fake)
        .create_resource_instance(
            name=f"test-{service}",
            target=target,
            resource_group=fake.resource_group_id,
            resource_plan_id=plan_id(fake, service, plan),
        )
        .get_result()
    )


def test_api_key_grant_returns_a_jwt_the_sdk_decodes(ibm_cloud_fake: IbmCloudFake) -> None:
    token = ibm.authenticator(ibm_cloud_fake).token_manager.get_token()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["account"]["bss"] == ACCOUNT_ID
    assert claims["iam_id"].startswith("iam-ServiceId-")
    assert claims["exp"] - claims["iat"] == 3600


def test_a_wrong_api_key_gets_iams_error_shape(ibm_cloud_fake: IbmCloudFake) -> None:
    response = requests.post(
        ibm_cloud_fake.token_url,
        data={"grant_type": "urn:ibm:params:oauth:grant-type:apikey", "apikey": "not-the-key"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["errorCode"] == "BXNIM0415E"
    assert "API key could not be found" in response.json()["errorMessage"]


def test_an_expired_token_is_refused_and_the_sdk_renews_it(ibm_cloud_fake: IbmCloudFake) -> None:
    ibm_cloud_fake.short_token_expiry(3)  # long enough for a fresh token to arrive on a busy machine
    controller = ibm.resource_controller(ibm_cloud_fake)
    old = ibm.authenticator(ibm_cloud_fake).token_manager.get_token()
    time.sleep(4.1)  # past `exp`, which counts whole seconds from `iat`
    stale = requests.get(
        ibm_cloud_fake.resource_controller_url + "/v2/resource_instances",
        headers={"Authorization": f"Bearer {old}"},
        timeout=10,
    )
    assert stale.status_code == 401
    before = ibm_cloud_fake.state.iam.issued
    assert controller.list_resource_instances().get_result()["resources"] == []
    assert ibm_cloud_fake.state.iam.issued > before  # a fresh token was fetched for the call


def test_catalog_resolves_services_and_plans_by_name(ibm_cloud_fake: IbmCloudFake) -> None:
    assert plan_id(ibm_cloud_fake, "cloud-object-storage", "standard") != plan_id(
        ibm_cloud_fake, "cloud-object-storage", "lite"
    )
    catalog = ibm.global_catalog(ibm_cloud_fake)
    (runtime,) = catalog.list_catalog_entries(q="name:pm-20").get_result()["resources"]
    assert runtime["kind"] == "service"
    runtime_plans = catalog.get_child_objects(id=runtime["id"], kind="plan").get_result()["resources"]
    assert {"lite", "v2-standard"} <= {p["name"] for p in runtime_plans}
    assert all(p["parent_id"] == runtime["id"] for p in runtime_plans)
    with pytest.raises(ApiException) as by_name:  # ids only: a name is for `q=name:...`
        catalog.get_child_objects(id="pm-20", kind="plan")
    assert by_name.value.status_code == 404


def test_instance_provisions_then_is_active(ibm_cloud_fake: IbmCloudFake) -> None:
    ibm_cloud_fake.slow_provisioning(polls=2)
    created = create_instance(ibm_cloud_fake, "pm-20", "v2-standard", "us-south")
    assert created["state"] == "provisioning"
    assert created["crn"].startswith("crn:v1:bluemix:public:pm-20:us-south:a/")
    controller = ibm.resource_controller(ibm_cloud_fake)
    states = [controller.get_resource_instance(id=created["guid"]).get_result()["state"] for _ in range(4)]
    assert states == ["provisioning", "provisioning", "active", "active"]
    assert (
        controller.get_resource_instance(id=created["id"]).get_result()["guid"] == created["guid"]
    )  # by CRN


def test_delete_soft_deletes_and_reclaim_purges(ibm_cloud_fake: IbmCloudFake) -> None:
    created = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard", "global")
    controller = ibm.resource_controller(ibm_cloud_fake)
    assert controller.delete_resource_instance(id=created["guid"]).get_status_code() == 202
    assert controller.get_resource_instance(id=created["guid"]).get_result()["state"] == "pending_reclamation"
    (reclamation,) = controller.list_reclamations(resource_instance_id=created["guid"]).get_result()[
        "resources"
    ]
    assert reclamation["state"] == "SCHEDULED"
    controller.run_reclamation_action(id=reclamation["id"], action_name="reclaim")
    with pytest.raises(ApiException) as gone:
        controller.get_resource_instance(id=created["guid"])
    assert gone.value.status_code == 404
    assert controller.list_reclamations().get_result()["resources"] == []


def test_unknown_instance_is_404_with_ibms_error_model(ibm_cloud_fake: IbmCloudFake) -> None:
    with pytest.raises(ApiException) as missing:
        ibm.resource_controller(ibm_cloud_fake).delete_resource_instance(id="no-such-guid")
    assert missing.value.status_code == 404
    assert "no-such-guid" in (missing.value.message or "")


def test_a_second_lite_instance_is_refused_even_when_soft_deleted(ibm_cloud_fake: IbmCloudFake) -> None:
    existing = ibm_cloud_fake.existing_instance("pm-20", "lite")
    found = (
        ibm.resource_controller(ibm_cloud_fake)
        .list_resource_instances(resource_plan_id=existing["resource_plan_id"])
        .get_result()["resources"]
    )
    assert [i["guid"] for i in found] == [existing["guid"]]
    ibm.resource_controller(ibm_cloud_fake).delete_resource_instance(id=existing["guid"])
    with pytest.raises(ApiException) as refused:
        create_instance(ibm_cloud_fake, "pm-20", "lite", "us-south")
    assert refused.value.status_code == 400
    assert "one instance of a Lite plan" in (refused.value.message or "")


def test_429_then_success(ibm_cloud_fake: IbmCloudFake) -> None:
    ibm_cloud_fake.fail_next("GET", r"^/v2/resource_instances$", 429, times=1)
    controller = ibm.resource_controller(ibm_cloud_fake)
    with pytest.raises(ApiException) as throttled:
        controller.list_resource_instances()
    assert throttled.value.status_code == 429
    assert controller.list_resource_instances().get_status_code() == 200
    assert len(ibm_cloud_fake.requests_to("resource-controller", "GET", r"^/v2/resource_instances$")) == 2


def test_sdk_retries_ride_out_injected_503s(ibm_cloud_fake: IbmCloudFake) -> None:
    ibm_cloud_fake.fail_next("GET", r"^/v2/resource_instances$", 503, times=2)
    controller = ibm.resource_controller(ibm_cloud_fake)
    controller.enable_retries(max_retries=3, retry_interval=0.1)
    assert controller.list_resource_instances().get_status_code() == 200


def test_authorization_policy_create_get_delete(ibm_cloud_fake: IbmCloudFake) -> None:
    policies = ibm.iam_policies(ibm_cloud_fake)
    subject = {
        "attributes": [
            {"name": "accountId", "value": ACCOUNT_ID},
            {"name": "serviceName", "value": "cloud-object-storage"},
        ]
    }
    resource = {
        "attributes": [{"name": "accountId", "value": ACCOUNT_ID}, {"name": "serviceName", "value": "kms"}]
    }
    created = policies.create_policy(
        type="authorization", subjects=[subject], roles=[{"role_id": READER}], resources=[resource]
    ).get_result()
    assert policies.get_policy(policy_id=created["id"]).get_result()["roles"][0]["display_name"] == "Reader"
    with pytest.raises(ApiException) as duplicate:
        policies.create_policy(
            type="authorization", subjects=[subject], roles=[{"role_id": READER}], resources=[resource]
        )
    assert duplicate.value.status_code == 409
    policies.delete_policy(policy_id=created["id"])
    with pytest.raises(ApiException) as deleted:
        policies.get_policy(policy_id=created["id"])
    assert deleted.value.status_code == 404


def test_every_call_without_a_token_is_401(ibm_cloud_fake: IbmCloudFake) -> None:
    for url in (
        ibm_cloud_fake.resource_controller_url + "/v2/resource_instances",
        ibm_cloud_fake.global_catalog_url + "?q=name:pm-20",
        ibm_cloud_fake.iam_policy_url + f"/v1/policies?account_id={ACCOUNT_ID}",
        ibm_cloud_fake.platform_url + "/v2/spaces",
    ):
        assert requests.get(url, timeout=10).status_code == 401, url

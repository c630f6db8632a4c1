"""The ibm stack's dynamic providers against the loopback fakes of IBM Cloud (tests/ibm/fakes), with
IBM's own SDK clients inside them, over HTTPS with the test CA: what each create waits for, what each
delete removes, and how they ride out 429s, expired tokens, a slow broker, and things already gone."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import requests
from fakes import ACCOUNT_ID, IbmCloudFake
from fakes import clients as ibm
from test_fakes_watsonx import create_space, store_model

from infra.ibm import connection
from infra.ibm.authorization import ServiceAuthorizationProvider
from infra.ibm.bucket import CosBucketProvider
from infra.ibm.connection import IbmProviderError
from infra.ibm.deployment import OnlineDeploymentProvider, deployment_status
from infra.ibm.model import Runtime, choose_runtime
from infra.ibm.resource_instance import ResourceInstanceProvider
from infra.ibm.space import DeploymentSpaceProvider

KMS_INSTANCE = "6f6a3f8e-1f0b-4b43-9e58-0c5d9c1b8b2a"
KEY_ID = "0b9b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
ROOT_KEY = f"crn:v1:bluemix:public:kms:us-south:a/{ACCOUNT_ID}:{KMS_INSTANCE}:key:{KEY_ID}"


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    # Same backoff policy, compressed: the tests prove it retries, not how long it sleeps.
    monkeypatch.setattr(connection, "wait_exponential", lambda **_: lambda _state: 0.01)


def common(fake: IbmCloudFake) -> dict[str, Any]:
    """The inputs every provider gets: the API key and the fake's URLs (production leaves them unset)."""
    return {
        "api_key": fake.api_key,
        "region": fake.region,
        "endpoints": {
            "iam_url": fake.iam_url,
            "resource_controller_url": fake.resource_controller_url,
            "global_catalog_url": fake.global_catalog_url,
            "iam_policy_url": fake.iam_policy_url,
            "cos_url": fake.cos_url,
            "wml_url": fake.wml_url,
            "platform_url": fake.platform_url,
            "ca_file": fake.ca_file,
            "poll_seconds": "0.05",
        },
    }


def instance_props(fake: IbmCloudFake, service: str = "pm-20", plan: str = "v2-standard") -> dict[str, Any]:
    return {
        "name": f"mnist-platform-test-{service}",
        "service": service,
        "plan": plan,
        "target": "global" if service == "cloud-object-storage" else fake.region,
        "resource_group": fake.resource_group_id,
        "tags": ["project:mnist-platform", "stack:test"],
        **common(fake),
    }


def create_instance(fake: IbmCloudFake, service: str = "pm-20", plan: str = "v2-standard") -> dict[str, Any]:
    props = instance_props(fake, service, plan)
    result = ResourceInstanceProvider().create(props)
    return {**props, **(result.outs or {}), "id": result.id}


# -- resource instances ----------------------------------------------------------------------------


def test_instance_create_waits_while_the_broker_is_still_provisioning(ibm_cloud_fake: IbmCloudFake):
    ibm_cloud_fake.slow_provisioning(polls=3)
    instance = create_instance(ibm_cloud_fake)
    assert instance["state"] == "active"
    assert ibm_cloud_fake.state.instances[instance["guid"]]["state"] == "active"
    polls = ibm_cloud_fake.requests_to("resource-controller", "GET", r"/v2/resource_instances/")
    assert len(polls) >= 3  # `provisioning` until the broker is done, then `active`
    created = ibm_cloud_fake.state.instances[instance["guid"]]
    assert created["tags"] == ["project:mnist-platform", "stack:test"] or "tags" not in created


def test_instance_plan_is_resolved_by_name_in_the_global_catalog(ibm_cloud_fake: IbmCloudFake):
    instance = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    stored = ibm_cloud_fake.state.instances[instance["guid"]]
    assert stored["resource_plan_id"] == instance["plan_id"]
    assert ibm_cloud_fake.requests_to("global-catalog", "GET", r"/plan")
    assert stored["crn"] == instance["crn"]


def test_instance_create_retries_429_and_503_then_succeeds(ibm_cloud_fake: IbmCloudFake):
    ibm_cloud_fake.fail_next("POST", r"^/v2/resource_instances$", 429, times=2)
    ibm_cloud_fake.fail_next("GET", r"^/v2/resource_instances/", 503, times=1)
    instance = create_instance(ibm_cloud_fake)
    assert instance["state"] == "active"
    posts = ibm_cloud_fake.requests_to("resource-controller", "POST", r"^/v2/resource_instances$")
    assert len(posts) == 3
    assert len([i for i in ibm_cloud_fake.state.instances.values() if i["state"] == "active"]) == 1


def test_instance_create_reports_the_apis_own_message(ibm_cloud_fake: IbmCloudFake):
    ibm_cloud_fake.fail_next("POST", r"^/v2/resource_instances$", 400, times=1)
    with pytest.raises(IbmProviderError, match=r"creating the pm-20 instance .* failed \(HTTP 400\): \S"):
        create_instance(ibm_cloud_fake)


def test_a_second_lite_instance_is_refused_naming_the_existing_one(ibm_cloud_fake: IbmCloudFake):
    existing = ibm_cloud_fake.existing_instance("pm-20", "lite", name="someones-lite-runtime")
    with pytest.raises(IbmProviderError, match="already has a Lite pm-20 instance") as error:
        create_instance(ibm_cloud_fake, "pm-20", "lite")
    assert "someones-lite-runtime" in str(error.value)
    assert existing["guid"] in str(error.value)
    assert not ibm_cloud_fake.requests_to("resource-controller", "POST", r"^/v2/resource_instances$")


def test_a_soft_deleted_lite_instance_is_named_with_the_reclamation_that_frees_its_place(
    ibm_cloud_fake: IbmCloudFake,
):
    deleted = ibm_cloud_fake.existing_instance("pm-20", "lite", name="deleted-last-week")
    ibm.resource_controller(ibm_cloud_fake).delete_resource_instance(id=deleted["guid"], recursive=True)
    (reclamation,) = ibm_cloud_fake.state.reclamations.values()

    with pytest.raises(IbmProviderError, match="is waiting for reclamation") as error:
        create_instance(ibm_cloud_fake, "pm-20", "lite")

    assert "deleted-last-week" in str(error.value)
    assert f"reclamation-delete {reclamation['id']}" in str(error.value)
    assert not ibm_cloud_fake.requests_to("resource-controller", "POST", r"^/v2/resource_instances$")


def test_an_instance_create_answered_503_after_it_landed_is_adopted_not_made_twice(
    ibm_cloud_fake: IbmCloudFake,
):
    ibm_cloud_fake.fail_next("POST", r"^/v2/resource_instances$", 503, after_commit=True)
    instance = create_instance(ibm_cloud_fake)
    named = [i for i in ibm_cloud_fake.state.instances.values() if i["name"] == "mnist-platform-test-pm-20"]
    assert [i["guid"] for i in named] == [instance["guid"]]
    assert len(ibm_cloud_fake.requests_to("resource-controller", "POST", r"^/v2/resource_instances$")) == 1


def test_an_instance_create_answered_503_before_it_landed_is_sent_again(ibm_cloud_fake: IbmCloudFake):
    ibm_cloud_fake.fail_next("POST", r"^/v2/resource_instances$", 503)
    instance = create_instance(ibm_cloud_fake)
    assert instance["state"] == "active"
    assert len(ibm_cloud_fake.requests_to("resource-controller", "POST", r"^/v2/resource_instances$")) == 2
    assert len(ibm_cloud_fake.state.instances) == 1


def test_a_reclamation_that_shows_late_is_still_reclaimed(ibm_cloud_fake: IbmCloudFake):
    ibm_cloud_fake.slow_reclamations(listings=3)
    instance = create_instance(ibm_cloud_fake)
    ResourceInstanceProvider().delete(instance["id"], instance)
    assert ibm_cloud_fake.requests_to("resource-controller", "POST", r"/v1/reclamations/.*/actions/reclaim")
    assert instance["guid"] not in ibm_cloud_fake.state.instances


def test_a_reclamation_that_never_shows_is_reported_not_passed_over(
    ibm_cloud_fake: IbmCloudFake, monkeypatch: pytest.MonkeyPatch
):
    from infra.ibm import resource_instance

    monkeypatch.setattr(resource_instance, "RECLAMATION_TIMEOUT_SECONDS", 0.5)
    ibm_cloud_fake.slow_reclamations(listings=None)
    instance = create_instance(ibm_cloud_fake)
    with pytest.raises(IbmProviderError, match="no reclamation for it appeared") as error:
        ResourceInstanceProvider().delete(instance["id"], instance)
    assert "ibmcloud resource reclamations" in str(error.value)


def test_an_instance_an_earlier_create_left_failed_is_removed_and_a_new_one_made(
    ibm_cloud_fake: IbmCloudFake,
):
    failed = ibm_cloud_fake.resource_controller.add_instance(
        "pm-20",
        "v2-standard",
        "mnist-platform-test-pm-20",
        ibm_cloud_fake.region,
        created_by="us",
        state="failed",
    )
    instance = create_instance(ibm_cloud_fake)
    assert instance["guid"] != failed["guid"] and instance["state"] == "active"
    assert ibm_cloud_fake.state.instances[failed["guid"]]["state"] == "pending_reclamation"  # deleted


def test_an_instance_left_provisioning_by_an_interrupted_create_is_waited_for_and_adopted(
    ibm_cloud_fake: IbmCloudFake,
):
    ibm_cloud_fake.slow_provisioning(polls=2)
    left = ibm_cloud_fake.resource_controller.add_instance(
        "pm-20",
        "v2-standard",
        "mnist-platform-test-pm-20",
        ibm_cloud_fake.region,
        created_by="us",
        state="provisioning",
    )
    ibm_cloud_fake.state.instance_polls[left["guid"]] = 2
    instance = create_instance(ibm_cloud_fake)
    assert instance["guid"] == left["guid"] and instance["state"] == "active"
    assert not ibm_cloud_fake.requests_to("resource-controller", "POST", r"^/v2/resource_instances$")


def test_instance_delete_also_purges_the_reclamation(ibm_cloud_fake: IbmCloudFake):
    instance = create_instance(ibm_cloud_fake)
    ResourceInstanceProvider().delete(instance["id"], instance)
    assert ibm_cloud_fake.requests_to("resource-controller", "POST", r"/v1/reclamations/.*/actions/reclaim")
    left = ibm_cloud_fake.state.instances.get(instance["guid"])
    assert left is None or left["state"] == "removed"
    assert all(r["state"] != "SCHEDULED" for r in ibm_cloud_fake.state.reclamations.values())


def test_deleting_an_instance_that_is_already_gone_succeeds(ibm_cloud_fake: IbmCloudFake):
    instance = create_instance(ibm_cloud_fake)
    ResourceInstanceProvider().delete(instance["id"], instance)
    ResourceInstanceProvider().delete(instance["id"], instance)  # 404 (or removed): already gone
    assert ResourceInstanceProvider().read(instance["id"], instance).id is None


def test_an_expired_token_is_renewed_between_calls(ibm_cloud_fake: IbmCloudFake):
    ibm_cloud_fake.short_token_expiry(1)
    ibm_cloud_fake.slow_provisioning(polls=2)
    instance = create_instance(ibm_cloud_fake)
    issued = ibm_cloud_fake.state.iam.issued
    time.sleep(1.5)
    ResourceInstanceProvider().delete(instance["id"], instance)
    assert ibm_cloud_fake.state.iam.issued > issued


def instance_deletes(fake: IbmCloudFake) -> int:
    """DELETE requests that reached the Resource Controller's instances (refused ones included)."""
    return len(fake.requests_to("resource-controller", "DELETE", r"^/v2/resource_instances/"))


def test_a_token_refused_in_flight_is_retried_once(ibm_cloud_fake: IbmCloudFake):
    # A token the SDK sent while still valid can expire before the service checks it: IBM answers 401.
    instance = create_instance(ibm_cloud_fake)
    ibm_cloud_fake.fail_next("DELETE", r"^/v2/resource_instances/", 401)
    ResourceInstanceProvider().delete(instance["id"], instance)
    assert instance_deletes(ibm_cloud_fake) == 2
    left = ibm_cloud_fake.state.instances.get(instance["guid"])
    assert left is None or left["state"] == "removed"


def test_a_401_after_a_transient_error_is_still_retried_once(ibm_cloud_fake: IbmCloudFake):
    instance = create_instance(ibm_cloud_fake)
    ibm_cloud_fake.fail_next("DELETE", r"^/v2/resource_instances/", 503)
    ibm_cloud_fake.fail_next("DELETE", r"^/v2/resource_instances/", 401)  # the token expired meanwhile
    ResourceInstanceProvider().delete(instance["id"], instance)
    assert instance_deletes(ibm_cloud_fake) == 3


def test_a_second_401_is_reported_not_retried_again(ibm_cloud_fake: IbmCloudFake):
    instance = create_instance(ibm_cloud_fake)
    ibm_cloud_fake.fail_next("DELETE", r"^/v2/resource_instances/", 401, times=3)
    with pytest.raises(IbmProviderError, match=r"\(HTTP 401\)"):
        ResourceInstanceProvider().delete(instance["id"], instance)
    assert instance_deletes(ibm_cloud_fake) == 2


def test_a_rotated_api_key_is_recorded_by_update_and_used_by_delete(ibm_cloud_fake: IbmCloudFake):
    instance = create_instance(ibm_cloud_fake)
    rotated = {**instance, "api_key": "rotated-key"}
    provider = ResourceInstanceProvider()
    diff = provider.diff(instance["id"], instance, rotated)
    assert diff.changes and not diff.replaces  # a new key is no reason to rebuild anything
    outs = provider.update(instance["id"], instance, rotated).outs or {}
    assert outs["api_key"] == "rotated-key"
    ibm_cloud_fake.state.api_keys.add("rotated-key")
    ibm_cloud_fake.state.api_keys.discard(ibm_cloud_fake.api_key)
    provider.delete(instance["id"], outs)
    assert ibm_cloud_fake.requests_to("resource-controller", "DELETE", r"/v2/resource_instances/")


# -- bucket and Key Protect authorization ----------------------------------------------------------


def bucket_props(fake: IbmCloudFake, cos: dict[str, Any], kms_key_crn: str | None = None) -> dict[str, Any]:
    return {
        "prefix": "mnist-platform-test",
        "location": "us-south-standard",
        "cos_instance_crn": cos["crn"],
        "kms_key_crn": kms_key_crn,
        "public_access": False,
        "force_destroy": True,
        **common(fake),
    }


def test_bucket_is_created_in_its_location_and_deleted_with_its_objects(ibm_cloud_fake: IbmCloudFake):
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    props = bucket_props(ibm_cloud_fake, cos)
    created = CosBucketProvider().create(props)
    name = created.id
    stored = ibm_cloud_fake.state.buckets[name]
    assert stored.location_constraint == "us-south-standard"
    assert stored.service_instance_id in cos["crn"]  # the bucket belongs to the stack's instance
    assert stored.kp_root_key_crn is None
    s3 = connection.Connection.of(props).cos_client()
    for key in ("models/a/model.tar.gz", "models/a/metrics.json"):
        s3.put_object(Bucket=name, Key=key, Body=b"x")
    CosBucketProvider().delete(name, {**props, **(created.outs or {})})
    assert name not in ibm_cloud_fake.state.buckets
    CosBucketProvider().delete(name, {**props, **(created.outs or {})})  # already gone


def test_a_versioned_bucket_is_emptied_of_every_version_and_delete_marker_before_it_goes(
    ibm_cloud_fake: IbmCloudFake,
):
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    props = bucket_props(ibm_cloud_fake, cos)
    created = CosBucketProvider().create(props)
    s3 = connection.Connection.of(props).cos_client()
    # Someone turned versioning on (a retention rule, a console click): deletes now leave versions behind.
    s3.put_bucket_versioning(Bucket=created.id, VersioningConfiguration={"Status": "Enabled"})
    for body in (b"first", b"second"):
        s3.put_object(Bucket=created.id, Key="models/a/model.tar.gz", Body=body)
    s3.delete_object(Bucket=created.id, Key="models/a/model.tar.gz")
    listed = s3.list_object_versions(Bucket=created.id)
    assert (len(listed["Versions"]), len(listed["DeleteMarkers"])) == (2, 1)
    assert not s3.list_objects_v2(Bucket=created.id).get("Contents")  # the plain listing sees nothing

    CosBucketProvider().delete(created.id, {**props, **(created.outs or {})})

    assert created.id not in ibm_cloud_fake.state.buckets


def authorization_props(fake: IbmCloudFake, cos: dict[str, Any]) -> dict[str, Any]:
    """COS (the instance `cos`) may read the keys of the test's Key Protect instance."""
    return {
        "account_id": ACCOUNT_ID,
        "source_service": "cloud-object-storage",
        "source_instance_guid": cos["guid"],
        "target_service": "kms",
        "target_instance_guid": KMS_INSTANCE,
        "role": "Reader",
        **common(fake),
    }


def test_bucket_with_a_root_key_after_the_authorization_cos_reads_keys(ibm_cloud_fake: IbmCloudFake):
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    authorization = authorization_props(ibm_cloud_fake, cos)
    policy = ServiceAuthorizationProvider().create(authorization)
    assert policy.id in ibm_cloud_fake.state.policies
    created = CosBucketProvider().create(bucket_props(ibm_cloud_fake, cos, ROOT_KEY))
    stored = ibm_cloud_fake.state.buckets[created.id]
    assert (stored.kp_algorithm, stored.kp_root_key_crn) == ("AES256", ROOT_KEY)
    ServiceAuthorizationProvider().delete(policy.id, authorization)
    assert (
        policy.id not in ibm_cloud_fake.state.policies
        or ibm_cloud_fake.state.policies[policy.id].get("state") == "deleted"
    )
    ServiceAuthorizationProvider().delete(policy.id, authorization)  # 404: already gone


def test_an_authorization_left_by_an_interrupted_create_is_adopted_and_its_read_tells_when_it_is_gone(
    ibm_cloud_fake: IbmCloudFake,
):
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    authorization = authorization_props(ibm_cloud_fake, cos)
    first = ServiceAuthorizationProvider().create(authorization)  # its result never reached the state
    again = ServiceAuthorizationProvider().create(authorization)  # the next `up`: IAM would answer 409
    assert again.id == first.id and list(ibm_cloud_fake.state.policies) == [first.id]
    assert ServiceAuthorizationProvider().read(first.id, authorization).id == first.id
    ibm.iam_policies(ibm_cloud_fake).delete_policy(policy_id=first.id)  # removed in the console
    assert ServiceAuthorizationProvider().read(first.id, authorization).id is None


def test_a_bucket_and_a_space_deleted_behind_the_stacks_back_read_as_gone(ibm_cloud_fake: IbmCloudFake):
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    runtime = create_instance(ibm_cloud_fake)
    bucket = bucket_props(ibm_cloud_fake, cos)
    created_bucket = CosBucketProvider().create(bucket)
    space = space_props(ibm_cloud_fake, cos, runtime)
    created_space = DeploymentSpaceProvider().create(space)
    assert CosBucketProvider().read(created_bucket.id, bucket).id == created_bucket.id
    assert DeploymentSpaceProvider().read(created_space.id, space).id == created_space.id

    ibm.cos(ibm_cloud_fake, cos["guid"]).delete_bucket(Bucket=created_bucket.id)
    ibm.watsonx(ibm_cloud_fake).spaces.delete(created_space.id)

    assert CosBucketProvider().read(created_bucket.id, bucket).id is None
    assert DeploymentSpaceProvider().read(created_space.id, space).id is None


def test_bucket_with_a_root_key_but_no_authorization_fails_saying_why(ibm_cloud_fake: IbmCloudFake):
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    with pytest.raises(IbmProviderError, match="COS -> Key Protect Reader authorization"):
        CosBucketProvider().create(bucket_props(ibm_cloud_fake, cos, ROOT_KEY))


# -- deployment space -------------------------------------------------------------------------------


def space_props(fake: IbmCloudFake, cos: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "mnist-platform-test",
        "description": "test",
        "cos_instance_crn": cos["crn"],
        "runtime_name": runtime["name"],
        "runtime_crn": runtime["crn"],
        "tags": ["project:mnist-platform", "stack:test"],
        **common(fake),
    }


def test_space_waits_until_active_and_delete_removes_it(ibm_cloud_fake: IbmCloudFake):
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    runtime = create_instance(ibm_cloud_fake)
    ibm_cloud_fake.slow_provisioning(polls=0, space_polls=2)
    props = space_props(ibm_cloud_fake, cos, runtime)
    created = DeploymentSpaceProvider().create(props)
    space = ibm_cloud_fake.state.spaces[created.id]
    assert space["entity"]["status"]["state"] == "active"
    assert space["entity"]["storage"]["properties"]["resource_crn"] == cos["crn"]
    assert space["entity"]["compute"][0]["crn"] == runtime["crn"]
    DeploymentSpaceProvider().delete(created.id, {**props, **(created.outs or {})})
    assert created.id not in ibm_cloud_fake.state.spaces
    DeploymentSpaceProvider().delete(created.id, {**props, **(created.outs or {})})  # already gone


def test_a_space_create_answered_502_after_it_landed_is_adopted_not_made_twice(
    ibm_cloud_fake: IbmCloudFake,
):
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    runtime = create_instance(ibm_cloud_fake)
    ibm_cloud_fake.fail_next("POST", r"^/v2/spaces$", 502, after_commit=True)
    created = DeploymentSpaceProvider().create(space_props(ibm_cloud_fake, cos, runtime))
    assert list(ibm_cloud_fake.state.spaces) == [created.id]
    assert len(ibm_cloud_fake.requests_to("platform", "POST", r"^/v2/spaces$")) == 1


def test_writer_on_cos_is_not_enough_for_a_space_which_creates_its_own_bucket(ibm_cloud_fake: IbmCloudFake):
    """What docs/ibm.md used to ask for (Writer on COS) stops the space; Manager is what it needs."""
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    runtime = create_instance(ibm_cloud_fake)
    ibm_cloud_fake.caller_holds("cloud-object-storage", "Editor", "Writer")
    with pytest.raises(
        IbmProviderError, match=r"(?s)\(HTTP 403\).*needs the Manager role on cloud-object-storage"
    ):
        DeploymentSpaceProvider().create(space_props(ibm_cloud_fake, cos, runtime))
    assert not ibm_cloud_fake.state.spaces


def test_a_bucket_needs_writer_or_manager_on_cos(ibm_cloud_fake: IbmCloudFake):
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    ibm_cloud_fake.caller_holds("cloud-object-storage", "Editor", "Reader")
    with pytest.raises(
        IbmProviderError, match=r"AccessDenied.*CreateBucket needs the Manager or Writer role"
    ):
        CosBucketProvider().create(bucket_props(ibm_cloud_fake, cos))
    assert not ibm_cloud_fake.state.buckets


def test_space_creation_without_a_user_profile_says_how_to_get_one(ibm_cloud_fake: IbmCloudFake):
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    runtime = create_instance(ibm_cloud_fake)
    ibm_cloud_fake.missing_user_profile()
    with pytest.raises(IbmProviderError, match=r"no watsonx\.ai user profile yet") as error:
        DeploymentSpaceProvider().create(space_props(ibm_cloud_fake, cos, runtime))
    assert "dataplatform.cloud.ibm.com" in str(error.value)


# -- model type and software specification --------------------------------------------------------


def spec(name: str, onnxruntime: str | None, life_cycle: dict[str, Any] | None = None) -> dict[str, Any]:
    packages = [{"name": "onnxruntime", "version": onnxruntime}] if onnxruntime else []
    metadata: dict[str, Any] = {"name": name, "asset_id": f"id-{name}"}
    if life_cycle is not None:
        metadata["life_cycle"] = life_cycle
    return {
        "metadata": metadata,
        "entity": {
            "software_specification": {
                "type": "base",
                "software_configuration": {"included_packages": packages},
            }
        },
    }


def test_the_lowest_supported_onnx_spec_that_reads_the_models_opset_is_chosen():
    specs = [
        spec("onnxruntime_opset_17", "1.14.1"),  # too old for opset 19
        spec("onnxruntime_opset_21", "1.20.1"),
        spec("onnxruntime_opset_19", "1.16.3", {"supported": {"since_version": "5.0"}}),
        spec("runtime-24.1-py3.11", None),
    ]
    assert choose_runtime(specs, 19) == Runtime(
        "id-onnxruntime_opset_19", "onnxruntime_opset_19", "onnxruntime_1.16"
    )


def test_a_deprecated_spec_is_followed_to_its_replacement():
    specs = [
        spec(
            "onnxruntime_opset_19", "1.16.3", {"deprecated": {}, "replacement_name": "onnxruntime_opset_21"}
        ),
        spec("onnxruntime_opset_21", "1.20.1"),
    ]
    # IBM's published pair for opset 21, not the newer runtime the specification happens to bundle
    assert choose_runtime(specs, 19).model_type == "onnxruntime_1.17"
    retired_without_replacement = [spec("onnxruntime_opset_19", "1.16.3", {"retired": {}})]
    with pytest.raises(
        IbmProviderError, match=r"no supported software specification for ONNX opset 19"
    ) as error:
        choose_runtime(retired_without_replacement, 19)
    assert "onnxruntime_opset_19 (retired)" in str(error.value)


def test_the_model_type_is_ibms_published_pair_whatever_runtime_the_spec_bundles(
    messages: list[str],
) -> None:
    """A specification updated to bundle a newer onnxruntime still takes the model type IBM pairs it with;
    a type derived from the bundle (onnxruntime_1.18) would be refused as an unsupported combination."""
    assert choose_runtime([spec("onnxruntime_opset_19", "1.18.0")], 19).model_type == "onnxruntime_1.16"
    assert not messages
    # A specification newer than the table: the type is derived from its runtime, and the log says so.
    assert choose_runtime([spec("onnxruntime_opset_23", "1.22.1")], 19).model_type == "onnxruntime_1.22"
    (logged,) = messages
    assert "onnxruntime_opset_23 is not among IBM's published ONNX pairs" in logged


@pytest.fixture
def messages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the ibm model provider sends to the Pulumi log."""
    from infra.ibm import model

    sent: list[str] = []
    monkeypatch.setattr(model, "log", sent.append)
    return sent


def test_a_failed_deployment_is_described_by_its_own_messages():
    details = {
        "entity": {
            "status": {
                "state": "failed",
                "failure": {"errors": [{"code": "deployment_failed", "message": "not enough capacity"}]},
                "message": {"level": "error", "text": "scale the hardware spec down"},
            }
        }
    }
    assert deployment_status(details) == ("failed", "not enough capacity; scale the hardware spec down")
    assert deployment_status({"entity": {"status": {"state": "ready"}}}) == ("ready", "")


# -- online deployment ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_deployment_answered_503_after_it_landed_is_adopted_with_the_nodes_it_asked_for(
    ibm_cloud_fake: IbmCloudFake, runtime_instances: tuple[dict, dict], onnx_model_dir: Path
):
    client = ibm.watsonx(ibm_cloud_fake)
    space_id = create_space(client, *runtime_instances)
    client.set.default_space(space_id)
    props = {
        "name": "mnist-platform-test-pytorch",
        "space_id": space_id,
        "model_id": store_model(client, onnx_model_dir),
        "instance_type": "S",
        "min_replicas": 2,
        "max_replicas": 2,
        "tags": ["project:mnist-platform", "stack:test"],
        **common(ibm_cloud_fake),
    }
    ibm_cloud_fake.fail_next("POST", r"^/ml/v4/deployments$", 503, after_commit=True)

    created = OnlineDeploymentProvider().create(props)

    assert list(ibm_cloud_fake.state.deployments) == [created.id]
    assert len(ibm_cloud_fake.requests_to("wml", "POST", r"^/ml/v4/deployments$")) == 1
    hardware = ibm_cloud_fake.state.deployments[created.id].document["entity"]["hardware_spec"]
    assert (hardware["name"], hardware["num_nodes"]) == ("S", 2)
    OnlineDeploymentProvider().delete(created.id, {**props, **(created.outs or {})})
    assert not ibm_cloud_fake.state.deployments


# -- training job (its model in COS) ---------------------------------------------------------------


def test_a_training_jobs_read_asks_cos_for_its_archive(ibm_cloud_fake: IbmCloudFake):
    from infra.ibm.training_job import TrainingJobProvider

    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    bucket = CosBucketProvider().create(bucket_props(ibm_cloud_fake, cos)).id
    s3 = ibm.cos(ibm_cloud_fake, cos["guid"])
    s3.put_object(Bucket=bucket, Key="models/pytorch-1/model.tar.gz", Body=b"archive")
    props = {"bucket": bucket, "archive_key": "models/pytorch-1/model.tar.gz", **common(ibm_cloud_fake)}
    assert TrainingJobProvider().read("pytorch-1", props).id == "pytorch-1"
    s3.delete_object(Bucket=bucket, Key="models/pytorch-1/model.tar.gz")  # removed behind the stack's back
    assert TrainingJobProvider().read("pytorch-1", props).id is None


# -- stored model ------------------------------------------------------------------------------------


def test_a_model_left_without_its_content_is_deleted_and_stored_again_whole(
    ibm_cloud_fake: IbmCloudFake, runtime_instances: tuple[dict, dict], onnx_model_dir: Path
):
    """Storing is two calls (the model, then its content): a `pulumi up` killed between them leaves a model
    that can never be deployed. The next create must not adopt it: it is deleted, and the model stored
    whole."""
    from infra.dynamic import identity, identity_tag
    from infra.ibm import model as stored_model

    client = ibm.watsonx(ibm_cloud_fake)
    space_id = create_space(client, *runtime_instances)
    cos = create_instance(ibm_cloud_fake, "cloud-object-storage", "standard")
    bucket = CosBucketProvider().create(bucket_props(ibm_cloud_fake, cos)).id
    ibm.cos(ibm_cloud_fake, cos["guid"]).upload_file(
        str(onnx_model_dir / "model.tar.gz"), bucket, "champions/pytorch/job-1/model.tar.gz"
    )
    props = {
        "name": "mnist-platform-test-pytorch",
        "space_id": space_id,
        "bucket": bucket,
        "archive_key": "champions/pytorch/job-1/model.tar.gz",
        "artifact_hash": "cos://champions/pytorch/job-1/model.tar.gz",
        "tags": ["project:mnist-platform"],
        **common(ibm_cloud_fake),
    }
    token = ibm.authenticator(ibm_cloud_fake).token_manager.get_token()
    half_made = requests.post(  # what the first call of an interrupted store left: no content
        f"{ibm_cloud_fake.wml_url}/ml/v4/models",
        params={"version": "2024-05-01"},
        json={
            "name": props["name"],
            "type": "onnxruntime_1.16",
            "software_spec": {"name": "onnxruntime_opset_19"},
            "space_id": space_id,
            "tags": [*props["tags"], identity_tag(identity(props, stored_model._REPLACE_KEYS))],
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    ).json()["metadata"]["id"]

    created = stored_model.StoredModelProvider().create(props)

    assert created.id != half_made
    assert list(ibm_cloud_fake.state.models) == [created.id]
    assert ibm_cloud_fake.state.models[created.id]["entity"]["content_import_state"] == "completed"


@pytest.mark.slow
def test_a_ready_deployment_that_serves_another_asset_is_deleted_and_fails_the_update(
    ibm_cloud_fake: IbmCloudFake,
    runtime_instances: tuple[dict, dict],
    onnx_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    client = ibm.watsonx(ibm_cloud_fake)
    space_id = create_space(client, *runtime_instances)
    client.set.default_space(space_id)
    old_model, new_model = store_model(client, onnx_model_dir), store_model(client, onnx_model_dir)
    props = {
        "name": "mnist-platform-test-pytorch",
        "space_id": space_id,
        "model_id": new_model,
        "instance_type": "XS",
        "min_replicas": 1,
        "max_replicas": 1,
        "tags": ["project:mnist-platform", "stack:test"],
        **common(ibm_cloud_fake),
    }
    # The fault: the service reports the new deployment, once ready, on the old model's asset.
    real_document = ibm_cloud_fake.wml._document

    def on_the_old_asset(deployment: Any) -> dict[str, Any]:
        document = real_document(deployment)
        if deployment.model_id != new_model:
            return document
        return {**document, "entity": {**document["entity"], "asset": {"id": old_model, "rev": "1"}}}

    monkeypatch.setattr(ibm_cloud_fake.wml, "_document", on_the_old_asset)

    with pytest.raises(IbmProviderError, match=f"serves asset {old_model} on XS x 1, not model {new_model}"):
        OnlineDeploymentProvider().create(props)
    assert not ibm_cloud_fake.state.deployments  # deleted: nothing left billing

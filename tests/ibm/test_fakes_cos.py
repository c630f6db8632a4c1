"""The COS fake through ibm_boto3 (ibm-cos-sdk) with IAM OAuth: what moto does not check (location
constraint, Key Protect headers and their authorization, the owning instance) is checked here."""

from __future__ import annotations

import pytest
import requests
from fakes import ACCOUNT_ID, IbmCloudFake
from fakes import clients as ibm
from ibm_botocore.exceptions import ClientError

KMS_INSTANCE = "6f6a3f8e-1f0b-4b43-9e58-0c5d9c1b8b2a"
KEY_ID = "0b9b1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
ROOT_KEY = f"crn:v1:bluemix:public:kms:us-south:a/{ACCOUNT_ID}:{KMS_INSTANCE}:key:{KEY_ID}"


@pytest.fixture
def cos_instance(ibm_cloud_fake: IbmCloudFake) -> dict:
    return ibm_cloud_fake.existing_instance("cloud-object-storage", "standard", "cos")


def authorize_cos_to_read_keys(fake: IbmCloudFake, cos_guid: str) -> None:
    ibm.iam_policies(fake).create_policy(
        type="authorization",
        subjects=[
            {
                "attributes": [
                    {"name": "accountId", "value": ACCOUNT_ID},
                    {"name": "serviceName", "value": "cloud-object-storage"},
                    {"name": "serviceInstance", "value": cos_guid},
                ]
            }
        ],
        roles=[{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Reader"}],
        resources=[
            {
                "attributes": [
                    {"name": "accountId", "value": ACCOUNT_ID},
                    {"name": "serviceName", "value": "kms"},
                ]
            }
        ],
    )


def error_code(error: pytest.ExceptionInfo[ClientError]) -> str:
    return error.value.response["Error"]["Code"]


def test_bucket_with_key_protect_root_key_after_authorization(
    ibm_cloud_fake: IbmCloudFake, cos_instance: dict
) -> None:
    s3 = ibm.cos(ibm_cloud_fake, cos_instance["guid"])
    kp = {"IBMSSEKPEncryptionAlgorithm": "AES256", "IBMSSEKPCustomerRootKeyCrn": ROOT_KEY}
    location = {"LocationConstraint": "us-south-standard"}
    with pytest.raises(ClientError) as unauthorized:
        s3.create_bucket(Bucket="mnist-kp", CreateBucketConfiguration=location, **kp)
    assert error_code(unauthorized) == "AccessDenied"
    authorize_cos_to_read_keys(ibm_cloud_fake, cos_instance["guid"])
    s3.create_bucket(Bucket="mnist-kp", CreateBucketConfiguration=location, **kp)
    headers = s3.head_bucket(Bucket="mnist-kp")["ResponseMetadata"]["HTTPHeaders"]
    assert headers["ibm-sse-kp-enabled"] == "True"
    assert headers["ibm-sse-kp-crk-id"] == ROOT_KEY
    bucket = ibm_cloud_fake.state.buckets["mnist-kp"]
    assert (bucket.location_constraint, bucket.service_instance_id) == (
        "us-south-standard",
        cos_instance["guid"],
    )


@pytest.mark.parametrize("location", ["us-east-standard", "us-south-premium", "us-south"])
def test_a_location_other_than_the_endpoints_is_rejected(
    ibm_cloud_fake: IbmCloudFake, cos_instance: dict, location: str
) -> None:
    with pytest.raises(ClientError) as rejected:
        ibm.cos(ibm_cloud_fake, cos_instance["guid"]).create_bucket(
            Bucket="mnist-where", CreateBucketConfiguration={"LocationConstraint": location}
        )
    assert error_code(rejected) == "InvalidLocationConstraint"
    assert "mnist-where" not in ibm_cloud_fake.state.buckets


def test_a_half_given_key_protect_pair_is_rejected(ibm_cloud_fake: IbmCloudFake, cos_instance: dict) -> None:
    with pytest.raises(ClientError) as rejected:
        ibm.cos(ibm_cloud_fake, cos_instance["guid"]).create_bucket(
            Bucket="mnist-half",
            CreateBucketConfiguration={"LocationConstraint": "us-south-standard"},
            IBMSSEKPCustomerRootKeyCrn=ROOT_KEY,
        )
    assert error_code(rejected) == "InvalidArgument"


def test_a_bucket_needs_an_active_cos_instance(ibm_cloud_fake: IbmCloudFake) -> None:
    runtime = ibm_cloud_fake.existing_instance("pm-20", "v2-standard")
    with pytest.raises(ClientError) as rejected:
        ibm.cos(ibm_cloud_fake, runtime["guid"]).create_bucket(
            Bucket="mnist-owner", CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
        )
    assert error_code(rejected) == "InvalidArgument"


def test_objects_round_trip_and_a_full_bucket_cannot_be_deleted(
    ibm_cloud_fake: IbmCloudFake, cos_instance: dict
) -> None:
    s3 = ibm.cos(ibm_cloud_fake, cos_instance["guid"])
    s3.create_bucket(
        Bucket="mnist-data", CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    s3.put_object(Bucket="mnist-data", Key="models/pytorch/model.tar.gz", Body=b"archive")
    s3.put_object(Bucket="mnist-data", Key="data/t10k images.idx", Body=b"pixels")
    listed = s3.list_objects_v2(Bucket="mnist-data", Prefix="models/")["Contents"]
    assert [o["Key"] for o in listed] == ["models/pytorch/model.tar.gz"]
    assert s3.get_object(Bucket="mnist-data", Key="data/t10k images.idx")["Body"].read() == b"pixels"
    with pytest.raises(ClientError) as not_empty:
        s3.delete_bucket(Bucket="mnist-data")
    assert error_code(not_empty) == "BucketNotEmpty"
    ibm.cos(ibm_cloud_fake, cos_instance["guid"], kind="resource").Bucket("mnist-data").objects.all().delete()
    s3.delete_bucket(Bucket="mnist-data")
    with pytest.raises(ClientError) as gone:
        s3.head_bucket(Bucket="mnist-data")
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404


def test_cos_instance_with_buckets_cannot_be_deleted(
    ibm_cloud_fake: IbmCloudFake, cos_instance: dict
) -> None:
    from ibm_cloud_sdk_core import ApiException

    ibm.cos(ibm_cloud_fake, cos_instance["guid"]).create_bucket(
        Bucket="mnist-left", CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    with pytest.raises(ApiException) as refused:
        ibm.resource_controller(ibm_cloud_fake).delete_resource_instance(id=cos_instance["guid"])
    assert "buckets" in (refused.value.message or "")


def test_a_request_without_an_iam_token_is_denied(ibm_cloud_fake: IbmCloudFake) -> None:
    import requests

    response = requests.put(ibm_cloud_fake.cos_url + "/anything", timeout=10)
    assert response.status_code == 403
    assert b"<Code>AccessDenied</Code>" in response.content


def test_injected_cos_errors_are_s3_errors_that_ibm_boto3_retries(
    ibm_cloud_fake: IbmCloudFake, cos_instance: dict
) -> None:
    s3 = ibm.cos(ibm_cloud_fake, cos_instance["guid"])
    s3.create_bucket(
        Bucket="mnist-retry", CreateBucketConfiguration={"LocationConstraint": "us-south-standard"}
    )
    ibm_cloud_fake.fail_next("PUT", r"^/mnist-retry/artifact$", 503, times=2, service="cos")
    s3.put_object(Bucket="mnist-retry", Key="artifact", Body=b"bytes")
    attempts = ibm_cloud_fake.requests_to("cos", "PUT", r"^/mnist-retry/artifact$")
    assert len(attempts) == 3
    assert s3.get_object(Bucket="mnist-retry", Key="artifact")["Body"].read() == b"bytes"


def test_copy_object_copies_body_and_metadata_and_a_missing_source_is_no_such_key(
    ibm_cloud_fake: IbmCloudFake, cos_instance: dict
) -> None:
    s3 = ibm.cos(ibm_cloud_fake, cos_instance["guid"])
    location = {"LocationConstraint": "us-south-standard"}
    s3.create_bucket(Bucket="mnist-copy", CreateBucketConfiguration=location)
    s3.put_object(Bucket="mnist-copy", Key="models/a b/model.tar.gz", Body=b"weights", Metadata={"job": "a"})
    copied = s3.copy_object(
        Bucket="mnist-copy",
        Key="champions/pytorch/a/model.tar.gz",
        CopySource={"Bucket": "mnist-copy", "Key": "models/a b/model.tar.gz"},
    )
    source = ibm_cloud_fake.state.buckets["mnist-copy"].objects["models/a b/model.tar.gz"]
    assert copied["CopyObjectResult"]["ETag"].strip('"') == source.etag
    got = s3.get_object(Bucket="mnist-copy", Key="champions/pytorch/a/model.tar.gz")
    assert got["Body"].read() == b"weights" and got["Metadata"] == {"job": "a"}
    with pytest.raises(ClientError) as missing:
        s3.copy_object(
            Bucket="mnist-copy", Key="x", CopySource={"Bucket": "mnist-copy", "Key": "models/none"}
        )
    assert error_code(missing) == "NoSuchKey"


def raw_cos_request(fake: IbmCloudFake, method: str, path: str, body: bytes) -> requests.Response:
    """A request no SDK would build (the SDKs validate first), with a valid IAM token."""
    token = ibm.authenticator(fake).token_manager.get_token()
    return requests.request(
        method, f"{fake.cos_url}{path}", data=body, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


@pytest.mark.parametrize(
    ("method", "path", "body", "code", "words"),
    [
        ("POST", "/mnist-x?delete", b"<Delete><Object><Kee>a</Kee></Object></Delete>", "MalformedXML", "Kee"),
        ("POST", "/mnist-x?delete", b"<Delete><Quiet>true</Quiet></Delete>", "MalformedXML", "needs Objects"),
        ("POST", "/mnist-x?delete", b"", "MissingRequestBodyError", "Delete"),
        (
            "PUT",
            "/mnist-x?versioning",
            b"<VersioningConfiguration><Status>On</Status></VersioningConfiguration>",
            "InvalidArgument",
            "Enabled, Suspended",
        ),
        ("PATCH", "/mnist-x", b"", "MethodNotAllowed", "PATCH"),
    ],
    ids=["unknown-element", "missing-required-element", "missing-body", "bad-enum", "no-such-operation"],
)
def test_requests_ibm_botocores_s3_model_refuses_are_refused_in_s3s_words(
    ibm_cloud_fake: IbmCloudFake,
    cos_instance: dict,
    method: str,
    path: str,
    body: bytes,
    code: str,
    words: str,
) -> None:
    ibm.cos(ibm_cloud_fake, cos_instance["guid"]).create_bucket(Bucket="mnist-x")
    reply = raw_cos_request(ibm_cloud_fake, method, path, body)
    assert reply.status_code in (400, 405)
    assert f"<Code>{code}</Code>" in reply.text
    assert words in reply.text


def test_delete_objects_takes_at_most_a_thousand_keys(
    ibm_cloud_fake: IbmCloudFake, cos_instance: dict
) -> None:
    s3 = ibm.cos(ibm_cloud_fake, cos_instance["guid"])
    s3.create_bucket(Bucket="mnist-many")
    keys = [{"Key": f"k{i}"} for i in range(1001)]
    with pytest.raises(ClientError) as refused:
        s3.delete_objects(Bucket="mnist-many", Delete={"Objects": keys})
    assert error_code(refused) == "MalformedXML"
    assert s3.delete_objects(Bucket="mnist-many", Delete={"Objects": keys[:1000]})["Deleted"]

"""IBM's real SDK clients pointed at an `IbmCloudFake`: what production code builds with IBM Cloud's
default URLs, with only the URLs and the CA changed (see docs in tests/ibm/README.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ibm_platform_services import GlobalCatalogV1, IamPolicyManagementV1, ResourceControllerV2
    from ibm_watsonx_ai import APIClient

    from .cloud import IbmCloudFake


def authenticator(fake: IbmCloudFake, api_key: str | None = None) -> Any:
    from ibm_cloud_sdk_core.authenticators import IAMAuthenticator

    return IAMAuthenticator(api_key or fake.api_key, url=fake.iam_url)


def resource_controller(fake: IbmCloudFake) -> ResourceControllerV2:
    from ibm_platform_services import ResourceControllerV2

    client = ResourceControllerV2(authenticator=authenticator(fake))
    client.set_service_url(fake.resource_controller_url)
    client.set_disable_ssl_verification(False)
    return client


def global_catalog(fake: IbmCloudFake) -> GlobalCatalogV1:
    from ibm_platform_services import GlobalCatalogV1

    client = GlobalCatalogV1(authenticator=authenticator(fake))
    client.set_service_url(fake.global_catalog_url)
    return client


def iam_policies(fake: IbmCloudFake) -> IamPolicyManagementV1:
    from ibm_platform_services import IamPolicyManagementV1

    client = IamPolicyManagementV1(authenticator=authenticator(fake))
    client.set_service_url(fake.iam_policy_url)
    return client


def cos(fake: IbmCloudFake, service_instance_id: str, kind: str = "client") -> Any:
    """ibm_boto3 `client("s3")` (or `resource("s3")`) with IAM OAuth, as COS is used in IBM Cloud."""
    import ibm_boto3
    from ibm_botocore.client import Config

    factory = ibm_boto3.client if kind == "client" else ibm_boto3.resource
    return factory(
        "s3",
        ibm_api_key_id=fake.api_key,
        ibm_service_instance_id=service_instance_id,
        ibm_auth_endpoint=fake.token_url,
        config=Config(signature_version="oauth"),
        endpoint_url=fake.cos_url,
        verify=fake.ca_file,
    )


def watsonx(fake: IbmCloudFake, space_id: str | None = None) -> APIClient:
    """ibm_watsonx_ai.APIClient in IBM Cloud mode (cloud-fakes.md: platform_url and auth_url given,
    so the loopback URL is not taken for Cloud Pak for Data)."""
    from ibm_watsonx_ai import APIClient, Credentials

    credentials = Credentials(
        url=fake.url,
        api_key=fake.api_key,
        platform_url=fake.platform_url,
        auth_url=fake.token_url,
        verify=fake.ca_file,
    )
    return APIClient(credentials, space_id=space_id)

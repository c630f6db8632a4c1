"""A service-to-service authorization (IAM Policy Management, policy type `authorization`).

The bucket can only be created with a Key Protect root key once Cloud Object Storage may read that
key: a policy whose subject is the COS instance and whose resource is the Key Protect (or Hyper
Protect Crypto Services) instance, role Reader. Declared before the bucket, deleted after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.dynamic import changed_keys, log, state_of
from infra.ibm.connection import (
    CONNECTION_KEYS,
    Connection,
    api_result,
    create_or_adopt,
    failure,
    is_not_found,
    result_of,
    retrying,
    secret_key_opts,
    update_connection,
)

SERVICE_ROLE = "crn:v1:bluemix:public:iam::::serviceRole:{role}"
_REPLACE_KEYS = (
    "account_id",
    "source_service",
    "source_instance_guid",
    "target_service",
    "target_instance_guid",
    "role",
)


@dataclass
class ServiceAuthorizationArgs:
    """Inputs of a ServiceAuthorization."""

    account_id: pulumi.Input[str]
    """The account both instances live in."""
    source_instance_guid: pulumi.Input[str]
    """GUID of the COS instance (the subject)."""
    target_service: pulumi.Input[str]
    """`kms` (Key Protect) or `hs-crypto`."""
    target_instance_guid: pulumi.Input[str]
    """GUID of the key management instance (the resource)."""
    region: pulumi.Input[str]
    api_key: pulumi.Input[str]
    """IBM Cloud API key (a secret)."""
    source_service: pulumi.Input[str] = "cloud-object-storage"
    role: pulumi.Input[str] = "Reader"
    endpoints: pulumi.Input[dict[str, str]] = field(default_factory=dict)
    """URL overrides (empty in production)."""


class ServiceAuthorizationProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        from ibm_platform_services.iam_policy_management_v1 import (
            PolicyResource,
            PolicyRole,
            PolicySubject,
            ResourceAttribute,
            SubjectAttribute,
        )

        policies = _policy_service(props)
        account = str(props["account_id"])
        subject = PolicySubject(
            attributes=[
                SubjectAttribute(name="accountId", value=account),
                SubjectAttribute(name="serviceName", value=str(props["source_service"])),
                SubjectAttribute(name="serviceInstance", value=str(props["source_instance_guid"])),
            ]
        )
        resource = PolicyResource(
            attributes=[
                ResourceAttribute(name="accountId", value=account),
                ResourceAttribute(name="serviceName", value=str(props["target_service"])),
                ResourceAttribute(name="serviceInstance", value=str(props["target_instance_guid"])),
            ]
        )
        role = PolicyRole(role_id=SERVICE_ROLE.format(role=props["role"]))
        log(
            f"authorizing {props['source_service']} to read keys of {props['target_service']} "
            f"({props['role']})"
        )

        # An authorization is identified by what it grants (IAM allows one per subject, target and role):
        # one left by an interrupted create is adopted, and a create answered 5xx after it landed is found
        # the same way instead of failing on IAM's 409 the second time.
        def create() -> str:
            created = result_of(
                policies.create_policy(
                    type="authorization", subjects=[subject], roles=[role], resources=[resource]
                )
            )
            return str(created["id"])

        def same_grant() -> set[str]:
            listed = result_of(policies.list_policies(account_id=account, type="authorization"))
            return {str(p["id"]) for p in listed.get("policies", []) if _grants(p, props, role.role_id)}

        try:
            existing = retrying(same_grant)
            if existing:
                policy_id = sorted(existing)[0]
                log(f"adopting authorization policy {policy_id}, which grants exactly this")
            else:
                policy_id = create_or_adopt(
                    "creating the COS -> key management authorization", create, same_grant
                )
        except Exception as error:
            raise failure(
                "creating the COS -> key management authorization",
                error,
                "The API key needs Administrator on the key management service to authorize it; an existing "
                "identical authorization (HTTP 409) must be deleted or the key left unset.",
            ) from error
        return CreateResult(id_=policy_id, outs={**state_of(props), "policy_id": policy_id})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        updates = changed_keys(olds, news, CONNECTION_KEYS)
        return DiffResult(changes=bool(replaces or updates), replaces=replaces, delete_before_replace=True)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=update_connection(olds, news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        policies = _policy_service(props)
        try:
            api_result(lambda: policies.get_policy(policy_id=id_))
        except Exception as error:
            if is_not_found(error):
                return ReadResult(None, {})
            raise failure(f"reading authorization policy {id_}", error) from error
        return ReadResult(id_, props)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        policies = _policy_service(props)
        try:
            retrying(lambda: policies.delete_policy(policy_id=id_))
        except Exception as error:
            if not is_not_found(error):
                raise failure(f"deleting authorization policy {id_}", error) from error


def _policy_service(props: dict[str, Any]) -> Any:
    """IAM Policy Management with the resource's key and URLs (built per call: the provider is pickled)."""
    from ibm_platform_services import IamPolicyManagementV1

    conn = Connection.of(props)
    return conn.platform_service(IamPolicyManagementV1, conn.iam_policy_url)


def _grants(policy: dict[str, Any], props: dict[str, Any], role_id: str) -> bool:
    """Whether an IAM policy is this authorization: same source instance, same target, same role."""

    def attributes(entries: list[dict[str, Any]]) -> dict[str, str]:
        return {str(a.get("name")): str(a.get("value")) for e in entries for a in e.get("attributes", [])}

    subject = attributes(policy.get("subjects") or [])
    resource = attributes(policy.get("resources") or [])
    roles = {str(r.get("role_id")) for r in policy.get("roles") or []}
    return (
        subject.get("serviceName") == str(props["source_service"])
        and subject.get("serviceInstance") == str(props["source_instance_guid"])
        and resource.get("serviceName") == str(props["target_service"])
        and resource.get("serviceInstance") == str(props["target_instance_guid"])
        and role_id in roles
    )


class ServiceAuthorization(pulumi.dynamic.Resource, module="ibm", name="ServiceAuthorization"):
    """COS may read the bucket's root key."""

    policy_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: ServiceAuthorizationArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "account_id": args.account_id,
            "source_service": args.source_service,
            "source_instance_guid": args.source_instance_guid,
            "target_service": args.target_service,
            "target_instance_guid": args.target_instance_guid,
            "role": args.role,
            "region": args.region,
            "api_key": args.api_key,
            "endpoints": args.endpoints,
            "policy_id": None,
        }
        super().__init__(ServiceAuthorizationProvider(), name, props, secret_key_opts(opts))

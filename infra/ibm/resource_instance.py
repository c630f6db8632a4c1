"""A service instance (Cloud Object Storage, watsonx.ai Runtime `pm-20`) through the Resource Controller.

The plan id is resolved by name in the Global Catalog at run time (never hard-coded). Create waits
until the instance is `active`. Delete also reclaims it: a deleted instance is only soft-deleted for
7 days, still counts against the one-Lite-instance-per-service rule and, on a paid plan, may bill.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.dynamic import changed_keys, log, state_of
from infra.ibm.connection import (
    CONNECTION_KEYS,
    Connection,
    IbmProviderError,
    api_result,
    create_or_adopt,
    failure,
    is_not_found,
    result_of,
    retrying,
    secret_key_opts,
    update_connection,
)

PROVISION_TIMEOUT_SECONDS = 30 * 60
REMOVAL_TIMEOUT_SECONDS = 10 * 60
RECLAMATION_TIMEOUT_SECONDS = 5 * 60
LITE_PLAN = "lite"
_RESOURCE_GROUP_ID = re.compile(r"^[0-9a-f]{32}$")
# Tags are not among them: Resource Controller takes tags only at creation, and a new set of tags is no
# reason to rebuild an instance (update records them; `ibmcloud resource tag-attach` changes them).
# So name, plan, target and group tell one generation of the instance from the next: they are its
# identity when an interrupted create is looked for (a listed instance carries no tags).
_REPLACE_KEYS = ("name", "service", "plan", "target", "resource_group")
_DONE_RECLAMATION_STATES = frozenset({"RECLAIMING", "RECLAIMED", "RESTORING", "RESTORED"})
_UNUSABLE_STATES = frozenset({"failed", "inactive"})


@dataclass
class ResourceInstanceArgs:
    """Inputs of a ResourceInstance."""

    name: pulumi.Input[str]
    """The instance's name in the account."""
    service: pulumi.Input[str]
    """Global Catalog name of the service: `cloud-object-storage` or `pm-20` (watsonx.ai Runtime)."""
    plan: pulumi.Input[str]
    """Global Catalog name of the plan (`standard`, `lite`, `v2-standard`)."""
    target: pulumi.Input[str]
    """Deployment target: `global` for COS, the region for watsonx.ai Runtime."""
    resource_group: pulumi.Input[str]
    """Resource group id (32 hex digits) or name."""
    region: pulumi.Input[str]
    """The stack's region (for URLs)."""
    api_key: pulumi.Input[str]
    """IBM Cloud API key (a secret)."""
    tags: list[str] = field(default_factory=list)
    """`key:value` tags (project, stack)."""
    endpoints: pulumi.Input[dict[str, str]] = field(default_factory=dict)
    """URL overrides (empty in production)."""


class ResourceInstanceProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        conn = Connection.of(props)
        from ibm_platform_services import ResourceControllerV2

        controller = conn.platform_service(ResourceControllerV2, conn.resource_controller_url)
        plan_id = _plan_id(conn, str(props["service"]), str(props["plan"]))
        group_id = _resource_group_id(conn, str(props["resource_group"]))

        def listed() -> list[dict[str, Any]]:
            # This name, plan and group: one generation of the instance (see _REPLACE_KEYS).
            return result_of(
                controller.list_resource_instances(
                    name=props["name"], resource_group_id=group_id, resource_plan_id=plan_id, limit=100
                )
            ).get("resources", [])

        found = retrying(listed)
        left = _left_by_an_interrupted_create(controller, props, found)
        if left is not None:
            instance = conn.wait(
                f"{props['service']} instance {props['name']} to become active",
                lambda: _active_or_none(controller, str(left["id"])),
                PROVISION_TIMEOUT_SECONDS,
            )
            return CreateResult(
                id_=str(left["id"]), outs={**state_of(props), **_outputs(instance, plan_id, group_id)}
            )
        if props["plan"] == LITE_PLAN:
            _refuse_second_lite_instance(controller, str(props["service"]), plan_id)
        log(f"creating {props['service']} instance {props['name']} ({props['plan']} plan, {props['target']})")

        def create() -> str:
            created = result_of(
                controller.create_resource_instance(
                    name=props["name"],
                    target=props["target"],
                    resource_group=group_id,
                    resource_plan_id=plan_id,
                    tags=list(props.get("tags") or []),
                )
            )
            return str(created["id"])

        try:
            instance_id = create_or_adopt(
                f"creating instance {props['name']}",
                create,
                lambda: {str(i["id"]) for i in listed()},
                before={str(i["id"]) for i in found},
            )
        except Exception as error:
            raise failure(
                f"creating the {props['service']} instance {props['name']}",
                error,
                "Check that the API key may create instances in the resource group (Editor on it).",
            ) from error
        instance = conn.wait(
            f"{props['service']} instance {props['name']} to become active",
            lambda: _active_or_none(controller, instance_id),
            PROVISION_TIMEOUT_SECONDS,
        )
        return CreateResult(
            id_=instance_id, outs={**state_of(props), **_outputs(instance, plan_id, group_id)}
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        updates = changed_keys(olds, news, (*CONNECTION_KEYS, "tags"))
        if olds.get("state") in _UNUSABLE_STATES:  # `pulumi refresh` found it failed: build it anew
            replaces = [*replaces, "state"]
        return DiffResult(changes=bool(replaces or updates), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        # The key, the URLs or the tags changed: nothing to do at IBM, the new ones are recorded.
        return UpdateResult(outs={**update_connection(olds, news), "tags": news.get("tags")})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        conn = Connection.of(props)
        from ibm_platform_services import ResourceControllerV2

        controller = conn.platform_service(ResourceControllerV2, conn.resource_controller_url)
        try:
            instance = api_result(lambda: controller.get_resource_instance(id=id_))
        except Exception as error:
            if is_not_found(error):
                return ReadResult(None, {})
            raise failure(f"reading instance {id_}", error) from error
        if instance.get("state") in ("removed", "pending_reclamation"):
            return ReadResult(None, {})
        return ReadResult(id_, {**props, "state": instance.get("state")})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        conn = Connection.of(props)
        from ibm_platform_services import ResourceControllerV2

        controller = conn.platform_service(ResourceControllerV2, conn.resource_controller_url)
        log(f"deleting {props.get('service')} instance {props.get('name')}")
        try:
            retrying(lambda: controller.delete_resource_instance(id=id_, recursive=True))
        except Exception as error:
            if not is_not_found(error):
                raise failure(
                    f"deleting instance {props.get('name')} ({id_})",
                    error,
                    "Delete its service keys and aliases if IBM names them, then run `pulumi destroy` again.",
                ) from error
        conn.wait(
            f"instance {props.get('name')} to be removed",
            lambda: _removed_or_none(controller, id_),
            REMOVAL_TIMEOUT_SECONDS,
        )
        _reclaim(conn, controller, str(props.get("guid") or ""), id_)


def _left_by_an_interrupted_create(
    controller: Any, props: dict[str, Any], found: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """Of the instances `found` with this name, plan and group, the one of this target that a create
    interrupted before its result reached the state left behind: active or provisioning, adopted;
    failed, deleted (and reclaimed) so that a new one is made."""
    for instance in found:
        if instance.get("region_id") not in (None, props["target"]):
            continue
        state, _ = _state(instance)
        if state in ("active", "provisioning"):
            log(
                f"adopting {props['service']} instance {props['name']} ({instance['id']}), "
                "left by an interrupted create"
            )
            return instance
        if state in _UNUSABLE_STATES:
            log(
                f"removing {props['service']} instance {props['name']} ({instance['id']}), "
                f"left {state} by an earlier create"
            )
            retrying(lambda i=instance: controller.delete_resource_instance(id=i["id"], recursive=True))
    return None


def _plan_id(conn: Connection, service: str, plan: str) -> str:
    """The Global Catalog id of `plan` of `service`, looked up by name."""
    from ibm_platform_services import GlobalCatalogV1

    catalog = conn.platform_service(GlobalCatalogV1, conn.global_catalog_url)
    try:
        entries = api_result(
            lambda: catalog.list_catalog_entries(q=f"name:{service} active:true", complete=False)
        )
        service_entry = next((e for e in entries.get("resources", []) if e.get("name") == service), None)
        if service_entry is None:
            raise IbmProviderError(f"the Global Catalog has no service named {service!r}")
        plans = api_result(
            lambda: catalog.get_child_objects(id=service_entry["id"], kind="plan", complete=False)
        )
    except IbmProviderError:
        raise
    except Exception as error:
        raise failure(f"looking up the {service} plans in the Global Catalog", error) from error
    names = sorted(str(p.get("name")) for p in plans.get("resources", []))
    for entry in plans.get("resources", []):
        if entry.get("name") == plan:
            return str(entry["id"])
    raise IbmProviderError(
        f"the {service} service has no plan named {plan!r} in the Global Catalog; "
        f"its plans: {', '.join(names)}"
    )


def _resource_group_id(conn: Connection, group: str) -> str:
    """A resource group id as given, or the id of the group of that name (Resource Manager)."""
    if _RESOURCE_GROUP_ID.match(group):
        return group
    from ibm_platform_services import ResourceManagerV2

    # Resource Manager shares the Resource Controller's host.
    manager = conn.platform_service(ResourceManagerV2, conn.resource_controller_url)
    try:
        groups = api_result(lambda: manager.list_resource_groups(name=group))
    except Exception as error:
        raise failure(f"looking up the resource group {group!r}", error) from error
    found = [g for g in groups.get("resources", []) if g.get("name") == group]
    if not found:
        raise IbmProviderError(
            f"no resource group named {group!r} is visible to the API key: set mnist-platform:resourceGroup "
            "to a group name or id listed by `ibmcloud resource groups`"
        )
    return str(found[0]["id"])


def _refuse_second_lite_instance(controller: Any, service: str, plan_id: str) -> None:
    """An account may hold one Lite instance per service (a reclaimable one counts): say which one.

    Resource Controller lists only `active` and `provisioning` instances unless `state` asks for others,
    and a reclamation names its instance, not its plan (ibm-platform-services' `Reclamation` has no
    plan id): so a soft-deleted Lite instance is found by listing the plan's `pending_reclamation`
    instances, and its reclamation by that instance's GUID."""
    existing = api_result(lambda: controller.list_resource_instances(resource_plan_id=plan_id, limit=10))
    live = existing.get("resources", [])
    if live:
        other = live[0]
        raise IbmProviderError(
            f"the account already has a Lite {service} instance, {other.get('name')!r} ({other.get('crn')}), "
            "and IBM Cloud allows one Lite instance per service and account. Delete it "
            f"(`ibmcloud resource service-instance-delete {other.get('guid')}` and reclaim it), or set "
            "the plan to a paid one (mnist-platform:cosPlan standard / runtimePlan v2-standard)."
        )
    deleted = api_result(
        lambda: controller.list_resource_instances(
            resource_plan_id=plan_id, state="pending_reclamation", limit=10
        )
    )
    for instance in deleted.get("resources", []):
        guid = str(instance.get("guid") or instance.get("id"))
        reclamations = api_result(lambda g=guid: controller.list_reclamations(resource_instance_id=g))
        pending = [
            r for r in reclamations.get("resources", []) if r.get("state") not in _DONE_RECLAMATION_STATES
        ]
        how = (
            f"`ibmcloud resource reclamation-delete {pending[0]['id']}`"
            if pending
            else "`ibmcloud resource reclamations` and `ibmcloud resource reclamation-delete <id>`"
        )
        raise IbmProviderError(
            f"a deleted Lite {service} instance, {instance.get('name')!r} ({guid}), is waiting for "
            f"reclamation and still counts as the account's one Lite instance: reclaim it with {how} "
            "and run `pulumi up` again"
        )


def _state(instance: dict[str, Any]) -> tuple[str, str]:
    last = instance.get("last_operation") or {}
    return str(instance.get("state", "")), str(last.get("state", ""))


def _active_or_none(controller: Any, instance_id: str) -> dict[str, Any] | None:
    instance = api_result(lambda: controller.get_resource_instance(id=instance_id))
    state, operation = _state(instance)
    if state == "active" and operation != "in progress":
        return instance
    if state in ("failed", "inactive", "removed") or operation == "failed":
        description = (instance.get("last_operation") or {}).get("description") or state
        raise IbmProviderError(
            f"instance {instance.get('name')} ({instance_id}) did not become active: {description}. "
            "Delete it in the console (or `pulumi destroy`) and run `pulumi up` again."
        )
    return None


def _instance_or_none(controller: Any, instance_id: str) -> dict[str, Any] | None:
    """The instance's record, or None when Resource Controller no longer knows it (404/410)."""
    try:
        return api_result(lambda: controller.get_resource_instance(id=instance_id))
    except Exception as error:
        if is_not_found(error):
            return None
        raise failure(f"reading instance {instance_id}", error) from error


def _removed_or_none(controller: Any, instance_id: str) -> bool | None:
    instance = _instance_or_none(controller, instance_id)
    if instance is None:
        return True
    state, operation = _state(instance)
    return True if state in ("removed", "pending_reclamation") and operation != "in progress" else None


def _reclaim(conn: Connection, controller: Any, guid: str, instance_id: str) -> None:
    """Purge the soft-deleted instance, so that it neither bills nor blocks a new Lite instance.

    Resource Controller creates the reclamation after the delete, not with it: it is polled for up to
    `RECLAMATION_TIMEOUT_SECONDS`, and a delete whose reclamation never shows is reported, not passed
    over (the instance would sit soft-deleted for 7 days)."""

    def pending() -> list[dict[str, Any]] | None:
        try:
            listed = api_result(
                lambda: controller.list_reclamations(resource_instance_id=guid or instance_id)
            )
        except Exception as error:
            raise failure(f"listing the reclamations of instance {instance_id}", error) from error
        found = listed.get("resources", [])
        if found:
            return [r for r in found if r.get("state") not in _DONE_RECLAMATION_STATES]
        return [] if _purged(controller, instance_id) else None

    try:
        reclamations = conn.wait(
            f"the reclamation of deleted instance {instance_id}", pending, RECLAMATION_TIMEOUT_SECONDS
        )
    except IbmProviderError as error:
        raise IbmProviderError(
            f"instance {instance_id} is deleted, but no reclamation for it appeared: it stays soft-deleted "
            "(and a Lite one blocks a new Lite instance) for 7 days. Find it with `ibmcloud resource "
            "reclamations` and remove it with `ibmcloud resource reclamation-delete <id>`, or run "
            f"`pulumi destroy` again. ({error})"
        ) from error
    for reclamation in reclamations:
        log(f"reclaiming deleted instance {instance_id} (reclamation {reclamation['id']})")
        try:
            retrying(
                lambda r=reclamation: controller.run_reclamation_action(id=r["id"], action_name="reclaim")
            )
        except Exception as error:
            if not is_not_found(error):
                raise failure(
                    f"reclaiming instance {instance_id}",
                    error,
                    f"Reclaim it by hand: `ibmcloud resource reclamation-delete {reclamation['id']}`.",
                ) from error


def _purged(controller: Any, instance_id: str) -> bool:
    """Whether a deleted instance is past reclamation (reclaimed earlier: nothing is left to reclaim)."""
    instance = _instance_or_none(controller, instance_id)
    return instance is None or instance.get("state") == "removed"


def _outputs(instance: dict[str, Any], plan_id: str, group_id: str) -> dict[str, Any]:
    return {
        "crn": instance.get("crn"),
        "guid": instance.get("guid"),
        "state": instance.get("state"),
        "plan_id": plan_id,
        "resource_group_id": group_id,
    }


class ResourceInstance(pulumi.dynamic.Resource, module="ibm", name="ResourceInstance"):
    """A Cloud Object Storage or watsonx.ai Runtime instance."""

    crn: pulumi.Output[str]
    guid: pulumi.Output[str]
    state: pulumi.Output[str]
    plan_id: pulumi.Output[str]
    resource_group_id: pulumi.Output[str]

    def __init__(
        self, name: str, args: ResourceInstanceArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "name": args.name,
            "service": args.service,
            "plan": args.plan,
            "target": args.target,
            "resource_group": args.resource_group,
            "region": args.region,
            "tags": list(args.tags),
            "api_key": args.api_key,
            "endpoints": args.endpoints,
            "crn": None,
            "guid": None,
            "state": None,
            "plan_id": None,
            "resource_group_id": None,
        }
        super().__init__(ResourceInstanceProvider(), name, props, secret_key_opts(opts))

"""Resource Controller v2 (resource-controller.cloud.ibm.com): resource instances and reclamations.

Lifecycle as IBM documents it: create answers 202 with `state: provisioning` while the broker works
(`Scenario.provisioning_polls` GETs), then `active`; delete soft-deletes (`pending_reclamation`) and
opens a reclamation (state `SCHEDULED`); the `reclaim` action purges the instance (then 404), `restore`
makes it `active` again. An account holds one Lite instance per service, a soft-deleted one included.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from flask import Response, jsonify, request

from .global_catalog import SERVICES, service_of_plan
from .server import FakeService, IbmApiError
from .state import new_guid, now_iso

LITE_LIMIT_MESSAGE = (
    "You can only have one instance of a Lite plan per service. To create a new instance, either delete "
    "your existing Lite plan instance or select a paid plan."
)


class ResourceControllerService(FakeService):
    name = "resource-controller"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # reclamation id -> listings left before it shows (None: never), set when an instance is deleted
        self._hidden_reclamations: dict[str, int | None] = {}
        super().__init__(*args, **kwargs)

    def routes(self) -> None:
        rule = self.app.add_url_rule
        rule("/v2/resource_instances", view_func=self.create_instance, methods=["POST"])
        rule("/v2/resource_instances", view_func=self.list_instances, methods=["GET"])
        rule("/v2/resource_instances/<path:instance_id>", view_func=self.get_instance, methods=["GET"])
        rule("/v2/resource_instances/<path:instance_id>", view_func=self.update_instance, methods=["PATCH"])
        rule("/v2/resource_instances/<path:instance_id>", view_func=self.delete_instance, methods=["DELETE"])
        rule("/v1/reclamations", view_func=self.list_reclamations, methods=["GET"])
        rule("/v1/reclamations/<rid>/actions/<action>", view_func=self.reclamation_action, methods=["POST"])

    # Instances --------------------------------------------------------------------------------------
    def create_instance(self) -> tuple[Response, int]:
        claims = self.require_token()
        body = self.json_body()
        for required in ("name", "target", "resource_group", "resource_plan_id"):
            if not body.get(required):
                raise IbmApiError(
                    400, "missing_field", f"'{required}' is required to create a resource instance"
                )
        found = service_of_plan(body["resource_plan_id"])
        if found is None:
            raise IbmApiError(400, "invalid_plan", f"resource plan {body['resource_plan_id']} does not exist")
        service, plan = found
        self.state.require_role(service, {"Editor", "Administrator"}, f"create a {service} instance")
        if body["resource_group"] != self.state.resource_group_id:
            raise IbmApiError(
                400, "invalid_resource_group", f"resource group {body['resource_group']} not found"
            )
        allowed_targets = SERVICES[service][3]
        if body["target"] not in allowed_targets:
            raise IbmApiError(
                400,
                "invalid_target",
                f"{service} cannot be created in target {body['target']!r}; "
                f"allowed: {', '.join(allowed_targets)}",
            )
        with self.state.lock:
            if plan == "lite" and any(
                i["resource_plan_id"] == body["resource_plan_id"] and i["state"] != "removed"
                for i in self.state.instances.values()
            ):
                raise IbmApiError(400, "lite_plan_limit", LITE_LIMIT_MESSAGE)
            slow = self.state.scenario.provisioning_polls
            instance = self.add_instance(
                service,
                plan,
                body["name"],
                body["target"],
                created_by=claims["iam_id"],
                parameters=body.get("parameters") or {},
                tags=body.get("tags") or [],
                state="provisioning" if slow else "active",
            )
            if slow:
                self.state.instance_polls[instance["guid"]] = slow
        return jsonify(instance), 202 if slow else 201

    def add_instance(
        self,
        service: str,
        plan: str,
        name: str,
        target: str,
        *,
        created_by: str,
        parameters: dict[str, Any] | None = None,
        tags: list[str] | None = None,
        state: str = "active",
    ) -> dict[str, Any]:
        """Store a new instance (also how a test seeds an existing Lite instance)."""
        guid = new_guid()
        crn = self.state.crn(service, target, guid)
        plan_id = SERVICES[service][2][plan]
        stamp = now_iso()
        base = f"/v2/resource_instances/{guid}"
        instance: dict[str, Any] = {
            "id": crn,
            "guid": guid,
            "url": base,
            "created_at": stamp,
            "updated_at": stamp,
            "deleted_at": None,
            "created_by": created_by,
            "updated_by": created_by,
            "deleted_by": "",
            "scheduled_reclaim_at": None,
            "restored_at": None,
            "scheduled_reclaim_by": "",
            "restored_by": "",
            "name": name,
            "region_id": target,
            "account_id": self.state.account_id,
            "reseller_channel_id": "",
            "resource_plan_id": plan_id,
            "resource_group_id": self.state.resource_group_id,
            "resource_group_crn": f"crn:v1:bluemix:public:resource-controller::a/{self.state.account_id}::"
            f"resource-group:{self.state.resource_group_id}",
            "target_crn": f"crn:v1:bluemix:public:globalcatalog::::deployment:{plan_id}%3A{target}",
            "parameters": parameters or {},
            "allow_cleanup": False,
            "crn": crn,
            "state": state,
            "type": "service_instance",
            "sub_type": "",
            "resource_id": SERVICES[service][0],
            "dashboard_url": f"https://cloud.ibm.com/services/{service}/{crn}",
            "last_operation": _operation("create", state),
            "resource_aliases_url": f"{base}/resource_aliases",
            "resource_bindings_url": f"{base}/resource_bindings",
            "resource_keys_url": f"{base}/resource_keys",
            "plan_history": [{"resource_plan_id": plan_id, "start_date": stamp}],
            "migrated": False,
            "extensions": {},
            "controlled_by": "",
            "locked": False,
            "tags": tags or [],
        }
        with self.state.lock:
            self.state.instances[guid] = instance
        return instance

    def list_instances(self) -> Response:
        self.require_token()
        filters = {
            key: request.args[key]
            for key in (
                "guid",
                "name",
                "resource_group_id",
                "resource_id",
                "resource_plan_id",
                "type",
                "state",
            )
            if key in request.args
        }
        with self.state.lock:
            for guid in list(self.state.instances):
                self._advance(guid)
            found = [
                i
                for i in self.state.instances.values()
                if i["state"] != "removed" and all(str(i.get(k)) == v for k, v in filters.items())
            ]
        if "state" not in filters:  # soft-deleted instances are listed only when asked for by state
            found = [i for i in found if i["state"] != "pending_reclamation"]
        return jsonify({"rows_count": len(found), "next_url": None, "resources": found})

    def get_instance(self, instance_id: str) -> Response:
        self.require_token()
        with self.state.lock:
            instance = self._find(instance_id)
            self._advance(instance["guid"])
            return jsonify(instance)

    def update_instance(self, instance_id: str) -> Response:
        self.require_token()
        body = self.json_body()
        with self.state.lock:
            instance = self._find(instance_id)
            if "name" in body:
                instance["name"] = body["name"]
            if "parameters" in body:
                instance["parameters"] = body["parameters"]
            instance["updated_at"] = now_iso()
            instance["last_operation"] = _operation("update", "active")
            return jsonify(instance)

    def delete_instance(self, instance_id: str) -> tuple[str, int]:
        claims = self.require_token()
        with self.state.lock:
            instance = self._find(instance_id)
            if instance["state"] == "pending_reclamation":
                raise IbmApiError(
                    410, "gone", f"Instance {instance['guid']} is already deleted and pending reclamation"
                )
            if instance["state"] == "provisioning":
                raise IbmApiError(
                    409,
                    "conflict",
                    f"Instance {instance['guid']} is still provisioning; retry when it is active",
                )
            if request.args.get("recursive", "false") != "true" and any(
                b.service_instance_id == instance["guid"] for b in self.state.buckets.values()
            ):
                raise IbmApiError(
                    400,
                    "instance_not_empty",
                    f"Instance {instance['guid']} still holds buckets; "
                    "delete them first or set recursive=true",
                )
            stamp = now_iso()
            instance.update(
                state="pending_reclamation",
                deleted_at=stamp,
                deleted_by=claims["iam_id"],
                scheduled_reclaim_at=stamp,
                last_operation=_operation("delete", "pending_reclamation"),
            )
            rid = new_guid()
            self._hidden_reclamations[rid] = self.state.scenario.reclamation_lists_before_visible
            self.state.reclamations[rid] = {
                "id": rid,
                "entity_id": instance["guid"],
                "entity_type_id": "resource-instance",
                "entity_crn": instance["crn"],
                "resource_instance_id": instance["guid"],
                "resource_group_id": instance["resource_group_id"],
                "account_id": instance["account_id"],
                "policy_id": new_guid(),
                "state": "SCHEDULED",
                "target_time": "2026-12-08T00:00:00Z",  # IBM keeps soft-deleted instances 7 days
                "custom_properties": {},
                "created_at": stamp,
                "created_by": claims["iam_id"],
                "updated_at": stamp,
                "updated_by": claims["iam_id"],
            }
        return "", 202

    # Reclamations -----------------------------------------------------------------------------------
    def list_reclamations(self) -> Response:
        self.require_token()
        filters = {
            key: request.args[key]
            for key in ("account_id", "resource_instance_id", "resource_group_id")
            if key in request.args
        }
        with self.state.lock:
            found = [
                r
                for r in self.state.reclamations.values()
                if all(r.get(k) == v for k, v in filters.items()) and self._visible(r["id"])
            ]
        return jsonify({"resources": found})

    def _visible(self, rid: str) -> bool:
        """Whether a reclamation shows in a listing yet (it counts one listing down while it does not)."""
        hidden = self._hidden_reclamations.get(rid, 0)
        if hidden is None:
            return False
        if hidden > 0:
            self._hidden_reclamations[rid] = hidden - 1
            return False
        return True

    def reclamation_action(self, rid: str, action: str) -> Response:
        claims = self.require_token()
        if action not in ("reclaim", "restore"):
            raise IbmApiError(400, "invalid_action", f"action {action!r}: use 'reclaim' or 'restore'")
        with self.state.lock:
            reclamation = self.state.reclamations.get(rid)
            if reclamation is None:
                raise IbmApiError(404, "not_found", f"Reclamation {rid} not found")
            instance = self.state.instances[reclamation["resource_instance_id"]]
            if action == "reclaim":
                del self.state.instances[instance["guid"]]
                reclamation = {**self.state.reclamations.pop(rid), "state": "RECLAIMING"}
            else:
                instance.update(
                    state="active", deleted_at=None, restored_at=now_iso(), restored_by=claims["iam_id"]
                )
                reclamation = {**self.state.reclamations.pop(rid), "state": "RESTORING"}
        reclamation["updated_at"] = now_iso()
        reclamation["updated_by"] = claims["iam_id"]
        return jsonify(reclamation)

    # Helpers ----------------------------------------------------------------------------------------
    def _find(self, instance_id: str) -> dict[str, Any]:
        """An instance by guid or by CRN (the `id` field), as the API accepts both."""
        key = unquote(instance_id)
        instance = self.state.instances.get(key) or next(
            (i for i in self.state.instances.values() if i["crn"] == key), None
        )
        if instance is None:
            raise IbmApiError(404, "not_found", f"Instance with guid {key} not found")
        return instance

    def _advance(self, guid: str) -> None:
        """One GET of a new instance: `provisioning` while polls are left, then `active`."""
        left = self.state.instance_polls.get(guid)
        if left is None:
            return
        if left > 0:
            self.state.instance_polls[guid] = left - 1
            return
        del self.state.instance_polls[guid]
        instance = self.state.instances[guid]
        instance.update(state="active", last_operation=_operation("create", "active"), updated_at=now_iso())


def _operation(kind: str, state: str) -> dict[str, Any]:
    in_progress = state == "provisioning"
    return {
        "type": kind,
        "state": "in progress" if in_progress else "succeeded",
        "async": in_progress,
        "description": f"{kind} {'in progress' if in_progress else 'succeeded'}",
        "cancelable": False,
        "poll": in_progress,
    }

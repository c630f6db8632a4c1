"""The data platform API (api.dataplatform.cloud.ibm.com): v2 deployment spaces.

A space names a COS instance as its storage (`storage.resource_crn`) and a watsonx.ai Runtime instance
as its compute (`[{name, crn, type: machine_learning}]`); it is `preparing` for
`Scenario.space_preparing_polls` GETs, then `active`. Like the real service it creates its own bucket in
that COS instance (deleted with the space), so a COS instance cannot go before the spaces that use it.
The error a first-time user gets (no data-platform user profile) is a scenario switch; its wording here
is the fake's (no IBM Cloud account was available to record the real one).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import Response, jsonify, request

from .server import FakeService, IbmApiError
from .specs import (
    HARDWARE_SPECS,
    SOFTWARE_SPECS,
    hardware_by_id_or_name,
    hardware_spec,
    software_spec,
    spec_by_id_or_name,
)
from .state import Bucket, new_guid, now_iso

USER_PROFILE_MISSING = (
    "The user {iam_id} has no user profile on the IBM watsonx / data platform yet: log in once at "
    "https://dataplatform.cloud.ibm.com with this identity (for a service ID, have an account owner add it "
    "to the account's users) and retry."
)


class DataPlatformService(FakeService):
    name = "platform"

    def routes(self) -> None:
        rule = self.app.add_url_rule
        rule("/v2/spaces", view_func=self.create_space, methods=["POST"])
        rule("/v2/spaces", view_func=self.list_spaces, methods=["GET"])
        rule("/v2/spaces/<space_id>", view_func=self.get_space, methods=["GET"])
        rule("/v2/spaces/<space_id>", view_func=self.delete_space, methods=["DELETE"])
        rule("/v2/assets/<asset_id>", view_func=self.delete_asset, methods=["DELETE"])
        rule("/v2/software_specifications", view_func=self.list_software_specs, methods=["GET"])
        rule("/v2/software_specifications/<spec>", view_func=self.get_software_spec, methods=["GET"])
        rule("/v2/hardware_specifications", view_func=self.list_hardware_specs, methods=["GET"])
        rule("/v2/hardware_specifications/<spec>", view_func=self.get_hardware_spec, methods=["GET"])

    def create_space(self) -> tuple[Response, int]:
        claims = self.require_token()
        if self.state.scenario.user_profile_missing:
            raise IbmApiError(
                403, "user_profile_not_found", USER_PROFILE_MISSING.format(iam_id=claims["iam_id"])
            )
        body = self.json_body()
        if not body.get("name"):
            raise IbmApiError(400, "invalid_request_body", "'name' is required")
        # The space creates its own bucket in the COS instance, which takes more than Writer: IBM's
        # watsonx Terraform module grants the space's creator Editor and Manager on COS.
        self.state.require_role(
            "cloud-object-storage", {"Manager"}, "create the deployment space's bucket in the COS instance"
        )
        storage = body.get("storage") or {}
        compute = body.get("compute") or []
        with self.state.lock:
            cos = self._instance(storage.get("resource_crn"), "cloud-object-storage", "storage.resource_crn")
            computes = []
            for entry in compute:
                if entry.get("type") != "machine_learning":
                    raise IbmApiError(
                        400, "invalid_request_body", "compute[].type must be 'machine_learning'"
                    )
                runtime = self._instance(entry.get("crn"), "pm-20", "compute[].crn")
                computes.append(
                    {
                        "name": entry.get("name") or runtime["name"],
                        "crn": runtime["crn"],
                        "guid": runtime["guid"],
                        "type": "machine_learning",
                    }
                )
            space_id = new_guid()
            bucket_name = f"{body['name'].lower()[:30].strip('-')}-donotdelete-pr-{uuid.uuid4().hex[:14]}"
            self.state.buckets[bucket_name] = Bucket(
                name=bucket_name,
                location_constraint="us-south-smart",
                service_instance_id=cos["guid"],
                created=datetime.now(UTC),
            )
            stamp = now_iso()
            preparing = self.state.scenario.space_preparing_polls
            space = {
                "entity": {
                    "name": body["name"],
                    "description": body.get("description", ""),
                    "compute": computes,
                    "scope": {"bss_account_id": self.state.account_id},
                    "settings": {"folders": {"enabled": False}},
                    "stage": {"production": bool(body.get("stage", {}).get("production", False))},
                    "status": {"state": "preparing" if preparing else "active"},
                    "storage": {
                        "type": "bmcos_object_storage",
                        "properties": {
                            "bucket_name": bucket_name,
                            "bucket_region": "us-south",
                            "endpoint_url": "https://s3.us-south.cloud-object-storage.appdomain.cloud",
                            "resource_crn": cos["crn"],
                            "guid": cos["guid"],
                        },
                    },
                    "tags": body.get("tags", []),
                    "type": body.get("type", "cpd"),
                },
                "metadata": {
                    "id": space_id,
                    "url": f"/v2/spaces/{space_id}",
                    "creator_id": claims["iam_id"],
                    "created_at": stamp,
                    "updated_at": stamp,
                },
            }
            self.state.spaces[space_id] = space
            if preparing:
                self.state.space_polls[space_id] = preparing
        return jsonify(space), 202

    def list_spaces(self) -> Response:
        self.require_token()
        limit = int(request.args.get("limit", 100))
        with self.state.lock:
            for space_id in list(self.state.space_polls):
                self._advance(space_id)
            found = list(self.state.spaces.values())
        name = request.args.get("name")
        if name:
            found = [s for s in found if s["entity"]["name"] == name]
        return jsonify(
            {
                "total_count": len(found),
                "limit": limit,
                "first": {"url": f"/v2/spaces?limit={limit}"},
                "resources": found[:limit],
            }
        )

    def get_space(self, space_id: str) -> Response:
        self.require_token()
        with self.state.lock:
            space = self.space(space_id)
            self._advance(space_id)
            return jsonify(space)

    def delete_space(self, space_id: str) -> tuple[str, int]:
        self.require_token()
        with self.state.lock:
            space = self.space(space_id)
            if any(d.space_id == space_id and d.state != "deleted" for d in self.state.deployments.values()):
                raise IbmApiError(
                    409,
                    "space_has_deployments",
                    f"Space {space_id} still has online deployments: delete them before the space",
                )
            del self.state.spaces[space_id]
            self.state.buckets.pop(space["entity"]["storage"]["properties"]["bucket_name"], None)
            for model_id in [
                m for m, doc in self.state.models.items() if doc["metadata"]["space_id"] == space_id
            ]:
                del self.state.models[model_id]
                self.state.model_content.pop(model_id, None)
        return "", 202

    def delete_asset(self, asset_id: str) -> tuple[str, int]:
        """The asset API, which ibm-watsonx-ai's `repository.delete` calls for a model in a space."""
        from .wml import delete_model

        self.require_token()
        space_id = request.args.get("space_id")
        if not space_id:
            raise IbmApiError(400, "missing_query_parameter", "Missing query parameter `space_id`.")
        with self.state.lock:
            self.space(space_id)
            if asset_id not in self.state.models:
                raise IbmApiError(404, "does_not_exist", f"Asset with id '{asset_id}' does not exist")
            delete_model(self.state, asset_id, space_id)
        return "", 204

    # Software and hardware specifications ----------------------------------------------------------
    def list_software_specs(self) -> Response:
        self.require_token()
        name = request.args.get("name")
        found = [software_spec(n) for n in SOFTWARE_SPECS if name in (None, n)]
        return jsonify({"total_results": len(found), "resources": found})

    def get_software_spec(self, spec: str) -> Response:
        self.require_token()
        name = spec_by_id_or_name(spec)
        if name is None:
            raise IbmApiError(404, "does_not_exist", f"Software specification {spec} does not exist")
        return jsonify(software_spec(name))

    def list_hardware_specs(self) -> Response:
        self.require_token()
        name = request.args.get("name")
        found = [hardware_spec(n) for n in HARDWARE_SPECS if name in (None, n)]
        return jsonify({"total_results": len(found), "resources": found})

    def get_hardware_spec(self, spec: str) -> Response:
        self.require_token()
        name = hardware_by_id_or_name(spec)
        if name is None:
            raise IbmApiError(404, "does_not_exist", f"Hardware specification {spec} does not exist")
        return jsonify(hardware_spec(name))

    # Helpers ----------------------------------------------------------------------------------------
    def space(self, space_id: str) -> dict[str, Any]:
        space = self.state.spaces.get(space_id)
        if space is None:
            raise IbmApiError(404, "does_not_exist", f"Space with id '{space_id}' does not exist")
        return space

    def _instance(self, crn: str | None, service: str, field: str) -> dict[str, Any]:
        instance = next((i for i in self.state.instances.values() if crn and i["crn"] == crn), None)
        if instance is None or not instance["crn"].startswith(f"crn:v1:bluemix:public:{service}:"):
            raise IbmApiError(
                400, "invalid_request_body", f"{field} {crn!r} is not a {service} instance of this account"
            )
        if instance["state"] != "active":
            raise IbmApiError(
                400,
                "invalid_request_body",
                f"{field}: instance {instance['guid']} is {instance['state']}, not active",
            )
        return instance

    def _advance(self, space_id: str) -> None:
        """One GET of a new space: `preparing` while polls are left, then `active`."""
        left = self.state.space_polls.get(space_id)
        if left is None:
            return
        if left > 0:
            self.state.space_polls[space_id] = left - 1
            return
        del self.state.space_polls[space_id]
        self.state.spaces[space_id]["entity"]["status"]["state"] = "active"

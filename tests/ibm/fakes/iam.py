"""IAM (iam.cloud.ibm.com): the API-key token grant, and IAM Policy Management v1's policies on the same
host (service-to-service authorizations such as COS -> Key Protect, Reader)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import Response, jsonify, request

from .server import FakeService, IbmApiError
from .state import now_iso

APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"
REFRESH_GRANT = "refresh_token"
SERVICE_ROLES = {
    "crn:v1:bluemix:public:iam::::serviceRole:Reader": "Reader",
    "crn:v1:bluemix:public:iam::::serviceRole:Writer": "Writer",
    "crn:v1:bluemix:public:iam::::serviceRole:Manager": "Manager",
}


class IamService(FakeService):
    name = "iam"

    def routes(self) -> None:
        self.app.add_url_rule("/identity/token", view_func=self.token, methods=["POST"])
        self.app.add_url_rule("/v1/policies", view_func=self.create_policy, methods=["POST"])
        self.app.add_url_rule("/v1/policies", view_func=self.list_policies, methods=["GET"])
        self.app.add_url_rule("/v1/policies/<policy_id>", view_func=self.get_policy, methods=["GET"])
        self.app.add_url_rule("/v1/policies/<policy_id>", view_func=self.delete_policy, methods=["DELETE"])

    # Tokens -----------------------------------------------------------------------------------------
    def token(self) -> Response | tuple[Response, int]:
        form = request.form
        grant = form.get("grant_type")
        if grant == APIKEY_GRANT:
            if form.get("apikey") not in self.state.api_keys:
                return _iam_error(400, "BXNIM0415E", "Provided API key could not be found.")
        elif grant == REFRESH_GRANT:
            if form.get("refresh_token") not in self.state.iam.refresh_tokens:
                return _iam_error(400, "BXNIM0407E", "Provided refresh token is invalid.")
        else:
            return _iam_error(400, "BXNIM0109E", f"Property missing or empty: grant_type (got {grant!r}).")
        return jsonify(self.state.iam.issue())

    # Policies ---------------------------------------------------------------------------------------
    def create_policy(self) -> tuple[Response, int]:
        claims = self.require_token()
        body = self.json_body()
        policy_type = body.get("type")
        if policy_type not in ("access", "authorization"):
            raise IbmApiError(400, "invalid_body", "'type' must be 'access' or 'authorization'")
        subjects, roles, resources = body.get("subjects"), body.get("roles"), body.get("resources")
        if not subjects or not roles or not resources:
            raise IbmApiError(400, "invalid_body", "a policy needs 'subjects', 'roles' and 'resources'")
        for role in roles:
            if role.get("role_id") not in SERVICE_ROLES and not str(role.get("role_id", "")).startswith(
                "crn:v1:bluemix:public:iam::::role:"
            ):
                raise IbmApiError(400, "invalid_role", f"unknown role_id {role.get('role_id')!r}")
        if policy_type == "authorization" and not _attribute(subjects[0], "serviceName"):
            raise IbmApiError(400, "invalid_body", "an authorization policy's subject needs a 'serviceName'")
        with self.state.lock:
            for existing in self.state.policies.values():
                if (existing["type"], existing["subjects"], existing["resources"]) == (
                    policy_type,
                    subjects,
                    resources,
                ):
                    raise IbmApiError(
                        409, "policy_conflict_error", "Failed to create policy: it already exists."
                    )
            policy_id = str(uuid.uuid4())
            stamp = now_iso()
            policy = {
                "id": policy_id,
                "type": policy_type,
                "description": body.get("description", ""),
                "subjects": subjects,
                "roles": [
                    {
                        **role,
                        "display_name": SERVICE_ROLES.get(
                            role["role_id"], role["role_id"].rsplit(":", 1)[-1]
                        ),
                    }
                    for role in roles
                ],
                "resources": resources,
                "href": f"{request.host_url.rstrip('/')}/v1/policies/{policy_id}",
                "created_at": stamp,
                "created_by_id": claims["iam_id"],
                "last_modified_at": stamp,
                "last_modified_by_id": claims["iam_id"],
                "state": "active",
            }
            self.state.policies[policy_id] = policy
        return jsonify(policy), 201

    def list_policies(self) -> Response:
        self.require_token()
        if not request.args.get("account_id"):
            raise IbmApiError(400, "invalid_parameter", "query parameter 'account_id' is required")
        wanted = request.args.get("type")
        with self.state.lock:
            found = [p for p in self.state.policies.values() if wanted in (None, p["type"])]
        return jsonify({"policies": found})

    def get_policy(self, policy_id: str) -> Response:
        self.require_token()
        with self.state.lock:
            policy = self.state.policies.get(policy_id)
        if policy is None:
            raise IbmApiError(404, "policy_not_found", f"Policy with ID {policy_id} not found.")
        return jsonify(policy)

    def delete_policy(self, policy_id: str) -> tuple[str, int]:
        self.require_token()
        with self.state.lock:
            if self.state.policies.pop(policy_id, None) is None:
                raise IbmApiError(404, "policy_not_found", f"Policy with ID {policy_id} not found.")
        return "", 204


def _iam_error(status: int, code: str, message: str) -> tuple[Response, int]:
    """IAM's token endpoint answers errors in its own shape (errorCode, errorMessage, context)."""
    body = {
        "context": {"requestId": uuid.uuid4().hex, "requestType": "incoming.Identity_Token"},
        "errorCode": code,
        "errorMessage": message,
    }
    return jsonify(body), status


def _attribute(entry: dict[str, Any], name: str) -> str | None:
    return next((a.get("value") for a in entry.get("attributes", []) if a.get("name") == name), None)


def authorizes(
    policy: dict[str, Any],
    source_service: str,
    source_instance: str,
    target_service: str,
    target_instance: str,
    role: str,
) -> bool:
    """Whether an authorization policy lets `source_service` (instance) act on `target_service`
    (instance) with `role`; a policy without a serviceInstance attribute covers every instance."""
    if policy["type"] != "authorization":
        return False
    subject, resource = policy["subjects"][0], policy["resources"][0]
    if (
        _attribute(subject, "serviceName") != source_service
        or _attribute(resource, "serviceName") != target_service
    ):
        return False
    if _attribute(subject, "serviceInstance") not in (None, source_instance):
        return False
    if _attribute(resource, "serviceInstance") not in (None, target_instance):
        return False
    return any(r.get("display_name") == role for r in policy["roles"])

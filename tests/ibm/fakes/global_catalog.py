"""Global Catalog v1 (globalcatalog.cloud.ibm.com/api/v1): services and their plans, looked up by name.

The service and plan ids of `cloud-object-storage` and the COS/watsonx.ai Lite plans are the ones IBM's
docs and Terraform examples show; the others are made up. A stack must resolve every id by name (the
issue forbids hard-coded ids), so it works with either.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from .server import FakeService, IbmApiError

REGIONS = ("us-south", "us-east", "eu-de", "eu-gb", "jp-tok", "au-syd", "ca-tor")

# name -> (service id, display name, {plan name: plan id}, where its instances live)
SERVICES: dict[str, tuple[str, str, dict[str, str], tuple[str, ...]]] = {
    "cloud-object-storage": (
        "dff97f5c-bc5e-4455-b470-411c3edbe49c",
        "Cloud Object Storage",
        {"standard": "744bfc56-d12c-4866-88d5-dac9139e0e5d", "lite": "2fdf0c08-2d32-4f46-84b5-32e0c92fffd8"},
        ("global",),
    ),
    "pm-20": (
        "51c53b72-918f-4869-b834-2d99eb28422a",
        "watsonx.ai Runtime",
        {
            "lite": "3f6acf43-ede8-413a-ac69-f8af3bb0cbfe",
            "v2-standard": "940c2d4c-6c0f-4d46-8cb6-0d6c9cd4c3a5",
            "v2-professional": "f5ee6b36-6c38-4a5c-a4b9-4a8c6cd1d1c6",
        },
        REGIONS,
    ),
    "kms": (
        "ee41347f-b18e-4ca6-bf80-b5467c63f9a6",
        "Key Protect",
        {"tiered-pricing": "eedd3585-90c6-4c8f-be3d-062069e99fc3"},
        REGIONS,
    ),
}


def plan_id(service: str, plan: str) -> str:
    return SERVICES[service][2][plan]


def service_of_plan(plan: str) -> tuple[str, str] | None:
    """(service name, plan name) of a plan id."""
    for service, (_, _, plans, _) in SERVICES.items():
        for name, pid in plans.items():
            if pid == plan:
                return service, name
    return None


class GlobalCatalogService(FakeService):
    name = "global-catalog"
    base = "/api/v1"

    def routes(self) -> None:
        self.app.add_url_rule(f"{self.base}", view_func=self.list_entries, methods=["GET"])
        self.app.add_url_rule(f"{self.base}/", view_func=self.list_entries, methods=["GET"])
        self.app.add_url_rule(f"{self.base}/<entry_id>", view_func=self.get_entry, methods=["GET"])
        self.app.add_url_rule(f"{self.base}/<entry_id>/<kind>", view_func=self.children, methods=["GET"])

    def list_entries(self) -> Response:
        self.require_token()
        terms = _parse_query(request.args.get("q", ""))
        found = [e for e in self._all_entries() if _matches(e, terms)]
        return jsonify(self._page(found))

    def get_entry(self, entry_id: str) -> Response:
        self.require_token()
        return jsonify(self._find(entry_id))

    def children(self, entry_id: str, kind: str) -> Response:
        self.require_token()
        service = self._find(entry_id)
        kids = [
            e for e in self._all_entries() if e.get("parent_id") == service["id"] and kind in ("*", e["kind"])
        ]
        return jsonify(self._page(kids))

    # Entries ----------------------------------------------------------------------------------------
    def _find(self, entry_id: str) -> dict[str, Any]:
        """An entry by its id (names are for `q=name:...` searches)."""
        for entry in self._all_entries():
            if entry["id"] == entry_id:
                return entry
        raise IbmApiError(404, "not_found", f"catalog entry {entry_id} not found")

    def _all_entries(self) -> list[dict[str, Any]]:
        base_url = f"{request.host_url.rstrip('/')}{self.base}"
        entries = []
        for name, (sid, display, plans, geo) in SERVICES.items():
            entries.append(_entry(base_url, sid, name, "service", display, geo, parent_id=None))
            for plan_name, pid in plans.items():
                entries.append(
                    _entry(base_url, pid, plan_name, "plan", plan_name.title(), geo, parent_id=sid)
                )
        return entries

    @staticmethod
    def _page(resources: list[dict[str, Any]]) -> dict[str, Any]:
        limit = int(request.args.get("_limit", 200))
        offset = int(request.args.get("_offset", 0))
        page = resources[offset : offset + limit]
        return {
            "offset": offset,
            "limit": limit,
            "count": len(resources),
            "resource_count": len(page),
            "resources": page,
        }


def _entry(
    base_url: str,
    entry_id: str,
    name: str,
    kind: str,
    display: str,
    geo: tuple[str, ...],
    parent_id: str | None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": entry_id,
        "name": name,
        "kind": kind,
        "active": True,
        "disabled": False,
        "geo_tags": list(geo),
        "tags": ["ibm_created"] + (["lite"] if name == "lite" else []),
        "overview_ui": {"en": {"display_name": display, "description": f"{display} ({name})"}},
        "images": {},
        "provider": {"name": "IBM", "email": "noreply@ibm.com"},
        "metadata": {"rc_compatible": True, "plan": {"reservable": False}}
        if kind == "plan"
        else {
            "rc_compatible": True,
            "service": {"iam_compatible": True, "rc_provisionable": True},
        },
        "url": f"{base_url}/{entry_id}",
        "children_url": f"{base_url}/{entry_id}/%2A",
        "created": "2017-06-21T08:00:00.000Z",
        "updated": "2026-11-01T08:00:00.000Z",
    }
    if parent_id is not None:
        entry["parent_id"] = parent_id
        entry["catalog_crn"] = f"crn:v1:bluemix:public:globalcatalog::::{kind}:{entry_id}"
    return entry


def _parse_query(q: str) -> list[tuple[str | None, str]]:
    """Global Catalog's `q`: space-separated `field:value` terms (name, kind, active, tag) or free text."""
    terms: list[tuple[str | None, str]] = []
    for token in q.replace("+", " ").split():
        field, sep, value = token.partition(":")
        terms.append((field, value) if sep else (None, token))
    return terms


def _matches(entry: dict[str, Any], terms: list[tuple[str | None, str]]) -> bool:
    for field, value in terms:
        if field == "name" and entry["name"] != value:
            return False
        if field == "kind" and entry["kind"] != value:
            return False
        if field == "active" and str(entry["active"]).lower() != value.lower():
            return False
        if field == "tag" and value not in entry["tags"]:
            return False
        if field is None and value.lower() not in entry["name"].lower():
            return False
    return True

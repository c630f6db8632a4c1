"""COS requests checked against ibm_botocore's own S3 service model (`data/s3/2006-03-01/service-2.json`),
the description IBM's SDK is generated from: the fake refuses what that model says a request must carry,
instead of what the stack happens to send.

A request is matched to its operation the way the model routes it: HTTP method, request URI template
(`/`, `/{Bucket}`, `/{Bucket}/{Key+}`) and the query markers of the URI (`?versions`, `?delete`,
`?list-type=2`). When several operations share a URI (PutObject and CopyObject), the most specific one
whose required members are present wins. Then:

- every required member located in the URI, a header or the query string must be there;
- an XML payload (CreateBucketConfiguration, Delete, VersioningConfiguration) must have the root element
  the model names and only elements the model knows, with its required elements present, checked
  recursively through structures and lists (S3's `MalformedXML` otherwise);
- an enum-typed element or header must hold one of the model's values.

What the model does not say and S3 documents is kept in the handlers (DeleteObjects takes at most 1,000
keys; a location constraint is `<region>-<class>` on IBM's endpoints).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from xml.etree import ElementTree


@dataclass(frozen=True)
class Operation:
    name: str
    method: str
    segments: int | None  # path segments the URI takes: 0 for `/`, 1 for `/{Bucket}`, None for 2 or more
    markers: tuple[tuple[str, str | None], ...]  # query keys the URI fixes (with their value, if any)
    input: Mapping[str, Any]


class ModelViolation(Exception):
    """A request the service model refuses: `code` is S3's error code for it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@cache
def _model() -> dict[str, Any]:
    import ibm_botocore

    path = Path(ibm_botocore.__file__).parent / "data" / "s3" / "2006-03-01" / "service-2.json"
    return json.loads(path.read_text())


def _shape(name: str) -> Mapping[str, Any]:
    return _model()["shapes"][name]


@cache
def _operations() -> tuple[Operation, ...]:
    found = []
    for name, operation in _model()["operations"].items():
        uri = operation["http"]["requestUri"]
        path, _, query = uri.partition("?")
        parts = [p for p in path.split("/") if p]
        segments = None if any(p.endswith("+}") for p in parts) else len(parts)
        markers = tuple(
            (key, value or None) for key, _, value in (m.partition("=") for m in query.split("&") if m)
        )
        shape_name = (operation.get("input") or {}).get("shape")
        found.append(
            Operation(
                name, operation["http"]["method"], segments, markers, _shape(shape_name) if shape_name else {}
            )
        )
    return tuple(found)


def _present(member: Mapping[str, Any], headers: Mapping[str, str], query: Mapping[str, str]) -> bool:
    where, name = member.get("location"), member.get("locationName")
    if where == "header":
        return name.lower() in headers
    if where == "querystring":
        return name in query
    return True  # uri members are there by the routing; the payload is checked on its own


def operation_of(
    method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str]
) -> Operation | None:
    """The model's operation for a request, or None when the model has no such route."""
    parts = [p for p in path.split("/") if p]
    candidates = [
        op
        for op in _operations()
        if op.method == method
        and (op.segments == len(parts) if op.segments is not None else len(parts) >= 2)
        and all(key in query and (value is None or query[key] == value) for key, value in op.markers)
    ]

    def required_present(op: Operation) -> bool:
        members = op.input.get("members", {})
        return all(_present(members[m], headers, query) for m in op.input.get("required", []))

    # The most specific route first: more query markers, then more required members (CopyObject's
    # x-amz-copy-source makes it CopyObject rather than PutObject).
    candidates.sort(key=lambda op: (len(op.markers), len(op.input.get("required", []))), reverse=True)
    return next((op for op in candidates if required_present(op)), candidates[0] if candidates else None)


def check_request(
    method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], body: bytes
) -> str:
    """The operation's name, or `ModelViolation` for what the model says the request lacks or has wrong."""
    lowered = {k.lower(): v for k, v in headers.items()}
    operation = operation_of(method, path, query, lowered)
    if operation is None:
        raise ModelViolation("MethodNotAllowed", f"no S3 operation is {method} {path}")
    members = operation.input.get("members", {})
    for name in operation.input.get("required", []):
        member = members[name]
        if member.get("location") in ("header", "querystring") and not _present(member, lowered, query):
            where = "header" if member["location"] == "header" else "query parameter"
            raise ModelViolation(
                "InvalidArgument", f"{operation.name} needs the {where} {member['locationName']} ({name})"
            )
    for member in members.values():
        if member.get("location") == "header" and member["locationName"].lower() in lowered:
            _check_enum(member["shape"], lowered[member["locationName"].lower()], member["locationName"])
    payload = operation.input.get("payload")
    if payload and _shape(members[payload]["shape"]).get("type") == "structure":
        _check_payload(
            operation.name, members[payload], body, required=payload in operation.input.get("required", [])
        )
    return operation.name


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _check_payload(operation: str, member: Mapping[str, Any], body: bytes, required: bool) -> None:
    if not body.strip():
        if required:
            raise ModelViolation(
                "MissingRequestBodyError", f"{operation} needs a {member['locationName']} body"
            )
        return
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as error:
        raise ModelViolation("MalformedXML", f"{operation}: the body is not XML ({error})") from None
    expected = member.get("locationName") or member["shape"]
    if _local(root.tag) != expected:
        raise ModelViolation(
            "MalformedXML", f"{operation}: the body's root element is {_local(root.tag)}, expected {expected}"
        )
    _check_structure(operation, member["shape"], root)


def _check_structure(operation: str, shape_name: str, element: ElementTree.Element) -> None:
    shape = _shape(shape_name)
    members = shape.get("members", {})
    # element name -> member; a flattened list's items are named by the member's locationName
    by_element = {(m.get("locationName") or n): (n, m) for n, m in members.items()}
    seen: set[str] = set()
    for child in element:
        tag = _local(child.tag)
        if tag not in by_element:
            raise ModelViolation(
                "MalformedXML",
                f"{operation}: <{tag}> is not an element of {shape_name} "
                f"(it has {', '.join(sorted(by_element)) or 'none'})",
            )
        name, member = by_element[tag]
        seen.add(name)
        _check_value(operation, member["shape"], child)
    missing = [n for n in shape.get("required", []) if n not in seen]
    if missing:
        raise ModelViolation("MalformedXML", f"{operation}: {shape_name} needs {', '.join(missing)}")


def _check_value(operation: str, shape_name: str, element: ElementTree.Element) -> None:
    shape = _shape(shape_name)
    kind = shape.get("type")
    if kind == "structure":
        _check_structure(operation, shape_name, element)
    elif kind == "list":
        item = shape["member"]
        if shape.get("flattened"):
            _check_value(operation, item["shape"], element)
        else:
            for child in element:
                _check_value(operation, item["shape"], child)
    elif kind == "boolean" and (element.text or "").strip() not in ("true", "false"):
        raise ModelViolation("MalformedXML", f"{operation}: <{_local(element.tag)}> must be true or false")
    else:
        _check_enum(shape_name, (element.text or "").strip(), _local(element.tag))


# S3's own error code for a value outside an enum, where it has one; InvalidArgument otherwise.
_ENUM_ERROR_CODES = {"BucketLocationConstraint": "InvalidLocationConstraint"}


def _check_enum(shape_name: str, value: str, where: str) -> None:
    allowed = _shape(shape_name).get("enum")
    if allowed and value not in allowed:
        raise ModelViolation(
            _ENUM_ERROR_CODES.get(shape_name, "InvalidArgument"),
            f"{where} {value!r} is not one of {', '.join(allowed)}",
        )

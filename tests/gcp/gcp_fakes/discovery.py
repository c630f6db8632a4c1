"""The fakes' contract: Google's own discovery documents, not what our code happens to send.

google-api-python-client ships the discovery document of every Google API
(`googleapiclient/discovery_cache/documents/<api>.<version>.json`). Each fake names the documents of the
services it stands in for; every request is looked up there before a handler runs:

- a method and path no document describes -> 404 NOT_FOUND, as Google's front end answers;
- a JSON body is checked against the method's request schema the way Google's JSON parser checks a
  proto3 message: an unknown name -> 400 `Invalid JSON payload received. Unknown name "x" at 'y': Cannot
  find field.`; a value of the wrong type or an enum name outside the documented ones -> 400 `Invalid
  value at 'y' (TYPE), value`; a field whose description begins "Required." missing (or empty, which is
  the same in proto3) inside a message that is present -> 400 INVALID_ARGUMENT naming the field.

What the documents cannot say, and so is not checked: enum *numbers* (the document lists names in an
order that is not their proto numbering, and the REST clients send numbers under
`$alt=json;enum-encoding=int`: any non-negative integer passes), field formats beyond the JSON type
(resource-name patterns, durations' syntax beyond "<number>s"), and constraints stated in prose only.
Fields marked "Output only." are accepted and ignored, as the service ignores them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from gcp_fakes.base import ApiError, invalid_argument

# Google's JSON parser names scalar types by their proto type in "Invalid value" errors.
_PROTO_TYPES = {
    ("string", None): "TYPE_STRING",
    ("string", "int64"): "TYPE_INT64",
    ("string", "uint64"): "TYPE_UINT64",
    ("string", "byte"): "TYPE_BYTES",
    ("integer", "int32"): "TYPE_INT32",
    ("integer", "uint32"): "TYPE_UINT32",
    ("number", "double"): "TYPE_DOUBLE",
    ("number", "float"): "TYPE_FLOAT",
    ("boolean", None): "TYPE_BOOL",
}
_INTEGER = re.compile(r"-?\d+\Z")
_SPECIAL_NUMBERS = frozenset({"NaN", "Infinity", "-Infinity"})
_DURATION = re.compile(r"-?\d+(\.\d{1,9})?s\Z")


def documents_dir() -> Path:
    import googleapiclient

    return Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"


@cache
def load_document(api: str, version: str) -> dict[str, Any]:
    path = documents_dir() / f"{api}.{version}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no discovery document {path.name} in google-api-python-client ({path})")
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Method:
    """One REST method of a discovery document, with the path regexes it answers to."""

    id: str
    http_method: str
    paths: tuple[re.Pattern[str], ...]
    request: str | None  # the request body's schema name
    document: str  # "<api>.<version>", to say where the contract comes from

    def matches(self, http_method: str, path: str) -> bool:
        return http_method == self.http_method and any(p.fullmatch(path) for p in self.paths)


def _path_regex(template: str, parameters: Mapping[str, Any]) -> re.Pattern[str]:
    """`v1/{+parent}/customJobs` -> a regex over the request path. `{+x}` may hold slashes: the parameter's
    documented `pattern` (or anything); `{x}` is one segment (`/` inside it arrives escaped as %2F)."""
    out, position = [], 0
    for match in re.finditer(r"\{(\+?)([^}]+)\}", template):
        out.append(re.escape(template[position : match.start()]))
        reserved, name = match.groups()
        if reserved:
            pattern = str((parameters.get(name) or {}).get("pattern") or "^.+$")
            out.append("(?:" + pattern.removeprefix("^").removesuffix("$") + ")")
        else:
            out.append("[^/]+")
        position = match.end()
    out.append(re.escape(template[position:]))
    return re.compile("".join(out))


def _methods(resources: Mapping[str, Any]) -> Iterable[Mapping[str, Any]]:
    for resource in resources.values():
        yield from (resource.get("methods") or {}).values()
        yield from _methods(resource.get("resources") or {})


class Discovery:
    """The methods and schemas of one discovery document."""

    def __init__(self, api: str, version: str) -> None:
        document = load_document(api, version)
        self.name = f"{api}.{version}"
        self.schemas: dict[str, Any] = document["schemas"]
        service_path = "/" + document.get("servicePath", "")
        methods = [*(document.get("methods") or {}).values(), *_methods(document.get("resources") or {})]
        self.methods = [self._method(m, service_path) for m in methods]

    def _method(self, method: Mapping[str, Any], service_path: str) -> Method:
        parameters = method.get("parameters") or {}
        templates = [service_path + method["path"]]
        for protocol in ((method.get("mediaUpload") or {}).get("protocols") or {}).values():
            templates.append(protocol["path"])  # /upload/storage/v1/b/{bucket}/o
        if method.get("useMediaDownloadService"):
            templates.append("/download" + service_path + method["path"])
        request = (method.get("request") or {}).get("$ref")
        return Method(
            id=method["id"],
            http_method=method["httpMethod"],
            paths=tuple(_path_regex(t, parameters) for t in templates),
            request=request,
            document=self.name,
        )


class Contract:
    """What a fake accepts: the union of the documents of the services it stands in for."""

    def __init__(self, *documents: tuple[str, str], aliases: Mapping[str, str] | None = None) -> None:
        self.documents = [Discovery(api, version) for api, version in documents]
        # Paths Google serves beside the documented ones (the aiplatform operations client polls /ui/...).
        self.aliases = dict(aliases or {})

    def method(self, http_method: str, path: str) -> Method | None:
        for alias, documented in self.aliases.items():
            if path.startswith(alias):
                path = documented + path[len(alias) :]
        for document in self.documents:
            for method in document.methods:
                if method.matches(http_method, path):
                    return method
        return None

    def check_message(self, schema_name: str, body: Any) -> None:
        """Check a JSON message that is not a request body (the metadata part of a multipart upload)."""
        schemas = next(d.schemas for d in self.documents if schema_name in d.schemas)
        BodyChecker(schemas).check(schema_name, body)

    def check(self, http_method: str, path: str, body: Any, is_json: bool) -> Method:
        """The method `path` calls; raises Google's 404 or 400 if the request is not one the API takes."""
        method = self.method(http_method, path)
        if method is None:
            raise ApiError(
                404, f"The requested URL {path} was not found on this server (method {http_method})."
            )
        if method.request is not None and is_json:
            schemas = next(d.schemas for d in self.documents if d.name == method.document)
            BodyChecker(schemas).check(method.request, body)
        return method


class BodyChecker:
    """Checks a JSON body against a schema the way Google's proto3 JSON parser does."""

    def __init__(self, schemas: Mapping[str, Any]) -> None:
        self.schemas = schemas

    def check(self, schema_name: str, body: Any) -> None:
        root = _snake(_message_name(schema_name)) if not schema_name.endswith("Request") else ""
        if not isinstance(body, dict):
            raise invalid_argument(f"Invalid JSON payload received. Expected an object, got {_show(body)}.")
        missing = self._message(schema_name, body, root)
        if missing:
            # Vertex AI lists every missing field; the other APIs name the first. One shape for both.
            found = "".join(
                f"\t{i}.Field: {f}; Message: Required field is not set." for i, f in enumerate(missing, 1)
            )
            raise invalid_argument(f"List of found errors:{found}")

    def _message(self, schema_name: str, value: dict[str, Any], where: str) -> list[str]:
        properties: dict[str, Any] = self.schemas[schema_name].get("properties") or {}
        by_proto_name = {_snake(name): name for name in properties}
        missing: list[str] = []
        for key, item in value.items():
            name = key if key in properties else by_proto_name.get(key)
            if name is None:
                at = f" at '{where}'" if where else ""
                raise invalid_argument(
                    f'Invalid JSON payload received. Unknown name "{key}"{at}: Cannot find field.'
                )
            field = properties[name]
            if _output_only(field):
                continue  # the service ignores what it computes itself
            missing += self._value(field, item, _join(where, _snake(name)))
        for name, field in properties.items():
            if _required(field) and _is_empty(value.get(name, value.get(_snake(name)))):
                missing.append(_join(where, _snake(name)))
        return missing

    def _value(self, field: Mapping[str, Any], value: Any, where: str) -> list[str]:
        if value is None:
            return []  # JSON null is the field's default
        if field.get("type") == "array":
            if not isinstance(value, list):
                raise invalid_argument(f"Invalid value at '{where}': expected a list, got {_show(value)}.")
            missing: list[str] = []
            for i, item in enumerate(value):
                missing += self._value(field.get("items") or {}, item, f"{where}[{i}]")
            return missing
        if isinstance(value, list) and field.get("type") != "any":
            raise invalid_argument(
                f"Invalid JSON payload received. Proto field is not repeating, cannot start list: '{where}'."
            )
        ref = field.get("$ref")
        if ref is not None:
            return self._object(ref, value, where)
        if field.get("type") == "object":
            if not isinstance(value, dict):
                raise invalid_argument(f"Invalid value at '{where}' (map), {_show(value)}")
            missing = []
            entries = field.get("additionalProperties")
            if entries is not None:  # a map<string, V>
                for key, item in value.items():
                    missing += self._value(entries, item, f"{where}[{key}]")
            return missing
        self._scalar(field, value, where)
        return []

    def _object(self, ref: str, value: Any, where: str) -> list[str]:
        schema = self.schemas[ref]
        if schema.get("type") == "any" or ref in ("GoogleProtobufValue", "GoogleProtobufStruct"):
            return []
        if not isinstance(value, dict):
            raise invalid_argument(f"Invalid value at '{where}' ({_message_name(ref)}), {_show(value)}")
        return self._message(ref, value, where)

    @staticmethod
    def _scalar(field: Mapping[str, Any], value: Any, where: str) -> None:
        kind, fmt = field.get("type"), field.get("format")
        if kind == "any":
            return
        enum = field.get("enum")
        if enum is not None:
            # A number is the enum's proto number (enum-encoding=int); the document does not give numbers.
            ok = (isinstance(value, int) and not isinstance(value, bool) and value >= 0) or value in enum
            if not ok:
                raise invalid_argument(f"Invalid value at '{where}' (enum), {_show(value)}")
            return
        if kind == "string" and fmt in ("int64", "uint64"):
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, str) and bool(_INTEGER.match(value))
            )
        elif kind == "string" and fmt == "google-duration":
            ok = isinstance(value, str) and bool(_DURATION.match(value))
        elif kind == "string":
            ok = isinstance(value, str)
        elif kind == "integer":
            ok = (isinstance(value, int) and not isinstance(value, bool)) or (
                isinstance(value, str) and bool(_INTEGER.match(value))
            )
        elif kind == "number":
            ok = (
                isinstance(value, (int, float)) and not isinstance(value, bool)
            ) or value in _SPECIAL_NUMBERS
        elif kind == "boolean":
            ok = isinstance(value, bool)
        else:
            ok = True
        if not ok:
            proto_type = _PROTO_TYPES.get((str(kind), fmt), _PROTO_TYPES.get((str(kind), None), str(kind)))
            raise invalid_argument(f"Invalid value at '{where}' ({proto_type}), {_show(value)}")


def _required(field: Mapping[str, Any]) -> bool:
    return str(field.get("description") or "").startswith("Required.") and not _output_only(field)


def _output_only(field: Mapping[str, Any]) -> bool:
    return bool(field.get("readOnly")) or str(field.get("description") or "").startswith("Output only.")


def _is_empty(value: Any) -> bool:
    # proto3: an absent field, its default (0, "", false) and an empty list or map are the same thing.
    return value is None or value == "" or value == [] or value == {} or value is False or value == 0


def _join(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _message_name(schema_name: str) -> str:
    """`GoogleCloudAiplatformV1CustomJob` -> `CustomJob` (discovery prefixes the proto package)."""
    return re.sub(r"^Google\w*?V\d+(?:beta\d*|alpha\d*)?(?=[A-Z])", "", schema_name)


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."

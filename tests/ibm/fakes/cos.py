"""Cloud Object Storage's S3 API (s3.<region>.cloud-object-storage.appdomain.cloud), path-style.

Every request is first checked against ibm_botocore's S3 service model (`s3_model.py`): its operation,
required members, XML payload elements and enum values; a refusal is S3's XML error. Versioning is
modelled (PutBucketVersioning; a versioned bucket keeps older versions and delete markers, which
ListObjectVersions lists and DeleteObject/DeleteObjects with a VersionId remove); DeleteObjects takes at
most 1,000 keys, as S3 documents.

What moto does not check and COS does: the OAuth bearer token (`Config(signature_version="oauth")`),
the `ibm-service-instance-id` a bucket is created in (an active COS instance of the fake Resource
Controller), the location constraint (`<region>-<storage class>` of this endpoint's region), and the Key
Protect headers of a bucket created with a root key (`ibm-sse-kp-encryption-algorithm: AES256` and
`ibm-sse-kp-customer-root-key-crn`, which need an authorization COS -> Key Protect, Reader). Errors are
S3's XML. Single-part uploads only (the stack's artifacts are a few MB).
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote
from xml.etree import ElementTree

from flask import Response, request

from .iam import authorizes
from .s3_model import ModelViolation, check_request
from .server import FakeService, IbmApiError
from .state import Bucket, StoredObject

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
STORAGE_CLASSES = ("standard", "vault", "cold", "smart", "onerate_active")
KP_ALGORITHM_HEADER = "ibm-sse-kp-encryption-algorithm"
KP_ROOT_KEY_HEADER = "ibm-sse-kp-customer-root-key-crn"
SERVICE_INSTANCE_HEADER = "ibm-service-instance-id"
COPY_SOURCE_HEADER = "x-amz-copy-source"
MAX_KEYS_PER_DELETE = 1000  # DeleteObjects, as S3 documents it (the service model sets no maximum)
BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ROOT_KEY_CRN = re.compile(
    r"^crn:v1:bluemix:public:(kms|hs-crypto):([a-z-]+):a/([0-9a-f]+):([0-9a-f-]+):key:([0-9a-f-]+)$"
)
S3_CODES = {
    403: "AccessDenied",
    404: "NoSuchKey",
    409: "Conflict",
    429: "SlowDown",
    500: "InternalError",
    503: "ServiceUnavailable",
}


class S3Error(IbmApiError):
    """An S3 error: `code` is S3's (NoSuchBucket, BucketNotEmpty, InvalidLocationConstraint, ...)."""


class CosService(FakeService):
    name = "cos"
    region = "us-south"

    def routes(self) -> None:
        self.app.before_request(self._check_against_the_service_model)
        rule = self.app.add_url_rule
        rule("/", view_func=self.list_buckets, methods=["GET"])
        rule("/<bucket>", view_func=self.bucket, methods=["GET", "PUT", "HEAD", "DELETE", "POST"])
        rule("/<bucket>/", view_func=self.bucket, methods=["GET", "PUT", "HEAD", "DELETE", "POST"])
        rule("/<bucket>/<path:key>", view_func=self.object, methods=["GET", "PUT", "HEAD", "DELETE"])

    def error_response(self, error: IbmApiError) -> Response:
        code = error.code if isinstance(error, S3Error) else S3_CODES.get(error.status, error.code)
        root = ElementTree.Element("Error")
        for tag, text in (
            ("Code", code),
            ("Message", error.message),
            ("Resource", request.path),
            ("RequestId", uuid.uuid4().hex),
            ("httpStatusCode", str(error.status)),
        ):
            ElementTree.SubElement(root, tag).text = text
        body = b"" if request.method == "HEAD" else _xml(root)
        return Response(body, status=error.status, content_type="application/xml")

    def _check_against_the_service_model(self) -> None:
        self._authorize()  # S3 answers a request without credentials 403 before it reads it
        try:
            operation = check_request(
                request.method, request.path, request.args, dict(request.headers), request.get_data()
            )
        except ModelViolation as violation:
            raise S3Error(
                400 if violation.code != "MethodNotAllowed" else 405, violation.code, violation.message
            ) from None
        # COS's service roles: Reader lists and downloads; Writer (and Manager) also create and delete
        # buckets and objects.
        reads = operation.startswith(("Get", "Head", "List"))
        roles = {"Reader", "Writer", "Manager"} if reads else {"Writer", "Manager"}
        if not self.state.scenario.caller_roles.get("cloud-object-storage", set()) & roles:
            raise S3Error(
                403,
                "AccessDenied",
                f"Access Denied: {operation} needs the {' or '.join(sorted(roles))} role on "
                "Cloud Object Storage",
            )

    def _authorize(self) -> None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer ") or self.state.iam.claims_of(header[7:].strip()) is None:
            raise S3Error(
                403,
                "AccessDenied",
                "Access Denied: an IAM bearer token (signature_version='oauth') is required",
            )

    # Service ----------------------------------------------------------------------------------------
    def list_buckets(self) -> Response:
        self._authorize()
        instance = request.headers.get(SERVICE_INSTANCE_HEADER)
        root = ElementTree.Element("ListAllMyBucketsResult", xmlns=S3_NS)
        owner = ElementTree.SubElement(root, "Owner")
        ElementTree.SubElement(owner, "ID").text = instance or self.state.account_id
        ElementTree.SubElement(owner, "DisplayName").text = instance or self.state.account_id
        buckets = ElementTree.SubElement(root, "Buckets")
        with self.state.lock:
            for bucket in self.state.buckets.values():
                if instance in (None, bucket.service_instance_id):
                    entry = ElementTree.SubElement(buckets, "Bucket")
                    ElementTree.SubElement(entry, "Name").text = bucket.name
                    ElementTree.SubElement(entry, "CreationDate").text = _iso(bucket.created)
        return Response(_xml(root), content_type="application/xml")

    # Buckets ----------------------------------------------------------------------------------------
    def bucket(self, bucket: str) -> Response:
        self._authorize()
        method = request.method
        if method == "PUT" and "versioning" not in request.args:
            return self._create_bucket(bucket)
        with self.state.lock:
            found = self.state.buckets.get(bucket)
            if found is None:
                raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist.")
            if method == "HEAD":
                headers = {"ibm-sse-kp-enabled": str(found.kp_root_key_crn is not None)}
                if found.kp_root_key_crn:
                    headers["ibm-sse-kp-crk-id"] = found.kp_root_key_crn
                return Response(b"", headers=headers)
            if method == "DELETE":
                if found.objects or found.noncurrent:
                    raise S3Error(409, "BucketNotEmpty", "The bucket you tried to delete is not empty.")
                del self.state.buckets[bucket]
                return Response(b"", status=204)
            if method == "POST" and "delete" in request.args:
                return self._delete_objects(found)
            if method == "PUT" and "versioning" in request.args:
                return self._put_versioning(found)
            if method == "GET" and "versions" in request.args:
                return self._list_versions(found)
            if method == "GET" and "location" in request.args:
                root = ElementTree.Element("LocationConstraint", xmlns=S3_NS)
                root.text = found.location_constraint
                return Response(_xml(root), content_type="application/xml")
            if method == "GET":
                return self._list_objects(found)
        raise S3Error(405, "MethodNotAllowed", f"{method} on a bucket is not supported by this fake")

    def _create_bucket(self, name: str) -> Response:
        if not BUCKET_NAME.match(name) or ".." in name:
            raise S3Error(400, "InvalidBucketName", f"The specified bucket {name!r} is not valid.")
        instance_id = request.headers.get(SERVICE_INSTANCE_HEADER)
        if not instance_id:
            raise S3Error(
                400,
                "InvalidArgument",
                f"Creating a bucket needs the {SERVICE_INSTANCE_HEADER} header "
                "(ibm_service_instance_id of the client): the COS instance that will own it",
            )
        location = self._location_constraint()
        algorithm = request.headers.get(KP_ALGORITHM_HEADER)
        root_key = request.headers.get(KP_ROOT_KEY_HEADER)
        with self.state.lock:
            instance = next(
                (
                    i
                    for i in self.state.instances.values()
                    if instance_id in (i["guid"], i["crn"]) and i["state"] == "active"
                ),
                None,
            )
            if instance is None or not instance["crn"].startswith(
                "crn:v1:bluemix:public:cloud-object-storage:"
            ):
                raise S3Error(
                    400,
                    "InvalidArgument",
                    f"{SERVICE_INSTANCE_HEADER} {instance_id!r} is not an active "
                    "Cloud Object Storage instance of this account",
                )
            if name in self.state.buckets:
                raise S3Error(409, "BucketAlreadyExists", "The requested bucket name is not available.")
            if (algorithm is None) != (root_key is None):
                raise S3Error(
                    400, "InvalidArgument", f"{KP_ALGORITHM_HEADER} and {KP_ROOT_KEY_HEADER} go together"
                )
            if root_key is not None:
                self._check_root_key(algorithm, root_key, instance["guid"])
            self.state.buckets[name] = Bucket(
                name=name,
                location_constraint=location,
                service_instance_id=instance["guid"],
                created=datetime.now(UTC),
                kp_algorithm=algorithm,
                kp_root_key_crn=root_key,
            )
        return Response(b"", headers={"Location": f"/{name}"})

    def _location_constraint(self) -> str:
        body = request.get_data()
        if not body.strip():
            return f"{self.region}-standard"  # COS's default: the endpoint's region, Standard class
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError as error:
            raise S3Error(
                400, "MalformedXML", f"CreateBucketConfiguration is not valid XML: {error}"
            ) from None
        element = root.find(f"{{{S3_NS}}}LocationConstraint")
        if element is None:
            element = root.find("LocationConstraint")
        location = (element.text or "").strip() if element is not None else ""
        allowed = [f"{self.region}-{c}" for c in STORAGE_CLASSES]
        if location not in allowed:
            raise S3Error(
                400,
                "InvalidLocationConstraint",
                f"The specified location-constraint {location!r} is not valid on the {self.region} "
                f"endpoint; use one of {', '.join(allowed)}",
            )
        return location

    def _check_root_key(self, algorithm: str | None, root_key: str, cos_guid: str) -> None:
        if algorithm != "AES256":
            raise S3Error(400, "InvalidArgument", f"{KP_ALGORITHM_HEADER} must be AES256, got {algorithm!r}")
        match = ROOT_KEY_CRN.match(root_key)
        if match is None:
            raise S3Error(
                400,
                "InvalidArgument",
                f"{KP_ROOT_KEY_HEADER} {root_key!r} is not a root key CRN "
                "(crn:v1:bluemix:public:kms:<region>:a/<account>:<instance>:key:<key id>)",
            )
        kms_service, _, _, kms_instance, _ = match.groups()
        if not any(
            authorizes(p, "cloud-object-storage", cos_guid, kms_service, kms_instance, "Reader")
            for p in self.state.policies.values()
        ):
            raise S3Error(
                403,
                "AccessDenied",
                f"Cloud Object Storage is not authorized to use root key {root_key}: "
                f"create an authorization cloud-object-storage -> {kms_service} with the Reader role",
            )

    def _list_objects(self, bucket: Bucket) -> Response:
        args = request.args
        v2 = args.get("list-type") == "2"
        url_encoded = args.get("encoding-type") == "url"
        prefix = args.get("prefix", "")
        max_keys = int(args.get("max-keys", 1000))
        start = args.get("continuation-token") or args.get("start-after") or args.get("marker") or ""
        keys = sorted(k for k in bucket.objects if k.startswith(prefix) and k > start)
        page, truncated = keys[:max_keys], len(keys) > max_keys
        root = ElementTree.Element("ListBucketResult", xmlns=S3_NS)
        for tag, text in (
            ("Name", bucket.name),
            ("Prefix", prefix),
            ("MaxKeys", str(max_keys)),
            ("IsTruncated", str(truncated).lower()),
        ):
            ElementTree.SubElement(root, tag).text = text
        if v2:
            ElementTree.SubElement(root, "KeyCount").text = str(len(page))
            if truncated:
                ElementTree.SubElement(root, "NextContinuationToken").text = page[-1]
        elif truncated:
            ElementTree.SubElement(root, "NextMarker").text = page[-1]
        if url_encoded:
            ElementTree.SubElement(root, "EncodingType").text = "url"
        for key in page:
            stored = bucket.objects[key]
            entry = ElementTree.SubElement(root, "Contents")
            for tag, text in (
                ("Key", quote(key) if url_encoded else key),
                ("LastModified", _iso(stored.last_modified)),
                ("ETag", f'"{stored.etag}"'),
                ("Size", str(len(stored.body))),
                ("StorageClass", "STANDARD"),
            ):
                ElementTree.SubElement(entry, tag).text = text
        return Response(_xml(root), content_type="application/xml")

    def _delete_objects(self, bucket: Bucket) -> Response:
        document = ElementTree.fromstring(request.get_data())  # well-formed: the model check parsed it
        entries = [e for e in document if e.tag.rsplit("}", 1)[-1] == "Object"]
        if len(entries) > MAX_KEYS_PER_DELETE:
            raise S3Error(
                400,
                "MalformedXML",
                f"The XML you provided was not well-formed or did not validate against our published schema "
                f"(DeleteObjects takes at most {MAX_KEYS_PER_DELETE} keys; got {len(entries)})",
            )
        root = ElementTree.Element("DeleteResult", xmlns=S3_NS)
        for entry in entries:
            fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in entry}
            key, version = fields["Key"], fields.get("VersionId")
            _delete(bucket, key, version)
            deleted = ElementTree.SubElement(root, "Deleted")
            ElementTree.SubElement(deleted, "Key").text = key
            if version:
                ElementTree.SubElement(deleted, "VersionId").text = version
        return Response(_xml(root), content_type="application/xml")

    def _put_versioning(self, bucket: Bucket) -> Response:
        document = ElementTree.fromstring(request.get_data())
        status = next((c.text for c in document if c.tag.rsplit("}", 1)[-1] == "Status"), None)
        if status:
            bucket.versioning = status
        return Response(b"")

    def _list_versions(self, bucket: Bucket) -> Response:
        """ListObjectVersions, one page (the stack's buckets hold a few objects): each key's versions
        newest first, delete markers among them, `IsLatest` on the newest."""
        prefix = request.args.get("prefix", "")
        root = ElementTree.Element("ListVersionsResult", xmlns=S3_NS)
        for tag, text in (("Name", bucket.name), ("Prefix", prefix), ("IsTruncated", "false")):
            ElementTree.SubElement(root, tag).text = text
        history: dict[str, list[tuple[str, StoredObject | None]]] = {}
        for key, version, stored in bucket.noncurrent:
            history.setdefault(key, []).append((version, stored))
        for key, stored in bucket.objects.items():
            history.setdefault(key, []).append((stored.version_id, stored))
        for key in sorted(k for k in history if k.startswith(prefix)):
            for index, (version, stored) in enumerate(reversed(history[key])):
                entry = ElementTree.SubElement(root, "Version" if stored is not None else "DeleteMarker")
                fields = [("Key", key), ("VersionId", version), ("IsLatest", str(index == 0).lower())]
                if stored is not None:
                    fields += [
                        ("LastModified", _iso(stored.last_modified)),
                        ("ETag", f'"{stored.etag}"'),
                        ("Size", str(len(stored.body))),
                        ("StorageClass", "STANDARD"),
                    ]
                else:
                    fields.append(("LastModified", _iso(datetime.now(UTC))))
                for tag, text in fields:
                    ElementTree.SubElement(entry, tag).text = text
        return Response(_xml(root), content_type="application/xml")

    # Objects ----------------------------------------------------------------------------------------
    def object(self, bucket: str, key: str) -> Response:
        self._authorize()
        with self.state.lock:
            found = self.state.buckets.get(bucket)
            if found is None:
                raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist.")
            if request.method == "PUT":
                if "uploadId" in request.args or "partNumber" in request.args:
                    raise S3Error(501, "NotImplemented", "multipart uploads are not supported by this fake")
                if COPY_SOURCE_HEADER in request.headers:
                    return self._copy_object(found, key)
                body = request.get_data()
                etag = hashlib.md5(body).hexdigest()
                stored = _put(
                    found,
                    key,
                    StoredObject(
                        body=body,
                        etag=etag,
                        last_modified=datetime.now(UTC),
                        content_type=request.headers.get("Content-Type", "binary/octet-stream"),
                        metadata=_metadata_headers(),
                    ),
                )
                return Response(b"", headers={"ETag": f'"{etag}"', "x-amz-version-id": stored.version_id})
            if request.method == "DELETE":
                _delete(found, key, request.args.get("versionId"))
                return Response(b"", status=204)
            stored = found.objects.get(key)
            if stored is None:
                raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
            headers: dict[str, Any] = {
                "ETag": f'"{stored.etag}"',
                "Last-Modified": stored.last_modified.strftime("%a, %d %b %Y %H:%M:%S GMT"),
                "Content-Length": str(len(stored.body)),
                **{f"x-amz-meta-{k}": v for k, v in stored.metadata.items()},
            }
            body = b"" if request.method == "HEAD" else stored.body
            response = Response(body, content_type=stored.content_type, headers=headers)
            if request.method == "HEAD":
                response.headers["Content-Length"] = str(len(stored.body))
            return response

    def _copy_object(self, target: Bucket, key: str) -> Response:
        """CopyObject (PUT with `x-amz-copy-source: <bucket>/<key>`, URL-encoded): the source's body, and
        its content type and metadata unless `x-amz-metadata-directive: REPLACE`. Called under the lock."""
        source_path = unquote(request.headers[COPY_SOURCE_HEADER].split("?", 1)[0]).lstrip("/")
        source_bucket_name, _, source_key = source_path.partition("/")
        source_bucket = self.state.buckets.get(source_bucket_name)
        if source_bucket is None:
            raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist.")
        source = source_bucket.objects.get(source_key)
        if source is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.")
        replace = request.headers.get("x-amz-metadata-directive", "COPY").upper() == "REPLACE"
        copied = StoredObject(
            body=source.body,
            etag=source.etag,
            last_modified=datetime.now(UTC),
            content_type=request.headers.get("Content-Type", source.content_type)
            if replace
            else source.content_type,
            metadata=_metadata_headers() if replace else dict(source.metadata),
        )
        _put(target, key, copied)
        root = ElementTree.Element("CopyObjectResult", xmlns=S3_NS)
        ElementTree.SubElement(root, "LastModified").text = _iso(copied.last_modified)
        ElementTree.SubElement(root, "ETag").text = f'"{copied.etag}"'
        return Response(_xml(root), content_type="application/xml")


def _put(bucket: Bucket, key: str, stored: StoredObject) -> StoredObject:
    """Store a new current version of `key`; a versioned bucket keeps the one it replaces."""
    if bucket.versioning == "Enabled":
        stored.version_id = uuid.uuid4().hex
        previous = bucket.objects.get(key)
        if previous is not None:
            bucket.noncurrent.append((key, previous.version_id, previous))
    bucket.objects[key] = stored
    bucket.markers.pop(key, None)
    return stored


def _delete(bucket: Bucket, key: str, version: str | None) -> None:
    """DeleteObject: without a version, a versioned bucket only hides the key behind a delete marker;
    with one, that version (or marker) is gone for good."""
    if version is None:
        current = bucket.objects.pop(key, None)
        if bucket.versioning == "Enabled":
            if current is not None:
                bucket.noncurrent.append((key, current.version_id, current))
            marker = uuid.uuid4().hex
            bucket.noncurrent.append((key, marker, None))
            bucket.markers[key] = marker
        return
    current = bucket.objects.get(key)
    if current is not None and current.version_id == version:
        del bucket.objects[key]
    bucket.noncurrent = [entry for entry in bucket.noncurrent if (entry[0], entry[1]) != (key, version)]
    if bucket.markers.get(key) == version:
        del bucket.markers[key]


def _metadata_headers() -> dict[str, str]:
    """The request's user metadata (`x-amz-meta-<name>`), names lowercased as S3 keeps them."""
    prefix = "x-amz-meta-"
    return {k[len(prefix) :].lower(): v for k, v in request.headers.items() if k.lower().startswith(prefix)}


def _xml(root: ElementTree.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root)


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")

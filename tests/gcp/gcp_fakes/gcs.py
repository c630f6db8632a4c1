"""A loopback fake of the Cloud Storage JSON API over a local folder: `root/<bucket>/<object name>`.

Enough for google-cloud-storage's `Client(client_options={"api_endpoint": url})` (or, in a process,
`workload_env()`) to get, list, download, upload, delete and rewrite (copy) objects. The same
folder stands in for Cloud Storage FUSE (`/gcs/<bucket>/...`) in the Vertex fake's training jobs.

As the service does: a list answers at most `maxResults` (and at most `list_page_size`) items with a
`nextPageToken`; a rewrite copies at most `maxBytesRewrittenPerCall` (a multiple of 1 MiB) or
`rewrite_bytes_per_call` bytes per call and answers `done: false` with a `rewriteToken` until the copy is
complete; the destination object exists only once it is (Cloud Storage needs several calls when source
and destination differ in location, storage class or encryption key, as with a customer key).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import mimetypes
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import google_crc32c
from starlette.responses import Response

from gcp_fakes.base import ApiError, Call, FakeServer, invalid_argument, not_found
from gcp_fakes.discovery import Method
from gcp_fakes.iam import IamModel, storage_message

_BUCKET = r"/storage/v1/b/(?P<bucket>[^/]+)"
_OBJECT = _BUCKET + r"/o/(?P<object>.+)"
_REWRITE = _BUCKET + r"/o/(?P<object>.+?)/rewriteTo/b/(?P<dest_bucket>[^/]+)/o/(?P<dest_object>.+)"
MIB = 1024 * 1024
# The permission each JSON API method needs on its bucket ("IAM permissions for JSON methods").
_PERMISSIONS = {
    "storage.buckets.get": ("storage.buckets.get",),
    "storage.objects.get": ("storage.objects.get",),
    "storage.objects.list": ("storage.objects.list",),
    "storage.objects.insert": ("storage.objects.create",),
    "storage.objects.delete": ("storage.objects.delete",),
}
MAX_LIST_RESULTS = 1000  # objects.list: "maxResults ... at most 1000"


@dataclass
class _Rewrite:
    """A rewrite in progress: what is copied where, and how far it got."""

    source: str  # bucket/name
    destination: str
    data: bytes
    done_bytes: int = 0


class GcsFake(FakeServer):
    def __init__(
        self, root: Path, rewrite_bytes_per_call: int = 4 * MIB, list_page_size: int = MAX_LIST_RESULTS
    ) -> None:
        from gcp_fakes.discovery import Contract

        super().__init__("cloud-storage", Contract(("storage", "v1")))
        # Tests shrink both to make large-object rewrites and several list pages out of small test data.
        self.rewrite_bytes_per_call = rewrite_bytes_per_call
        self.list_page_size = list_page_size
        self._rewrites: dict[str, _Rewrite] = {}
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.route("GET", _BUCKET, self._get_bucket)
        self.route("GET", _BUCKET + r"/o", self._list)
        self.route("GET", _OBJECT, self._get)
        self.route("GET", r"/download" + _OBJECT, self._get)
        self.route("DELETE", _OBJECT, self._delete)
        self.route("POST", r"/upload" + _BUCKET + r"/o", self._upload)
        self.route("POST", _REWRITE, self._rewrite)

    # -- helpers for tests -------------------------------------------------------------------------
    def path_of(self, uri: str) -> Path:
        """The local file or folder behind gs://bucket/name."""
        if not uri.startswith("gs://"):
            raise ValueError(f"not a gs:// URI: {uri}")
        return self.root / uri.removeprefix("gs://")

    def put(self, uri: str, data: bytes) -> Path:
        path = self.path_of(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def authorize(self, call: Call, method: Method, iam: IamModel) -> None:
        """The caller's permission on the bucket(s) the method touches (Cloud Storage's 403 otherwise)."""
        member = self.principal(call)
        match = re.match(r"/(?:upload/|download/)?storage/v1/b/(?P<bucket>[^/]+)", call.path)
        if match is None:
            return
        needs = [(permission, match["bucket"]) for permission in _PERMISSIONS.get(method.id, ())]
        rewrite = re.search(r"/rewriteTo/b/(?P<bucket>[^/]+)/o/", call.path)
        if rewrite is not None:
            needs = [("storage.objects.get", match["bucket"]), ("storage.objects.create", rewrite["bucket"])]
        for permission, bucket in needs:
            iam.require(member, permission, f"buckets/{bucket}", storage_message(member, permission))

    def workload_env(self, principal: str, folder: Path) -> dict[str, str]:
        """The environment under which google-cloud-storage's `Client()` reaches this fake as `principal`
        (a bearer token from its credentials file), as a Vertex replica reaches Cloud Storage as its account.
        Not STORAGE_EMULATOR_HOST: with it the library sends no token at all."""
        return {
            "API_ENDPOINT_OVERRIDE": self.url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.credentials_file(principal, folder)),
            "GOOGLE_CLOUD_PROJECT": "mnist-test",
        }

    # -- API ---------------------------------------------------------------------------------------
    def _bucket_dir(self, bucket: str) -> Path:
        folder = self.root / bucket
        if not folder.is_dir():
            raise not_found(f"The specified bucket {bucket}")
        return folder

    def _get_bucket(self, call: Call, match: re.Match[str]) -> Any:
        bucket = match["bucket"]
        self._bucket_dir(bucket)
        return {"kind": "storage#bucket", "id": bucket, "name": bucket, "location": "US-CENTRAL1"}

    def _resource(self, bucket: str, name: str, path: Path) -> dict[str, Any]:
        data = path.read_bytes()
        stat = path.stat()
        updated = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        generation = str(stat.st_mtime_ns // 1000)
        return {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/{generation}",
            "name": name,
            "bucket": bucket,
            "generation": generation,
            "metageneration": "1",
            "contentType": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "size": str(len(data)),
            "md5Hash": base64.b64encode(hashlib.md5(data).digest()).decode(),
            "crc32c": base64.b64encode(google_crc32c.Checksum(data).digest()).decode(),
            "timeCreated": updated,
            "updated": updated,
            "mediaLink": f"{self.url}/download/storage/v1/b/{bucket}/o/{quote(name, safe='')}?alt=media",
        }

    def _object_path(self, bucket: str, name: str) -> Path:
        path = self._bucket_dir(bucket) / name
        if not path.is_file():
            raise not_found(f"No such object: {bucket}/{name}")
        return path

    def _get(self, call: Call, match: re.Match[str]) -> Any:
        bucket, name = match["bucket"], unquote(match["object"])
        path = self._object_path(bucket, name)
        resource = self._resource(bucket, name, path)
        if call.query.get("alt") != "media":
            return resource
        headers = {
            "x-goog-hash": f"crc32c={resource['crc32c']},md5={resource['md5Hash']}",
            "x-goog-generation": resource["generation"],
            "x-goog-stored-content-length": resource["size"],
        }
        return Response(path.read_bytes(), media_type=resource["contentType"], headers=headers)

    def _list(self, call: Call, match: re.Match[str]) -> Any:
        bucket = match["bucket"]
        folder = self._bucket_dir(bucket)
        prefix = call.query.get("prefix", "")
        try:
            wanted = int(call.query.get("maxResults") or MAX_LIST_RESULTS)
        except ValueError:
            raise invalid_argument(f"Invalid value for maxResults: {call.query['maxResults']}") from None
        page_size = max(1, min(wanted, self.list_page_size, MAX_LIST_RESULTS))
        # The page token is the last name of the previous page (opaque to the client, as Google's is).
        after = _unpack_token(call.query.get("pageToken", ""))
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        names = [n for n in names if n.startswith(prefix) and n > after]
        page = names[:page_size]
        reply: dict[str, Any] = {
            "kind": "storage#objects",
            "items": [self._resource(bucket, n, folder / n) for n in page],
        }
        if len(names) > page_size:
            reply["nextPageToken"] = _pack_token(page[-1])
        return reply

    def _delete(self, call: Call, match: re.Match[str]) -> Any:
        self._object_path(match["bucket"], unquote(match["object"])).unlink()
        return Response(status_code=204)

    def _upload(self, call: Call, match: re.Match[str]) -> Any:
        bucket = match["bucket"]
        folder = self._bucket_dir(bucket)
        kind = call.query.get("uploadType")
        if kind == "media":
            name, data = call.query.get("name", ""), call.body if isinstance(call.body, bytes) else b""
        elif kind == "multipart":
            metadata, data = _multipart(call)
            assert self.contract is not None
            self.contract.check_message("Object", metadata)  # the JSON part is an Object resource
            name = str(metadata.get("name", ""))
        else:
            raise invalid_argument(f"uploadType {kind!r} is not supported by the fake (media, multipart)")
        if not name:
            raise invalid_argument("the object has no name")
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return self._resource(bucket, name, path)

    def _rewrite(self, call: Call, match: re.Match[str]) -> Any:
        """objects.rewrite: up to one chunk per call; `rewriteToken` carries the copy on to the next call,
        and only the call that copies the last byte creates the destination (`done: true`, `resource`)."""
        source = f"{match['bucket']}/{unquote(match['object'])}"
        bucket, name = match["dest_bucket"], unquote(match["dest_object"])
        destination = f"{bucket}/{name}"
        chunk = self._rewrite_chunk(call)
        token = call.query.get("rewriteToken")
        with self.lock:
            if token:
                progress = self._rewrites.get(token)
                if progress is None or (progress.source, progress.destination) != (source, destination):
                    raise invalid_argument("The rewrite token is not valid for this source and destination.")
                del self._rewrites[token]
            else:
                path = self._object_path(match["bucket"], unquote(match["object"]))
                self._bucket_dir(bucket)
                progress = _Rewrite(source, destination, path.read_bytes())
            progress.done_bytes = min(len(progress.data), progress.done_bytes + chunk)
            reply: dict[str, Any] = {
                "kind": "storage#rewriteResponse",
                "totalBytesRewritten": str(progress.done_bytes),
                "objectSize": str(len(progress.data)),
                "done": progress.done_bytes >= len(progress.data),
            }
            if not reply["done"]:
                token = secrets.token_urlsafe(24)
                self._rewrites[token] = progress
                reply["rewriteToken"] = token
                return reply
        path = self._bucket_dir(bucket) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(progress.data)
        reply["resource"] = self._resource(bucket, name, path)
        return reply

    def _rewrite_chunk(self, call: Call) -> int:
        given = call.query.get("maxBytesRewrittenPerCall")
        if not given:
            return self.rewrite_bytes_per_call
        if not given.isdigit() or int(given) % MIB:
            raise invalid_argument(
                "maxBytesRewrittenPerCall must be an integral multiple of 1048576 (1 MiB)."
            )
        return min(int(given), self.rewrite_bytes_per_call)


def _pack_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


def _unpack_token(token: str) -> str:
    if not token:
        return ""
    try:
        return base64.urlsafe_b64decode(token.encode()).decode()
    except ValueError:
        raise invalid_argument(f"Invalid page token: {token}") from None


def _multipart(call: Call) -> tuple[dict[str, Any], bytes]:
    """multipart/related: a JSON part with the object's metadata, then the media part."""
    content_type = call.headers.get("content-type", "")
    boundary = content_type.partition("boundary=")[2].strip('"')
    raw = call.body if isinstance(call.body, bytes) else json.dumps(call.body).encode()
    if not boundary:
        raise ApiError(400, "multipart upload without a boundary")
    parts = [p for p in raw.split(b"--" + boundary.encode()) if p.strip() not in (b"", b"--")]
    if len(parts) < 2:
        raise ApiError(400, "multipart upload needs a metadata part and a media part")
    metadata = json.loads(parts[0].partition(b"\r\n\r\n")[2])
    media = parts[1].partition(b"\r\n\r\n")[2].removesuffix(b"\r\n")
    if not isinstance(metadata, dict):
        raise invalid_argument("the metadata part of a multipart upload must be a JSON object")
    return metadata, media

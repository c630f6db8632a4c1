"""A loopback fake of the Cloud Storage JSON API over a local folder: `root/<bucket>/<object name>`.

Enough for google-cloud-storage's `Client(client_options={"api_endpoint": url})` (or the documented
`STORAGE_EMULATOR_HOST=url`) to get, list, download, upload, delete and rewrite (copy) objects. The same
folder stands in for Cloud Storage FUSE (`/gcs/<bucket>/...`) in the Vertex fake's training jobs.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import mimetypes
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import google_crc32c
from starlette.responses import Response

from gcp_fakes.base import ApiError, Call, FakeServer, invalid_argument, not_found

_BUCKET = r"/storage/v1/b/(?P<bucket>[^/]+)"
_OBJECT = _BUCKET + r"/o/(?P<object>.+)"
_REWRITE = _BUCKET + r"/o/(?P<object>.+?)/rewriteTo/b/(?P<dest_bucket>[^/]+)/o/(?P<dest_object>.+)"


class GcsFake(FakeServer):
    def __init__(self, root: Path) -> None:
        super().__init__("cloud-storage")
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
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        items = [self._resource(bucket, n, folder / n) for n in names if n.startswith(prefix)]
        return {"kind": "storage#objects", "items": items}

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
            name, data = _multipart(call)
        else:
            raise invalid_argument(f"uploadType {kind!r} is not supported by the fake (media, multipart)")
        if not name:
            raise invalid_argument("the object has no name")
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return self._resource(bucket, name, path)

    def _rewrite(self, call: Call, match: re.Match[str]) -> Any:
        """objects.rewrite: the whole object in one call (`done: true`, no rewrite token), as Cloud
        Storage answers for a small object in the same location and storage class."""
        source = self._object_path(match["bucket"], unquote(match["object"]))
        bucket, name = match["dest_bucket"], unquote(match["dest_object"])
        path = self._bucket_dir(bucket) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = source.read_bytes()
        path.write_bytes(data)
        return {
            "kind": "storage#rewriteResponse",
            "totalBytesRewritten": str(len(data)),
            "objectSize": str(len(data)),
            "done": True,
            "resource": self._resource(bucket, name, path),
        }


def _multipart(call: Call) -> tuple[str, bytes]:
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
    return str(metadata.get("name", "")), media

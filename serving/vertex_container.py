"""Where `mnistctl serve --flavor vertex` listens and what it loads when it runs as a Vertex AI custom
serving container.

Vertex AI passes everything through the environment: `AIP_HTTP_PORT` (the port it probes and posts to),
`AIP_HEALTH_ROUTE` / `AIP_PREDICT_ROUTE` (read by serving.app) and `AIP_STORAGE_URI`, a gs:// folder
holding its copy of the model's `artifactUri` (the SavedModel itself). That folder is downloaded with
google-cloud-storage under the container's service account; a local path is used as it is.

The server binds 127.0.0.1 everywhere, except inside the project's image under Vertex AI: the image
sets `MNIST_SERVING_HOST=0.0.0.0` and it takes effect only while `AIP_HTTP_PORT` is set.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from serving.constants import (
    AIP_HTTP_PORT_ENV,
    AIP_STORAGE_URI_ENV,
    ALL_INTERFACES_HOSTS,
    LOOPBACK_HOST,
    LOOPBACK_HOSTS,
    SERVING_HOST_ENV,
    TF_SAVED_MODEL_DIR,
    Flavor,
)
from serving.errors import PlatformError

GCS_SCHEME = "gs://"
SAVED_MODEL_FILE = "saved_model.pb"


@dataclass(frozen=True)
class ServingPlace:
    host: str
    port: int
    model_dir: Path  # the folder the flavor's model class loads (for vertex: it holds `model/`)


def under_vertex(environ: Mapping[str, str]) -> bool:
    """True inside a Vertex AI serving container (Vertex always sets AIP_HTTP_PORT there)."""
    return bool(environ.get(AIP_HTTP_PORT_ENV))


def may_bind(host: str, environ: Mapping[str, str]) -> bool:
    """Loopback always; all interfaces only under Vertex AI; nothing else, ever."""
    return host in LOOPBACK_HOSTS or (host in ALL_INTERFACES_HOSTS and under_vertex(environ))


def serving_place(
    flavor: Flavor | str, model: Path | str | None, port: int, environ: Mapping[str, str] | None = None
) -> ServingPlace:
    """Host, port and model folder for `mnistctl serve`: the command line's, or Vertex AI's for --flavor
    vertex (AIP_HTTP_PORT over --port, AIP_STORAGE_URI when --model is not given)."""
    environ = os.environ if environ is None else environ
    vertex = Flavor(flavor) is Flavor.VERTEX
    source = str(model) if model is not None else (environ.get(AIP_STORAGE_URI_ENV) if vertex else None)
    if not source:
        hint = f" (or set {AIP_STORAGE_URI_ENV}, as Vertex AI does)" if vertex else ""
        raise PlatformError(f"no model to serve: give --model{hint}")
    host = LOOPBACK_HOST
    if vertex and under_vertex(environ):
        port = _port(environ[AIP_HTTP_PORT_ENV])
        host = environ.get(SERVING_HOST_ENV) or LOOPBACK_HOST
        if not may_bind(host, environ):
            allowed = ", ".join(sorted(LOOPBACK_HOSTS | ALL_INTERFACES_HOSTS))
            raise PlatformError(f"{SERVING_HOST_ENV}={host!r} is not allowed: use one of {allowed}")
    return ServingPlace(host, port, model_folder(source))


def _port(value: str) -> int:
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise PlatformError(f"{AIP_HTTP_PORT_ENV}={value!r} is not a TCP port")
    return int(value)


def model_folder(source: str) -> Path:
    """The folder holding `model/` (the SavedModel) for `source`: an OUT folder of `mnistctl train`, a
    SavedModel folder, or a gs:// folder holding the SavedModel (downloaded to a temporary folder)."""
    if source.startswith(GCS_SCHEME):
        out = Path(tempfile.mkdtemp(prefix="mnist-model-"))
        download_folder(source, out / TF_SAVED_MODEL_DIR)
        return out
    path = Path(source)
    if (path / SAVED_MODEL_FILE).is_file() and not (path / TF_SAVED_MODEL_DIR).is_dir():
        out = Path(tempfile.mkdtemp(prefix="mnist-model-"))
        (out / TF_SAVED_MODEL_DIR).symlink_to(path.resolve(), target_is_directory=True)
        return out
    return path


def download_folder(uri: str, dest: Path) -> int:
    """Copy every object under the gs:// folder `uri` into `dest`; returns how many. Raises
    `PlatformError` naming the folder when it is empty or unreadable."""
    from google.api_core import exceptions
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    bucket, _, prefix = uri.removeprefix(GCS_SCHEME).partition("/")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    dest = dest.resolve()
    count = 0
    try:
        client = storage.Client()
        for blob in client.list_blobs(bucket, prefix=prefix):
            relative = blob.name[len(prefix) :]
            if not relative or relative.endswith("/"):
                continue  # the folder's own placeholder object
            target = (dest / relative).resolve()
            if not target.is_relative_to(dest):
                raise PlatformError(
                    f"refusing object {blob.name!r} of {uri}: it points outside the model folder"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(target))
            count += 1
    except (exceptions.GoogleAPICallError, DefaultCredentialsError) as error:
        raise PlatformError(
            f"cannot read the model from {uri}: {error}. The serving container's service account needs read "
            "access to that bucket (roles/storage.objectViewer)"
        ) from error
    if count == 0:
        raise PlatformError(f"no model files under {uri}: is it the folder that holds {SAVED_MODEL_FILE}?")
    return count

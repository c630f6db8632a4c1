"""The Vertex AI stack's champion gate: between the CustomJob and the Model the endpoint serves.

The challenger is a custom job's output: the SavedModel under `<base>/model/` and the `metrics.json`
the TF trainer writes beside it (`<base>/metrics.json`), whose `accuracy` it measured on the dataset's
held-out test set (the staged `test.npz`). A promoted challenger's SavedModel objects are copied
(Cloud Storage objects.rewrite, server-side; a customer key set on the bucket applies to the copies
too) to `gs://<bucket>/champions/<model>/<job id>/`, which is what the Vertex Model is uploaded from:
the champion outlives the job's replacement and its output folder.

Every call goes through google-cloud-storage with the client of infra/gcp/clients.py and its retries
(429, 502, 503, 504, an API enabled moments ago); 404 is "gone".
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from google.api_core import exceptions

from infra.dynamic import log
from infra.gate import PromotionRule
from infra.gate_provider import Candidate, ChampionGateProvider, GateError, gate_inputs, scored
from infra.gcp.clients import ignore_not_found, retrying, split_gs_uri, storage_client
from infra.gcp.names import gs_uri, resource_id

CHAMPIONS_PREFIX = "champions"
# What the deploying identity needs on the stack's bucket (docs/gcp.md: roles/storage.admin has it).
STORAGE_HINT = (
    "The deploying identity needs storage.objects.get, list, create and delete on the stack's bucket "
    "(roles/storage.admin, docs/gcp.md)."
)


@dataclass
class VertexGateArgs:
    """Inputs of a VertexGate."""

    model: pulumi.Input[str]
    """The gated model's key in the stack outputs (tensorflow)."""
    job_name: pulumi.Input[str]
    """The challenger: the custom job's resource name (projects/P/locations/L/customJobs/ID)."""
    model_dir: pulumi.Input[str]
    """`gs://…/<base>/model`, the SavedModel the job exported (its AIP_MODEL_DIR)."""
    metrics_uri: pulumi.Input[str]
    """`gs://…/<base>/metrics.json`, what the trainer measured on the held-out test set."""
    project: pulumi.Input[str]
    bucket: pulumi.Input[str]
    """The stack's bucket; champions go under `champions/`."""
    rule: PromotionRule
    """minAccuracy, promotionTolerance and forcePromotion for this model."""
    storage_api_endpoint: str | None = None
    """Tests only: a loopback fake of the Cloud Storage JSON API."""


def folder(name: str) -> str:
    """An object-name prefix that names exactly one folder (`a/b` -> `a/b/`: not `a/bc/...`)."""
    return name.strip("/") + "/"


def champion_uri(bucket: str, model: str, job_name: str) -> str:
    return gs_uri(bucket, CHAMPIONS_PREFIX, model, resource_id(job_name)) + "/"


class VertexGateProvider(ChampionGateProvider):
    """Reads the challenger's metrics.json; champion copies are objects under the bucket's `champions/`."""

    location_keys = ("project", "bucket")

    def evaluate(self, props: Mapping[str, Any]) -> Candidate:
        job, artifact = str(props["challenger_id"]), str(props["challenger_artifact"])
        metrics_uri = str(props["metrics_uri"])
        bucket, name = split_gs_uri(metrics_uri)
        client = self._client(props)
        try:
            blob = retrying(client.bucket(bucket).get_blob, name)  # None: 404
            text = retrying(blob.download_as_text) if blob is not None else None
        except exceptions.NotFound:
            blob, text = None, None  # deleted between the two calls
        except exceptions.GoogleAPICallError as error:
            raise self._failure(props, f"could not read {metrics_uri}", error) from error
        if blob is None or text is None:
            why = f"{metrics_uri} does not exist: the custom job {job} wrote no metrics"
            return Candidate(job, artifact, None, unreadable_because=why)
        trained = blob.updated.isoformat(timespec="seconds") if blob.updated is not None else None
        return scored(job, artifact, text, metrics_uri, trained, {"training_job": job})

    def keep(self, props: Mapping[str, Any], candidate: Candidate) -> str:
        source_bucket, source_name = split_gs_uri(candidate.artifact)
        source_prefix = folder(source_name)
        copy = champion_uri(str(props["bucket"]), str(props["model"]), candidate.source)
        bucket, prefix = split_gs_uri(copy)
        client = self._client(props)
        try:
            blobs = retrying(lambda: list(client.list_blobs(source_bucket, prefix=source_prefix)))
            if not blobs:
                raise GateError(
                    f"gate {props['model']}: the challenger {candidate.artifact} holds no objects: custom "
                    f"job {candidate.source} exported no SavedModel there. Run `pulumi up` again to retrain."
                )
            destination = client.bucket(bucket)
            for blob in blobs:
                _copy_object(blob, destination.blob(prefix + blob.name[len(source_prefix) :]))
        except exceptions.GoogleAPICallError as error:
            with contextlib.suppress(GateError):
                self.discard(props, copy)  # no half copy left behind the failed update
            raise self._failure(props, f"could not copy {candidate.artifact} to {copy}", error) from error
        log(f"gate {props['model']}: copied {len(blobs)} objects of {candidate.artifact} to {copy}")
        return copy

    def discard(self, props: Mapping[str, Any], artifact: str) -> None:
        bucket, prefix = self._champion_folder(props, artifact)
        client = self._client(props)
        try:
            blobs = retrying(lambda: list(client.list_blobs(bucket, prefix=prefix)))
            for blob in blobs:
                ignore_not_found(client.bucket(bucket).delete_blob, blob.name)
        except exceptions.NotFound:
            return  # the bucket is gone, and the copy with it
        except exceptions.GoogleAPICallError as error:
            raise self._failure(props, f"could not delete {artifact}", error) from error

    def kept(self, props: Mapping[str, Any], artifact: str) -> bool:
        bucket, prefix = self._champion_folder(props, artifact)
        client = self._client(props)
        try:
            return bool(retrying(lambda: list(client.list_blobs(bucket, prefix=prefix, max_results=1))))
        except exceptions.NotFound:
            return False
        except exceptions.GoogleAPICallError as error:
            raise self._failure(props, f"could not check the champion's copy {artifact}", error) from error

    # -- helpers ----------------------------------------------------------------------------------

    @staticmethod
    def _client(props: Mapping[str, Any]) -> Any:
        return storage_client(str(props["project"]), props.get("storage_api_endpoint"))

    @staticmethod
    def _champion_folder(props: Mapping[str, Any], artifact: str) -> tuple[str, str]:
        bucket, name = split_gs_uri(artifact)
        prefix = folder(name)
        parts = prefix.split("/")[:-1]
        if len(parts) != 3 or parts[0] != CHAMPIONS_PREFIX or not all(parts):
            # Never list-and-delete anything but one champion folder, champions/<model>/<job>/: a
            # damaged state must not empty the bucket.
            raise GateError(f"gate {props['model']}: {artifact} is not a champion copy; refusing to touch it")
        return bucket, prefix

    @staticmethod
    def _failure(props: Mapping[str, Any], what: str, error: exceptions.GoogleAPICallError) -> GateError:
        return GateError(f"gate {props['model']}: {what}: {error.message or error}. {STORAGE_HINT}")


def _copy_object(source: Any, target: Any) -> None:
    """objects.rewrite of `source` to `target` (blobs), to completion: Cloud Storage may need several
    calls for a large object, each returning the token of the next."""
    token = None
    while True:
        token, _, _ = retrying(target.rewrite, source, token=token)
        if token is None:
            return


class VertexGate(pulumi.dynamic.Resource, module="gcp", name="ChampionGate"):
    """Holds the champion of one model; the Vertex Model is uploaded from `champion_artifact`."""

    champion: pulumi.Output[dict]
    challenger: pulumi.Output[dict]
    champion_artifact: pulumi.Output[str]
    retired: pulumi.Output[dict]

    def __init__(self, name: str, args: VertexGateArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            **gate_inputs(args.model, args.job_name, args.model_dir, args.rule),
            "metrics_uri": args.metrics_uri,
            "project": args.project,
            "bucket": args.bucket,
            "storage_api_endpoint": args.storage_api_endpoint,
        }
        super().__init__(VertexGateProvider(), name, props, opts)

    @property
    def champion_job_id(self) -> pulumi.Output[str]:
        """The numeric ID of the custom job that trained the champion (names the model and deployment)."""
        return self.champion.apply(lambda champion: resource_id(str((champion or {}).get("source") or "")))

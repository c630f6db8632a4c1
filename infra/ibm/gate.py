"""The watsonx.ai stack's champion gate: between the TrainingJob and the model stored in the space.

The challenger is a training job's upload to the stack's bucket, `models/<job id>/`: model.tar.gz
(holding model.onnx, what watsonx.ai stores), model.onnx and the trainer's metrics.json, whose
`accuracy` the PyTorch trainer measured on the dataset's held-out test set. A promoted challenger's
three objects are copied (COS CopyObject, server-side, encrypted as the bucket is: with its Key
Protect root key when it has one) to `champions/<model>/<job id>/` in the same bucket, and the stored
model is made from that copy: the champion outlives the job's replacement, which empties
`models/<job id>/`.

Every call goes through ibm_boto3 with the stack's API key (infra/ibm/connection.py) and its retries
(429, 5xx, dropped connections); 404 is "gone".
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.dynamic import DiffResult, UpdateResult

from infra.dynamic import changed_keys, log
from infra.gate import PromotionRule
from infra.gate_provider import (
    DECISION_KEYS,
    Candidate,
    ChampionGateProvider,
    GateError,
    gate_inputs,
    scored,
)
from infra.ibm.bucket import empty_bucket
from infra.ibm.connection import (
    CONNECTION_KEYS,
    Connection,
    failure,
    is_not_found,
    retrying,
    secret_key_opts,
    update_connection,
)
from infra.ibm.training_job import MODEL_ARCHIVE, UPLOADED_FILES
from training.hyperparameters import METRICS_FILE

CHAMPIONS_PREFIX = "champions"
COS_SCHEME = "cos://"
WRITER_HINT = "The API key needs Writer on the COS instance (docs/ibm.md)."


@dataclass
class WatsonxGateArgs:
    """Inputs of a WatsonxGate."""

    model: pulumi.Input[str]
    """The gated model's key in the stack outputs (pytorch)."""
    job_id: pulumi.Input[str]
    """The challenger: the training job's id (a new id is a new challenger)."""
    artifact: pulumi.Input[str]
    """`cos://<bucket>/models/<job id>/model.tar.gz`, with model.onnx and metrics.json beside it."""
    bucket: pulumi.Input[str]
    """The stack's bucket; champions go under `champions/`."""
    rule: PromotionRule
    """minAccuracy, promotionTolerance and forcePromotion for this model."""
    region: pulumi.Input[str]
    api_key: pulumi.Input[str]
    """IBM Cloud API key (a secret)."""
    endpoints: pulumi.Input[dict[str, str]] = field(default_factory=dict)
    """URL overrides (empty in production)."""


def split_cos_uri(uri: str) -> tuple[str, str]:
    """(`bucket`, `key`) of cos://bucket/key."""
    bucket, _, key = uri.removeprefix(COS_SCHEME).partition("/")
    if not uri.startswith(COS_SCHEME) or not bucket or not key:
        raise ValueError(f"not a cos://bucket/key URI: {uri!r}")
    return bucket, key


def champion_key(model: str, job_id: str, name: str = MODEL_ARCHIVE) -> str:
    return f"{CHAMPIONS_PREFIX}/{model}/{job_id}/{name}"


def folder_of(key: str) -> str:
    """`a/b/` of `a/b/model.tar.gz`."""
    return key.rsplit("/", 1)[0] + "/" if "/" in key else ""


class WatsonxGateProvider(ChampionGateProvider):
    """Reads the challenger's metrics.json from COS; champion copies are objects under `champions/`."""

    location_keys = ("bucket",)

    def evaluate(self, props: Mapping[str, Any]) -> Candidate:
        job, artifact = str(props["challenger_id"]), str(props["challenger_artifact"])
        bucket, key = split_cos_uri(artifact)
        metrics_key = folder_of(key) + METRICS_FILE
        where = f"cos://{bucket}/{metrics_key}"
        s3 = Connection.of(props).cos_client()
        try:
            reply = retrying(lambda: s3.get_object(Bucket=bucket, Key=metrics_key))
            text = reply["Body"].read().decode("utf-8", errors="replace")
        except Exception as error:
            if is_not_found(error):
                why = f"{where} does not exist: training job {job} uploaded no metrics"
                return Candidate(job, artifact, None, unreadable_because=why)
            raise self._failure(props, f"reading {where}", error) from error
        modified = reply.get("LastModified")
        trained = modified.isoformat(timespec="seconds") if modified is not None else None
        return scored(job, artifact, text, where, trained)

    def keep(self, props: Mapping[str, Any], candidate: Candidate) -> str:
        bucket, key = split_cos_uri(candidate.artifact)
        source = folder_of(key)
        model, target = str(props["model"]), str(props["bucket"])
        copy = f"{COS_SCHEME}{target}/{champion_key(model, candidate.source)}"
        s3 = Connection.of(props).cos_client()
        try:
            for name in UPLOADED_FILES:
                retrying(
                    lambda n=name: s3.copy_object(
                        Bucket=target,
                        Key=champion_key(model, candidate.source, n),
                        CopySource={"Bucket": bucket, "Key": source + n},
                    )
                )
        except Exception as error:
            with contextlib.suppress(Exception):
                self.discard(props, copy)  # no half copy left behind the failed update
            raise self._failure(
                props, f"copying cos://{bucket}/{source} to {folder_of(copy)}", error, WRITER_HINT
            ) from error
        log(f"gate {model}: copied the challenger cos://{bucket}/{source} to {folder_of(copy)}")
        return copy

    def discard(self, props: Mapping[str, Any], artifact: str) -> None:
        bucket, key = split_cos_uri(artifact)
        prefix = folder_of(key)
        parts = prefix.split("/")[:-1]
        if len(parts) != 3 or parts[0] != CHAMPIONS_PREFIX or not all(parts):
            # Never empty anything but one champion folder, champions/<model>/<job>/: a damaged state
            # must not empty the bucket.
            raise GateError(f"gate {props['model']}: {artifact} is not a champion copy; refusing to touch it")
        s3 = Connection.of(props).cos_client()
        try:
            empty_bucket(s3, bucket, prefix)
        except Exception as error:
            if is_not_found(error):
                return  # the bucket is gone, and the copy with it
            raise self._failure(props, f"deleting cos://{bucket}/{prefix}", error, WRITER_HINT) from error

    def kept(self, props: Mapping[str, Any], artifact: str) -> bool:
        bucket, key = split_cos_uri(artifact)
        s3 = Connection.of(props).cos_client()
        try:
            retrying(lambda: s3.head_object(Bucket=bucket, Key=key))
        except Exception as error:
            if is_not_found(error):
                return False
            raise self._failure(props, f"checking the champion's copy {artifact}", error) from error
        return True

    # -- a new API key or new URLs: recorded, nothing decided --------------------------------------

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # The new key (a rotated one) is the one that can still read the copies.
        diff = super().diff(_id, update_connection(olds, news), news)
        if not diff.changes and changed_keys(olds, news, CONNECTION_KEYS):
            return DiffResult(changes=True, replaces=[], delete_before_replace=False)
        return diff

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        champion = olds.get("champion") or None
        if (
            champion
            and not changed_keys(olds, news, DECISION_KEYS)
            and self.kept(news, str(champion["artifact"]))
        ):
            return UpdateResult(outs=update_connection(olds, news))
        return super().update(_id, olds, news)

    @staticmethod
    def _failure(props: Mapping[str, Any], what: str, error: BaseException, hint: str = "") -> GateError:
        return GateError(f"gate {props['model']}: {failure(what, error, hint)}")


class WatsonxGate(pulumi.dynamic.Resource, module="ibm", name="ChampionGate"):
    """Holds the champion of one model; the stored model is made from `champion_key` in the bucket."""

    champion: pulumi.Output[dict]
    challenger: pulumi.Output[dict]
    champion_artifact: pulumi.Output[str]
    retired: pulumi.Output[dict]

    def __init__(self, name: str, args: WatsonxGateArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            **gate_inputs(args.model, args.job_id, args.artifact, args.rule),
            "bucket": args.bucket,
            "region": args.region,
            "api_key": args.api_key,
            "endpoints": args.endpoints,
        }
        super().__init__(WatsonxGateProvider(), name, props, secret_key_opts(opts))

    @property
    def champion_key(self) -> pulumi.Output[str]:
        """The object key of the champion's model.tar.gz in the stack's bucket."""
        return self.champion_artifact.apply(lambda artifact: split_cos_uri(artifact)[1] if artifact else "")

"""The IBM stack's training job: the project's PyTorch trainer on the deploying machine, its artifact in COS.

IBM Cloud no longer runs PyTorch training in watsonx.ai Runtime, so the job is the local stack's
(infra/local/training_job.py: `mnistctl train` in a subprocess, streamed to the Pulumi log), followed
by an upload of what the watsonx.ai repository stores (model.tar.gz holding model.onnx) and of
model.onnx and metrics.json to `models/<job id>/` in the stack's bucket. The inputs include the
training code's hash, the data's content hash and the hyperparameters: any change trains a new
model (a replacement), and the stored model and deployment follow it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, log, state_of
from infra.hashing import tree_sha256
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
from infra.local.support import remove_tree
from infra.local.training_job import TRAINER_INPUTS
from infra.local.training_job import run_trainer as train_locally
from training.hyperparameters import METRICS_FILE

# What training/torch_trainer.py writes (not imported here: it would load torch into the program).
ONNX_FILE = "model.onnx"
MODEL_ARCHIVE = "model.tar.gz"
UPLOADED_FILES = (MODEL_ARCHIVE, ONNX_FILE, METRICS_FILE)
_REPLACE_KEYS = (*TRAINER_INPUTS, "bucket")  # the same trainer; its result goes to another bucket


@dataclass
class TrainingJobArgs:
    """Inputs of a TrainingJob."""

    dataset: pulumi.Input[str]
    """Dataset name, as `mnistctl train --dataset` takes it."""
    data_dir: pulumi.Input[str]
    """The prepared dataset's folder on this machine."""
    data_hash: pulumi.Input[str]
    """The prepared dataset's content hash: new data, new model."""
    code_hash: pulumi.Input[str]
    """Hash of the training sources: new code, new model."""
    root: pulumi.Input[str]
    """Work folder on this machine; the model is trained into <root>/models/<id>/."""
    bucket: pulumi.Input[str]
    """The stack's COS bucket, where the artifact goes."""
    region: pulumi.Input[str]
    api_key: pulumi.Input[str]
    """IBM Cloud API key (a secret)."""
    hyperparameters: dict[str, str] = field(default_factory=dict)
    """Overrides as the trainer takes them."""
    preset: pulumi.Input[str] = "standard"
    """The dataset's hyperparameter preset (training/presets.py), under the overrides."""
    dry_run: pulumi.Input[bool] = False
    """Train on a tiny subset (tests and quick looks)."""
    training_slots: pulumi.Input[int] | None = None
    """How many trainings this machine runs at once (config localTrainingSlots; training/slots.py): the
    training queues for a slot like the local stack's. Not part of the job's identity."""
    tuning: pulumi.Input[str] | None = None
    """The model's search (config `tuning`, as JSON): trained with `mnistctl train --tune` on this machine
    (training/tuning.py), the best trial is uploaded; None trains once."""
    framework: str = "pytorch"
    endpoints: pulumi.Input[dict[str, str]] = field(default_factory=dict)
    """URL overrides (empty in production)."""


class TrainingJobProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        conn = Connection.of(props)
        # Named by its identity: a `pulumi up` killed after the upload left the model under this very job
        # id, and it is adopted instead of trained again.
        job_id = f"{props['framework']}-{identity(props, _REPLACE_KEYS)[:8]}"
        out = Path(props["root"]) / "models" / job_id
        prefix = f"models/{job_id}/"
        s3 = conn.cos_client()
        adopted = _uploaded_earlier(s3, str(props["bucket"]), prefix, out)
        if adopted is not None:
            log(
                f"adopting the {props['framework']} model in cos://{props['bucket']}/{prefix}, "
                "left by an interrupted create"
            )
            return CreateResult(id_=job_id, outs=_outputs(props, job_id, out, prefix, adopted))
        try:
            trained = train_locally(job_id, props, out)
            for name in UPLOADED_FILES:
                try:
                    retrying(lambda n=name: s3.upload_file(str(out / n), props["bucket"], prefix + n))
                except Exception as error:
                    raise failure(
                        f"uploading {name} to COS bucket {props['bucket']}",
                        error,
                        "The API key needs Writer on the COS instance.",
                    ) from error
        except BaseException:
            remove_tree(out)  # a failed job leaves only its log behind
            raise
        log(f"uploaded the {props['framework']} model to cos://{props['bucket']}/{prefix}")
        return CreateResult(id_=job_id, outs=_outputs(props, job_id, out, prefix, trained))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        updates = changed_keys(olds, news, CONNECTION_KEYS)
        return DiffResult(changes=bool(replaces or updates), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=update_connection(olds, news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """Gone when its archive is no longer in COS (deleted behind the stack's back): the next `up`
        trains it again (or adopts what is left under its job id)."""
        s3 = Connection.of(props).cos_client()
        try:
            retrying(lambda: s3.head_object(Bucket=props["bucket"], Key=props["archive_key"]))
        except Exception as error:
            if is_not_found(error) or "NoSuchBucket" in str(error):
                return ReadResult(None, {})
            raise failure(f"reading cos://{props['bucket']}/{props['archive_key']}", error) from error
        return ReadResult(id_, props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        if props.get("prefix") and props.get("bucket"):
            s3 = Connection.of(props).cos_client()
            try:
                empty_bucket(s3, str(props["bucket"]), str(props["prefix"]))
            except Exception as error:
                if "NoSuchBucket" not in str(error):
                    raise failure(f"deleting cos://{props['bucket']}/{props['prefix']}", error) from error
        if props.get("out_dir"):
            remove_tree(Path(props["out_dir"]))


def _outputs(
    props: dict[str, Any], job_id: str, out: Path, prefix: str, trained: dict[str, Any]
) -> dict[str, Any]:
    return {
        **state_of(props),
        "job_id": job_id,
        "out_dir": str(out),
        "prefix": prefix,
        "archive_key": prefix + MODEL_ARCHIVE,
        "artifact": f"cos://{props['bucket']}/{prefix}{MODEL_ARCHIVE}",
        "artifact_hash": trained["artifact_hash"],
        "metrics": trained["metrics"],
    }


def _uploaded_earlier(s3: Any, bucket: str, prefix: str, out: Path) -> dict[str, Any] | None:
    """The model an interrupted create already trained and uploaded under `prefix` (all three files),
    as `train_locally` describes one; None when anything is missing, so that it is trained anew."""
    try:
        for name in UPLOADED_FILES:
            retrying(lambda n=name: s3.head_object(Bucket=bucket, Key=prefix + n))
        metrics = json.loads(
            retrying(lambda: s3.get_object(Bucket=bucket, Key=prefix + METRICS_FILE))["Body"].read()
        )
        archive = retrying(lambda: s3.get_object(Bucket=bucket, Key=prefix + MODEL_ARCHIVE))["Body"].read()
    except Exception as error:
        if is_not_found(error) or "NoSuchKey" in str(error) or "404" in str(error):
            return None
        raise failure(f"looking for an earlier upload in cos://{bucket}/{prefix}", error) from error
    # The local copy's tree hash when this machine still has it (what a fresh training reports),
    # else the uploaded archive's.
    artifact_hash = tree_sha256(out) if out.is_dir() else hashlib.sha256(archive).hexdigest()
    return {"artifact_hash": artifact_hash, "metrics": metrics}


class TrainingJob(pulumi.dynamic.Resource, module="ibm", name="TrainingJob"):
    """The PyTorch CNN trained on this machine, its ONNX archive in COS."""

    job_id: pulumi.Output[str]
    out_dir: pulumi.Output[str]
    prefix: pulumi.Output[str]
    archive_key: pulumi.Output[str]
    artifact: pulumi.Output[str]
    artifact_hash: pulumi.Output[str]
    metrics: pulumi.Output[dict]

    def __init__(self, name: str, args: TrainingJobArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "framework": args.framework,
            "dataset": args.dataset,
            "data_dir": args.data_dir,
            "data_hash": args.data_hash,
            "code_hash": args.code_hash,
            "root": args.root,
            "hyperparameters": dict(args.hyperparameters),
            "preset": args.preset,
            "dry_run": args.dry_run,
            "training_slots": args.training_slots,
            "tuning": args.tuning,
            "bucket": args.bucket,
            "region": args.region,
            "api_key": args.api_key,
            "endpoints": args.endpoints,
            "job_id": None,
            "out_dir": None,
            "prefix": None,
            "archive_key": None,
            "artifact": None,
            "artifact_hash": None,
            "metrics": None,
        }
        props[IDENTITY_SEED] = identity_seed("ibm:TrainingJob", name)
        super().__init__(TrainingJobProvider(), name, props, secret_key_opts(opts))

"""A Vertex AI CustomJob running the project's image: created, watched to the end, cancelled and deleted.

pulumi-gcp has no CustomJob (terraform-provider-google #15303), so this provider drives the v1
JobServiceClient itself. `create` returns only once the job has SUCCEEDED, its state changes written to
the Pulumi log; a failed job raises with the job's own error and its console link. Every input describes
what the job computes, so any change (code, data, hyperparameters, machines) is a new job: replaced,
the new one trained before the old record is deleted. With `instance_count > 1` the job trains
distributed: worker pool 0 holds exactly one chief, pool 1 the other replicas with the same container
(Vertex then sets TF_CONFIG / CLUSTER_SPEC in each).

A `pulumi up` killed while the job trains leaves it running at Vertex with nothing in the state (a
pending create). Each job carries the label `mnist-platform-id` (infra.dynamic.identity: the resource
and every input that forces a replacement), and `create` first lists the jobs with that label: a running
one is waited for, a succeeded one adopted; a failed, cancelled or expired one is left for inspection
(it bills nothing) and a new job is started. No job is submitted twice for one identity while one runs.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
from google.api_core import exceptions
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.dynamic import IDENTITY_SEED, IDENTITY_TAG, changed_keys, identity, identity_seed, log, state_of
from infra.gcp.clients import (
    DEFAULT_POLL_SECONDS,
    GcpProviderError,
    ignore_not_found,
    job_service,
    retrying,
    split_gs_uri,
    storage_client,
    wait_for,
)
from infra.gcp.names import custom_job_console_url, resource_id

# JobState (google.cloud.aiplatform.v1.JobState): the ones a job ends in.
SUCCEEDED = "JOB_STATE_SUCCEEDED"
TERMINAL_STATES = frozenset(
    {
        SUCCEEDED,
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
        "JOB_STATE_EXPIRED",
        "JOB_STATE_PARTIALLY_SUCCEEDED",
    }
)
CANCEL_WAIT_SECONDS = 600.0
DELETE_WAIT_SECONDS = 300.0
# Beyond the job's own timeout: queueing for machines and pulling the image are not part of it.
PROVISIONING_SLACK_SECONDS = 1800.0
_REPLACE_KEYS = (
    "project",
    "region",
    "display_name",
    "image_uri",
    "command",
    "args",
    "base_output_directory",
    "service_account",
    "instance_type",
    "instance_count",
    "max_runtime_seconds",
    "labels",
    "kms_key_name",
    "api_endpoint",
)


@dataclass(frozen=True)
class JobMethods:
    """The JobService methods of one kind of Vertex AI job: the custom job's wait, adoption, cancel and
    delete below serve the hyperparameter tuning job too (infra/gcp/tuning_job.py)."""

    noun: str
    get: str
    list: str
    cancel: str
    delete: str


CUSTOM_JOB = JobMethods(
    "custom job", "get_custom_job", "list_custom_jobs", "cancel_custom_job", "delete_custom_job"
)


@dataclass
class VertexCustomJobArgs:
    """Inputs of a VertexCustomJob (snake_case: the policy pack reads `instance_type`, `instance_count`,
    `max_runtime_seconds`, `labels` and `kms_key_name`)."""

    project: pulumi.Input[str]
    region: pulumi.Input[str]
    display_name: pulumi.Input[str]
    """Content-hashed, so the console shows which job is which."""
    image_uri: pulumi.Input[str]
    """The container every replica runs."""
    command: Sequence[str]
    """The container's command (the TF trainer)."""
    args: pulumi.Input[Sequence[pulumi.Input[str]]]
    """Its arguments: data location and hyperparameters."""
    base_output_directory: pulumi.Input[str]
    """gs:// prefix; Vertex sets AIP_MODEL_DIR to `<prefix>/model/`."""
    service_account: pulumi.Input[str]
    """Email of the account the replicas run as."""
    instance_type: str = "n1-standard-4"
    """Machine type of every replica."""
    instance_count: int = 1
    """Replicas: one chief in pool 0, the rest in pool 1."""
    max_runtime_seconds: int = 3600
    """`scheduling.timeout`."""
    labels: Mapping[str, str] = field(default_factory=dict)
    kms_key_name: pulumi.Input[str] | None = None
    """CMEK for the job's disks and outputs."""
    api_endpoint: str | None = None
    """Tests only: a loopback fake of the Vertex AI API. Unset: `{region}-aiplatform.googleapis.com`."""
    storage_api_endpoint: str | None = None
    """Tests only: a loopback fake of the Cloud Storage JSON API (to read metrics.json)."""
    poll_seconds: float = DEFAULT_POLL_SECONDS
    """How often the job's state is read while it runs."""


def worker_pool_specs(props: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Pool 0: exactly one chief; pool 1: the other `instance_count - 1` workers, same container."""
    container = {
        "image_uri": props["image_uri"],
        "command": list(props["command"]),
        "args": list(props["args"]),
    }
    machine = {"machine_type": props["instance_type"]}
    count = int(props["instance_count"])
    pools = [{"machine_spec": machine, "replica_count": 1, "container_spec": container}]
    if count > 1:
        pools.append({"machine_spec": machine, "replica_count": count - 1, "container_spec": container})
    return pools


def custom_job_body(props: Mapping[str, Any]) -> dict[str, Any]:
    """The CustomJob resource the provider creates (field names of aiplatform_v1.CustomJob)."""
    body: dict[str, Any] = {
        "display_name": props["display_name"],
        "labels": dict(props.get("labels") or {}),
        "job_spec": {
            "worker_pool_specs": worker_pool_specs(props),
            "base_output_directory": {"output_uri_prefix": props["base_output_directory"]},
            "service_account": props["service_account"],
            "scheduling": {"timeout": f"{int(props['max_runtime_seconds'])}s"},
        },
    }
    if props.get("kms_key_name"):
        body["encryption_spec"] = {"kms_key_name": props["kms_key_name"]}
    return body


class VertexCustomJobProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        from google.cloud import aiplatform_v1

        client = job_service(props["region"], props.get("api_endpoint"))
        parent = f"projects/{props['project']}/locations/{props['region']}"
        job_identity = identity(props, _REPLACE_KEYS)
        job = left_by_an_interrupted_create(client, parent, job_identity)
        if job is None:
            body = custom_job_body(props)
            body["labels"][IDENTITY_TAG] = job_identity
            job = retrying(client.create_custom_job, parent=parent, custom_job=aiplatform_v1.CustomJob(body))
            action = "created"
        else:
            action = f"adopted ({job.state.name}, left by an interrupted `pulumi up`)"
        url = custom_job_console_url(props["project"], props["region"], resource_id(job.name))
        log(
            f"custom job {job.name} {action} "
            f"({props['instance_count']:.0f} x {props['instance_type']}): {url}"
        )
        try:
            job = wait_until_done(client, job.name, props)
        except BaseException:
            # Interrupted (Ctrl-C, a timeout): do not leave a job billing behind a failed update.
            cancel_quietly(client, job.name)
            raise
        state = job.state.name
        if state != SUCCEEDED:
            message = job.error.message or "no error message"
            raise GcpProviderError(
                f"Vertex AI custom job {job.name} ended {state}: {message}\n"
                f"Its logs: {url}\nFix the cause (hyperparameters, data, the training code, quota) and run "
                "`pulumi up` again; the failed job's record stays for inspection."
            )
        base = str(props["base_output_directory"]).rstrip("/")
        metrics = _metrics_or_empty(f"{base}/metrics.json", props)
        log(f"custom job {resource_id(job.name)} succeeded: accuracy {metrics.get('accuracy')}")
        outs = {
            "name": job.name,
            "job_id": resource_id(job.name),
            "state": state,
            "console_url": url,
            "model_dir": f"{base}/model",
            "metrics_uri": f"{base}/metrics.json",
            "metrics": metrics,
        }
        return CreateResult(id_=job.name, outs={**state_of(props), **outs})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        client = job_service(props["region"], props.get("api_endpoint"))
        job = ignore_not_found(client.get_custom_job, name=id_)
        if job is None:
            return ReadResult(None, {})
        return ReadResult(id_, {**state_of(props), "state": job.state.name})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        delete_job(job_service(props["region"], props.get("api_endpoint")), id_, props)


def delete_job(client: Any, id_: str, props: Mapping[str, Any], kind: JobMethods = CUSTOM_JOB) -> None:
    """Cancel the job if it still runs, then delete its record; a job already gone is success."""
    job = ignore_not_found(getattr(client, kind.get), name=id_)
    if job is None:
        log(f"{kind.noun} {id_} already gone")
        return
    if job.state.name not in TERMINAL_STATES:
        log(f"cancelling {kind.noun} {id_} ({job.state.name})")
        ignore_not_found(getattr(client, kind.cancel), name=id_)
        wait_props = {**props, "max_runtime_seconds": CANCEL_WAIT_SECONDS}
        wait_until_done(client, id_, wait_props, slack=0, kind=kind)
    operation = ignore_not_found(getattr(client, kind.delete), name=id_)
    if operation is not None:
        with contextlib.suppress(exceptions.NotFound):
            wait_for(operation, f"deleting {kind.noun} {id_}", DELETE_WAIT_SECONDS)
    log(f"deleted {kind.noun} {id_}")


def left_by_an_interrupted_create(
    client: Any, parent: str, job_identity: str, kind: JobMethods = CUSTOM_JOB
) -> Any:
    """The job an interrupted create of this identity left that is still worth having: one running (to
    be waited for, not started again) or one that succeeded (to be adopted). None when there is none;
    failed, cancelled and expired ones are skipped (they bill nothing; their records stay for inspection)."""
    found = retrying(
        lambda: list(
            getattr(client, kind.list)(
                request={"parent": parent, "filter": f'labels.{IDENTITY_TAG}="{job_identity}"'}
            )
        )
    )
    usable = [job for job in found if job.state.name == SUCCEEDED or job.state.name not in TERMINAL_STATES]
    for job in found:
        if job not in usable:
            log(f"{kind.noun} {job.name} of the same identity ended {job.state.name}: not adopted")
    # The newest first: a job started after an earlier one failed is the one to follow.
    usable.sort(key=lambda job: job.create_time.timestamp() if job.create_time else 0.0, reverse=True)
    return usable[0] if usable else None


def wait_until_done(
    client: Any,
    name: str,
    props: Mapping[str, Any],
    slack: float = PROVISIONING_SLACK_SECONDS,
    kind: JobMethods = CUSTOM_JOB,
) -> Any:
    deadline = time.monotonic() + float(props["max_runtime_seconds"]) + slack
    interval = float(props.get("poll_seconds") or DEFAULT_POLL_SECONDS)
    last_state = None
    while True:
        job = retrying(getattr(client, kind.get), name=name)
        state = job.state.name
        if state != last_state:
            log(f"{kind.noun} {resource_id(name)}: {state}")
            last_state = state
        if state in TERMINAL_STATES:
            return job
        if time.monotonic() > deadline:
            raise GcpProviderError(
                f"{kind.noun} {name} is still {state} after its timeout plus {slack:.0f}s; cancelled. "
                "Check quota for the machine type in the console."
            )
        time.sleep(interval)


def cancel_quietly(client: Any, name: str, kind: JobMethods = CUSTOM_JOB) -> None:
    """Cancel a job that has not ended (an interrupted or timed-out create): it must not bill on."""
    try:
        job = getattr(client, kind.get)(name=name)
        if job.state.name not in TERMINAL_STATES:
            getattr(client, kind.cancel)(name=name)
            log(f"cancelled {kind.noun} {name}")
    except exceptions.GoogleAPICallError as error:
        log(f"could not cancel {kind.noun} {name} ({error}); cancel it in the console")


def read_metrics(metrics_uri: str, project: str, storage_endpoint: str | None) -> dict[str, Any]:
    """The trainer's metrics.json next to the exported model (gs://)."""
    bucket, path = split_gs_uri(metrics_uri)
    client = storage_client(project, storage_endpoint)
    return json.loads(retrying(client.bucket(bucket).blob(path).download_as_text))


def _metrics_or_empty(metrics_uri: str, props: Mapping[str, Any]) -> dict[str, Any]:
    # The model is trained and exported; unreadable metrics are worth a warning, not a failed update
    # (`mnistctl smoke` measures the endpoint's accuracy in any case).
    try:
        return read_metrics(metrics_uri, str(props["project"]), props.get("storage_api_endpoint"))
    except (exceptions.GoogleAPICallError, ValueError, OSError) as error:
        log(
            f"warning: could not read {metrics_uri} ({type(error).__name__}); "
            "models.tensorflow.metrics stays empty"
        )
        return {}


class VertexCustomJob(pulumi.dynamic.Resource, module="vertex", name="CustomJob"):
    """A Vertex AI custom training job of the project's image, run to completion."""

    name: pulumi.Output[str]
    job_id: pulumi.Output[str]
    state: pulumi.Output[str]
    console_url: pulumi.Output[str]
    model_dir: pulumi.Output[str]
    metrics_uri: pulumi.Output[str]
    metrics: pulumi.Output[dict]

    def __init__(
        self, name: str, args: VertexCustomJobArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "project": args.project,
            "region": args.region,
            "display_name": args.display_name,
            "image_uri": args.image_uri,
            "command": list(args.command),
            "args": args.args,
            "base_output_directory": args.base_output_directory,
            "service_account": args.service_account,
            "instance_type": args.instance_type,
            "instance_count": args.instance_count,
            "max_runtime_seconds": args.max_runtime_seconds,
            "labels": dict(args.labels),
            "kms_key_name": args.kms_key_name,
            "api_endpoint": args.api_endpoint,
            "storage_api_endpoint": args.storage_api_endpoint,
            "poll_seconds": args.poll_seconds,
            IDENTITY_SEED: identity_seed("vertex:CustomJob", name),
            "name": None,
            "job_id": None,
            "state": None,
            "console_url": None,
            "model_dir": None,
            "metrics_uri": None,
            "metrics": None,
        }
        super().__init__(VertexCustomJobProvider(), name, props, opts)

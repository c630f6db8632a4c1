"""A loopback fake of the Vertex AI v1 control plane that runs what it is given.

Custom jobs run for real: every replica of every worker pool is a local process of the container's
command and args, with the environment Vertex AI sets (AIP_MODEL_DIR = <baseOutputDirectory>/model/,
AIP_CHECKPOINT_DIR, AIP_TENSORBOARD_LOG_DIR, CLOUD_ML_JOB_ID, CLUSTER_SPEC and TF_CONFIG with the pools
as Vertex names them, each replica on its own loopback port). Vertex mounts buckets at /gcs/<bucket>/
with Cloud Storage FUSE; here gs://<bucket>/ in args and env becomes <gcs_root>/<bucket>/, the same
files the Cloud Storage fake serves. Deployments copy the model's artifacts to a bucket of Vertex's own
(as Vertex AI does; AIP_STORAGE_URI names the copy, not the user's bucket), run the model's
containerSpec command with the AIP_* serving environment, the process reaching the Cloud Storage fake
with a bearer token of the deployed model's service account (`GcsFake.workload_env`), wait for its
health route, and proxy `:predict` on the endpoint to it.

Replies follow the REST reference: resource names carry the project number, enums are numbers when the
client asks `enum-encoding=int`, long-running calls return Operations.

Honest differences from the service: no IAM, quotas or billing; one process per deployment whatever
minReplicaCount says; the serving process listens on a free loopback port, not on containerSpec's port.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from starlette.responses import Response

from gcp_fakes.base import (
    RPC_CODES,
    ApiError,
    Call,
    FakeServer,
    enum_value,
    equality_filter,
    failed_precondition,
    int64,
    invalid_argument,
    labels_match,
    not_found,
    now,
    seconds,
)
from gcp_fakes.gcs import GcsFake
from gcp_fakes.iam import storage_message

log = logging.getLogger(__name__)

JOB_STATES = [
    "JOB_STATE_UNSPECIFIED",
    "JOB_STATE_QUEUED",
    "JOB_STATE_PENDING",
    "JOB_STATE_RUNNING",
    "JOB_STATE_SUCCEEDED",
    "JOB_STATE_FAILED",
    "JOB_STATE_CANCELLING",
    "JOB_STATE_CANCELLED",
    "JOB_STATE_PAUSED",
    "JOB_STATE_EXPIRED",
    "JOB_STATE_UPDATING",
    "JOB_STATE_PARTIALLY_SUCCEEDED",
]
TERMINAL = frozenset({"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED"})
# workerPoolSpecs[i] -> the task type TF_CONFIG names (an evaluator is not part of the cluster).
TF_TASK_TYPES = ("chief", "worker", "ps", "evaluator")
TYPE_PREFIX = "type.googleapis.com/google.cloud.aiplatform.v1."
PROJECT_NUMBER = "123456789012"
STOP_GRACE_SECONDS = 10.0
CANCELLED = "Operation was cancelled."
# Online prediction's request limit, 1.5 MB ("gcloud ai endpoints predict": "the payload limit size
# (currently, 1.5MB)"); Google's front end words it so (handson-ml2 #205).
PREDICT_PAYLOAD_LIMIT = 1572864

# The list filters the fake evaluates: label equality (the grammar's other forms are refused).
_LABEL_FIELD = re.compile(r"labels\.[\w-]+")
_LOC = r"/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"


@dataclass
class _Replica:
    pool: int
    index: int
    process: subprocess.Popen[bytes]
    log_path: Path


@dataclass
class _Job:
    id: str
    resource: dict[str, Any]
    state: str = "JOB_STATE_PENDING"
    replicas: list[_Replica] = field(default_factory=list)
    cancel_requested: bool = False
    error: dict[str, Any] | None = None


@dataclass
class _Deployed:
    id: str
    endpoint_id: str
    model_id: str
    resource: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    port: int = 0
    predict_route: str = ""
    health_route: str = ""
    log_path: Path | None = None


@dataclass
class _Endpoint:
    id: str
    resource: dict[str, Any]
    deployed: dict[str, _Deployed] = field(default_factory=dict)
    traffic: dict[str, int] = field(default_factory=dict)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VertexFake(FakeServer):
    def __init__(
        self,
        work_dir: Path,
        gcs: GcsFake,
        project: str = "mnist-test",
        location: str = "us-central1",
        deploy_timeout: float = 180.0,
        queue_seconds: float = 0.0,
    ) -> None:
        from gcp_fakes.discovery import Contract

        # google-cloud-aiplatform polls operations at /ui/{name} (the first URI of the service's http rules),
        # which the discovery document does not list: the same method as /v1/{name}.
        super().__init__("vertex-ai", Contract(("aiplatform", "v1"), aliases={"/ui/": "/v1/"}))
        self.project = project
        self.project_number = PROJECT_NUMBER
        self.location = location
        self.gcs = gcs
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.deploy_timeout = deploy_timeout
        self.queue_seconds = queue_seconds  # how long a new job stays PENDING before its replicas start
        self.jobs: dict[str, _Job] = {}
        self._deploying: dict[str, dict[str, Any]] = {}  # deployed model id -> its DeployedModel
        self.models: dict[str, dict[str, Any]] = {}
        self.endpoints: dict[str, _Endpoint] = {}
        self._threads: list[threading.Thread] = []
        self._closing = False
        jobs, models, endpoints = _LOC + r"/customJobs", _LOC + r"/models", _LOC + r"/endpoints"
        self.route("POST", jobs, self._create_job)
        self.route("GET", jobs, self._list_jobs)
        self.route("GET", jobs + r"/(?P<id>\d+)", self._get_job)
        self.route("POST", jobs + r"/(?P<id>\d+):cancel", self._cancel_job)
        self.route("DELETE", jobs + r"/(?P<id>\d+)", self._delete_job)
        self.route("POST", models + r":upload", self._upload_model)
        self.route("GET", models, self._list_models)
        self.route("GET", models + r"/(?P<id>\d+)", self._get_model)
        self.route("DELETE", models + r"/(?P<id>\d+)", self._delete_model)
        self.route("POST", endpoints, self._create_endpoint)
        self.route("GET", endpoints + r"/(?P<id>\d+)", self._get_endpoint)
        self.route("DELETE", endpoints + r"/(?P<id>\d+)", self._delete_endpoint)
        self.route("POST", endpoints + r"/(?P<id>\d+):deployModel", self._deploy)
        self.route("POST", endpoints + r"/(?P<id>\d+):undeployModel", self._undeploy)
        self.route("POST", endpoints + r"/(?P<id>\d+):predict", self._predict)
        # google-cloud-aiplatform's operations client polls the first URI of the service's http rules, which
        # is `/ui/{name=projects/*/locations/*/.../operations/*}`; `/v1/` is the documented one.
        self.route("GET", r"/(?:v1|ui)/(?P<name>projects/[^:]+/operations/[^/:]+)", self._get_operation)
        self.route(
            "POST", r"/(?:v1|ui)/(?P<name>projects/[^:]+/operations/[^/:]+):cancel", self._cancel_operation
        )
        self.route(
            "GET",
            r"/(?:v1|ui)/(?P<name>projects/[^/]+/locations/[^/]+/endpoints/\d+)/operations",
            self._list_endpoint_operations,
        )
        # Whether a deploy stops when its operation is cancelled (Google: "best effort"); False: it goes on.
        self.honour_cancel = True
        # Vertex AI's access control: the permission each method needs (roles/aiplatform.user holds them).
        method = "aiplatform.projects.locations."
        self.method_permissions = {
            method + "customJobs.create": "aiplatform.customJobs.create",
            method + "customJobs.get": "aiplatform.customJobs.get",
            method + "customJobs.list": "aiplatform.customJobs.list",
            method + "customJobs.cancel": "aiplatform.customJobs.cancel",
            method + "customJobs.delete": "aiplatform.customJobs.delete",
            method + "models.upload": "aiplatform.models.upload",
            method + "models.get": "aiplatform.models.get",
            method + "models.list": "aiplatform.models.list",
            method + "models.delete": "aiplatform.models.delete",
            method + "endpoints.create": "aiplatform.endpoints.create",
            method + "endpoints.get": "aiplatform.endpoints.get",
            method + "endpoints.delete": "aiplatform.endpoints.delete",
            method + "endpoints.deployModel": "aiplatform.endpoints.deploy",
            method + "endpoints.undeployModel": "aiplatform.endpoints.undeploy",
            method + "endpoints.predict": "aiplatform.endpoints.predict",
        }
        from gcp_fakes.tuning import TuningJobs

        self.tuning = TuningJobs(self, _LOC)  # hyperparameterTuningJobs (gcp_fakes/tuning.py)

    @property
    def gcs_root(self) -> Path:
        return self.gcs.root

    # -- names -------------------------------------------------------------------------------------
    @property
    def parent(self) -> str:
        """The parent as the client sends it (project id); replies name the project by number."""
        return f"projects/{self.project}/locations/{self.location}"

    def _name(self, collection: str, resource_id: str) -> str:
        return f"projects/{self.project_number}/locations/{self.location}/{collection}/{resource_id}"

    def _check_location(self, match: re.Match[str]) -> None:
        if match["project"] not in (self.project, self.project_number):
            raise ApiError(403, f"Permission denied on project {match['project']} (or it does not exist).")
        if match["location"] != self.location:
            raise invalid_argument(f"Location {match['location']} is not served by this endpoint.")

    def job_name(self, job_id: str) -> str:
        return self._name("customJobs", job_id)

    # -- helpers for tests -------------------------------------------------------------------------
    def add_endpoint(self, endpoint_id: str, display_name: str = "mnist") -> str:
        """An endpoint as gcp.vertex.AiEndpoint would have created it; returns its name."""
        name = self._name("endpoints", endpoint_id)
        resource = {"name": name, "displayName": display_name, "createTime": now(), "updateTime": now()}
        with self.lock:
            self.endpoints[endpoint_id] = _Endpoint(endpoint_id, resource)
        return name

    def job_log(self, job_id: str) -> str:
        """Everything the job's replicas printed (stdout and stderr), pool by pool."""
        job = self.jobs[job_id]
        parts = [f"== workerpool{r.pool}-{r.index} ==\n{_read(r.log_path)}" for r in job.replicas]
        return "\n".join(parts)

    def running_processes(self) -> list[int]:
        """Pids of replicas and model servers still running."""
        with self.lock:
            pids = [r.process.pid for j in self.jobs.values() for r in j.replicas if r.process.poll() is None]
            pids += [process.pid for process in self.tuning.processes() if process.poll() is None]
            pids += [
                d.process.pid
                for e in self.endpoints.values()
                for d in e.deployed.values()
                if d.process is not None and d.process.poll() is None
            ]
        return pids

    def wait_for_job(self, job_id: str, timeout: float = 600.0) -> str:
        deadline = time.monotonic() + timeout
        while self.jobs[job_id].state not in TERMINAL:
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {self.jobs[job_id].state}")
            time.sleep(0.1)
        return self.jobs[job_id].state

    def settle(self, timeout: float = 60.0) -> None:
        """Wait until the fake's background work (deployments, undeploys, job runners) has ended."""
        deadline = time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        self._closing = True
        with self.lock:
            for job in self.jobs.values():
                job.cancel_requested = True
                for replica in job.replicas:
                    _stop(replica.process)
            for tuning_job in self.tuning.jobs.values():
                tuning_job.cancel_requested = True
            for process in self.tuning.processes():
                _stop(process)
            for endpoint in self.endpoints.values():
                for deployed in endpoint.deployed.values():
                    if deployed.process is not None:
                        _stop(deployed.process)
        for thread in self._threads:
            thread.join(STOP_GRACE_SECONDS + 5)
        super().close()

    def _background(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    # -- custom jobs -------------------------------------------------------------------------------
    def _create_job(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        body = call.json
        spec = body.get("jobSpec") or {}
        pools = spec.get("workerPoolSpecs") or []
        if not pools or not pools[0]:
            raise invalid_argument("CustomJob.job_spec.worker_pool_specs[0] is required.")
        if int64(pools[0].get("replicaCount"), 1) != 1:
            raise invalid_argument("The first worker pool (the primary replica) must have replica_count 1.")
        for i, pool in enumerate(pools):
            if pool and not (pool.get("containerSpec") or pool.get("pythonPackageSpec")):
                raise invalid_argument(
                    f"worker_pool_specs[{i}] needs a container_spec or python_package_spec."
                )
            if pool and not (pool.get("machineSpec") or {}).get("machineType"):
                raise invalid_argument(f"worker_pool_specs[{i}].machine_spec.machine_type is required.")
        self._require_act_as(call, spec.get("serviceAccount"))
        job_id = self.new_id()
        resource = {
            **body,
            "name": self.job_name(job_id),
            "createTime": now(),
            "updateTime": now(),
        }
        job = _Job(job_id, resource)
        with self.lock:
            self.jobs[job_id] = job
        # The reply is the job as created (PENDING), before its runner can move it on.
        reply = self._job_reply(call, job)
        self._background(self._run_job, job)
        return reply

    def _job_reply(self, call: Call, job: _Job) -> dict[str, Any]:
        with self.lock:
            reply = dict(job.resource)
            reply["state"] = enum_value(call, JOB_STATES, job.state)
            if job.error is not None:
                reply["error"] = job.error
            return reply

    def _get_job(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        return self._job_reply(call, self._job(match["id"]))

    def _list_jobs(self, call: Call, match: re.Match[str]) -> Any:
        """customJobs.list: every job whose labels hold the filter's `labels.KEY=VALUE` terms, in one page
        (the reply's `nextPageToken` is left out, as Google does on the last page)."""
        self._check_location(match)
        terms = equality_filter(call.query.get("filter", ""), _LABEL_FIELD)
        with self.lock:
            jobs = [j for j in self.jobs.values() if labels_match(j.resource, terms)]
        replies = [self._job_reply(call, job) for job in jobs]
        return {"customJobs": replies} if replies else {}

    def _job(self, job_id: str) -> _Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found(f"CustomJob {self.job_name(job_id)}")
        return job

    def _cancel_job(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        job = self._job(match["id"])
        with self.lock:
            if job.state in TERMINAL:
                raise failed_precondition(
                    f"Cannot cancel CustomJob {job.resource['name']}: it is in state {job.state}."
                )
            job.cancel_requested = True
            job.state = "JOB_STATE_CANCELLING"
            job.resource["updateTime"] = now()
        return {}

    def _delete_job(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        job = self._job(match["id"])
        with self.lock:
            if job.state not in TERMINAL:
                raise failed_precondition(
                    f"CustomJob {job.resource['name']} is in state {job.state} and cannot be deleted; "
                    "cancel it "
                    "first."
                )
            del self.jobs[job.id]
        operation = self.new_operation(
            f"projects/{self.project_number}/locations/{self.location}/operations/{self.new_id()}",
            {"@type": TYPE_PREFIX + "DeleteOperationMetadata", "genericMetadata": _generic()},
        )
        operation.finish()
        return operation.document(count_poll=False)

    def _set_state(self, job: _Job, state: str, error: dict[str, Any] | None = None) -> None:
        with self.lock:
            job.state = state
            job.error = error
            job.resource["updateTime"] = now()
            if state == "JOB_STATE_RUNNING":
                job.resource["startTime"] = now()
            if state in TERMINAL:
                job.resource["endTime"] = now()
        log.info("vertex fake: job %s %s", job.id, state)

    def _run_job(self, job: _Job) -> None:
        spec = job.resource["jobSpec"]
        deadline_at_start = time.monotonic() + self.queue_seconds
        while time.monotonic() < deadline_at_start and not job.cancel_requested:
            time.sleep(0.05)
        if job.cancel_requested:
            self._set_state(
                job, "JOB_STATE_CANCELLED", {"code": RPC_CODES["CANCELLED"], "message": "CANCELED"}
            )
            return
        denied = self._job_storage_denied(job)
        if denied is not None:
            self._set_state(
                job, "JOB_STATE_FAILED", {"code": RPC_CODES["PERMISSION_DENIED"], "message": denied}
            )
            return
        try:
            job.replicas = self._start_replicas(job, spec)
        except OSError as error:
            message = f"The replica workerpool0-0 could not start its command: {error}"
            self._set_state(
                job, "JOB_STATE_FAILED", {"code": RPC_CODES["INVALID_ARGUMENT"], "message": message}
            )
            return
        self._set_state(job, "JOB_STATE_RUNNING")
        timeout = seconds((spec.get("scheduling") or {}).get("timeout"), 7 * 24 * 3600.0)
        ends_at = time.monotonic() + timeout
        while True:
            time.sleep(0.1)
            if job.cancel_requested:
                for replica in job.replicas:
                    _stop(replica.process)
                self._set_state(
                    job, "JOB_STATE_CANCELLED", {"code": RPC_CODES["CANCELLED"], "message": "CANCELED"}
                )
                return
            failed = [r for r in job.replicas if r.process.poll() not in (None, 0)]
            if failed:
                for replica in job.replicas:
                    _stop(replica.process)
                first = failed[0]
                log.warning("vertex fake: job %s failed:\n%s", job.id, self.job_log(job.id)[-4000:])
                self._set_state(
                    job,
                    "JOB_STATE_FAILED",
                    {
                        "code": RPC_CODES["INVALID_ARGUMENT"],
                        "message": (
                            f"The replica workerpool{first.pool}-{first.index} exited with a non-zero status "
                            f"of {first.process.returncode}. To find out more about why your job exited "
                            "please check the logs: "
                            f"https://console.cloud.google.com/logs/viewer?project={self.project_number}"
                            f"&resource=ml_job%2Fjob_id%2F{job.id}&advanced_filter=resource.type%3D%22ml_job%22"
                        ),
                    },
                )
                return
            if all(r.process.poll() == 0 for r in job.replicas):
                self._set_state(job, "JOB_STATE_SUCCEEDED")
                return
            if time.monotonic() > ends_at:
                for replica in job.replicas:
                    _stop(replica.process)
                self._set_state(
                    job,
                    "JOB_STATE_FAILED",
                    {
                        "code": RPC_CODES["DEADLINE_EXCEEDED"],
                        "message": f"Job exceeded its timeout of {timeout:.0f}s (scheduling.timeout).",
                    },
                )
                return

    def _start_replicas(self, job: _Job, spec: dict[str, Any]) -> list[_Replica]:
        pools = spec["workerPoolSpecs"]
        counts = [int64(p.get("replicaCount"), 1) if p else 0 for p in pools]
        ports = [[free_port() for _ in range(n)] for n in counts]
        cluster = {
            f"workerpool{i}": [f"127.0.0.1:{port}" for port in ports[i]]
            for i in range(len(pools))
            if counts[i]
        }
        tf_cluster = {
            TF_TASK_TYPES[i]: [f"127.0.0.1:{port}" for port in ports[i]]
            for i in range(len(pools))
            if counts[i] and TF_TASK_TYPES[i] != "evaluator"
        }
        job_env = self._job_env(job, spec)
        replicas = []
        for i, pool in enumerate(pools):
            for index in range(counts[i]):
                task = {"type": f"workerpool{i}", "index": index}
                env = {
                    **job_env,
                    "CLUSTER_SPEC": json.dumps(
                        {"cluster": cluster, "environment": "cloud", "task": task, "job": json.dumps(spec)}
                    ),
                    "TF_CONFIG": json.dumps(
                        {
                            "cluster": tf_cluster,
                            "environment": "cloud",
                            "task": {"type": TF_TASK_TYPES[i], "index": index},
                            "job": spec,
                        }
                    ),
                }
                command = self._command(pool)
                container_env = {
                    e["name"]: e.get("value", "") for e in (pool.get("containerSpec") or {}).get("env", [])
                }
                env.update({k: self._local(v) for k, v in container_env.items()})
                log_path = self.work_dir / f"job-{job.id}-workerpool{i}-{index}.log"
                replicas.append(_Replica(i, index, _spawn(command, env, log_path, self.work_dir), log_path))
        return replicas

    def _job_env(self, job: _Job, spec: dict[str, Any]) -> dict[str, str]:
        env = {
            "CLOUD_ML_JOB_ID": job.id,
            "CLOUD_ML_PROJECT_ID": self.project,
            "CLOUD_ML_REGION": self.location,
        }
        base = ((spec.get("baseOutputDirectory") or {}).get("outputUriPrefix") or "").rstrip("/")
        if base:
            env |= {
                "AIP_MODEL_DIR": self._local(f"{base}/model/"),
                "AIP_CHECKPOINT_DIR": self._local(f"{base}/checkpoints/"),
                "AIP_TENSORBOARD_LOG_DIR": self._local(f"{base}/logs/"),
            }
        return env

    def _command(self, pool: dict[str, Any]) -> list[str]:
        container = pool.get("containerSpec")
        if container:
            command = list(container.get("command") or [])
            if not command:
                raise OSError("the fake cannot run an image's ENTRYPOINT: give containerSpec.command")
            return [self._local(a) for a in [*command, *(container.get("args") or [])]]
        package = pool["pythonPackageSpec"]
        return ["python", "-m", package["pythonModule"], *[self._local(a) for a in package.get("args") or []]]

    def _local(self, value: str) -> str:
        """gs://bucket/x -> <gcs_root>/bucket/x: what /gcs/bucket/x is inside a Vertex training replica."""
        return re.sub(r"gs://", str(self.gcs_root).rstrip("/") + "/", value)

    # -- models ------------------------------------------------------------------------------------
    def _upload_model(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        model = dict(call.json.get("model") or {})  # its required fields: the discovery contract
        model_id = call.json.get("modelId") or self.new_id()
        name = self._name("models", model_id)
        with self.lock:
            if model_id in self.models:
                raise ApiError(409, f"Model {name} already exists.")
            self.models[model_id] = {
                **model,
                "name": name,
                "versionId": "1",
                "versionAliases": ["default"],
                "createTime": now(),
                "updateTime": now(),
            }
        operation = self.new_operation(
            f"{name}/operations/{self.new_id()}",
            {"@type": TYPE_PREFIX + "UploadModelOperationMetadata", "genericMetadata": _generic()},
        )
        operation.finish({"@type": TYPE_PREFIX + "UploadModelResponse", "model": name, "modelVersionId": "1"})
        return operation.document(count_poll=False)

    def _list_models(self, call: Call, match: re.Match[str]) -> Any:
        """models.list with a `labels.KEY=VALUE` filter, in one page."""
        self._check_location(match)
        terms = equality_filter(call.query.get("filter", ""), _LABEL_FIELD)
        with self.lock:
            models = [dict(m) for m in self.models.values() if labels_match(m, terms)]
        return {"models": models} if models else {}

    def _model(self, model_id: str) -> dict[str, Any]:
        model = self.models.get(model_id)
        if model is None:
            raise not_found(f"Model {self._name('models', model_id)}")
        return model

    def _get_model(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        with self.lock:
            model = dict(self._model(match["id"]))
            deployed = [
                {"endpoint": e.resource["name"], "deployedModelId": d.id}
                for e in self.endpoints.values()
                for d in e.deployed.values()
                if d.model_id == match["id"]
            ]
        return model | ({"deployedModels": deployed} if deployed else {})

    def _delete_model(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        with self.lock:
            model = self._model(match["id"])
            users = [
                e.resource["name"]
                for e in self.endpoints.values()
                if any(d.model_id == match["id"] for d in e.deployed.values())
            ]
            if users:
                raise failed_precondition(
                    f'The Model "{model["name"]}" is deployed or being deployed at the following '
                    f"Endpoint(s): {', '.join(users)}."
                )
            del self.models[match["id"]]
        operation = self.new_operation(
            f"projects/{self.project_number}/locations/{self.location}/operations/{self.new_id()}",
            {"@type": TYPE_PREFIX + "DeleteOperationMetadata", "genericMetadata": _generic()},
        )
        operation.finish()
        return operation.document(count_poll=False)

    # -- endpoints ---------------------------------------------------------------------------------
    def _create_endpoint(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        endpoint_id = call.query.get("endpointId") or self.new_id()
        with self.lock:
            if endpoint_id in self.endpoints:
                raise ApiError(409, f"Endpoint {self._name('endpoints', endpoint_id)} already exists.")
        name = self.add_endpoint(endpoint_id, call.json.get("displayName") or "endpoint")
        self.endpoints[endpoint_id].resource |= {
            k: v for k, v in call.json.items() if k in ("description", "labels", "encryptionSpec")
        }
        operation = self.new_operation(
            f"{name}/operations/{self.new_id()}",
            {"@type": TYPE_PREFIX + "CreateEndpointOperationMetadata", "genericMetadata": _generic()},
        )
        operation.finish(
            {"@type": TYPE_PREFIX + "Endpoint", **self._endpoint_document(self.endpoints[endpoint_id])}
        )
        return operation.document(count_poll=False)

    def _endpoint(self, endpoint_id: str) -> _Endpoint:
        endpoint = self.endpoints.get(endpoint_id)
        if endpoint is None:
            raise not_found(f"Endpoint {self._name('endpoints', endpoint_id)}")
        return endpoint

    def _endpoint_document(self, endpoint: _Endpoint) -> dict[str, Any]:
        with self.lock:
            document = dict(endpoint.resource)
            if endpoint.deployed:
                document["deployedModels"] = [d.resource for d in endpoint.deployed.values()]
            if endpoint.traffic:
                document["trafficSplit"] = dict(endpoint.traffic)
            return document

    def _get_endpoint(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        return self._endpoint_document(self._endpoint(match["id"]))

    def _delete_endpoint(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        with self.lock:
            endpoint = self._endpoint(match["id"])
            if endpoint.deployed:
                raise failed_precondition(
                    f"Endpoint {endpoint.resource['name']} has deployed models; undeploy them first."
                )
            del self.endpoints[match["id"]]
        operation = self.new_operation(
            f"projects/{self.project_number}/locations/{self.location}/operations/{self.new_id()}",
            {"@type": TYPE_PREFIX + "DeleteOperationMetadata", "genericMetadata": _generic()},
        )
        operation.finish()
        return operation.document(count_poll=False)

    def _deploy(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        endpoint = self._endpoint(match["id"])
        wanted = dict(call.json.get("deployedModel") or {})
        model_ref = str(wanted.get("model") or "")
        model_match = re.fullmatch(r"projects/[^/]+/locations/[^/]+/models/(\d+)(@\w+)?", model_ref)
        if model_match is None:
            raise invalid_argument(f"DeployedModel.model {model_ref!r} is not a model resource name.")
        model = self._model(model_match[1])
        self._require_act_as(call, wanted.get("serviceAccount"))
        resources = wanted.get("dedicatedResources") or {}
        if not (resources.get("machineSpec") or {}).get("machineType"):
            raise invalid_argument(
                "Model does not support automatic resources: "
                "DeployedModel.dedicated_resources.machine_spec is "
                "required for a custom-trained model."
            )
        if int64(resources.get("minReplicaCount")) < 1:
            raise invalid_argument("dedicated_resources.min_replica_count must be at least 1.")
        split = {k: int(v) for k, v in (call.json.get("trafficSplit") or {}).items()}
        if split and sum(split.values()) != 100:
            raise invalid_argument(f"The traffic split must add up to 100; got {split}.")
        deployed_id = str(wanted.get("id") or self.new_id())
        resource = {
            **wanted,
            "id": deployed_id,
            "model": model["name"],
            "modelVersionId": "1",
            "displayName": wanted.get("displayName") or model["displayName"],
            "createTime": now(),
        }
        deployed = _Deployed(deployed_id, endpoint.id, model_match[1], resource)
        self._deploying[deployed_id] = resource
        operation = self.new_operation(
            f"{endpoint.resource['name']}/operations/{self.new_id()}",
            {"@type": TYPE_PREFIX + "DeployModelOperationMetadata", "genericMetadata": _generic()},
        )
        self._background(self._run_deployment, endpoint, deployed, model, split, operation)
        return operation.document(count_poll=False)

    def _run_deployment(
        self,
        endpoint: _Endpoint,
        deployed: _Deployed,
        model: dict[str, Any],
        split: dict[str, int],
        operation: Any,
    ) -> None:
        spec = model.get("containerSpec") or {}
        default_route = f"/v1/endpoints/{endpoint.id}/deployedModels/{deployed.id}"
        deployed.health_route = spec.get("healthRoute") or default_route
        deployed.predict_route = spec.get("predictRoute") or f"{default_route}:predict"
        deployed.port = free_port()
        env = {e["name"]: e.get("value", "") for e in spec.get("env") or []}
        env |= {
            "AIP_HTTP_PORT": str(deployed.port),
            "AIP_HEALTH_ROUTE": deployed.health_route,
            "AIP_PREDICT_ROUTE": deployed.predict_route,
            "AIP_STORAGE_URI": self._copy_artifacts(model.get("artifactUri", ""), deployed.id),
            "AIP_DEPLOYED_MODEL_ID": deployed.id,
            "AIP_ENDPOINT_ID": endpoint.id,
            "AIP_MODEL_NAME": model["name"].rsplit("/", 1)[-1],
            "AIP_PROJECT_NUMBER": self.project_number,
            "AIP_MACHINE_TYPE": deployed.resource["dedicatedResources"]["machineSpec"]["machineType"],
            "AIP_MODE": "PREDICTION",
            "AIP_FRAMEWORK": "CUSTOM_CONTAINER",
            **self.gcs.workload_env(self.serving_identity(deployed.resource), self.work_dir / "credentials"),
        }
        command = [*(spec.get("command") or []), *(spec.get("args") or [])]
        deployed.log_path = self.work_dir / f"deployment-{deployed.id}.log"
        failure = None
        if not command:
            failure = "the fake cannot run an image's ENTRYPOINT: give containerSpec.command"
        else:
            try:
                deployed.process = _spawn(command, env, deployed.log_path, self.work_dir)
                failure = self._wait_healthy(deployed, operation)
            except OSError as error:
                failure = f"the model server could not start: {error}"
        if failure is not None:
            if deployed.process is not None:
                _stop(deployed.process)
            log.warning(
                "vertex fake: deployment %s failed:\n%s", deployed.id, _read(deployed.log_path)[-4000:]
            )
            code = RPC_CODES["CANCELLED"] if failure == CANCELLED else RPC_CODES["FAILED_PRECONDITION"]
            operation.finish(error={"code": code, "message": failure})
            return
        with self.lock:
            endpoint.deployed[deployed.id] = deployed
            if split:
                endpoint.traffic = {(deployed.id if k == "0" else k): v for k, v in split.items() if v}
            elif len(endpoint.deployed) == 1:
                endpoint.traffic = {deployed.id: 100}
            endpoint.resource["updateTime"] = now()
        operation.finish({"@type": TYPE_PREFIX + "DeployModelResponse", "deployedModel": deployed.resource})

    @property
    def managed_bucket(self) -> str:
        """The bucket Vertex AI copies a deployed model's artifacts to (its own, not the user's)."""
        return f"vertex-ai-managed-{self.project_number}-{self.location}"

    def _copy_artifacts(self, artifact_uri: str, deployed_id: str) -> str:
        """What Vertex AI does before it starts a serving container: copy `artifactUri` (read by its
        service agent) to a location of its own, readable by the deployed model's account; AIP_STORAGE_URI
        names it."""
        if not artifact_uri:
            return ""
        copy = f"gs://{self.managed_bucket}/deployments/{deployed_id}/artifacts"
        source, target = self.gcs.path_of(artifact_uri), self.gcs.path_of(copy)
        if self.iam is not None:
            bucket = artifact_uri[5:].split("/", 1)[0]
            if not self.iam.allows(self.service_agent, "storage.objects.get", f"buckets/{bucket}"):
                return copy  # nothing copied: the serving container finds no model
            serving = self.serving_identity(self._deploying[deployed_id])
            self.iam.grant(
                f"buckets/{self.managed_bucket}", "roles/storage.objectViewer", serving, propagated=True
            )
        if source.is_dir():
            shutil.copytree(source, target, dirs_exist_ok=True)
        return copy

    def _require_act_as(self, call: Call, account: str | None) -> None:
        """Running a job or a deployment as a user-managed account needs actAs on it for the caller."""
        if self.iam is not None:
            self.iam.require_act_as(self.principal(call), account)

    def _job_storage_denied(self, job: _Job) -> str | None:
        """What the job's account may not do that its replicas will: read `--data gs://...`, write the
        output folder. Vertex reports it as the job's failure, not as a 403 to the caller."""
        if self.iam is None:
            return None
        spec = job.resource["jobSpec"]
        member = self.serving_identity({"serviceAccount": spec.get("serviceAccount")}, job=True)
        needs = []
        output = (spec.get("baseOutputDirectory") or {}).get("outputUriPrefix", "")
        if output.startswith("gs://"):
            needs.append(("storage.objects.create", output[5:].split("/", 1)[0]))
        for pool in spec.get("workerPoolSpecs") or []:
            args = list((pool.get("containerSpec") or {}).get("args") or [])
            needs += [("storage.objects.get", a[5:].split("/", 1)[0]) for a in args if a.startswith("gs://")]
        for permission, bucket in needs:
            if not self.iam.allows(member, permission, f"buckets/{bucket}"):
                return storage_message(member, permission)
        return None

    def serving_identity(self, deployed_model: dict[str, Any], job: bool = False) -> str:
        """Whom a deployed model's container (or a job's replicas) runs as: its `serviceAccount`, else
        Vertex AI's own Custom Code Service Agent."""
        account = deployed_model.get("serviceAccount")
        if account:
            return f"serviceAccount:{account}"
        return f"serviceAccount:service-{self.project_number}@gcp-sa-aiplatform-cc.iam.gserviceaccount.com"

    @property
    def service_agent(self) -> str:
        """The Vertex AI Service Agent, which reads a model's artifacts."""
        return f"serviceAccount:service-{self.project_number}@gcp-sa-aiplatform.iam.gserviceaccount.com"

    def _wait_healthy(self, deployed: _Deployed, operation: Any) -> str | None:
        deadline = time.monotonic() + self.deploy_timeout
        assert deployed.process is not None
        while time.monotonic() < deadline and not self._closing:
            if operation.cancel_requested and self.honour_cancel:
                return CANCELLED
            if deployed.process.poll() is not None:
                return (
                    f"Model server exited unexpectedly (exit code {deployed.process.returncode}). "
                    "Model server logs "
                    f"can be found at https://console.cloud.google.com/logs/viewer?project={self.project_number}"
                )
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{deployed.port}{deployed.health_route}", timeout=2).ok:
                    return None
            time.sleep(0.2)
        return (
            f"Model server never became ready within {self.deploy_timeout:.0f}s "
            f"(health route {deployed.health_route})."
        )

    def _undeploy(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        endpoint = self._endpoint(match["id"])
        deployed_id = str(call.json.get("deployedModelId") or "")
        split = {k: int(v) for k, v in (call.json.get("trafficSplit") or {}).items()}
        with self.lock:
            deployed = endpoint.deployed.get(deployed_id)
            if deployed is None:
                raise not_found(f"DeployedModel {deployed_id} of Endpoint {endpoint.resource['name']}")
            others = [d for d in endpoint.deployed if d != deployed_id]
            if split:
                if split.get(deployed_id):
                    raise invalid_argument(
                        "The new traffic split gives traffic to the model being undeployed."
                    )
                if others and sum(split.values()) != 100:
                    raise invalid_argument(f"The traffic split must add up to 100; got {split}.")
            elif others and endpoint.traffic.get(deployed_id, 0) > 0:
                raise failed_precondition(
                    f"Model {deployed_id} has traffic {endpoint.traffic[deployed_id]} and other models are "
                    "deployed: "
                    "give a traffic_split that moves its traffic before undeploying it."
                )
            del endpoint.deployed[deployed_id]
            endpoint.traffic = {
                k: v for k, v in (split or endpoint.traffic).items() if k != deployed_id and v
            }
            endpoint.resource["updateTime"] = now()
        operation = self.new_operation(
            f"{endpoint.resource['name']}/operations/{self.new_id()}",
            {"@type": TYPE_PREFIX + "UndeployModelOperationMetadata", "genericMetadata": _generic()},
        )

        def stop() -> None:
            if deployed.process is not None:
                _stop(deployed.process)
            operation.finish({"@type": TYPE_PREFIX + "UndeployModelResponse"})

        self._background(stop)
        return operation.document(count_poll=False)

    def _predict(self, call: Call, match: re.Match[str]) -> Any:
        self._check_location(match)
        if call.size > PREDICT_PAYLOAD_LIMIT:
            raise invalid_argument(f"Request payload size exceeds the limit: {PREDICT_PAYLOAD_LIMIT} bytes.")
        endpoint = self._endpoint(match["id"])
        with self.lock:
            if not endpoint.traffic:
                raise failed_precondition(
                    f"Endpoint {endpoint.resource['name']} has no deployed model with traffic."
                )
            deployed_id = max(endpoint.traffic, key=lambda k: endpoint.traffic[k])
            deployed = endpoint.deployed[deployed_id]
            model = self.models.get(deployed.model_id, {})
        body = call.body if isinstance(call.body, bytes) else json.dumps(call.body).encode()
        reply = requests.post(
            f"http://127.0.0.1:{deployed.port}{deployed.predict_route}",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        if not reply.ok:
            return Response(reply.content, status_code=reply.status_code, media_type="application/json")
        document = reply.json()
        document |= {
            "deployedModelId": deployed.id,
            "model": deployed.resource["model"],
            "modelDisplayName": model.get("displayName", ""),
            "modelVersionId": "1",
        }
        return document

    # -- operations --------------------------------------------------------------------------------
    def _get_operation(self, call: Call, match: re.Match[str]) -> Any:
        return self.operation_reply(match["name"])

    def _cancel_operation(self, call: Call, match: re.Match[str]) -> Any:
        return self.cancel_operation(match["name"])

    def _list_endpoint_operations(self, call: Call, match: re.Match[str]) -> Any:
        # Replies name the project by number; a request may use its id.
        name = match["name"].replace(f"projects/{self.project}/", f"projects/{self.project_number}/", 1)
        return self.operations_under(name)


def _generic() -> dict[str, str]:
    return {"createTime": now(), "updateTime": now()}


def _spawn(command: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Run a container's command here: `python` and console scripts resolve to this interpreter's env."""
    full_env = {**os.environ, **env}
    bin_dir = str(Path(sys.executable).parent)
    full_env["PATH"] = bin_dir + os.pathsep + full_env.get("PATH", "")
    with log_path.open("wb") as out:
        return subprocess.Popen(
            command, env=full_env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def _read(path: Path | None) -> str:
    if path is None:
        return ""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""

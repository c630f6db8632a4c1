"""Vertex AI hyperparameter tuning jobs in the Vertex fake: trials run as processes, scored as Vertex does.

hyperparameterTuningJobs create/get/list/cancel/delete (their bodies checked against the aiplatform v1
discovery document before any handler, as every request of the fake is). A job runs up to
`parallelTrialCount` trials at a time until `maxTrialCount`: each trial is the `trialJobSpec` run as a custom
job's replicas are (tests/gcp/gcp_fakes/vertex.py), with what Vertex adds for a trial:

- the trial's values appended to every container's args as `--<parameterId>=<value>`;
- AIP_MODEL_DIR = `<baseOutputDirectory>/<trial id>/model/` (and checkpoints, logs under `<trial id>/`);
- CLOUD_ML_TRIAL_ID = the trial id.

The trial reports its metric with cloudml-hypertune, which writes JSON lines to /tmp/hypertune/output.metrics;
Vertex reads it from the trial's own machine. Here parallel trials share one machine, so the fake sets
CLOUD_ML_HP_METRIC_FILE (the package's own override of that path) to a file per trial, and reads the last
line carrying the study's `metricId` as the trial's final measurement (`stepCount` = its `global_step`). A
trial that exits non-zero, times out or reports no metric is INFEASIBLE with the reason. The job SUCCEEDS when
at least one trial succeeded, FAILS when none did or when `maxFailedTrialCount` (if set) trials failed.

What the fake cannot be: Vizier. It suggests values by seeded random sampling (uniform, or log-uniform for
UNIT_LOG_SCALE; categorical choices uniformly), or every combination in order for GRID_SEARCH; it never
learns from earlier trials and stops no trial early. `best_trial` picks the succeeded trial whose final
measurement is best for the study's goal, for tests to compare with what a client picks.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gcp_fakes.base import (
    RPC_CODES,
    Call,
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

if TYPE_CHECKING:
    from gcp_fakes.vertex import VertexFake, _Replica

TRIAL_STATES = ["STATE_UNSPECIFIED", "REQUESTED", "ACTIVE", "STOPPING", "SUCCEEDED", "INFEASIBLE"]
TERMINAL_TRIAL_STATES = frozenset({"SUCCEEDED", "INFEASIBLE"})
VALUE_SPECS = ("doubleValueSpec", "integerValueSpec", "categoricalValueSpec", "discreteValueSpec")
SEED = 20261208


def _enum(value: Any, enum_type: Any) -> str:
    """An enum field as its name, whether the client sent the name or (enum-encoding=int) its number. The
    numbers come from aiplatform_v1's own proto enums: the discovery document lists names only."""
    return value if isinstance(value, str) else enum_type(int(value)).name


@dataclass
class _Trial:
    id: str
    parameters: dict[str, Any]
    state: str = "REQUESTED"
    replicas: list[_Replica] = field(default_factory=list)
    metric_file: Path | None = None
    final: dict[str, Any] | None = None
    reason: str = ""
    started: float = 0.0
    start_time: str = ""
    end_time: str = ""


@dataclass
class _TuningJob:
    id: str
    resource: dict[str, Any]
    state: str = "JOB_STATE_PENDING"
    trials: list[_Trial] = field(default_factory=list)
    cancel_requested: bool = False
    error: dict[str, Any] | None = None


class TuningJobs:
    """The hyperparameterTuningJobs collection of a VertexFake."""

    def __init__(self, fake: VertexFake, loc: str) -> None:
        self.fake = fake
        self.jobs: dict[str, _TuningJob] = {}
        collection = loc + r"/hyperparameterTuningJobs"
        fake.route("POST", collection, self._create)
        fake.route("GET", collection, self._list)
        fake.route("GET", collection + r"/(?P<id>\d+)", self._get)
        fake.route("POST", collection + r"/(?P<id>\d+):cancel", self._cancel)
        fake.route("DELETE", collection + r"/(?P<id>\d+)", self._delete)
        method = "aiplatform.projects.locations.hyperparameterTuningJobs."
        for verb in ("create", "get", "list", "cancel", "delete"):
            fake.method_permissions[method + verb] = f"aiplatform.hyperparameterTuningJobs.{verb}"

    # -- helpers for tests -------------------------------------------------------------------------
    def job_name(self, job_id: str) -> str:
        return self.fake._name("hyperparameterTuningJobs", job_id)

    def best_trial(self, job_id: str) -> str | None:
        """The id of the succeeded trial whose final measurement is best for the study's goal."""
        from google.cloud import aiplatform_v1

        job = self.jobs[job_id]
        metric = job.resource["studySpec"]["metrics"][0]
        goal = _enum(metric["goal"], aiplatform_v1.StudySpec.MetricSpec.GoalType)
        scored = [
            (t.final["metrics"][0]["value"], t.id) for t in job.trials if t.state == "SUCCEEDED" and t.final
        ]
        if not scored:
            return None
        return (max if goal == "MAXIMIZE" else min)(scored)[1]

    def trial_log(self, job_id: str, trial_id: str) -> str:
        trial = next(t for t in self.jobs[job_id].trials if t.id == trial_id)
        return "\n".join(
            r.log_path.read_text(errors="replace") for r in trial.replicas if r.log_path.exists()
        )

    def wait(self, job_id: str, timeout: float = 600.0) -> str:
        from gcp_fakes.vertex import TERMINAL

        deadline = time.monotonic() + timeout
        while self.jobs[job_id].state not in TERMINAL:
            if time.monotonic() > deadline:
                raise TimeoutError(f"tuning job {job_id} still {self.jobs[job_id].state}")
            time.sleep(0.1)
        return self.jobs[job_id].state

    def processes(self) -> list[Any]:
        return [r.process for j in self.jobs.values() for t in j.trials for r in t.replicas]

    # -- handlers ----------------------------------------------------------------------------------
    def _create(self, call: Call, match: re.Match[str]) -> Any:
        fake = self.fake
        fake._check_location(match)
        body = call.json
        spec = body.get("trialJobSpec") or {}
        pools = spec.get("workerPoolSpecs") or []
        if not pools or int64(pools[0].get("replicaCount"), 1) != 1:
            raise invalid_argument("The first worker pool (the primary replica) must have replica_count 1.")
        if int64(body.get("parallelTrialCount")) > int64(body.get("maxTrialCount")):
            raise invalid_argument("parallel_trial_count must not exceed max_trial_count.")
        for i, parameter in enumerate((body.get("studySpec") or {}).get("parameters") or []):
            given = [name for name in VALUE_SPECS if parameter.get(name)]
            if len(given) != 1:
                raise invalid_argument(
                    f"study_spec.parameters[{i}] must set exactly one value spec, got {given or 'none'}."
                )
        fake._require_act_as(call, spec.get("serviceAccount"))
        job_id = fake.new_id()
        resource = {**body, "name": self.job_name(job_id), "createTime": now(), "updateTime": now()}
        job = _TuningJob(job_id, resource)
        with fake.lock:
            self.jobs[job_id] = job
        reply = self._reply(call, job)
        fake._background(self._run, job)
        return reply

    def _reply(self, call: Call, job: _TuningJob) -> dict[str, Any]:
        from gcp_fakes.vertex import JOB_STATES

        with self.fake.lock:
            reply = dict(job.resource)
            reply["state"] = enum_value(call, JOB_STATES, job.state)
            if job.error is not None:
                reply["error"] = job.error
            trials = [self._trial_reply(call, trial) for trial in job.trials]
            if trials:
                reply["trials"] = trials
            return reply

    @staticmethod
    def _trial_reply(call: Call, trial: _Trial) -> dict[str, Any]:
        reply: dict[str, Any] = {
            "id": trial.id,
            "state": enum_value(call, TRIAL_STATES, trial.state),
            "parameters": [{"parameterId": k, "value": v} for k, v in trial.parameters.items()],
        }
        if trial.start_time:
            reply["startTime"] = trial.start_time
        if trial.end_time:
            reply["endTime"] = trial.end_time
        if trial.final is not None:
            reply["finalMeasurement"] = trial.final
        if trial.reason:
            reply["infeasibleReason"] = trial.reason
        return reply

    def _job(self, job_id: str) -> _TuningJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise not_found(f"HyperparameterTuningJob {self.job_name(job_id)}")
        return job

    def _get(self, call: Call, match: re.Match[str]) -> Any:
        self.fake._check_location(match)
        return self._reply(call, self._job(match["id"]))

    def _list(self, call: Call, match: re.Match[str]) -> Any:
        from gcp_fakes.vertex import _LABEL_FIELD

        self.fake._check_location(match)
        terms = equality_filter(call.query.get("filter", ""), _LABEL_FIELD)
        with self.fake.lock:
            jobs = [j for j in self.jobs.values() if labels_match(j.resource, terms)]
        replies = [self._reply(call, job) for job in jobs]
        return {"hyperparameterTuningJobs": replies} if replies else {}

    def _cancel(self, call: Call, match: re.Match[str]) -> Any:
        from gcp_fakes.vertex import TERMINAL

        self.fake._check_location(match)
        job = self._job(match["id"])
        with self.fake.lock:
            if job.state in TERMINAL:
                raise failed_precondition(
                    f"Cannot cancel HyperparameterTuningJob {job.resource['name']}: it is {job.state}."
                )
            job.cancel_requested = True
            job.state = "JOB_STATE_CANCELLING"
        return {}

    def _delete(self, call: Call, match: re.Match[str]) -> Any:
        from gcp_fakes.vertex import TERMINAL, TYPE_PREFIX, _generic

        fake = self.fake
        fake._check_location(match)
        job = self._job(match["id"])
        with fake.lock:
            if job.state not in TERMINAL:
                raise failed_precondition(
                    f"HyperparameterTuningJob {job.resource['name']} is in state {job.state} and cannot be "
                    "deleted; cancel it first."
                )
            del self.jobs[job.id]
        operation = fake.new_operation(
            f"projects/{fake.project_number}/locations/{fake.location}/operations/{fake.new_id()}",
            {"@type": TYPE_PREFIX + "DeleteOperationMetadata", "genericMetadata": _generic()},
        )
        operation.finish()
        return operation.document(count_poll=False)

    # -- the search --------------------------------------------------------------------------------
    def _set_state(self, job: _TuningJob, state: str, error: dict[str, Any] | None = None) -> None:
        from gcp_fakes.vertex import TERMINAL

        with self.fake.lock:
            job.state, job.error = state, error
            job.resource["updateTime"] = now()
            if state == "JOB_STATE_RUNNING":
                job.resource["startTime"] = now()
            if state in TERMINAL:
                job.resource["endTime"] = now()

    def _run(self, job: _TuningJob) -> None:
        from gcp_fakes.vertex import _stop

        resource = job.resource
        suggestions = iter(self._suggestions(resource["studySpec"], int64(resource["maxTrialCount"])))
        parallel = int64(resource["parallelTrialCount"])
        allowed_failures = int64(resource.get("maxFailedTrialCount"))
        timeout = seconds((resource["trialJobSpec"].get("scheduling") or {}).get("timeout"), 7 * 24 * 3600.0)
        self._set_state(job, "JOB_STATE_RUNNING")
        exhausted = False
        while True:
            time.sleep(0.1)
            running = [t for t in job.trials if t.state == "ACTIVE"]
            if job.cancel_requested or self.fake._closing:
                for trial in running:
                    for replica in trial.replicas:
                        _stop(replica.process)
                    self._end_trial(
                        trial, "INFEASIBLE", reason="The trial was stopped: the job was cancelled."
                    )
                self._set_state(
                    job, "JOB_STATE_CANCELLED", {"code": RPC_CODES["CANCELLED"], "message": "CANCELED"}
                )
                return
            for trial in running:
                self._poll_trial(job, trial, timeout)
            failed = [t for t in job.trials if t.state == "INFEASIBLE"]
            if allowed_failures and len(failed) >= allowed_failures:
                for trial in job.trials:
                    for replica in trial.replicas:
                        _stop(replica.process)
                self._set_state(
                    job,
                    "JOB_STATE_FAILED",
                    {
                        "code": RPC_CODES["FAILED_PRECONDITION"],
                        "message": f"{len(failed)} trials failed; max_failed_trial_count {allowed_failures}.",
                    },
                )
                return
            while not exhausted and sum(1 for t in job.trials if t.state == "ACTIVE") < parallel:
                values = next(suggestions, None)
                if values is None:
                    exhausted = True
                    break
                self._start_trial(job, values)
            if exhausted and all(t.state in TERMINAL_TRIAL_STATES for t in job.trials):
                break
        if any(t.state == "SUCCEEDED" for t in job.trials):
            self._set_state(job, "JOB_STATE_SUCCEEDED")
        else:
            reasons = "; ".join(f"trial {t.id}: {t.reason}" for t in job.trials)
            self._set_state(
                job,
                "JOB_STATE_FAILED",
                {"code": RPC_CODES["INVALID_ARGUMENT"], "message": f"All trials failed. {reasons}"},
            )

    def _start_trial(self, job: _TuningJob, values: dict[str, Any]) -> None:
        from gcp_fakes.vertex import _Job

        fake = self.fake
        trial = _Trial(str(len(job.trials) + 1), values)
        spec = json.loads(json.dumps(job.resource["trialJobSpec"]))
        base = ((spec.get("baseOutputDirectory") or {}).get("outputUriPrefix") or "").rstrip("/")
        if base:
            spec["baseOutputDirectory"] = {"outputUriPrefix": f"{base}/{trial.id}"}
        trial.metric_file = fake.work_dir / f"tuning-{job.id}-trial-{trial.id}" / "output.metrics"
        trial.metric_file.parent.mkdir(parents=True, exist_ok=True)
        arguments = [f"--{name}={_argument(value)}" for name, value in values.items()]
        for pool in spec["workerPoolSpecs"]:
            container = pool.get("containerSpec") or pool.get("pythonPackageSpec") or {}
            container["args"] = [*(container.get("args") or []), *arguments]
            if "containerSpec" in pool:
                container["env"] = [
                    *(container.get("env") or []),
                    {"name": "CLOUD_ML_TRIAL_ID", "value": trial.id},
                    {"name": "CLOUD_ML_HP_METRIC_FILE", "value": str(trial.metric_file)},
                ]
        trial_job = _Job(f"{job.id}-trial-{trial.id}", {"jobSpec": spec})
        trial.started, trial.start_time = time.monotonic(), now()
        with fake.lock:
            job.trials.append(trial)
        denied = fake._job_storage_denied(trial_job)
        if denied is not None:
            self._end_trial(trial, "INFEASIBLE", reason=denied)
            return
        try:
            trial.replicas = fake._start_replicas(trial_job, spec)
        except OSError as error:
            self._end_trial(trial, "INFEASIBLE", reason=f"The trial's command could not start: {error}")
            return
        with fake.lock:
            trial.state = "ACTIVE"

    def _poll_trial(self, job: _TuningJob, trial: _Trial, timeout: float) -> None:
        from gcp_fakes.vertex import _stop

        codes = [r.process.poll() for r in trial.replicas]
        failed = [(r, c) for r, c in zip(trial.replicas, codes, strict=True) if c not in (None, 0)]
        if failed:
            for replica in trial.replicas:
                _stop(replica.process)
            replica, code = failed[0]
            where = f"workerpool{replica.pool}-{replica.index}"
            reason = f"The replica {where} exited with a non-zero status of {code}."
            self._end_trial(trial, "INFEASIBLE", reason=reason)
        elif all(c == 0 for c in codes):
            metric = job.resource["studySpec"]["metrics"][0]["metricId"]
            final = _final_measurement(trial.metric_file, metric)
            if final is None:
                self._end_trial(trial, "INFEASIBLE", reason=f"The trial reported no metric {metric!r}.")
            else:
                self._end_trial(trial, "SUCCEEDED", final=final)
        elif time.monotonic() - trial.started > timeout:
            for replica in trial.replicas:
                _stop(replica.process)
            self._end_trial(trial, "INFEASIBLE", reason=f"The trial exceeded its timeout of {timeout:.0f}s.")

    def _end_trial(
        self, trial: _Trial, state: str, final: dict[str, Any] | None = None, reason: str = ""
    ) -> None:
        with self.fake.lock:
            trial.state, trial.final, trial.reason, trial.end_time = state, final, reason, now()

    @staticmethod
    def _suggestions(study: dict[str, Any], count: int) -> list[dict[str, Any]]:
        """The values of each trial: every combination in order (GRID_SEARCH), else seeded random draws."""
        from google.cloud import aiplatform_v1

        parameters = study["parameters"]
        algorithm = _enum(study.get("algorithm") or 0, aiplatform_v1.StudySpec.Algorithm)
        if algorithm == "GRID_SEARCH":
            axes = [[(p["parameterId"], v) for v in _grid_values(p)] for p in parameters]
            return [dict(combo) for combo in itertools.islice(itertools.product(*axes), count)]
        draw = random.Random(SEED)
        return [{p["parameterId"]: _draw(p, draw) for p in parameters} for _ in range(count)]


def _argument(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _grid_values(parameter: dict[str, Any]) -> list[Any]:
    if parameter.get("categoricalValueSpec"):
        return list(parameter["categoricalValueSpec"]["values"])
    if parameter.get("discreteValueSpec"):
        return [float(v) for v in parameter["discreteValueSpec"]["values"]]
    if parameter.get("integerValueSpec"):
        spec = parameter["integerValueSpec"]
        return [float(v) for v in range(int64(spec["minValue"]), int64(spec["maxValue"]) + 1)]
    raise invalid_argument(
        f"GRID_SEARCH cannot search the continuous parameter {parameter['parameterId']!r}."
    )


def _draw(parameter: dict[str, Any], draw: random.Random) -> Any:
    from google.cloud import aiplatform_v1

    if parameter.get("categoricalValueSpec"):
        return draw.choice(parameter["categoricalValueSpec"]["values"])
    if parameter.get("discreteValueSpec"):
        return float(draw.choice(parameter["discreteValueSpec"]["values"]))
    scale = _enum(parameter.get("scaleType") or 0, aiplatform_v1.StudySpec.ParameterSpec.ScaleType)
    integer = parameter.get("integerValueSpec")
    spec = integer or parameter["doubleValueSpec"]
    low, high = float(spec["minValue"]), float(spec["maxValue"])
    if scale == "UNIT_LOG_SCALE" and low > 0:
        value = math.exp(draw.uniform(math.log(low), math.log(high)))
    elif scale == "UNIT_REVERSE_LOG_SCALE" and high < 1:
        value = 1 - math.exp(draw.uniform(math.log(1 - high), math.log(1 - low)))
    else:
        value = draw.uniform(low, high)
    return float(round(value)) if integer else value


def _final_measurement(path: Path | None, metric: str) -> dict[str, Any] | None:
    """The last line of a cloudml-hypertune metrics file that carries `metric`, as a Measurement."""
    if path is None or not path.exists():
        return None
    for line in reversed(path.read_text().splitlines()):
        entry = json.loads(line) if line.strip() else {}
        if metric in entry:
            return {
                "stepCount": str(int(entry.get("global_step") or 0)),
                "metrics": [{"metricId": metric, "value": float(entry[metric])}],
            }
    return None

"""Who this replica is in a Vertex AI training cluster, from the TF_CONFIG (or CLUSTER_SPEC) Vertex sets.

Vertex AI runs worker pool 0 (exactly one replica: the chief) and worker pool 1 (the other workers) of a
custom job, and gives every replica both variables, e.g. on the second worker::

    TF_CONFIG    {"cluster": {"chief": ["h0:2222"], "worker": ["h1:2222", "h2:2222"]},
                  "task": {"type": "worker", "index": 1}, "environment": "cloud", "job": {...}}
    CLUSTER_SPEC {"cluster": {"workerpool0": ["h0:2222"], "workerpool1": ["h1:2222", "h2:2222"]},
                  "task": {"type": "workerpool1", "index": 1}, "environment": "cloud", "job": "..."}

More than one replica in chief + worker means multi-worker training (MultiWorkerMirroredStrategy, all
replicas in lockstep); parameter servers and evaluators (pools 2 and 3) are not used by this trainer.
No TensorFlow here: reading the role must not start TensorFlow's runtime before the strategy exists.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

TF_CONFIG_ENV = "TF_CONFIG"
CLUSTER_SPEC_ENV = "CLUSTER_SPEC"
CHIEF, WORKER = "chief", "worker"
# CLUSTER_SPEC's pool names -> TF_CONFIG's task types, in Vertex AI's order.
POOL_TASK_TYPES = {
    "workerpool0": CHIEF,
    "workerpool1": WORKER,
    "workerpool2": "ps",
    "workerpool3": "evaluator",
}


@dataclass(frozen=True)
class ClusterRole:
    """This replica's task and the number of training replicas (chief + workers)."""

    task_type: str = CHIEF
    task_index: int = 0
    num_workers: int = 1
    has_chief: bool = True

    @property
    def distributed(self) -> bool:
        return self.num_workers > 1

    @property
    def is_chief(self) -> bool:
        """The replica that exports the model (TensorFlow's rule: worker 0 when the cluster has no chief)."""
        if self.task_type == CHIEF:
            return True
        return not self.has_chief and self.task_type == WORKER and self.task_index == 0

    @property
    def worker_index(self) -> int:
        """0 .. num_workers - 1, the chief first: which shard of the data this replica reads."""
        return self.task_index + (1 if self.has_chief and self.task_type == WORKER else 0)


SINGLE_WORKER = ClusterRole()


def tf_config(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """TF_CONFIG as a dict; built from CLUSTER_SPEC when only that is set; None outside a cluster."""
    if raw := environ.get(TF_CONFIG_ENV):
        return _json(raw, TF_CONFIG_ENV)
    if raw := environ.get(CLUSTER_SPEC_ENV):
        spec = _json(raw, CLUSTER_SPEC_ENV)
        cluster = {POOL_TASK_TYPES.get(pool, pool): hosts for pool, hosts in spec.get("cluster", {}).items()}
        task = spec.get("task", {})
        task_type = POOL_TASK_TYPES.get(task.get("type", ""), task.get("type", ""))
        return {"cluster": cluster, "task": {"type": task_type, "index": task.get("index", 0)}}
    return None


def cluster_role(environ: Mapping[str, str]) -> ClusterRole:
    """This replica's role; a single chief when the environment names no cluster (local runs)."""
    config = tf_config(environ)
    if not config or not config.get("cluster"):
        return SINGLE_WORKER
    cluster = config["cluster"]
    task = config.get("task") or {}
    task_type, task_index = str(task.get("type", CHIEF)), int(task.get("index", 0))
    if task_type not in (CHIEF, WORKER):
        raise ValueError(
            f"{TF_CONFIG_ENV} makes this replica a {task_type!r}: this trainer uses "
            "MultiWorkerMirroredStrategy (a chief in worker pool 0, workers in worker pool 1), "
            "not parameter servers or evaluators"
        )
    chiefs, workers = len(cluster.get(CHIEF, [])), len(cluster.get(WORKER, []))
    return ClusterRole(task_type, task_index, chiefs + workers, has_chief=chiefs > 0)


def shard(images: np.ndarray, labels: np.ndarray, role: ClusterRole) -> tuple[np.ndarray, np.ndarray]:
    """This replica's part of the training data: every num_workers-th example, cut to the same length on
    every replica, so that all of them run the same number of steps (a collective step waits for all)."""
    if not role.distributed:
        return images, labels
    per_worker = len(labels) // role.num_workers
    if per_worker == 0:
        raise ValueError(f"{len(labels)} training images cannot be shared by {role.num_workers} workers")
    part = slice(role.worker_index, None, role.num_workers)
    return images[part][:per_worker], labels[part][:per_worker]


def _json(raw: str, name: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise ValueError(f"{name} is not JSON: {error}") from error
    if not isinstance(value, dict):
        raise ValueError(f"{name} is not a JSON object")
    return value

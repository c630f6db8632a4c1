"""The trainer's place in a Vertex AI cluster, read from the TF_CONFIG / CLUSTER_SPEC Vertex writes, and
the shard of the training data each replica reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.distributed import SINGLE_WORKER, ClusterRole, cluster_role, shard, tf_config

CLUSTER = {"chief": ["cmle-training-workerpool0-ab-0:2222"], "worker": ["w-0:2222", "w-1:2222"]}


def _vertex_env(task_type: str, index: int) -> dict[str, str]:
    pools = {"chief": "workerpool0", "worker": "workerpool1"}
    return {
        "TF_CONFIG": json.dumps(
            {"cluster": CLUSTER, "task": {"type": task_type, "index": index}, "environment": "cloud"}
        ),
        "CLUSTER_SPEC": json.dumps(
            {
                "cluster": {"workerpool0": CLUSTER["chief"], "workerpool1": CLUSTER["worker"]},
                "task": {"type": pools[task_type], "index": index},
                "environment": "cloud",
            }
        ),
    }


def test_without_a_cluster_the_trainer_is_a_single_chief() -> None:
    assert cluster_role({}) == SINGLE_WORKER
    assert not SINGLE_WORKER.distributed and SINGLE_WORKER.is_chief


def test_a_one_replica_vertex_job_is_not_distributed() -> None:
    env = {"TF_CONFIG": json.dumps({"cluster": {"chief": ["h:2222"]}, "task": {"type": "chief", "index": 0}})}
    role = cluster_role(env)
    assert not role.distributed and role.is_chief


@pytest.mark.parametrize(
    ("task_type", "index", "is_chief", "worker_index"),
    [("chief", 0, True, 0), ("worker", 0, False, 1), ("worker", 1, False, 2)],
)
def test_vertex_s_chief_and_workers_know_their_place(
    task_type: str, index: int, is_chief: bool, worker_index: int
) -> None:
    role = cluster_role(_vertex_env(task_type, index))
    assert role.distributed and role.num_workers == 3
    assert (role.is_chief, role.worker_index) == (is_chief, worker_index)


def test_cluster_spec_alone_gives_the_same_roles_as_tf_config() -> None:
    for task_type, index in [("chief", 0), ("worker", 1)]:
        env = _vertex_env(task_type, index)
        assert cluster_role({"CLUSTER_SPEC": env["CLUSTER_SPEC"]}) == cluster_role(env)
    config = tf_config({"CLUSTER_SPEC": _vertex_env("worker", 1)["CLUSTER_SPEC"]})
    assert config == {"cluster": CLUSTER, "task": {"type": "worker", "index": 1}}


def test_without_a_chief_worker_0_exports() -> None:
    role = ClusterRole("worker", 0, num_workers=2, has_chief=False)
    assert role.is_chief and role.worker_index == 0


def test_parameter_servers_are_refused_with_a_reason() -> None:
    env = {
        "TF_CONFIG": json.dumps(
            {"cluster": {"chief": ["a"], "ps": ["b"]}, "task": {"type": "ps", "index": 0}}
        )
    }
    with pytest.raises(ValueError, match="MultiWorkerMirroredStrategy"):
        cluster_role(env)


def test_shards_are_disjoint_equal_in_size_and_leave_out_at_most_one_per_worker() -> None:
    images, labels = np.arange(103 * 4).reshape(103, 2, 2), np.arange(103)
    parts = [
        shard(images, labels, ClusterRole(t, i, 3)) for t, i in [("chief", 0), ("worker", 0), ("worker", 1)]
    ]
    sizes = {len(y) for _, y in parts}
    assert sizes == {34}  # same number of steps on every worker
    seen = np.concatenate([y for _, y in parts])
    assert len(set(seen.tolist())) == len(seen) == 102
    assert all(np.array_equal(x[:, 0, 0], y * 4) for x, y in parts)  # images stay with their labels
    assert shard(images, labels, SINGLE_WORKER)[1] is labels

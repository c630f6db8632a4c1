"""Config `localTrainingSlots` (local and ibm stacks): how many trainings run at once on this machine.

A good value reaches every training job the stack declares (their trainers queue for that many slots,
training/slots.py); a bad one stops the program before any resource, naming the key, the value and what
is allowed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import run_stack

LOCAL_TRAINING = "pulumi-python:dynamic/local:TrainingJob"
IBM_TRAINING = "pulumi-python:dynamic/ibm:TrainingJob"
IBM_KEY = "k" * 44  # a stand-in; the program only wraps it in a secret


def local_config(tmp_path: Path, t10k_dir: Path, **extra: object) -> dict[str, object]:
    return {"dataset": "mnist-t10k", "dataDir": str(t10k_dir), "localRoot": str(tmp_path / "root"), **extra}


def test_local_training_slots_reach_every_local_training_job(tmp_path: Path, t10k_dir: Path):
    run = run_stack("local", local_config(tmp_path, t10k_dir, localTrainingSlots=3))
    jobs = run.of_type(LOCAL_TRAINING)
    assert len(jobs) == 3 and all(job.props["training_slots"] == 3 for job in jobs)


def test_without_the_key_the_jobs_leave_the_count_to_the_machine(tmp_path: Path, t10k_dir: Path):
    run = run_stack("local", local_config(tmp_path, t10k_dir))
    assert all(job.props.get("training_slots") is None for job in run.of_type(LOCAL_TRAINING))


def test_the_ibm_stacks_training_on_this_machine_takes_the_same_setting(tmp_path: Path, t10k_dir: Path):
    config = {**local_config(tmp_path, t10k_dir, localTrainingSlots=2), "ibm:apiKey": IBM_KEY}
    run = run_stack("ibm", config)
    assert run.one(IBM_TRAINING).props["training_slots"] == 2


@pytest.mark.parametrize("stack", ["local", "ibm"])
@pytest.mark.parametrize(
    ("value", "shown"), [(0, "0"), (65, "65"), ("two", "'two'"), (2.5, "2.5"), (True, "True")]
)
def test_a_bad_slot_count_is_refused_naming_key_value_and_what_is_allowed(
    stack: str, value: object, shown: str, tmp_path: Path, t10k_dir: Path
):
    config = {**local_config(tmp_path, t10k_dir, localTrainingSlots=value), "ibm:apiKey": IBM_KEY}
    with pytest.raises(ValueError) as error:
        run_stack(stack, config)
    message = str(error.value)
    assert "mnist-platform:localTrainingSlots" in message
    assert "whole number of trainings run at once on this machine, from 1 to 64" in message
    assert message.rstrip().endswith(f"got {shown}")

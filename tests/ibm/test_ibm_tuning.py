"""The watsonx.ai stack tunes on the deploying machine like the local stack (training/tuning.py): the
training job carries the search and runs `mnistctl train --tune`; without `tuning` it trains once."""

from __future__ import annotations

import json
from pathlib import Path

from harness import run_stack
from ibm_mocks import API_KEY, TRAINING_JOB, plausible_outputs

from infra.local.training_job import trainer_command

SEARCH = {"maxTrials": 3, "ranges": {"dropout": {"min": 0.1, "max": 0.4}, "width": [8, 16]}}


def _run(tmp_path: Path, t10k_dir: Path, **extra: object):
    config = {
        "ibm:apiKey": API_KEY,
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "localRoot": str(tmp_path / "work"),
        **extra,
    }
    return run_stack("ibm", config, outputs=plausible_outputs)


def test_the_ibm_training_job_tunes_the_pytorch_model_with_the_configured_search(
    tmp_path: Path, t10k_dir: Path
):
    props = _run(tmp_path, t10k_dir, tuning={"pytorch": SEARCH}).one(TRAINING_JOB).props
    search = json.loads(props["tuning"])
    assert search["maxTrials"] == 3 and search["ranges"]["width"] == [8, 16]
    assert search["objective"] == {"metric": "accuracy", "goal": "Maximize"}  # the settings fill it in
    command = trainer_command(props, tmp_path / "out")
    assert command[command.index("--tune") + 1] == props["tuning"]


def test_without_tuning_the_ibm_job_trains_once(tmp_path: Path, t10k_dir: Path):
    props = _run(tmp_path, t10k_dir).one(TRAINING_JOB).props
    assert props.get("tuning") is None
    assert "--tune" not in trainer_command(props, tmp_path / "out")

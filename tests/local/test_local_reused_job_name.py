"""A spec reverted to an earlier one retrains under the earlier job's name on the local stack (the job's id
is a hash of its inputs); the gate judges that run like any other instead of taking it for the champion
(infra/gate_provider.py `same_run`). End to end: the program under mocks, providers executed for real."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faults import stop_stack_processes
from harness import ProviderEngine, StackRun, run_stack

from infra.local import platform as local
from infra.settings import Framework

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

GOOD = {"num_round": 3, "max_depth": 3}  # dry run: 0.73 accuracy (tests/local/test_local_gate_e2e.py)
WORSE = {"num_round": 1, "max_depth": 1}  # 0.36


@pytest.fixture(autouse=True)
def code_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    hashes = {model: local.training_code_hash(model) for model in Framework}
    monkeypatch.setattr(local, "training_code_hash", hashes.__getitem__)
    serving = local.serving_code_hash()
    monkeypatch.setattr(local, "serving_code_hash", lambda: serving)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[ProviderEngine]:
    engine = ProviderEngine()
    yield engine
    try:
        engine.destroy()
    finally:
        stop_stack_processes(tmp_path)


def up(engine: ProviderEngine, config: dict[str, Any]) -> StackRun:
    run = run_stack("local", config, new_resource=engine)
    engine.finish()
    return run


def test_reverting_to_an_earlier_spec_retrains_under_its_old_name_and_the_gate_judges_it(
    engine: ProviderEngine, tmp_path: Path, t10k_dir: Path
):
    config: dict[str, Any] = {
        "localRoot": str(tmp_path / "local-root"),
        "dataset": "mnist-t10k",
        "dataDir": str(t10k_dir),
        "models": ["xgboost"],
        "dryRun": True,
        "minAccuracy": 0.3,
        "ui": False,
        "hyperparameters": {"xgboost": GOOD},
    }
    first = up(engine, config).outputs["models"]["xgboost"]
    config["hyperparameters"] = {"xgboost": WORSE}
    held = up(engine, config).outputs["models"]["xgboost"]
    assert held["challenger"]["decision"] == "held"

    config["hyperparameters"] = {"xgboost": GOOD}  # back to the first spec
    again = up(engine, config).outputs["models"]["xgboost"]
    challenger = again["challenger"]
    assert challenger["source"] == first["champion"]["source"]  # the same job name, a new run
    assert challenger["trained"] != first["champion"]["trained"]
    # Judged on its accuracy (a tie with its own job's earlier run keeps the champion, nothing replaced), not
    # waved through as "the same training run".
    assert "the same training run" not in challenger["reason"]
    assert f"scored the same accuracy ({challenger['accuracy']:.4f})" in challenger["reason"]
    assert challenger["decision"] == "champion" and again["champion"] == first["champion"]

"""The local batch provider (infra/local/batch.py) called as the engine calls it: crash-safe runs,
`read` asking the folder, `delete` leaving nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tiny_models import train_tiny_xgboost

from infra.dynamic import IDENTITY_SEED
from infra.local import batch as provider_module
from infra.local.batch import LocalBatchJobProvider, batch_id, run_folder
from infra.local.support import read_record, record_path, write_record
from mnistctl.batch import REPORT_FILE


@pytest.fixture(scope="module")
def champion(tmp_path_factory: pytest.TempPathFactory, t10k_dir: Path) -> Path:
    return train_tiny_xgboost(tmp_path_factory.mktemp("champion"), t10k_dir, images=500, rounds=2)


@pytest.fixture
def props(champion: Path, tmp_path: Path, t10k_dir: Path) -> dict[str, Any]:
    return {
        "model": "xgboost",
        "flavor": "sagemaker",
        "champion_dir": str(champion),
        "champion_hash": "champion-1",
        "input": "test",
        "input_hash": "data-1",
        "dataset": "mnist-t10k",
        "data_dir": str(t10k_dir),
        "root": str(tmp_path / "root"),
        IDENTITY_SEED: "seed",
    }


def test_a_run_scores_the_input_and_delete_removes_it_and_its_record(props: dict[str, Any]):
    provider = LocalBatchJobProvider()
    created = provider.create(props)
    outs = created.outs or {}
    assert outs["images"] == 2000 and 0.5 < outs["accuracy"] <= 1.0
    assert Path(outs["report"]).is_file() and Path(outs["confusion_png"]).is_file()
    assert provider.read(created.id, outs).id == created.id
    provider.delete(created.id, outs)
    assert not Path(outs["out_dir"]).exists()
    assert read_record(record_path(Path(props["root"]), created.id)) is None


def test_an_interrupted_runs_leftovers_are_removed_and_a_finished_run_is_adopted(
    props: dict[str, Any], monkeypatch: pytest.MonkeyPatch
):
    provider = LocalBatchJobProvider()
    first = provider.create(props).outs or {}
    # An update to a new champion interrupted mid-score: its folder listed, half-written, no report.
    newer = {**props, "champion_hash": "champion-2"}
    half = run_folder(newer)
    half.mkdir(parents=True)
    (half / "predictions.csv").write_text("row,input\n")
    record = record_path(Path(props["root"]), batch_id(props))
    assert read_record(record) == {"runs": [first["out_dir"]]}

    write_record(record, {"runs": [first["out_dir"], str(half)]})
    updated = provider.update(batch_id(props), first, newer).outs or {}
    assert updated["out_dir"] == str(half) and (half / REPORT_FILE).is_file()
    assert not Path(first["out_dir"]).exists()  # the previous run's folder, once the new one is whole
    assert read_record(record) == {"runs": [str(half)]}

    # The same update again after a crash between scoring and the state: adopted, not scored again.
    def no_scoring(*_: Any) -> None:
        raise AssertionError("scored again")

    monkeypatch.setattr(provider_module, "_score", no_scoring)
    again = provider.update(batch_id(props), updated, newer).outs or {}
    assert again["accuracy"] == updated["accuracy"]


def test_read_and_diff_report_a_run_whose_report_was_removed_behind_the_stacks_back(props: dict[str, Any]):
    provider = LocalBatchJobProvider()
    created = provider.create(props)
    state = created.outs or {}
    assert not provider.diff(created.id, state, props).changes  # nothing changed: not scored again
    Path(state["report"]).unlink()
    assert provider.read(created.id, state).id is None
    assert provider.diff(created.id, state, props).changes
    provider.delete(created.id, state)


def test_a_new_champion_or_input_scores_again_and_another_model_or_root_replaces(props: dict[str, Any]):
    provider = LocalBatchJobProvider()
    olds = {**props, "out_dir": "/nowhere"}
    for key in ("champion_hash", "input_hash", "input"):
        diff = provider.diff("id", olds, {**props, key: "changed"})
        assert diff.changes and not diff.replaces, key
    assert provider.diff("id", olds, {**props, "root": "/elsewhere"}).replaces == ["root"]


def test_a_failed_run_leaves_no_folder(props: dict[str, Any], tmp_path: Path):
    bad = tmp_path / "bad.csv"
    np.savetxt(bad, np.full((2, 10), 0.5), delimiter=",")
    failing = {**props, "input": str(bad), "input_hash": "bad"}
    with pytest.raises(provider_module.LocalProviderError, match="10 columns"):
        LocalBatchJobProvider().create(failing)
    assert not run_folder(failing).exists()

"""`mnistctl batch` as a user types it: a model folder, a stack's outputs, and inputs it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_models import train_tiny_xgboost
from typer.testing import CliRunner

from mnistctl.cli import EXIT_BAD_INPUT, app


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory, t10k_dir: Path) -> Path:
    return train_tiny_xgboost(tmp_path_factory.mktemp("xgb"), t10k_dir, images=500, rounds=2)


def test_a_model_folder_scores_the_test_split_into_out(model_folder: Path, t10k_dir: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            *("batch", "test", "--model-dir", str(model_folder), "--flavor", "sagemaker"),
            *(
                "--dataset",
                "mnist-t10k",
                "--data-dir",
                str(t10k_dir),
                "--out",
                str(out),
                "--batch-size",
                "500",
            ),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 2000 and report["batch_size"] == 500 and report["accuracy"] > 0.5
    assert (out / "confusion.png").is_file()


def test_a_stacks_outputs_give_the_champion_and_its_dataset(
    model_folder: Path, t10k_dir: Path, tmp_path: Path
):
    pngs = tmp_path / "scans"
    pngs.mkdir()
    Image.fromarray(np.full((40, 40), 255, dtype=np.uint8)).save(pngs / "blank.png")  # no digit on it
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                "endpoints": {"xgboost": {"flavor": "sagemaker", "name": "e", "url": "http://127.0.0.1:1"}},
                "models": {"xgboost": {"champion": {"artifact": str(model_folder / "model.tar.gz")}}},
                "dataset": "mnist-t10k",
                "bucket": str(t10k_dir),
            }
        )
    )
    refused = CliRunner().invoke(
        app, ["batch", str(pngs), "--outputs", str(outputs), "--out", str(tmp_path / "o")]
    )
    assert refused.exit_code == EXIT_BAD_INPUT and "no digit found" in refused.output
    Image.fromarray(np.pad(np.full((20, 8), 255, dtype=np.uint8), 10)).save(pngs / "blank.png")  # a "1"
    result = CliRunner().invoke(
        app, ["batch", str(pngs), "--outputs", str(outputs), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "o" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[1] == "blank.png"
    stacked = CliRunner().invoke(
        app, ["batch", "test", "--outputs", str(outputs), "--out", str(tmp_path / "t")]
    )
    assert stacked.exit_code == 0, stacked.output
    assert json.loads((tmp_path / "t" / "report.json").read_text())["images"] == 2000


def test_a_champion_that_is_not_on_this_machine_is_refused_naming_why(tmp_path: Path):
    outputs = tmp_path / "outputs.json"
    outputs.write_text(
        json.dumps(
            {
                "endpoints": {"xgboost": {"flavor": "sagemaker", "name": "e"}},
                "models": {"xgboost": {"champion": {"artifact": "s3://bucket/champions/x/model.tar.gz"}}},
            }
        )
    )
    result = CliRunner().invoke(app, ["batch", "test", "--outputs", str(outputs)])
    assert result.exit_code == EXIT_BAD_INPUT
    assert "is not a file on this machine" in " ".join(result.output.split())

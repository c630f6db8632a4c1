"""The trainer's own artifacts (`train_model(..., dry_run=True)`), served locally, read through
`client_for` and `mnistctl predict`: every flavor gives the same normalised answer as the model itself."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mnistctl.cli import app as cli
from mnistctl.client import client_for
from serving.app import create_app, serve_in_thread
from serving.constants import Flavor

pytestmark = pytest.mark.slow

FRAMEWORK = {Flavor.SAGEMAKER: "xgboost", Flavor.VERTEX: "tensorflow", Flavor.WATSONX: "pytorch"}


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, t10k_dir: Path
) -> Iterator[dict[Flavor, tuple[str, object]]]:
    """flavor -> (base URL, in-process model) for a dry-run artifact of the matching trainer."""
    from training.run import train_model

    running: dict[Flavor, tuple[str, object]] = {}
    with contextlib.ExitStack() as servers:
        for flavor, framework in FRAMEWORK.items():
            out = tmp_path_factory.mktemp(framework)
            train_model(framework, "mnist-t10k", t10k_dir, out, {}, dry_run=True)
            app = create_app(flavor, out, f"{framework}-dry")
            running[flavor] = (servers.enter_context(serve_in_thread(app)), app.state.model)
        yield running


@pytest.fixture(scope="module")
def digits(t10k_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from mnistctl.samples import sample_digits

    return sample_digits(40, t10k_dir)


@pytest.mark.parametrize("flavor", list(Flavor))
def test_client_for_returns_the_models_own_probabilities(served, digits, flavor: Flavor) -> None:
    url, model = served[flavor]
    client = client_for({"flavor": flavor.value, "name": f"{FRAMEWORK[flavor]}-dry", "url": url})

    probabilities = client.predict(digits[0])

    assert probabilities.shape == (40, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(probabilities, model.predict(digits[0]), atol=1e-4)  # type: ignore[attr-defined]


@pytest.mark.parametrize("flavor", list(Flavor))
def test_mnistctl_predict_prints_the_same_table_for_every_flavor(
    served, t10k_dir: Path, flavor: Flavor
) -> None:
    url, _ = served[flavor]
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            "--flavor",
            flavor.value,
            "--url",
            url,
            "--name",
            f"{FRAMEWORK[flavor]}-dry",
            "--sample",
            "10",
            "--data-dir",
            str(t10k_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "label" in line)
    assert all(column in header for column in ["input", "label", "digit", "p0", "p9"])
    assert "/10 correct" in result.stdout

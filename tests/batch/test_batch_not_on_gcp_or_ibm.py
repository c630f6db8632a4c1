"""gcp and ibm have no batch path yet (docs/batch.md): a `batch` block stops their program with a message
that says so, instead of an up that silently scores nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gcp"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ibm"))


def test_the_gcp_stack_refuses_a_batch_block_it_cannot_run(t10k_dir: Path):
    from gcp_mocks import run_gcp  # pyright: ignore[reportMissingImports]

    with pytest.raises(Exception, match="batch is not available on the gcp stack yet"):
        run_gcp(t10k_dir, {"batch": {"tensorflow": {"input": "test"}}})


def test_the_ibm_stack_refuses_a_batch_block_it_cannot_run(tmp_path: Path, t10k_dir: Path):
    from test_ibm_stack import run_ibm  # pyright: ignore[reportMissingImports]

    with pytest.raises(Exception, match="batch is not available on the ibm stack yet"):
        run_ibm(tmp_path, t10k_dir, {"batch": {"pytorch": {"input": "test"}}})

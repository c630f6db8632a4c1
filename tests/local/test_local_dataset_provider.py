"""The local dataset provider on the offline MNIST files: prepare, notice tampering, update, remove root."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.dynamic import IDENTITY_SEED
from infra.local.dataset import LocalDatasetProvider
from infra.local.support import ROOT_MARKER, LocalProviderError

T10K_FILES = {"t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}


@pytest.fixture
def props(tmp_path: Path, t10k_dir: Path) -> dict[str, Any]:
    return {
        "dataset": "mnist-t10k",
        "root": str(tmp_path / "root"),
        "stack": "test",
        "source_dir": str(t10k_dir),
    }


def create(props: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    result = LocalDatasetProvider().create(props)
    return result.id, {**props, **(result.outs or {})}


def test_create_copies_the_verified_files_under_the_root_and_records_their_hashes(props: dict[str, Any]):
    id_, state = create(props)
    path = Path(state["path"])
    assert path.parent == Path(props["root"]) / "data"
    assert {p.name for p in path.iterdir()} == T10K_FILES
    assert set(state["files"]) == T10K_FILES
    assert state["files"]["t10k-labels-idx1-ubyte.gz"] == (
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"  # tests/data/README.md
    )
    assert (state["n_train"], state["n_test"]) == (8000, 2000)
    assert len(state["content_hash"]) == 64
    assert (Path(props["root"]) / ROOT_MARKER).is_file()
    assert id_.startswith("mnist-t10k-")


def test_the_same_files_give_the_same_content_hash(props: dict[str, Any], tmp_path: Path):
    _, first = create(props)
    _, second = create({**props, "root": str(tmp_path / "other-root")})
    assert first["content_hash"] == second["content_hash"]


def test_delete_removes_the_whole_root_and_a_second_delete_succeeds(props: dict[str, Any]):
    id_, state = create(props)
    (Path(props["root"]) / "logs").mkdir()
    (Path(props["root"]) / "logs" / "endpoint.log").write_text("served\n")
    LocalDatasetProvider().delete(id_, state)
    assert not Path(props["root"]).exists()
    LocalDatasetProvider().delete(id_, state)  # already gone: success


def test_delete_keeps_the_root_while_a_replacement_dataset_lives_in_it(props: dict[str, Any]):
    old_id, old = create(props)
    # Pulumi creates the replacement (new inputs, so another identity) before it deletes the old one.
    _, new = create({**props, IDENTITY_SEED: "another-identity"})
    assert new["path"] != old["path"]
    LocalDatasetProvider().delete(old_id, old)
    assert not Path(old["path"]).exists()
    assert {p.name for p in Path(new["path"]).iterdir()} == T10K_FILES


def test_a_root_holding_someone_elses_files_is_refused(props: dict[str, Any]):
    root = Path(props["root"])
    root.mkdir()
    (root / "thesis.tex").write_text("precious")
    with pytest.raises(LocalProviderError, match="holds files that mnist-platform did not create"):
        LocalDatasetProvider().create(props)
    assert (root / "thesis.tex").read_text() == "precious"


def test_missing_offline_files_fail_with_what_to_set(props: dict[str, Any], tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LocalProviderError, match="mnist-platform:dataDir") as error:
        LocalDatasetProvider().create({**props, "source_dir": str(empty)})
    assert "t10k-images-idx3-ubyte.gz not found" in str(error.value)
    assert not list((Path(props["root"]) / "data").glob("*"))  # nothing half-made is left


def test_diff_replaces_for_another_dataset_and_updates_for_another_source(
    props: dict[str, Any], tmp_path: Path
):
    id_, state = create(props)
    provider = LocalDatasetProvider()
    assert not provider.diff(id_, state, props).changes
    other = provider.diff(id_, state, {**props, "dataset": "mnist"})
    assert other.changes and other.replaces == ["dataset"]
    moved = provider.diff(id_, state, {**props, "source_dir": str(tmp_path)})
    assert moved.changes and not moved.replaces

    update = provider.update(id_, state, props)
    assert update.outs is not None
    assert update.outs["path"] == state["path"] and update.outs["content_hash"] == state["content_hash"]


def test_files_changed_behind_the_stacks_back_are_prepared_again_in_place(props: dict[str, Any]):
    id_, state = create(props)
    labels = Path(state["path"]) / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(b"not labels")
    provider = LocalDatasetProvider()
    diff = provider.diff(id_, state, props)
    # In place: a replacement would have the same identity, so the same folder as the old one.
    assert diff.changes and not diff.replaces
    assert not provider.read(id_, state).id
    update = provider.update(id_, state, props)
    assert update.outs is not None and update.outs["path"] == state["path"]
    assert update.outs["content_hash"] == state["content_hash"] and labels.read_bytes() != b"not labels"

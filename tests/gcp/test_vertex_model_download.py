"""AIP_STORAGE_URI as Vertex AI gives it (gs://): the serving container downloads the SavedModel folder
with google-cloud-storage, here from the Cloud Storage fake (STORAGE_EMULATOR_HOST, the variable the
library documents for emulators)."""

from __future__ import annotations

import pytest
from gcp_fakes import GcsFake

from serving.errors import PlatformError
from serving.vertex_container import model_folder, serving_place


def test_a_gs_model_folder_is_downloaded_as_the_model_of_an_out_folder(
    gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_fake.url)
    gcs_fake.put("gs://vertex-copy/model/saved_model.pb", b"graph")
    gcs_fake.put("gs://vertex-copy/model/variables/variables.index", b"index")
    gcs_fake.put("gs://vertex-copy/model-other/saved_model.pb", b"not this one")

    place = serving_place(
        "vertex", None, 8080, {"AIP_HTTP_PORT": "8080", "AIP_STORAGE_URI": "gs://vertex-copy/model"}
    )

    model = place.model_dir / "model"
    assert sorted(p.relative_to(model).as_posix() for p in model.rglob("*") if p.is_file()) == [
        "saved_model.pb",
        "variables/variables.index",
    ]
    assert (model / "saved_model.pb").read_bytes() == b"graph"


def test_an_empty_or_missing_gs_folder_is_a_clear_error(
    gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_fake.url)
    gcs_fake.put("gs://vertex-copy/elsewhere/file", b"x")
    with pytest.raises(PlatformError, match="no model files under gs://vertex-copy/model"):
        model_folder("gs://vertex-copy/model")
    with pytest.raises(PlatformError, match="cannot read the model from gs://no-such-bucket/model"):
        model_folder("gs://no-such-bucket/model")

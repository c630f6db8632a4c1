"""AIP_STORAGE_URI as Vertex AI gives it (gs://): the serving container downloads the SavedModel folder
with google-cloud-storage, here from the Cloud Storage fake as the container's service account would
(`GcsFake.workload_env`: the library's endpoint override and a credentials file; the fake refuses a
request without a token, as Cloud Storage does)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gcp_fakes import GcsFake

from serving.errors import PlatformError
from serving.vertex_container import model_folder, serving_place

SERVING = "serviceAccount:mnist-gcp-serve@mnist-test.iam.gserviceaccount.com"


def as_serving_account(gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name, value in gcs_fake.workload_env(SERVING, tmp_path / "credentials").items():
        monkeypatch.setenv(name, value)


def test_a_gs_model_folder_is_downloaded_as_the_model_of_an_out_folder(
    gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    as_serving_account(gcs_fake, monkeypatch, tmp_path)
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
    listed = gcs_fake.requests_to("GET", r"/b/vertex-copy/o$")
    assert listed and all(gcs_fake.principal_of(r) == SERVING for r in listed)


def test_an_empty_or_missing_gs_folder_is_a_clear_error(
    gcs_fake: GcsFake, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    as_serving_account(gcs_fake, monkeypatch, tmp_path)
    gcs_fake.put("gs://vertex-copy/elsewhere/file", b"x")
    with pytest.raises(PlatformError, match="no model files under gs://vertex-copy/model"):
        model_folder("gs://vertex-copy/model")
    with pytest.raises(PlatformError, match="cannot read the model from gs://no-such-bucket/model"):
        model_folder("gs://no-such-bucket/model")

"""`mnistctl serve --flavor vertex` inside a Vertex AI container: Vertex's port and model location win,
all interfaces only there, loopback everywhere else."""

from __future__ import annotations

from pathlib import Path

import pytest

from serving.app import _config
from serving.errors import PlatformError
from serving.vertex_container import model_folder, serving_place

UNDER_VERTEX = {"AIP_HTTP_PORT": "9123", "MNIST_SERVING_HOST": "0.0.0.0"}


def _saved_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"\x08\x01")
    return folder


def test_outside_vertex_the_command_line_decides_and_the_host_is_loopback(tmp_path: Path) -> None:
    place = serving_place("vertex", tmp_path, 8081, {"MNIST_SERVING_HOST": "0.0.0.0"})
    assert (place.host, place.port, place.model_dir) == ("127.0.0.1", 8081, tmp_path)


def test_under_vertex_aip_http_port_and_aip_storage_uri_decide_and_the_image_may_bind_all_interfaces(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    _saved_model(out / "model")
    place = serving_place("vertex", None, 8080, {**UNDER_VERTEX, "AIP_STORAGE_URI": str(out)})
    assert (place.host, place.port, place.model_dir) == ("0.0.0.0", 9123, out)


def test_under_vertex_without_the_image_s_host_setting_the_server_stays_on_loopback(tmp_path: Path) -> None:
    place = serving_place("vertex", tmp_path, 8080, {"AIP_HTTP_PORT": "9123"})
    assert (place.host, place.port) == ("127.0.0.1", 9123)


def test_other_flavors_ignore_vertex_s_environment(tmp_path: Path) -> None:
    place = serving_place("sagemaker", tmp_path, 8080, {**UNDER_VERTEX, "AIP_STORAGE_URI": "gs://b/m"})
    assert (place.host, place.port, place.model_dir) == ("127.0.0.1", 8080, tmp_path)
    with pytest.raises(PlatformError, match=r"give --model$"):
        serving_place("sagemaker", None, 8080, {**UNDER_VERTEX, "AIP_STORAGE_URI": "gs://b/m"})


def test_a_host_other_than_loopback_or_all_interfaces_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PlatformError, match=r"MNIST_SERVING_HOST='10\.1\.2\.3' is not allowed"):
        serving_place("vertex", tmp_path, 8080, {"AIP_HTTP_PORT": "9123", "MNIST_SERVING_HOST": "10.1.2.3"})
    with pytest.raises(PlatformError, match="not a TCP port"):
        serving_place("vertex", tmp_path, 8080, {"AIP_HTTP_PORT": "http"})


def test_without_a_model_the_error_names_aip_storage_uri() -> None:
    with pytest.raises(PlatformError, match="AIP_STORAGE_URI"):
        serving_place("vertex", None, 8080, {})


def test_the_server_refuses_all_interfaces_unless_under_vertex(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIP_HTTP_PORT", raising=False)
    with pytest.raises(ValueError, match="loopback only"):
        _config(None, "0.0.0.0", 8080)  # type: ignore[arg-type]
    monkeypatch.setenv("AIP_HTTP_PORT", "8080")
    assert _config(None, "0.0.0.0", 8080).host == "0.0.0.0"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loopback only"):
        _config(None, "192.168.1.5", 8080)  # type: ignore[arg-type]


def test_a_saved_model_folder_is_served_as_the_model_of_an_out_folder(tmp_path: Path) -> None:
    saved = _saved_model(tmp_path / "artifact")
    out = model_folder(str(saved))
    assert (out / "model" / "saved_model.pb").read_bytes() == b"\x08\x01"
    assert model_folder(str(tmp_path)) == tmp_path  # an OUT folder (or anything else) as it is


def test_mnistctl_serve_without_a_model_exits_2_naming_aip_storage_uri(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from typer.testing import CliRunner

    from mnistctl.cli import app

    monkeypatch.delenv("AIP_STORAGE_URI", raising=False)
    result = CliRunner().invoke(app, ["serve", "--flavor", "vertex"])
    assert result.exit_code == 2
    assert "AIP_STORAGE_URI" in result.output

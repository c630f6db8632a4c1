"""watsonx.ai Runtime v4 (<region>.ml.cloud.ibm.com/ml/v4): models, online deployments and scoring.

A stored model is an archive (`PUT /ml/v4/models/{id}/content`, a tar.gz holding one `.onnx` file for an
ONNX model type). A deployment of it really serves it: the fake unpacks the archive and starts
`mnistctl serve --flavor watsonx` on a free loopback port (`initializing` until the server says it
serves, then `ready`; `failed` with the deployment's own message if it exits, or when the scenario says
so); scoring (`POST /ml/v4/deployments/{id}/predictions`) is proxied to that server. Every v4 call needs
`version=YYYY-MM-DD`; models and deployments live in a space (`space_id`).
"""

from __future__ import annotations

import io
import re
import shutil
import signal
import ssl
import subprocess
import tarfile
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from flask import Response, jsonify, request

from mnistctl.cli import serve_command
from serving.constants import Flavor

from .server import FakeService, IbmApiError
from .specs import (
    DEPLOYMENT_SIZES,
    SOFTWARE_SPECS,
    hardware_by_id_or_name,
    hardware_id,
    software_spec_state,
    spec_by_id_or_name,
    spec_id,
)
from .state import CloudState, new_guid, now_iso

VERSION_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SERVER_READY = re.compile(r"serving watsonx \S+ on (http://127\.0\.0\.1:\d+)")
STARTUP_TIMEOUT_SECONDS = 120


@dataclass
class Deployment:
    """An online deployment and the model server behind it."""

    id: str
    space_id: str
    model_id: str
    document: dict[str, Any]
    state: str = "initializing"
    server_url: str | None = None
    process: subprocess.Popen[str] | None = None
    output: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    fail_after_polls: int | None = None


class WmlService(FakeService):
    name = "wml"

    def __init__(self, state: CloudState, ssl_context: ssl.SSLContext, work_dir: Path) -> None:
        self.work_dir = Path(work_dir)
        super().__init__(state, ssl_context)

    def routes(self) -> None:
        rule = self.app.add_url_rule
        self.app.before_request(self._require_version)
        rule("/ml/v4/models", view_func=self.create_model, methods=["POST"])
        rule("/ml/v4/models", view_func=self.list_models, methods=["GET"])
        rule("/ml/v4/models/<model_id>", view_func=self.get_model, methods=["GET"])
        rule("/ml/v4/models/<model_id>", view_func=self.delete_model, methods=["DELETE"])
        rule("/ml/v4/models/<model_id>/content", view_func=self.upload_content, methods=["PUT"])
        rule("/ml/v4/models/<model_id>/download", view_func=self.download_content, methods=["GET"])
        rule("/ml/v4/deployments", view_func=self.create_deployment, methods=["POST"])
        rule("/ml/v4/deployments", view_func=self.list_deployments, methods=["GET"])
        rule("/ml/v4/deployments/<deployment_id>", view_func=self.get_deployment, methods=["GET"])
        rule("/ml/v4/deployments/<deployment_id>", view_func=self.delete_deployment, methods=["DELETE"])
        rule("/ml/v4/deployments/<deployment_id>/predictions", view_func=self.predict, methods=["POST"])

    def _require_version(self) -> None:
        version = request.args.get("version")
        if not version:
            raise IbmApiError(
                400, "missing_query_parameter", "Missing query parameter `version` (YYYY-MM-DD)."
            )
        if not VERSION_DATE.match(version):
            raise IbmApiError(
                400, "invalid_query_parameter", f"`version` {version!r} is not a date YYYY-MM-DD."
            )

    # Models -----------------------------------------------------------------------------------------
    def create_model(self) -> tuple[Response, int]:
        claims = self.require_token()
        body = self.json_body()
        space_id = body.get("space_id") or request.args.get("space_id")
        for required, value in (
            ("name", body.get("name")),
            ("type", body.get("type")),
            ("space_id", space_id),
        ):
            if not value:
                raise IbmApiError(400, "missing_field", f"'{required}' is required to store a model")
        spec_ref = body.get("software_spec") or {}
        spec_name = spec_by_id_or_name(spec_ref.get("id") or spec_ref.get("name") or "")
        if spec_name is None:
            raise IbmApiError(
                400, "invalid_software_specification", f"software_spec {spec_ref} does not exist"
            )
        spec_state = software_spec_state(spec_name)
        life_cycle = SOFTWARE_SPECS[spec_name][0]
        if spec_state in ("retired", "withdrawn", "constricted"):
            raise IbmApiError(
                400,
                "invalid_software_specification",
                f"Software specification {spec_name} is {spec_state}: use "
                f"{life_cycle.get('replacement_name', 'a supported specification')} instead.",
            )
        model_types = SOFTWARE_SPECS[spec_name][1]
        if body["type"] not in model_types:
            raise IbmApiError(
                400,
                "invalid_model_type",
                f"Unsupported model type and software specification combination: {body['type']} with "
                f"{spec_name} (which runs {', '.join(model_types)}).",
            )
        model_id = new_guid()
        stamp = now_iso()
        document: dict[str, Any] = {
            "metadata": {
                "id": model_id,
                "name": body["name"],
                "description": body.get("description", ""),
                "space_id": space_id,
                "owner": claims["iam_id"],
                "created_at": stamp,
                "modified_at": stamp,
                "rev": "1",
                "tags": body.get("tags", []),
            },
            "entity": {
                "type": body["type"],
                "software_spec": {"id": spec_id(spec_name), "name": spec_name},
                "content_import_state": "pending",
            },
        }
        if spec_state == "deprecated":
            document["system"] = {
                "warnings": [
                    {
                        "id": "deprecated_software_specification",
                        "message": f"Software specification {spec_name} is deprecated; use "
                        f"{life_cycle.get('replacement_name')} instead.",
                    }
                ]
            }
        with self.state.lock:
            self._space(space_id)
            self.state.models[model_id] = document
        return jsonify(document), 201

    def list_models(self) -> Response:
        self.require_token()
        space_id = self._space_param()
        with self.state.lock:
            found = [
                m
                for m in self.state.models.values()
                if m["metadata"]["space_id"] == space_id
                and request.args.get("name") in (None, m["metadata"]["name"])
            ]
        return jsonify(
            {"total_count": len(found), "limit": 100, "first": {"href": request.path}, "resources": found}
        )

    def get_model(self, model_id: str) -> Response:
        self.require_token()
        return jsonify(self._model(model_id, self._space_param()))

    def delete_model(self, model_id: str) -> tuple[str, int]:
        self.require_token()
        delete_model(self.state, model_id, self._space_param())
        return "", 204

    def upload_content(self, model_id: str) -> tuple[Response, int]:
        self.require_token()
        space_id = self._space_param()
        content = request.get_data()
        with self.state.lock:
            model = self._model(model_id, space_id)
            if model["entity"]["type"].startswith("onnxruntime"):
                _onnx_member(content)  # 400 unless a tar.gz with one .onnx file
            self.state.model_content[model_id] = content
            model["entity"]["content_import_state"] = "completed"
            model["metadata"]["modified_at"] = now_iso()
        attachment = {
            "attachment_id": new_guid(),
            "content_format": request.args.get("content_format", "native"),
            "persisted": True,
        }
        return jsonify(attachment), 201

    def download_content(self, model_id: str) -> Response:
        self.require_token()
        space_id = self._space_param()
        with self.state.lock:
            self._model(model_id, space_id)
            content = self.state.model_content.get(model_id)
        if content is None:
            raise IbmApiError(404, "content_not_found", f"Model {model_id} has no content yet")
        return Response(content, content_type="application/gzip")

    # Deployments ------------------------------------------------------------------------------------
    def create_deployment(self) -> tuple[Response, int]:
        claims = self.require_token()
        body = self.json_body()
        space_id = body.get("space_id") or request.args.get("space_id")
        asset_id = (body.get("asset") or {}).get("id")
        if not body.get("name") or not space_id or not asset_id:
            raise IbmApiError(400, "missing_field", "'name', 'space_id' and 'asset.id' are required")
        if "online" not in body:
            raise IbmApiError(
                400, "invalid_request_body", "only online deployments are supported ('online': {})"
            )
        spec_ref = body.get("hardware_spec") or {"name": "S"}
        hardware = hardware_by_id_or_name(spec_ref.get("id") or spec_ref.get("name") or "")
        if hardware is None:
            raise IbmApiError(
                400, "invalid_hardware_specification", f"hardware_spec {spec_ref} does not exist"
            )
        if hardware not in DEPLOYMENT_SIZES:
            raise IbmApiError(
                400,
                "invalid_hardware_specification",
                f"Hardware specification {hardware} is not supported for deployments; use one of "
                f"{', '.join(sorted(DEPLOYMENT_SIZES))}.",
            )
        num_nodes = spec_ref.get("num_nodes", 1)
        if not isinstance(num_nodes, int) or isinstance(num_nodes, bool) or num_nodes < 1:
            raise IbmApiError(
                400,
                "invalid_hardware_specification",
                f"num_nodes must be a positive integer, got {num_nodes!r}",
            )
        with self.state.lock:
            space = self._space(space_id)
            if space["entity"]["status"]["state"] != "active":
                raise IbmApiError(400, "space_not_active", f"Space {space_id} is not active yet")
            if not space["entity"].get("compute"):
                raise IbmApiError(
                    400,
                    "no_compute",
                    f"Space {space_id} has no watsonx.ai Runtime instance associated (compute)",
                )
            self._model(asset_id, space_id)
            content = self.state.model_content.get(asset_id)
            if content is None:
                raise IbmApiError(
                    400, "model_has_no_content", f"Model {asset_id} has no content: upload it first"
                )
            deployment_id = new_guid()
            scoring_url = f"{request.host_url.rstrip('/')}/ml/v4/deployments/{deployment_id}/predictions"
            stamp = now_iso()
            document = {
                "metadata": {
                    "id": deployment_id,
                    "name": body["name"],
                    "description": body.get("description", ""),
                    "space_id": space_id,
                    "owner": claims["iam_id"],
                    "created_at": stamp,
                    "modified_at": stamp,
                    "tags": body.get("tags", []),
                },
                "entity": {
                    "asset": {"id": asset_id, "rev": "1"},
                    "online": body.get("online") or {},
                    "hardware_spec": {"id": hardware_id(hardware), "name": hardware, "num_nodes": num_nodes},
                    "deployed_asset_type": "model",
                    "space_id": space_id,
                    "status": {
                        "state": "initializing",
                        "online_url": {"url": scoring_url},
                    },
                },
            }
            deployment = Deployment(deployment_id, space_id, asset_id, document)
            self.state.deployments[deployment_id] = deployment
            if self.state.scenario.deployment_failure is not None:
                deployment.fail_after_polls = 1
            elif not self.state.scenario.deployment_stuck:
                self._start_server(deployment, content)
        return jsonify(self._document(deployment)), 202

    def list_deployments(self) -> Response:
        self.require_token()
        space_id = self._space_param()
        with self.state.lock:
            found = [
                self._document(d)
                for d in self.state.deployments.values()
                if d.space_id == space_id
                and request.args.get("asset_id") in (None, d.model_id)
                and request.args.get("name") in (None, d.document["metadata"]["name"])
            ]
        return jsonify({"total_count": len(found), "limit": 100, "resources": found})

    def get_deployment(self, deployment_id: str) -> Response:
        self.require_token()
        with self.state.lock:
            deployment = self._deployment(deployment_id, self._space_param())
            if deployment.fail_after_polls is not None:  # the failing-deployment scenario
                if deployment.fail_after_polls > 0:
                    deployment.fail_after_polls -= 1
                else:
                    deployment.fail_after_polls = None
                    self._fail(deployment, self.state.scenario.deployment_failure or "Deployment failed.")
            return jsonify(self._document(deployment))

    def delete_deployment(self, deployment_id: str) -> tuple[str, int]:
        self.require_token()
        with self.state.lock:
            deployment = self._deployment(deployment_id, self._space_param())
            del self.state.deployments[deployment_id]
        _stop(deployment)
        shutil.rmtree(self.work_dir / deployment_id, ignore_errors=True)
        return "", 204

    def predict(self, deployment_id: str) -> Response:
        self.require_token()
        with self.state.lock:
            deployment = self.state.deployments.get(deployment_id)
            if deployment is None:
                raise IbmApiError(
                    404, "deployment_not_found", f"Deployment with id '{deployment_id}' does not exist."
                )
            if deployment.state != "ready" or deployment.server_url is None:
                raise IbmApiError(
                    400,
                    "deployment_not_ready",
                    f"Deployment {deployment_id} is {deployment.state}, not ready.",
                )
            target = deployment.server_url + request.path
        with requests.Session() as session:
            session.trust_env = False  # straight to the loopback server, whatever proxy the environment names
            forwarded = session.post(
                target,
                params=request.args,
                data=request.get_data(),
                headers={"Content-Type": request.headers.get("Content-Type", "application/json")},
                timeout=(5, 60),
            )
        return Response(
            forwarded.content,
            status=forwarded.status_code,
            content_type=forwarded.headers.get("Content-Type", "application/json"),
        )

    def stop_deployments(self) -> None:
        with self.state.lock:
            deployments = list(self.state.deployments.values())
        for deployment in deployments:
            _stop(deployment)

    # Model servers ----------------------------------------------------------------------------------
    def _start_server(self, deployment: Deployment, archive: bytes) -> None:
        model_dir = self.work_dir / deployment.id / "model"
        model_dir.mkdir(parents=True, exist_ok=True)
        name, onnx_bytes = _onnx_member(archive)
        (model_dir / "model.onnx").write_bytes(onnx_bytes)
        command = serve_command(Flavor.WATSONX, model_dir, 0, deployment.id)
        deployment.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        deployment.output.append(f"serving {name} from the stored archive")
        threading.Thread(
            target=self._watch, args=(deployment,), daemon=True, name=f"deploy-{deployment.id}"
        ).start()
        timer = threading.Timer(STARTUP_TIMEOUT_SECONDS, self._startup_timeout, args=(deployment,))
        timer.daemon = True  # never keeps the test process alive
        timer.start()

    def _watch(self, deployment: Deployment) -> None:
        """Read the server's output: its ready line makes the deployment `ready`, its exit `failed`."""
        process = deployment.process
        assert process is not None and process.stdout is not None
        for line in process.stdout:
            deployment.output.append(line.rstrip())
            match = SERVER_READY.search(line)
            if match:
                with self.state.lock:
                    deployment.server_url = match.group(1)
                    deployment.state = "ready"
                    deployment.document["entity"]["status"]["state"] = "ready"
        code = process.wait()
        with self.state.lock:
            if deployment.state != "deleted" and self.state.deployments.get(deployment.id) is deployment:
                self._fail(
                    deployment, f"The model server exited with code {code}: " + " | ".join(deployment.output)
                )

    def _startup_timeout(self, deployment: Deployment) -> None:
        with self.state.lock:
            if deployment.state == "initializing":
                self._fail(deployment, f"The model server did not start within {STARTUP_TIMEOUT_SECONDS} s")
        if deployment.state == "failed":
            _stop(deployment)

    def _fail(self, deployment: Deployment, message: str) -> None:
        deployment.state = "failed"
        deployment.server_url = None
        deployment.document["entity"]["status"] = {
            **deployment.document["entity"]["status"],
            "state": "failed",
            "failure": {
                "trace": new_guid(),
                "errors": [{"code": "deployment_failed", "message": message}],
            },
        }

    # Helpers ----------------------------------------------------------------------------------------
    def _document(self, deployment: Deployment) -> dict[str, Any]:
        return deployment.document

    def _space_param(self) -> str:
        space_id = request.args.get("space_id")
        if not space_id:
            raise IbmApiError(
                400, "missing_query_parameter", "Missing query parameter `space_id` (or `project_id`)."
            )
        with self.state.lock:
            self._space(space_id)
        return space_id

    def _space(self, space_id: str) -> dict[str, Any]:
        space = self.state.spaces.get(space_id)
        if space is None:
            raise IbmApiError(404, "space_not_found", f"Space with id '{space_id}' does not exist.")
        return space

    def _model(self, model_id: str, space_id: str) -> dict[str, Any]:
        model = self.state.models.get(model_id)
        if model is None or model["metadata"]["space_id"] != space_id:
            raise IbmApiError(
                404, "model_not_found", f"Model with id '{model_id}' does not exist in space {space_id}."
            )
        return model

    def _deployment(self, deployment_id: str, space_id: str) -> Deployment:
        deployment = self.state.deployments.get(deployment_id)
        if deployment is None or deployment.space_id != space_id:
            raise IbmApiError(
                404, "deployment_not_found", f"Deployment with id '{deployment_id}' does not exist."
            )
        return deployment


def delete_model(state: CloudState, model_id: str, space_id: str) -> None:
    """Delete a stored model (also what the data platform's `DELETE /v2/assets/{id}` does to a model);
    409 while a deployment uses it, so that a stack must delete the deployment first."""
    with state.lock:
        model = state.models.get(model_id)
        if model is None or model["metadata"]["space_id"] != space_id:
            raise IbmApiError(
                404, "model_not_found", f"Model with id '{model_id}' does not exist in space {space_id}."
            )
        in_use = [d.id for d in state.deployments.values() if d.model_id == model_id]
        if in_use:
            raise IbmApiError(
                409,
                "model_in_use",
                f"Model {model_id} is used by deployment(s) {', '.join(in_use)}: delete them first.",
            )
        del state.models[model_id]
        state.model_content.pop(model_id, None)


def _onnx_member(archive: bytes) -> tuple[str, bytes]:
    """The one .onnx file in a tar.gz model archive; 400 otherwise."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.endswith(".onnx")]
            if len(members) != 1:
                raise IbmApiError(
                    400,
                    "invalid_model_content",
                    f"an ONNX model archive must hold exactly one .onnx file, found {len(members)}",
                )
            extracted = tar.extractfile(members[0])
            assert extracted is not None
            return members[0].name, extracted.read()
    except (tarfile.TarError, OSError) as error:
        raise IbmApiError(
            400, "invalid_model_content", f"the model content is not a tar.gz archive: {error}"
        ) from None


def _stop(deployment: Deployment) -> None:
    process = deployment.process
    deployment.state = "deleted" if deployment.state != "failed" else deployment.state
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)

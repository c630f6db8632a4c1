"""A stand-in model server for the Vertex fake's own tests: it speaks Vertex AI's custom-container
contract (AIP_HTTP_PORT, AIP_HEALTH_ROUTE, AIP_PREDICT_ROUTE) and answers each instance with the
AIP_* environment it was given, so a test sees what the fake set. Run as `python stand_in_server.py`;
STAND_IN_START_SECONDS delays its start (a model server that takes its time to load)."""

from __future__ import annotations

import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == os.environ["AIP_HEALTH_ROUTE"]:
            self._reply(200, {"status": "ready"})
        else:
            self._reply(404, {"error": f"no route {self.path}"})

    def do_POST(self) -> None:
        if self.path != os.environ["AIP_PREDICT_ROUTE"]:
            self._reply(404, {"error": f"no route {self.path}"})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        env = {k: v for k, v in os.environ.items() if k.startswith("AIP_")}
        self._reply(200, {"predictions": [{"instance": i, "env": env} for i in body["instances"]]})

    def _reply(self, status: int, document: dict) -> None:
        data = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


if __name__ == "__main__":
    time.sleep(float(os.environ.get("STAND_IN_START_SECONDS", "0")))
    ThreadingHTTPServer(("127.0.0.1", int(os.environ["AIP_HTTP_PORT"])), Handler).serve_forever()

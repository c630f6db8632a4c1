"""`mnistctl serve` as the local stack runs it: a detached process that announces its URL once ready and
exits cleanly on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from mnistctl.cli import serve_command
from serving.constants import Flavor

pytestmark = pytest.mark.slow

PING_TIMEOUT = 10
START_TIMEOUT = 120  # TensorFlow takes a while to import on a busy machine


@pytest.mark.parametrize("flavor", list(Flavor))
def test_serve_announces_its_url_answers_and_exits_0_on_sigterm(
    model_dir: Callable[[Flavor], Path], flavor: Flavor
) -> None:
    command = serve_command(flavor, model_dir(flavor), port=0, name="digits")
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _first_line(server)
        match = re.fullmatch(rf"serving {flavor.value} digits on (http://127\.0\.0\.1:\d+)", line)
        assert match, line
        ping = requests.get(match.group(1) + "/ping", timeout=PING_TIMEOUT)
        assert ping.json()["status"] == "ready"

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        server.stdout.close()  # type: ignore[union-attr]
        server.stderr.close()  # type: ignore[union-attr]


def _first_line(server: subprocess.Popen) -> str:
    """The first stdout line, or a failure carrying the server's stderr if it dies or stays silent."""
    import threading

    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(server.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(START_TIMEOUT)
    if not lines or not lines[0]:
        server.kill()
        pytest.fail(f"the server printed nothing; stderr: {server.stderr.read()[-2000:]}")  # type: ignore[union-attr]
    return lines[0].rstrip("\n")


def test_serve_takes_the_loaded_model_and_app_out_of_the_collectors_full_passes(
    model_dir: Callable[[Flavor], Path],
) -> None:
    # A full collection walking the runtime's objects stopped the event loop for 50-65 ms under load, the
    # p99 of a batching server (docs/serving.md): serve() freezes what it loaded before it listens.
    script = "\n".join(
        [
            "import gc, os, signal",
            "from serving.app import serve",
            "def ready(url):",
            "    print(gc.get_freeze_count(), flush=True)",
            "    os.kill(os.getpid(), signal.SIGTERM)",
            f"serve('watsonx', {str(model_dir(Flavor.WATSONX))!r}, port=0, name='digits', on_ready=ready)",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=START_TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[0]) > 10_000, done.stdout  # onnxruntime, numpy, starlette, the model

"""Load benchmark: the three local servers with batching on and off, and KServe's model server, side by side.

    python bench/load.py [--models DIR] [--data-dir D] [--flavor F] [--clients 1 8 32 128]
                         [--max-requests 3000] [--seconds 6] [--repeats 3] [--generator wrk|python]
                         [--no-kserve]

For each flavor, `mnistctl serve` runs twice at once (as its own processes): batching off
(`--max-batch 1`) and on (the defaults). With watsonx (ONNX), KServe's Python model server runs a
minimal `kserve.Model` around the same `model.onnx` (v1 protocol, bench/kserve_peer.py, in a separate
virtualenv that this script creates once under .mnist-platform/bench/kserve-venv). At the level of the
speedup targets (32 clients, single images), a third server measures their ceiling: batching off with the
model call taken away (bench/model_free_server.py), the most that batching could give. Every level (1, 8,
32, 128 concurrent keep-alive clients; single-image and 100-image requests of real held-out digits) runs
against each server of the group in turn, so "before", "after" and the peer see the same machine load,
and that --repeats times, in alternating order. This VM's speed drifts from minute to minute by more than
some of the effects measured, so each target is judged on the median over the rounds (ratios are taken
within a round), and every round's figure is kept beside it.

Each run is bounded (at most --max-requests requests and --seconds seconds) and on loopback only. The
generator is `wrk` (C, so the client does not eat the server's CPU) or, without it, the asyncio client
below. Reported: throughput, p50/p95/p99 latency, errors (connect/read/write/timeout/non-200), the
server's CPU (cores busy while the requests ran, and CPU ms per request) and peak RSS (sampled every
20 ms; idle RSS before the first level). Prints a table and writes bench/results/load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a checkout

from bench import host  # noqa: E402
from bench.host import cpu_line, package_versions  # noqa: E402
from mnistctl.cli import serve_command  # noqa: E402
from mnistctl.client import csv_payload, json_pixels, watsonx_payload  # noqa: E402
from serving.constants import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT_MS, THREADS_ENV, Flavor  # noqa: E402

S = TypeVar("S")  # a server of a group
DEFAULT_T10K_DIR = REPO_ROOT / "tests" / "data" / "mnist"
DEFAULT_MODELS = REPO_ROOT / ".mnist-platform" / "bench" / "load-models"
# The trainers' default architectures, trained briefly (a server's cost per image is the architecture's, not
# the training length's); XGBoost gets 40 rounds instead of 150, so 400 trees instead of 1,500.
TRAINING_OVERRIDES = {
    "xgboost": {"num_round": "40"},
    "tensorflow": {"epochs": "1"},
    "pytorch": {"epochs": "1"},
}
DEFAULT_RESULT = REPO_ROOT / "bench" / "results" / "load.json"
KSERVE_VENV = REPO_ROOT / ".mnist-platform" / "bench" / "kserve-venv"
LOG_DIR = REPO_ROOT / ".mnist-platform" / "bench" / "load-logs"  # each server's stderr
# The peer, pinned: kserve with the onnxruntime that its numpy pins allow (see pyproject's `bench` extra).
KSERVE_REQUIREMENTS = ("kserve==0.21.0", "onnxruntime==1.22.1")
FRAMEWORK = {Flavor.SAGEMAKER: "xgboost", Flavor.VERTEX: "tensorflow", Flavor.WATSONX: "pytorch"}
NAME = "bench"
MODEL_FREE = "model-free"  # the label's suffix of bench/model_free_server.py: the ceiling of batching
CLIENTS = (1, 8, 32, 128)
IMAGES_PER_REQUEST = (1, 100)
WARMUP_REQUESTS = 50
START_TIMEOUT = 300  # TensorFlow imports slowly on a busy machine
PACKAGES = (
    "numpy",
    "starlette",
    "uvicorn",
    "httptools",
    "orjson",
    "uvloop",
    "xgboost",
    "tensorflow-cpu",
    "onnxruntime",
)

# Targets of issue 12 (32 concurrent single-image clients unless said otherwise).
TARGET_SPEEDUP = {Flavor.SAGEMAKER: 1.5, Flavor.VERTEX: 2.0, Flavor.WATSONX: 1.5}
TARGET_P99_MS = 25.0
TARGET_OVER_KSERVE = 1.5
TARGET_RSS_GROWTH = 1.5
# "p50 at 1 client no worse than batching off, within noise": within 10 % or 0.2 ms, whichever is larger.
NOISE_FRACTION, NOISE_MS = 0.10, 0.2


# --- the load itself ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One HTTP request to repeat: where, what, and how the answer is checked."""

    url: str  # base URL
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class LoadResult:
    """What one bounded run measured."""

    latencies_s: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(("connect", "read", "timeout", "status"), 0)
    )
    wall_s: float = 0.0
    replies: dict[int, Counter[bytes]] = field(default_factory=dict)
    """Per target (its index in `run_load`'s list): how often each distinct body came back with a 200."""

    @property
    def requests(self) -> int:
        return len(self.latencies_s)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> dict[str, Any]:
        ms = np.asarray(self.latencies_s or [float("nan")]) * 1000.0
        return {
            "requests": self.requests,
            "seconds": round(self.wall_s, 3),
            "requests_per_s": round(self.requests / self.wall_s, 1) if self.wall_s else 0.0,
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p95_ms": round(float(np.percentile(ms, 95)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "errors": self.error_count,
            "error_kinds": {k: v for k, v in self.errors.items() if v},
        }


def _http_request(target: Target) -> bytes:
    address = urlsplit(target.url)
    lines = [f"POST {target.path} HTTP/1.1", f"Host: {address.hostname}:{address.port}"]
    lines += [f"{key}: {value}" for key, value in target.headers.items()]
    lines.append(f"Content-Length: {len(target.body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + target.body


async def _one_client(
    target: Target,
    wire: bytes,
    budget: list[int],
    deadline: float,
    timeout: float,
    replies: Counter[bytes],
    result: LoadResult,
) -> None:
    address = urlsplit(target.url)
    reader = writer = None
    while budget[0] > 0 and time.perf_counter() < deadline:
        budget[0] -= 1
        started = time.perf_counter()
        try:
            if writer is None or reader is None:
                try:
                    reader, writer = await asyncio.open_connection(address.hostname, address.port)
                except OSError:
                    result.errors["connect"] += 1
                    continue
            writer.write(wire)
            status, close, body = await asyncio.wait_for(_read_response(reader), timeout)
        except TimeoutError:
            result.errors["timeout"] += 1
            status, close = 0, True
        except (OSError, asyncio.IncompleteReadError, ValueError):
            result.errors["read"] += 1
            status, close = 0, True
        else:
            result.latencies_s.append(time.perf_counter() - started)
            if status != 200:
                result.errors["status"] += 1
            else:
                replies[body] += 1
        if close and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bytes]:
    """(status, connection closes, body) of one HTTP/1.1 response with a Content-Length."""
    status = int((await reader.readline()).split()[1])
    length, close = 0, False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        key = key.strip().lower()
        if key == "content-length":
            length = int(value)
        elif key == "connection" and value.strip().lower() == "close":
            close = True
    return status, close, await reader.readexactly(length)


def run_load(
    targets: Target | Sequence[Target], clients: int, requests: int, seconds: float, timeout: float = 30.0
) -> LoadResult:
    """`clients` keep-alive connections send their target back to back until `requests` are sent or `seconds`
    pass, whichever is first (asyncio, in this process). Client i sends `targets[i % len(targets)]`; the
    bodies of the 200s are counted per target (`LoadResult.replies`)."""
    targets = [targets] if isinstance(targets, Target) else list(targets)

    async def main() -> LoadResult:
        result = LoadResult(replies={index: Counter() for index in range(len(targets))})
        budget = [requests]
        wires = [_http_request(target) for target in targets]
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(
            *(
                _one_client(
                    targets[i % len(targets)],
                    wires[i % len(targets)],
                    budget,
                    deadline,
                    timeout,
                    result.replies[i % len(targets)],
                    result,
                )
                for i in range(clients)
            )
        )
        result.wall_s = time.perf_counter() - started
        return result

    return asyncio.run(main())


_WRK_SCRIPT = """
local f = assert(io.open(os.getenv("LOAD_BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
{headers}
local limit = tonumber(os.getenv("LOAD_REQUESTS_PER_THREAD"))
local count = 0
function response(status, headers, body)
  count = count + 1
  if count >= limit then wrk.thread:stop() end
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nLOAD_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, '
    .. '"status": %d, "timeout": %d, "mean": %f, "p50": %d, "p95": %d, "p99": %d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, latency.mean,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


def run_wrk(target: Target, clients: int, requests: int, seconds: float) -> dict[str, Any]:
    """The same bounded run with `wrk` (its own threads; percentiles from its latency histogram)."""
    threads = min(2, clients)
    headers = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in target.headers.items())
    with tempfile.TemporaryDirectory(prefix="mnist-load-") as scratch:
        script = Path(scratch) / "post.lua"
        script.write_text(_WRK_SCRIPT.replace("{headers}", headers))
        body = Path(scratch) / "body"
        body.write_bytes(target.body)
        env = {
            **os.environ,
            "LOAD_BODY_FILE": str(body),
            "LOAD_REQUESTS_PER_THREAD": str(max(1, requests // threads)),
        }
        command = ["wrk", "-t", str(threads), "-c", str(clients), "-d", f"{seconds:g}s", "--timeout", "30s"]
        command += ["-s", str(script), target.url + target.path]
        out = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=seconds + 60, check=True
        )
    line = next(x for x in out.stdout.splitlines() if x.startswith("LOAD_JSON "))
    raw = json.loads(line.removeprefix("LOAD_JSON "))
    wall = raw["duration_us"] / 1e6
    if raw["requests"] >= requests:
        # wrk sleeps the whole duration even when every thread stopped at its budget, so requests/duration
        # would understate the rate: use Little's law (closed loop: clients / mean latency) instead.
        wall = raw["requests"] * raw["mean"] / 1e6 / clients
    errors = {k: raw[k] for k in ("connect", "read", "write", "timeout", "status")}
    return {
        "requests": raw["requests"],
        "seconds": round(wall, 3),
        "requests_per_s": round(raw["requests"] / wall, 1) if wall else 0.0,
        "p50_ms": round(raw["p50"] / 1000.0, 2),
        "p95_ms": round(raw["p95"] / 1000.0, 2),
        "p99_ms": round(raw["p99"] / 1000.0, 2),
        "errors": sum(errors.values()),
        "error_kinds": {k: v for k, v in errors.items() if v},
    }


# --- the server processes ----------------------------------------------------------------------------


def _process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (KServe may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo += children.get(current, [])
    return tree


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return total


def _rss_bytes(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            pass
    return total


class Usage:
    """CPU seconds and peak RSS of a process tree while a run lasts (RSS sampled every 20 ms)."""

    def __init__(self, pid: int) -> None:
        self.pids = _process_tree(pid)
        self.peak_rss = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, _rss_bytes(self.pids))
            self._stop.wait(0.02)

    def __enter__(self) -> Usage:
        self._cpu = _cpu_seconds(self.pids)
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        self.cpu_s = _cpu_seconds(self.pids) - self._cpu


class Server:
    """A server process on a free loopback port, stopped with SIGTERM; `only_at` (images per request,
    clients) restricts it to one level of the load."""

    def __init__(
        self,
        label: str,
        command: list[str],
        url: str | None,
        ping: str,
        env: dict[str, str],
        only_at: tuple[int, int] | None = None,
    ) -> None:
        self.label = label
        self.only_at = only_at
        self.log = LOG_DIR / f"{label.replace(' ', '-')}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as log:
            # Only `mnistctl serve`'s stdout is read (its URL line); anything else must not write into a
            # pipe nobody reads: KServe logs every request there, and a full pipe blocks the server.
            stdout = subprocess.PIPE if url is None else log
            self.process = subprocess.Popen(
                command, stdout=stdout, stderr=log, text=True, cwd=REPO_ROOT, env=env
            )
        self.url = url if url is not None else self._announced_url()
        self._wait_ready(ping)

    def _announced_url(self) -> str:
        """The URL that `mnistctl serve` prints on stdout once it listens."""
        line = self.process.stdout.readline() if self.process.stdout else ""
        if not line.startswith("serving "):
            self.stop()
            raise RuntimeError(f"{self.label}: mnistctl serve did not start: {line!r}")
        return line.split()[-1]

    def _wait_ready(self, ping: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.process.returncode} while starting")
            try:
                with urllib.request.urlopen(self.url + ping, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.label} did not answer {ping} within {START_TIMEOUT} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_kserve_python(console: Console) -> Path:
    """The interpreter of the peer's own virtualenv, created (once, cached) with kserve installed."""
    python = KSERVE_VENV / "bin" / "python"
    stamp = KSERVE_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != " ".join(KSERVE_REQUIREMENTS):
        console.print(f"creating {KSERVE_VENV} with {' '.join(KSERVE_REQUIREMENTS)} (once) ...")
        subprocess.run([sys.executable, "-m", "venv", str(KSERVE_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *KSERVE_REQUIREMENTS], check=True)
        stamp.write_text(" ".join(KSERVE_REQUIREMENTS))
    return python


def server_env() -> dict[str, str]:
    env = {**os.environ, THREADS_ENV: os.environ.get(THREADS_ENV, "1")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return env


def start_servers(flavor: Flavor, model: Path, kserve_python: Path | None) -> list[Server]:
    """Batching off, batching on, the model-free ceiling (at the speedup's level only) and, with watsonx,
    the KServe peer, all running at once."""
    env = server_env()
    servers = [
        Server(f"{flavor.value} off", serve_command(flavor, model, 0, NAME, max_batch=1), None, "/ping", env),
        Server(f"{flavor.value} on", serve_command(flavor, model, 0, NAME), None, "/ping", env),
    ]
    port = _free_port()
    command = [sys.executable, str(REPO_ROOT / "bench" / "model_free_server.py"), "--flavor", flavor.value]
    command += ["--model", str(model), "--port", str(port), "--name", NAME]
    url = f"http://127.0.0.1:{port}"
    servers.append(Server(f"{flavor.value} {MODEL_FREE}", command, url, "/ping", env, only_at=(1, 32)))
    if flavor is Flavor.WATSONX and kserve_python is not None:
        port = _free_port()
        command = [str(kserve_python), str(REPO_ROOT / "bench" / "kserve_peer.py")]
        command += ["--model", str(model), "--port", str(port), "--name", NAME]
        servers.append(Server("kserve", command, f"http://127.0.0.1:{port}", f"/v1/models/{NAME}", env))
    return servers


# --- requests ----------------------------------------------------------------------------------------


def target_for(label: str, url: str, images: np.ndarray, name: str = NAME) -> Target:
    """The wire request for `images` in the server's contract (the flavor's, or KServe's v1)."""
    if label == "kserve":
        body = json.dumps({"instances": json_pixels(images)}).encode()
        return Target(url, f"/v1/models/{name}:predict", body, {"Content-Type": "application/json"})
    flavor = Flavor(label.split()[0])
    if flavor is Flavor.SAGEMAKER:
        headers = {"Content-Type": "text/csv", "Accept": "application/json"}
        return Target(url, f"/endpoints/{name}/invocations", csv_payload(images), headers)
    if flavor is Flavor.VERTEX:
        body = json.dumps({"instances": json_pixels(images)}).encode()
        path = f"/v1/projects/bench/locations/local/endpoints/{name}:predict"
        return Target(url, path, body, {"Content-Type": "application/json"})
    body = json.dumps(watsonx_payload(images)).encode()
    path = f"/ml/v4/deployments/{name}/predictions?version=2024-05-01"
    return Target(url, path, body, {"Content-Type": "application/json"})


def post(target: Target) -> tuple[int, bytes]:
    request = urllib.request.Request(
        target.url + target.path, data=target.body, headers=target.headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def digits_of(label: str, reply: bytes) -> list[int]:
    document = json.loads(reply)
    if label == "kserve" or label.startswith("sagemaker"):
        rows = document["predictions"]
        rows = [r["score"] if isinstance(r, dict) else r for r in rows]
    elif label.startswith("vertex"):
        rows = [p["probabilities"] for p in document["predictions"]]
    else:
        rows = document["predictions"][0]["values"]
    return np.asarray(rows).argmax(axis=1).tolist()


# --- the benchmark -----------------------------------------------------------------------------------


def ensure_model(flavor: Flavor, models: Path, data_dir: Path, console: Console) -> Path:
    out = models / FRAMEWORK[flavor]
    if not (out / "metrics.json").exists():
        from training.run import train_model

        overrides = TRAINING_OVERRIDES[FRAMEWORK[flavor]]
        console.print(f"training {FRAMEWORK[flavor]} ({overrides}) on mnist-t10k into {out} ...")
        train_model(FRAMEWORK[flavor], "mnist-t10k", data_dir, out, overrides, dry_run=False)
    return out


def measure_group(
    servers: list[Server],
    images: np.ndarray,
    labels: np.ndarray,
    args: argparse.Namespace,
    console: Console,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    checks: dict[tuple[str, int], bytes] = {}
    for server in servers:
        for batch in IMAGES_PER_REQUEST:
            status, reply = post(target_for(server.label, server.url, images[:batch]))
            if status != 200:
                raise RuntimeError(f"{server.label} answered {status}: {reply[:300]!r}")
            checks[(server.label, batch)] = reply
        if not server.label.endswith(MODEL_FREE):  # its answers come from a table, not from the digits
            answers = np.asarray(digits_of(server.label, checks[(server.label, 100)]))
            accuracy = float(np.mean(answers == labels[:100]))
            console.print(f"  {server.label}: accuracy of 100 held-out answers {accuracy:.2f}")
        post_many = target_for(server.label, server.url, images[:1])
        for _ in range(WARMUP_REQUESTS):
            post(post_many)
    for (label, batch), reply in checks.items():
        if label.endswith(" on"):
            twin = checks[(label.replace(" on", " off"), batch)]
            if reply != twin:
                raise RuntimeError(f"{label}: batching on answered other bytes than off for {batch} image(s)")
    idle = {server.label: _rss_bytes(_process_tree(server.process.pid)) for server in servers}
    for batch in IMAGES_PER_REQUEST:
        for clients in args.clients:
            measured = [s for s in servers if s.only_at in (None, (batch, clients))]
            for repeat, server in interleaved(measured, args.repeats):
                target = target_for(server.label, server.url, images[:batch])
                budget = args.max_requests if batch == 1 else max(50, args.max_requests // 10)
                budget = max(budget, clients * 4)
                load_before = os.getloadavg()[0]
                with Usage(server.process.pid) as usage:
                    if args.generator == "wrk":
                        stats = run_wrk(target, clients, budget, args.seconds)
                    else:
                        stats = run_load(target, clients, budget, args.seconds).summary()
                row = {
                    "server": server.label,
                    "images_per_request": batch,
                    "clients": clients,
                    "repeat": repeat,
                    **stats,
                    "images_per_s": round(stats["requests_per_s"] * batch, 1),
                    # Over the requests' own time: wrk idles out its whole duration after the budget (the
                    # server with it), so the CPU over the whole run would understate the cores used.
                    "cpu_cores": round(usage.cpu_s / stats["seconds"], 2) if stats["seconds"] else 0.0,
                    "cpu_ms_per_request": round(1000 * usage.cpu_s / stats["requests"], 3)
                    if stats["requests"]
                    else None,
                    "idle_rss_mb": round(idle[server.label] / 2**20, 1),
                    "peak_rss_mb": round(usage.peak_rss / 2**20, 1),
                    "load_average_1m": round(load_before, 2),
                }
                rows.append(row)
                console.print(
                    f"  {server.label:14} {batch:>3} img x {clients:>3} clients, run {repeat}: "
                    f"{row['requests_per_s']:>7.0f} req/s p50 {row['p50_ms']:6.2f} "
                    f"p99 {row['p99_ms']:7.2f} ms "
                    f"errors {row['errors']} cpu {row['cpu_cores']:.2f} rss {row['peak_rss_mb']:.0f} MB "
                    f"(load {load_before:.1f})"
                )
    return rows


def interleaved(servers: Sequence[S], repeats: int) -> list[tuple[int, S]]:
    """The order of one level's runs: every server once per round, rounds alternating in direction
    (A B C, C B A, ...), so that a drift of the machine's speed within the level favours no server."""
    return [
        (round_ + 1, server)
        for round_ in range(repeats)
        for server in (servers if round_ % 2 == 0 else servers[::-1])
    ]


def throughput_ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    """Requests per second of run `a` over run `b` (0 when `b` completed nothing)."""
    return a["requests_per_s"] / b["requests_per_s"] if b["requests_per_s"] else 0.0


def verdicts(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Each target of issue 12, judged on the median over the rounds of the figure it names (a ratio is
    taken within each round first: the two servers ran seconds apart), with every round's figure."""
    rounds = sorted({r.get("repeat", 1) for r in rows})

    def row(server: str, clients: int, repeat: int, batch: int = 1) -> dict[str, Any] | None:
        """The run, if it completed any request in its time limit (else it measured nothing)."""
        return next(
            (
                r
                for r in rows
                if r["server"] == server
                and r["clients"] == clients
                and r["images_per_request"] == batch
                and r.get("repeat", 1) == repeat
                and r["requests"] > 0
            ),
            None,
        )

    def pairs(a: str, b: str, clients: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """The rounds in which both servers measured something at `clients`."""
        found = [(row(a, clients, n), row(b, clients, n)) for n in rounds]
        return [(x, y) for x, y in found if x is not None and y is not None]

    def judged(values: list[float], met: Callable[[float], bool], target: Any) -> dict[str, Any]:
        value = round(statistics.median(values), 2)
        return {
            "value": value,
            "target": target,
            "met": met(value),
            "rounds": [round(v, 2) for v in values],
            "met_in_rounds": f"{sum(met(v) for v in values)} of {len(values)}",
        }

    out: dict[str, Any] = {}
    for flavor in Flavor:
        on, off = f"{flavor.value} on", f"{flavor.value} off"
        at_32 = pairs(on, off, 32)
        if not at_32:
            continue
        target_speedup = TARGET_SPEEDUP[flavor]
        lone = None
        if alone := pairs(on, off, 1):
            p50_on = statistics.median(x["p50_ms"] for x, _ in alone)
            p50_off = statistics.median(y["p50_ms"] for _, y in alone)
            lone = {
                "p50_on_ms": round(p50_on, 2),
                "p50_off_ms": round(p50_off, 2),
                "met": p50_on <= p50_off + max(NOISE_MS, NOISE_FRACTION * p50_off),
                "rounds": [[x["p50_ms"], y["p50_ms"]] for x, y in alone],
            }
        ceiling = None
        if without_model := pairs(f"{flavor.value} {MODEL_FREE}", off, 32):
            ratios = [throughput_ratio(x, y) for x, y in without_model]
            median = statistics.median(ratios)
            ceiling = {
                "value": round(median, 2),
                "rounds": [round(v, 2) for v in ratios],
                # Batching cannot give more than removing the model call altogether.
                "speedup_target_below_ceiling": target_speedup <= median,
            }
        most_clients = max(r["clients"] for r in rows)
        rss = [r for r in rows if r["server"] == on and r["clients"] == most_clients]
        out[flavor.value] = {
            "speedup_at_32": judged(
                [throughput_ratio(x, y) for x, y in at_32],
                lambda v, t=target_speedup: v >= t,
                target_speedup,
            ),
            # The server without its model call over batching off (bench/model_free_server.py).
            "model_free_ceiling_at_32": ceiling,
            "p99_at_32_ms": judged(
                [x["p99_ms"] for x, _ in at_32], lambda v: v <= TARGET_P99_MS, TARGET_P99_MS
            ),
            "lone_request": lone,
            # The highest of every round, not a median: memory must stay within bounds in each.
            "peak_rss_vs_idle": {
                "value": round(max(r["peak_rss_mb"] / r["idle_rss_mb"] for r in rss), 2) if rss else None,
                "target": TARGET_RSS_GROWTH,
                "met": all(r["peak_rss_mb"] <= TARGET_RSS_GROWTH * r["idle_rss_mb"] for r in rss),
            },
        }
    if against_peer := pairs("watsonx on", "kserve", 32):
        ratio = judged(
            [throughput_ratio(x, y) for x, y in against_peer],
            lambda v: v >= TARGET_OVER_KSERVE,
            TARGET_OVER_KSERVE,
        )
        p99_watsonx = statistics.median(x["p99_ms"] for x, _ in against_peer)
        p99_kserve = statistics.median(y["p99_ms"] for _, y in against_peer)
        out["watsonx_vs_kserve_at_32"] = {
            "throughput_ratio": ratio["value"],
            "p99_ms": {"watsonx": round(p99_watsonx, 2), "kserve": round(p99_kserve, 2)},
            "target": f">= {TARGET_OVER_KSERVE}x throughput and a lower p99",
            "met": ratio["met"] and p99_watsonx < p99_kserve,
            "rounds": [
                {
                    "throughput_ratio": round(throughput_ratio(x, y), 2),
                    "p99_ms": {"watsonx": x["p99_ms"], "kserve": y["p99_ms"]},
                }
                for x, y in against_peer
            ],
        }
    out["zero_errors"] = {
        "errors": sum(r["errors"] for r in rows),
        "met": all(r["errors"] == 0 for r in rows),
    }
    return out


def median_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per server, request size and number of clients: the median over its rounds (errors summed,
    peak RSS the highest), with each round's throughput."""
    groups: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["server"], r["images_per_request"], r["clients"]), []).append(r)
    summary = []
    for (server, images, clients), runs in groups.items():
        per_request = [r["cpu_ms_per_request"] for r in runs if r.get("cpu_ms_per_request") is not None]

        def median(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return round(statistics.median(r[key] for r in runs), 2)

        summary.append(
            {
                "server": server,
                "images_per_request": images,
                "clients": clients,
                "rounds": len(runs),
                "requests_per_s": median("requests_per_s"),
                "requests_per_s_rounds": [r["requests_per_s"] for r in runs],
                "images_per_s": median("images_per_s"),
                "p50_ms": median("p50_ms"),
                "p95_ms": median("p95_ms"),
                "p99_ms": median("p99_ms"),
                "errors": sum(r["errors"] for r in runs),
                "cpu_cores": median("cpu_cores"),
                "cpu_ms_per_request": round(statistics.median(per_request), 3) if per_request else None,
                "idle_rss_mb": max(r["idle_rss_mb"] for r in runs),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            }
        )
    return summary


def machine() -> dict[str, Any]:
    versions = package_versions(PACKAGES)
    return {
        **host.machine(),
        "runtime_threads": os.environ.get(THREADS_ENV, "1"),
        "packages": versions,
        "peer": list(KSERVE_REQUIREMENTS),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument(
        "--models", type=Path, default=DEFAULT_MODELS, help="folder with <framework>/ artifacts"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_T10K_DIR, help="folder with the MNIST t10k files"
    )
    parser.add_argument("--flavor", action="append", type=Flavor, help="only these flavors (repeatable)")
    parser.add_argument("--clients", type=int, nargs="+", default=list(CLIENTS))
    parser.add_argument(
        "--max-requests", type=int, default=3000, help="per single-image run (1/10 for 100-image)"
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="time limit of each run")
    parser.add_argument(
        "--generator", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="rounds of every level (servers in turn, alternating order); targets are judged on medians",
    )
    parser.add_argument("--no-kserve", action="store_true", help="skip the KServe peer")
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULT)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be 1 or more (got {args.repeats})")

    from mnistctl.samples import sample_digits

    console = Console(width=200)
    images, labels = sample_digits(100, args.data_dir)
    info = machine()
    kserve_python = None
    if not args.no_kserve and (args.flavor is None or Flavor.WATSONX in args.flavor):
        kserve_python = ensure_kserve_python(console)
    rows: list[dict[str, Any]] = []
    for flavor in args.flavor or list(Flavor):
        model = ensure_model(flavor, args.models, args.data_dir, console)
        console.print(f"{flavor.value} ({FRAMEWORK[flavor]}): starting servers ...")
        servers = start_servers(flavor, model, kserve_python)
        try:
            rows += measure_group(servers, images, labels, args, console)
        finally:
            for server in servers:
                server.stop()
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    judged = verdicts(rows)

    summary = median_rows(rows)
    table = Table(
        title=f"load on loopback ({args.generator}; at most {args.max_requests} requests / "
        f"{args.seconds:g} s per run; medians of {args.repeats} round(s), peak RSS the highest)"
    )
    for column in (
        "server",
        "images",
        "clients",
        "req/s",
        "req/s of each round",
        "images/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "errors",
        "cpu",
        "cpu ms/req",
        "peak RSS MB",
    ):
        table.add_column(column, justify="left" if column == "server" else "right")
    for r in summary:
        table.add_row(
            r["server"],
            str(r["images_per_request"]),
            str(r["clients"]),
            f"{r['requests_per_s']:.0f}",
            " / ".join(f"{x:.0f}" for x in r["requests_per_s_rounds"]),
            f"{r['images_per_s']:.0f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p95_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            str(r["errors"]),
            f"{r['cpu_cores']:.2f}",
            "-" if r["cpu_ms_per_request"] is None else f"{r['cpu_ms_per_request']:.2f}",
            f"{r['peak_rss_mb']:.0f}",
        )
    console.print(table)
    console.print_json(data=judged)
    console.print(
        f"machine: {cpu_line(info['cpu'])}, {info['cpu_count']} cores, "
        f"load {info['load_average_at_start']} -> "
        f"{info['load_average_at_end']}, {THREADS_ENV}={info['runtime_threads']}"
    )
    result = {
        "benchmark": "load",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "settings": {
            "generator": args.generator,
            "clients": args.clients,
            "max_requests_single": args.max_requests,
            "max_requests_100_images": max(50, args.max_requests // 10),
            "seconds_per_run": args.seconds,
            "rounds_per_level": args.repeats,
            "warmup_requests": WARMUP_REQUESTS,
            "batching_on": {"max_batch": DEFAULT_MAX_BATCH, "max_wait_ms": DEFAULT_MAX_WAIT_MS},
            "batching_off": {"max_batch": 1},
            "servers": "mnistctl serve subprocesses (uvicorn, 127.0.0.1); kserve: bench/kserve_peer.py",
        },
        "targets": judged,
        "medians": summary,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(
        f"wrote {args.out.relative_to(REPO_ROOT) if args.out.is_relative_to(REPO_ROOT) else args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

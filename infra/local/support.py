"""What the local stack's dynamic providers share: errors, files, processes and ports.

Everything here runs inside the dynamic provider process (or, under mocks, inside the test), so it
holds no state: each function looks at the machine as it is now.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from infra.dynamic import log

LOOPBACK = "127.0.0.1"
# The marker that makes a folder a local stack root: only a folder carrying it is ever removed whole.
ROOT_MARKER = ".mnist-platform-root"


class LocalProviderError(Exception):
    """A local resource could not be created, read or deleted; the message says what to do."""


# --- files ----------------------------------------------------------------------------------------


def size_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@retry(
    retry=retry_if_exception_type(OSError),
    stop=stop_after_attempt(5),
    wait=wait_exponential(multiplier=0.2, max=2),
    reraise=True,
)
def _rmtree(path: Path) -> None:
    # A process that just exited may still be closing files in the folder ("Directory not empty").
    shutil.rmtree(path)


def remove_tree(path: Path) -> None:
    """Remove a file or folder; already gone is success."""
    try:
        if path.is_dir() and not path.is_symlink():
            _rmtree(path)
        else:
            path.unlink(missing_ok=True)
    except FileNotFoundError:
        return
    except OSError as error:
        raise LocalProviderError(
            f"could not remove {path}: {error}. Close whatever holds files in it and run the command again."
        ) from error


def claim_root(root: Path, stack: str) -> None:
    """Make `root` the stack's folder: create it, or adopt it if it is empty or already ours."""
    marker = root / ROOT_MARKER
    if root.exists() and not marker.exists() and any(root.iterdir()):
        raise LocalProviderError(
            f"localRoot {root} already exists and holds files that mnist-platform did not create. "
            "The local stack removes its localRoot on destroy, so it only uses an empty or new folder: "
            "set another one with `pulumi config set localRoot <folder>`, or empty this one."
        )
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"stack: {stack}\nRemoved as a whole by `pulumi destroy` of that stack.\n")


# --- processes ------------------------------------------------------------------------------------


def process_cmdline(pid: int) -> list[str] | None:
    """The command line of a live (not zombie) process, or None when there is no such process."""
    proc = Path(f"/proc/{pid}")
    if Path("/proc/self").exists():
        try:
            stat = (proc / "stat").read_text()
            raw = (proc / "cmdline").read_bytes()
        except OSError:
            return None
        # Field 3 (after the parenthesised command name) is the state; Z is a zombie, X is dead.
        if stat.rsplit(")", 1)[-1].split()[0] in {"Z", "X"}:
            return None
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    try:  # no /proc (macOS): ask ps
        out = subprocess.run(
            ["ps", "-o", "stat=", "-o", "command=", "-p", str(pid)],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return None
    if not out or out.startswith("Z"):
        return None
    return out.split()[1:]


def process_start(pid: int) -> str | None:
    """A token that tells this process apart from a later one with the same pid (its start time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]
    except (OSError, IndexError):
        pass
    try:
        out = subprocess.run(
            ["ps", "-o", "lstart=", "-p", str(pid)], capture_output=True, text=True, check=False
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def reap(pid: int) -> None:
    """Collect the exit status of our own child so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        reap(pid)
        if process_cmdline(pid) is None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def stop_process_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by `pid`, then SIGKILL it if it has not exited after `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            reap(pid)
            return
        except PermissionError as error:
            raise LocalProviderError(
                f"not allowed to stop process {pid} ({error}); stop it by hand (`kill {pid}`) and try again"
            ) from error
        if wait_gone(pid, wait):
            return
        log(f"process {pid} did not exit within {wait:.0f}s of {sig.name}")
    raise LocalProviderError(f"process {pid} survived SIGKILL; stop it by hand and run the command again")


def is_our_process(state: dict, marker: str) -> bool:
    """Whether the recorded pid is still the detached server we started: its command line holds
    `marker` (the mnistctl subcommand) and its port, and it started when recorded (a later process
    that reuses the pid is not ours)."""
    pid = int(state.get("pid") or 0)
    cmdline = process_cmdline(pid) if pid else None
    if cmdline is None or marker not in cmdline or str(int(state.get("port") or 0)) not in cmdline:
        return False
    recorded = state.get("started")
    return recorded is None or process_start(pid) == recorded


# --- records: what a create left under localRoot, found again by its identity -----------------------
#
# A create writes the record of what it started (pid, start time, port) the moment it started it, before
# waiting for it: if `pulumi up` dies during that wait, the next create of the same resource (the same
# identity, infra/dynamic.py) reads the record and adopts or removes what is there, instead of starting
# a second copy beside it.

RECORDS_FOLDER = "run"


def record_path(root: Path, identity_name: str) -> Path:
    """Where the record of the thing named `identity_name` (its kind and identity) lives under localRoot."""
    return root / RECORDS_FOLDER / f"{identity_name}.json"


def write_record(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(record))
    partial.replace(path)  # atomic: a reader never sees half a record


def read_record(path: Path) -> dict | None:
    """The record at `path`, or None when there is none (or it is unreadable: nothing to adopt)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def forget_record(path: Path, pid: int | None = None) -> None:
    """Remove the record, unless `pid` is given and the record now names another process (a newer create
    of the same resource, which the record belongs to now)."""
    if pid is not None:
        record = read_record(path)
        if record is not None and int(record.get("pid") or 0) != int(pid):
            return
    path.unlink(missing_ok=True)


def is_recorded_process(record: dict, marker: str, arguments: tuple[str, ...] = ()) -> bool:
    """Whether the recorded pid is still the process the record describes: alive, started when recorded,
    its command line holding `marker` (the mnistctl subcommand) and `arguments` (its model or output
    folder, its port)."""
    pid = int(record.get("pid") or 0)
    cmdline = process_cmdline(pid) if pid else None
    if cmdline is None or marker not in cmdline or any(part not in cmdline for part in arguments):
        return False
    return record.get("started") is None or process_start(pid) == record.get("started")


# --- ports ----------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nobody listens on right now (the caller retries if it is taken meanwhile)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_taken(port: int) -> bool:
    """Whether something already listens on the loopback port (what the server would fail to bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As uvicorn binds: with SO_REUSEADDR, so connections in TIME_WAIT do not count as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return True
    return port_open(port)


def port_open(port: int) -> bool:
    """Whether a connection to the loopback port is accepted."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((LOOPBACK, port)) == 0


def wait_port_closed(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while port_open(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def answers(port: int, route: str) -> bool:
    """Whether a server on the loopback port answers GET `route` with 200."""
    if not port:
        return False
    try:
        return requests.get(f"http://{LOOPBACK}:{port}{route}", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def start_detached(
    command: list[str], log_path: Path, cwd: Path, what: str, env: dict | None = None
) -> subprocess.Popen:
    """Start ``command`` in its own process group (it outlives `pulumi up` and is stopped as a group),
    its output appended to ``log_path``; failing to start is a LocalProviderError naming ``what``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        try:
            return subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as error:
            raise LocalProviderError(f"could not start {what} ({command[0]}): {error}") from error


def served_state(pid: int, port: int, log_path: Path) -> dict:
    """What an endpoint's or the ui's state records of its running server."""
    return {
        "pid": pid,
        "port": port,
        "url": f"http://{LOOPBACK}:{port}",
        "started": process_start(pid),
        "log_path": str(log_path),
    }

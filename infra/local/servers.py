"""The detached servers of the local stack (the endpoints, the ui): started once per identity, found again.

A create names what it starts by its identity (infra/dynamic.py `identity`): the server's record,
`<localRoot>/run/<id>.json` (pid, start time, port), is written the moment the process exists, before the
create waits for it to answer. So when `pulumi up` dies during that wait, the resource is a pending
create (not in the state) but its server is still findable: the next create of the same resource reads
the record and

- adopts the server when it is still the one recorded (the same pid and start time, `mnistctl <marker>`
  on the same model or outputs file and port) and answers its health route (waiting for it, as the
  interrupted create would have);
- otherwise (dead, or never ready) stops what is left, removes the record and starts a new server,
  on the recorded port when it is free, so that what points at the old URL still works.

A create that fails on its own (the server exits or never answers) stops the server and removes its
record before raising: nothing is left running. Its log stays, since the error cites it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra.dynamic import file_tail, log
from infra.local.support import (
    LocalProviderError,
    answers,
    forget_record,
    is_recorded_process,
    process_start,
    read_record,
    reap,
    served_state,
    start_detached,
    stop_process_group,
    write_record,
)


class PortTakenError(LocalProviderError):
    """The server could not bind its port (taken between our check and its start)."""


@dataclass(frozen=True)
class ServerSpec:
    """One server as a create starts it, and how to recognise it later."""

    what: str
    """How messages name it: "the server of endpoint mnist-xgboost", "the ui"."""
    marker: str
    """The mnistctl subcommand on its command line (serve, ui)."""
    identifying: tuple[str, ...]
    """Command-line arguments only this server has (the model folder, the outputs file)."""
    command: Callable[[int], list[str]]
    """Its command line on a given port."""
    ready_route: str
    """The route that answers 200 once it serves."""
    record: Path
    """Its record under localRoot (support.record_path)."""
    log_path: Path
    cwd: Path
    env: dict[str, str] | None
    startup_timeout: float
    stop_timeout: float


def found_server(spec: ServerSpec) -> tuple[dict | None, int]:
    """What an earlier create of the same identity left: the state of its server, to adopt (None when there
    is nothing to adopt; what was left is then stopped and its record removed), and the port it had."""
    record = read_record(spec.record)
    if record is None:
        return None, 0
    pid, port = int(record.get("pid") or 0), int(record.get("port") or 0)

    def still_ours() -> bool:
        return is_recorded_process(record, spec.marker, (*spec.identifying, str(port)))

    if not still_ours():
        log(f"{spec.what}: the server an earlier create started (pid {pid}) is gone; starting a new one")
        forget_record(spec.record)
        return None, port
    log(f"{spec.what}: adopting the server (pid {pid}, port {port}) that an interrupted create started")
    try:
        wait_ready(spec, pid, port, lambda: None if still_ours() else "unknown")
    except LocalProviderError as error:
        log(f"{spec.what}: the server found did not become ready, so it is replaced: {error}")
        if still_ours():
            stop_process_group(pid, spec.stop_timeout)
        forget_record(spec.record)
        return None, port
    return served_state(pid, port, spec.log_path), port


def start_server(spec: ServerSpec, port: int) -> dict:
    """Start the server on `port`, record it, wait until it answers; the state of the running server."""
    spec.log_path.unlink(missing_ok=True)  # this identity's log is this server's alone
    process = start_detached(spec.command(port), spec.log_path, spec.cwd, spec.what, spec.env)
    write_record(spec.record, {"pid": process.pid, "started": process_start(process.pid), "port": port})
    try:
        wait_ready(spec, process.pid, port, process.poll)
    except Exception:
        # A failed create leaves nothing running. An interruption (a BaseException: the provider process
        # stopped, Ctrl-C) skips this on purpose: the record lets the next create adopt or remove it.
        if process.poll() is None:
            stop_process_group(process.pid, spec.stop_timeout)
        process.wait()
        forget_record(spec.record, process.pid)
        raise
    return served_state(process.pid, port, spec.log_path)


def wait_ready(spec: ServerSpec, pid: int, port: int, exit_code: Callable[[], int | str | None]) -> None:
    """Return once the server answers its ready route; raise when it exits first or the timeout is up.
    `exit_code` is None while the server runs (its exit code, or "unknown" for a process not our child)."""
    deadline = time.monotonic() + spec.startup_timeout
    while time.monotonic() < deadline:
        returncode = exit_code()
        if returncode is not None:
            reap(pid)
            output = file_tail(spec.log_path)
            if "address already in use" in output.lower():
                raise PortTakenError(f"port {port} was taken before {spec.what} could bind it")
            raise LocalProviderError(
                f"{spec.what} exited with code {returncode} before it was ready. "
                f"Its last lines:\n{output}\nFull log: {spec.log_path}."
            )
        if answers(port, spec.ready_route):
            return
        time.sleep(0.25)
    raise LocalProviderError(
        f"{spec.what} did not answer {spec.ready_route} on port {port} within {spec.startup_timeout:.0f}s; "
        f"it was stopped. Its last lines:\n{file_tail(spec.log_path)}\nFull log: {spec.log_path}."
    )

"""Fault injection for the local stack's reliability tests: an interrupted `pulumi up`, and what runs.

`interrupt_once` stands for `pulumi up` dying inside one provider call (tests/harness.py
`EngineInterrupted`): the wrapped function runs (or not), then the interruption is raised, once; the
engine records a pending create and nothing of it reaches the state. `stack_processes` is what this
machine runs for a stack (every `mnistctl` process whose arguments point under its localRoot), asked of
the process table, not of the state.

`interruptible(engine)` is what to pass to `run_stack` as `new_resource` in these tests: an
EngineInterrupted raised through the Pulumi SDK's mock registration (a BaseException) leaves the SDK
waiting forever for that resource's outputs, so it is handed on as `UpInterrupted`, an Exception that
fails the run as any provider error does. The engine has recorded the pending create before that.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from harness import EngineInterrupted, NewResource, ProviderEngine
from pulumi.runtime.mocks import MockResourceArgs

from infra.local.support import process_cmdline, wait_gone


class UpInterrupted(Exception):
    """`pulumi up` stopped inside a create (see EngineInterrupted), as the run reports it."""


def interruptible(engine: ProviderEngine) -> NewResource:
    def new_resource(args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        try:
            return engine(args)
        except EngineInterrupted as interruption:
            raise UpInterrupted(str(interruption)) from interruption

    return new_resource


def interrupt_once(
    monkeypatch: pytest.MonkeyPatch,
    owner: Any,
    name: str,
    *,
    run_first: bool = True,
    when: Callable[..., bool] = lambda *args, **kwargs: True,
) -> list[str]:
    """Replace `owner.name` so that its first call for which `when(*args)` holds runs it (unless
    `run_first` is False) and then raises EngineInterrupted; later calls run it unchanged. Returns a list
    that holds a note once the interruption happened."""
    original = getattr(owner, name)
    fired: list[str] = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        if fired or not when(*args, **kwargs):
            return original(*args, **kwargs)
        fired.append(f"{name} interrupted")
        if run_first:
            original(*args, **kwargs)
        raise EngineInterrupted(f"pulumi up stopped in {name}, before its result reached the state")

    monkeypatch.setattr(owner, name, interrupted)
    return fired


def stack_processes(root: Path) -> dict[int, list[str]]:
    """Every live mnistctl process (server, trainer) whose arguments point under `root`, by pid."""
    if not Path("/proc/self").exists():
        pytest.skip("counting a stack's processes reads /proc (Linux)")
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        cmdline = process_cmdline(int(entry.name))
        if cmdline and "mnistctl" in cmdline and any(part.startswith(str(root)) for part in cmdline):
            found[int(entry.name)] = cmdline
    return found


def stop_stack_processes(root: Path) -> None:
    """Stop whatever a test left running under `root` (a failed test must not leave servers behind)."""
    for pid in stack_processes(root):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        wait_gone(pid, 5)


FAILING_SERVER = Path(__file__).with_name("failing_server.py")


def new_servers_fail_predictions(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on, the local stack's new endpoint servers load their model as usual but answer every
    prediction with a 500 (tests/local/failing_server.py); servers already running are untouched."""
    from infra.local import endpoint as local_endpoint

    real_command = local_endpoint.server_command

    def failing(props: dict[str, Any], port: int) -> list[str]:
        command = real_command(props, port)
        serve = command.index("serve")
        return [command[0], str(FAILING_SERVER), *command[serve:]]

    monkeypatch.setattr(local_endpoint, "server_command", failing)

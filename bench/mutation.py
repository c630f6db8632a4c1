"""Mutation testing where a silent bug costs most (`make mutate`): mutmut 3 over each module in turn.

    python bench/mutation.py [MODULE ...] [--max-children 2] [--result bench/results/mutation.json]

mutmut breaks the code in small ways (a `<` made `<=`, a constant changed, a call's argument dropped), one
mutant at a time, and runs the tests; a mutant that no test notices "survives" and shows a behaviour that
nothing checks. Each module runs in a copy of the work tree (what git tracks or would add), under
.mnist-platform/mutation/<module>/, so mutmut's `mutants/` folder never lands in the work tree and two
modules never share its state. The copy's
pyproject.toml gets a `[tool.mutmut]` table of the module's own: mutate only that file, and run only the
tests listed for it below. Within those, mutmut runs for each mutant only the tests that called the mutated
function in a first clean run (its coverage of functions), which keeps a module to minutes on 2 cores.

The scores go to bench/results/mutation.json (merged with the modules run before), with the machine, the
date and mutmut's version; docs/testing.md shows them and explains every survivor. Modules are run smallest
first. mutmut 3 mutates code inside functions and methods only (module-level constants are not mutated).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a checkout

from bench import host  # noqa: E402

DEFAULT_RESULT = REPO_ROOT / "bench" / "results" / "mutation.json"
WORK_ROOT = REPO_ROOT / ".mnist-platform" / "mutation"
# The packages copied into mutmut's `mutants/` folder (imported from there by the tests); only the module
# under test is mutated. The rest of the tree (docs, stack files, test data) is copied beside them.
PACKAGES = ["infra", "mnistctl", "policy", "serving", "training", "bench"]
NOT_COPIED = {"tests", "pyproject.toml", *PACKAGES}
TEST_TIMEOUT_S = 60  # per test (pytest-timeout): the listed tests take seconds each

# Module -> the tests that exercise it (the fast ones: a test of minutes would run for each mutant).
TESTS: dict[str, list[str]] = {
    "infra/gate.py": ["tests/unit/test_gate_rule.py", "tests/unit/test_gate_settings.py"],
    # Not the local gate's own tests: under a mutant that makes a champion's artifact "None", its delete
    # removes Path("None").parent, the working folder, which is mutmut's (twice a run ended so).
    "infra/gate_provider.py": [
        "tests/unit/test_gate_provider.py",
        "tests/aws/test_aws_gate.py",
        "tests/gcp/test_gcp_gate.py",
        "tests/ibm/test_ibm_gate.py",
        "-m",
        "not slow and not e2e",
    ],
    "serving/payloads.py": [
        "tests/serving/test_serving_payloads.py",
        "tests/serving/test_sagemaker_replies.py",
    ],
    "serving/batching.py": [
        "tests/serving/test_batching.py",
        "tests/serving/test_model_free_server.py",
        "-m",
        "not slow",
    ],
    "training/datasets.py": ["tests/training/test_datasets.py", "tests/training/test_dataset_downloads.py"],
    "mnistctl/client.py": [
        "tests/client/test_endpoint_clients.py",
        "tests/client/test_client_failures.py",
        "tests/serving/test_sagemaker_replies.py",
    ],
    "policy/rules.py": ["tests/policy/test_policy_rules.py", "tests/policy/test_policy_budget.py"],
}

# mutmut's reading of a mutant's exit code (mutmut/stats.py, `status_by_exit_code`); others are "suspicious".
STATUS_BY_EXIT_CODE: dict[int | None, str] = {
    1: "killed",
    3: "killed",
    0: "survived",
    5: "no tests",
    33: "no tests",
    2: "interrupted",
    None: "not checked",
    34: "skipped",
    35: "suspicious",
    36: "timeout",
    37: "caught by type check",
    -24: "timeout",
    24: "timeout",
    152: "timeout",
    255: "timeout",
    -11: "segfault",
    -9: "segfault",
}
# A mutant that made a test hang or crash was noticed: it counts as killed, as mutmut's own score does.
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}


def tracked_files() -> list[str]:
    """The work tree as it stands: the files git tracks or would add (not those it ignores)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    return [name for name in (entry.decode() for entry in listed if entry) if (REPO_ROOT / name).is_file()]


def prepare_copy(module: str) -> Path:
    """A fresh copy of the tree for `module`, its pyproject.toml carrying the module's `[tool.mutmut]`."""
    work = WORK_ROOT / module.replace("/", "-").removesuffix(".py")
    if work.exists():
        shutil.rmtree(work)
    for name in tracked_files():
        target = work / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    also_copy = sorted({name.split("/", 1)[0] for name in tracked_files()} - NOT_COPIED)
    table = {
        "source_paths": PACKAGES,
        "only_mutate": [module],
        "also_copy": also_copy,
        # A mutant that makes a test wait forever sleeps, so mutmut's CPU-time limit never ends it.
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "--timeout", str(TEST_TIMEOUT_S)],
        "pytest_add_cli_args_test_selection": TESTS[module],
        # TensorFlow, torch and gRPC are not safe to fork after use: each mutant forks from a clean server.
        "process_isolation": "forkserver",
        "use_git_change_detection": False,
    }
    with (work / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n[tool.mutmut]\n")
        for key, value in table.items():
            pyproject.write(f"{key} = {json.dumps(value)}\n")
    return work


def run_mutmut(work: Path, max_children: int, log: Path, mutants: list[str] | None = None) -> int:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    mutmut = Path(sys.executable).parent / "mutmut"
    with log.open("w") as out:
        return subprocess.run(
            [str(mutmut), "run", "--max-children", str(max_children), *(mutants or [])],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            check=False,
        ).returncode


def score_of(work: Path, module: str) -> dict[str, Any]:
    """Counts by status, the score (detected over all mutants) and the names of the survivors."""
    meta = work / "mutants" / f"{module}.meta"
    if not meta.exists():
        raise RuntimeError(f"mutmut left no results for {module} (see {work / 'mutmut.log'})")
    exit_codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    counts: dict[str, int] = {}
    survivors: list[str] = []
    for name, code in sorted(exit_codes.items()):
        status = STATUS_BY_EXIT_CODE.get(code, "suspicious")
        counts[status] = counts.get(status, 0) + 1
        if status not in DETECTED:
            survivors.append(f"{name} ({status})")
    detected = sum(n for status, n in counts.items() if status in DETECTED)
    return {
        "mutants": len(exit_codes),
        "detected": detected,
        "score": round(detected / len(exit_codes), 3) if exit_codes else None,
        "by_status": counts,
        "not_detected": survivors,
    }


def mutate(module: str, max_children: int, console: Console) -> dict[str, Any]:
    work = prepare_copy(module)
    console.print(f"[bold]{module}[/]: mutmut in {work.relative_to(REPO_ROOT)}, tests {TESTS[module]}")
    started = time.perf_counter()
    code = run_mutmut(work, max_children, work / "mutmut.log")
    seconds = round(time.perf_counter() - started, 1)
    if code != 0:
        raise RuntimeError(f"mutmut failed on {module} (exit {code}); see {work / 'mutmut.log'}")
    return {**score_of(work, module), "tests": TESTS[module], "seconds": seconds}


def recheck(module: str, previous: dict[str, Any], max_children: int, console: Console) -> dict[str, Any]:
    """The survivors of the module's last run, tested again with the tests as they are now (new tests
    written to kill them), in the same copy: minutes instead of a whole run. The other mutants keep their
    results, so a change to the module itself needs a whole run."""
    work = WORK_ROOT / module.replace("/", "-").removesuffix(".py")
    if not (work / "mutants" / f"{module}.meta").exists():
        raise RuntimeError(f"no earlier run of {module} in {work} to recheck: run it whole first")
    if previous["tests"] != TESTS[module]:  # mutmut would drop every result on a new selection
        raise RuntimeError(f"the tests listed for {module} changed since its run: run it whole")
    shutil.rmtree(work / "tests")
    for name in tracked_files():
        if name.startswith("tests/"):
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, work / name)
    survivors = [entry.split(" ")[0] for entry in previous["not_detected"]]
    console.print(f"[bold]{module}[/]: {len(survivors)} survivors again, with the tests as they are now")
    started = time.perf_counter()
    code = run_mutmut(work, max_children, work / "mutmut-recheck.log", survivors)
    if code != 0:
        raise RuntimeError(f"mutmut failed on {module} (exit {code}); see {work / 'mutmut-recheck.log'}")
    seconds = round(time.perf_counter() - started, 1)
    return {
        **previous,
        **score_of(work, module),
        "rechecked": {"survivors": len(survivors), "seconds": seconds},
    }


def record(path: Path, module: str, run: dict[str, Any]) -> None:
    """Merge one module's run into the results file, read afresh: another run may have written it since."""
    result = json.loads(path.read_text()) if path.exists() else {"modules": {}}
    result["modules"][module] = run
    result["modules"] = dict(sorted(result["modules"].items()))
    path.write_text(json.dumps(result, indent=2) + "\n")


def smallest_first(modules: list[str]) -> list[str]:
    return sorted(modules, key=lambda module: (REPO_ROOT / module).stat().st_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "modules", nargs="*", help=f"any of {', '.join(TESTS)} (default: all, smallest first)"
    )
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--result", type=Path, default=DEFAULT_RESULT)
    parser.add_argument(
        "--recheck", action="store_true", help="only the last run's survivors again, with today's tests"
    )
    args = parser.parse_args(argv)
    if unknown := [module for module in args.modules if module not in TESTS]:
        parser.error(f"no tests are listed for {unknown}; choose from {', '.join(TESTS)}")
    console = Console()
    modules = smallest_first(args.modules or list(TESTS))
    for module in modules:
        if args.recheck:
            previous = json.loads(args.result.read_text())["modules"][module]
            run = {**recheck(module, previous, args.max_children, console), "date": previous["date"]}
            run["rechecked"]["date"] = datetime.now(UTC).isoformat(timespec="seconds")
            record(args.result, module, run)
            console.print(f"  {run['detected']} of {run['mutants']} detected ({run['score']:.0%})")
            continue
        run = {
            **mutate(module, args.max_children, console),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "tool": f"mutmut {metadata.version('mutmut')}",
            "machine": host.machine(),
        }
        record(args.result, module, run)  # after each module: a long run keeps what it did
        console.print(
            f"  {run['detected']} of {run['mutants']} detected ({run['score']:.0%}) in {run['seconds']} s"
        )
    table = Table("module", "mutants", "detected", "score", "not detected", "date")
    for module, run in json.loads(args.result.read_text())["modules"].items():
        score = "not run" if run.get("score") is None else f"{run['score']:.0%}"
        table.add_row(
            module, str(run.get("mutants", "")), str(run.get("detected", "")), score,
            str(len(run.get("not_detected", []))), run.get("date", ""),
        )  # fmt: skip
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

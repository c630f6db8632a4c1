"""Benchmark the local stack's `up`: each training, when each endpoint first answers, the total; beside the
same trainings run alone, one after the other, in the same run.

    nice -n 10 python bench/up.py                                  # mnist-t10k (tests/data/mnist), ~2-5 min
    nice -n 10 python bench/up.py --dataset fashion-mnist          # Debian's full Fashion-MNIST, ~15 min
    python bench/up.py --slots 2                                   # localTrainingSlots (default: machine's)

"Alone": `mnistctl train` for each framework in its own process, nothing else training, every core (as a
user would train one model). "Up": the stack's program under the engine emulation the tests use
(tests/harness.py ProviderEngine, providers executed for real): the dataset, three trainings queued for the
machine's training slots (training/slots.py), gates, endpoints and the ui page, then `destroy`. Each
endpoint gets a fixed free port (config `ports`) that a poller asks for `/ping` from the start, so "first
answers" is what a user polling it would see. The goals are issue 35's: all endpoints serving within 1.25x
(mnist-t10k) or 1.1x (full Fashion-MNIST) the sum of the trainings alone, the first within the fastest
training alone + 15 s, accuracy unchanged. The slots live in a fresh folder (this run's own cache), so a
training elsewhere on the machine neither waits for the bench nor holds it up; its load still counts:
the load average is recorded before and after each part.

Prints a table and writes bench/results/up-<dataset>.json (with the machine: cores, load, date).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a checkout
sys.path.insert(0, str(REPO_ROOT / "tests"))  # the engine emulation (tests/harness.py)

from bench.host import machine, package_versions  # noqa: E402

RESULTS = REPO_ROOT / "bench" / "results"
DEFAULT_T10K_DIR = REPO_ROOT / "tests" / "data" / "mnist"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
GOAL_RATIO = {"mnist-t10k": 1.25, "fashion-mnist": 1.1}
GOAL_FIRST_MARGIN_SECONDS = 15.0
POLL_SECONDS = 0.2
ENDPOINT = "pulumi-python:dynamic/local:Endpoint"
TRAINING_JOB = "pulumi-python:dynamic/local:TrainingJob"


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def train_alone(framework: str, dataset: str, data_dir: Path, out: Path, preset: str) -> dict[str, Any]:
    """One `mnistctl train` in its own process, as a user runs it: its wall time and metrics."""
    command = [sys.executable, "-m", "mnistctl", "train", "--framework", framework, "--dataset", dataset]
    command += ["--data-dir", str(data_dir), "--out", str(out), "--preset", preset]
    load_before = load_average()
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"training {framework} alone failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "framework": framework,
        "seconds": round(seconds, 2),
        "train_seconds": metrics.get("train_seconds"),
        "accuracy": metrics.get("accuracy"),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


class FirstAnswers:
    """Polls `http://127.0.0.1:<port>/ping` of each endpoint from the start; the first 200's time."""

    def __init__(self, ports: dict[str, int], started: float) -> None:
        import requests

        self._requests = requests
        self.ports = ports
        self.started = started
        self.first: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        session = self._requests.Session()
        while not self._stop.is_set() and len(self.first) < len(self.ports):
            for model, port in self.ports.items():
                if model in self.first:
                    continue
                try:
                    answered = session.get(f"http://127.0.0.1:{port}/ping", timeout=1).status_code == 200
                except self._requests.RequestException:
                    answered = False
                if answered:
                    self.first[model] = round(time.monotonic() - self.started, 2)
            self._stop.wait(POLL_SECONDS)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def run_up(
    dataset: str, data_dir: Path, preset: str, slots: int | None, work: Path
) -> tuple[dict[str, Any], Any]:
    """`pulumi up` of the local stack under the engine emulation, timed; returns the timings and the engine
    (to destroy)."""
    from harness import ProviderEngine, run_stack  # pyright: ignore[reportMissingImports]

    from infra.local.support import free_port

    models = ["xgboost", "tensorflow", "pytorch"]
    ports = {model: free_port() for model in models}
    config: dict[str, Any] = {
        "localRoot": str(work / "local-root"),
        "dataset": dataset,
        "dataDir": str(data_dir),
        "trainingPreset": preset,
        "ports": ports,
    }
    if slots is not None:
        config["localTrainingSlots"] = slots
    creates: dict[str, dict[str, float]] = {}
    started = time.monotonic()

    class TimedEngine(ProviderEngine):
        def _create(self, args: Any, provider: Any, news: dict[str, Any], step: str) -> Any:
            began = time.monotonic() - started
            try:
                return super()._create(args, provider, news, step)
            finally:
                creates[args.name] = {"start": round(began, 2), "end": round(time.monotonic() - started, 2)}

    engine = TimedEngine()
    load_before = load_average()
    poller = FirstAnswers(ports, started)
    epoch_at_start = time.time()
    try:
        run = run_stack("local", config, new_resource=engine)
        engine.finish()
    finally:
        poller.stop()
    total = round(time.monotonic() - started, 2)
    trainings = {}
    for model in models:
        metrics = run.outputs["models"][model]["metrics"]
        slot = metrics.get("slot") or {}
        create = creates[f"mnist-{model}-training"]
        trainings[model] = {
            "create": create,
            "slot_taken": round(slot["taken_at"] - epoch_at_start, 2) if "taken_at" in slot else None,
            "slot_waited_seconds": slot.get("waited_seconds"),
            "threads": slot.get("threads"),
            "train_seconds": metrics.get("train_seconds"),
            "accuracy": metrics.get("accuracy"),
            "endpoint_first_answer": poller.first.get(model),
            "endpoint_create_end": creates[f"mnist-{model}-endpoint"]["end"],
        }
    return {
        "slots": slots,
        "slot_count": (run.outputs["models"]["xgboost"]["metrics"].get("slot") or {}).get("count"),
        "total_seconds": total,
        "trainings": trainings,
        "creates": creates,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }, engine


def verdicts(dataset: str, alone: list[dict[str, Any]], up: dict[str, Any]) -> dict[str, Any]:
    sum_alone = sum(run["seconds"] for run in alone)
    fastest = min(alone, key=lambda run: run["seconds"])
    answers = [t["endpoint_first_answer"] for t in up["trainings"].values()]
    all_serving = max(a for a in answers if a is not None) if all(a is not None for a in answers) else None
    first_serving = min((a for a in answers if a is not None), default=None)
    ratio = round(all_serving / sum_alone, 3) if all_serving is not None else None
    goal_ratio = GOAL_RATIO.get(dataset)
    accuracy_alone = {run["framework"]: run["accuracy"] for run in alone}
    accuracy_up = {model: t["accuracy"] for model, t in up["trainings"].items()}
    return {
        "sum_alone_seconds": round(sum_alone, 2),
        "fastest_alone": {"framework": fastest["framework"], "seconds": fastest["seconds"]},
        "all_endpoints_serving_seconds": all_serving,
        "first_endpoint_serving_seconds": first_serving,
        "all_serving_over_sum_alone": ratio,
        "goal_all_serving_over_sum_alone": goal_ratio,
        "all_serving_goal_met": None if ratio is None or goal_ratio is None else ratio <= goal_ratio,
        "first_serving_minus_fastest_alone_seconds": (
            round(first_serving - fastest["seconds"], 2) if first_serving is not None else None
        ),
        "goal_first_serving_margin_seconds": GOAL_FIRST_MARGIN_SECONDS,
        "first_serving_goal_met": (
            None if first_serving is None else first_serving <= fastest["seconds"] + GOAL_FIRST_MARGIN_SECONDS
        ),
        "accuracy_alone": accuracy_alone,
        "accuracy_up": accuracy_up,
        "accuracy_unchanged": accuracy_alone == accuracy_up,
    }


def print_report(console: Console, result: dict[str, Any]) -> None:
    up, verdict = result["up"], result["verdicts"]
    alone = {run["framework"]: run for run in result["alone"]}
    table = Table(
        title=f"local stack `up` on {result['dataset']} ({result['preset']}), slots {up['slot_count']}"
    )
    for column in (
        "model",
        "alone s",
        "alone acc",
        "up: slot taken",
        "training create",
        "endpoint answers",
        "up acc",
    ):
        table.add_column(column, justify="right")
    for model, timing in sorted(up["trainings"].items(), key=lambda item: item[1]["create"]["end"]):
        table.add_row(
            model,
            f"{alone[model]['seconds']:.1f}",
            f"{alone[model]['accuracy']}",
            f"{timing['slot_taken']}",
            f"{timing['create']['start']:.1f}-{timing['create']['end']:.1f}",
            f"{timing['endpoint_first_answer']}",
            f"{timing['accuracy']}",
        )
    console.print(table)
    first_margin = verdict["first_serving_minus_fastest_alone_seconds"]
    host = result["machine"]
    fastest = verdict["fastest_alone"]
    lines = [
        f"sum of the trainings alone: {verdict['sum_alone_seconds']:.1f}s",
        f"first endpoint serving: {verdict['first_endpoint_serving_seconds']}s, {first_margin:+.1f}s after "
        f"the fastest alone ({fastest['framework']} {fastest['seconds']:.1f}s); goal <= +15 s: "
        + _met(verdict["first_serving_goal_met"]),
        f"all endpoints serving: {verdict['all_endpoints_serving_seconds']}s = "
        f"{verdict['all_serving_over_sum_alone']}x the sum alone; goal <= "
        f"{verdict['goal_all_serving_over_sum_alone']}x: " + _met(verdict["all_serving_goal_met"]),
        f"up in all (ui page included): {up['total_seconds']:.1f}s; accuracy unchanged: "
        f"{verdict['accuracy_unchanged']}",
        f"machine: {host['cpu_count']} cores ({host['cores_available']} available), load average "
        f"{host['load_average_at_start']} at start, {host['load_average_at_end']} at end",
    ]
    for line in lines:
        console.print(line, highlight=False)


def _met(met: bool | None) -> str:
    return "met" if met else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="mnist-t10k", choices=sorted(GOAL_RATIO))
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default: tests/data/mnist or Debian's copy"
    )
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--slots", type=int, default=None, help="localTrainingSlots (default: the machine's)")
    parser.add_argument("--out", type=Path, default=None, help="default: bench/results/up-<dataset>.json")
    args = parser.parse_args(argv)
    data_dir = args.data_dir or (DEFAULT_T10K_DIR if args.dataset == "mnist-t10k" else FASHION_DIR)
    out = args.out or RESULTS / f"up-{args.dataset}.json"
    console = Console()
    os.chdir(REPO_ROOT)  # the trainers and servers run `python -m mnistctl` from here

    from training.run import TRAINING_ORDER
    from training.slots import available_cores

    info = {**machine(), "cores_available": available_cores()}
    with tempfile.TemporaryDirectory(prefix="bench-up-") as scratch:
        work = Path(scratch)
        os.environ["XDG_CACHE_HOME"] = str(work / "cache")  # this run's own training slots
        alone = []
        for framework in TRAINING_ORDER:
            console.print(f"training {framework} alone ...")
            alone.append(
                train_alone(
                    framework.value, args.dataset, data_dir, work / f"alone-{framework.value}", args.preset
                )
            )
            console.print(f"  {alone[-1]['seconds']:.1f}s, accuracy {alone[-1]['accuracy']}")
        console.print("local stack up ...")
        up, engine = run_up(args.dataset, data_dir, args.preset, args.slots, work)
        console.print(f"  {up['total_seconds']:.1f}s; destroying")
        engine.destroy()
    info["load_average_at_end"] = load_average()
    result = {
        "benchmark": "up",
        "dataset": args.dataset,
        "preset": args.preset,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(
            [Path(sys.executable).name, "bench/up.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": {
            **info,
            "versions": package_versions(["xgboost", "tensorflow-cpu", "torch", "onnxruntime", "pulumi"]),
        },
        "alone": alone,
        "up": up,
        "verdicts": verdicts(args.dataset, alone, up),
        "note": (
            "Times in seconds from the start of the up (trainings: their create's start-end in the engine; "
            "slot_taken: when the trainer got its training slot; endpoint_first_answer: the first 200 of its "
            "/ping to a poller running from the start). 'alone' is each `mnistctl train` process's wall "
            "time, nothing else training. The machine may be shared: see the load averages."
        ),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print_report(console, result)
    console.print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

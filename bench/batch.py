"""Batch scoring against the online server, per flavor, on the same machine (docs/batch.md).

    python bench/batch.py [--models DIR] [--data-dir D] [--flavor F] [--images 10000] [--clients 32]
                          [--max-requests 3000] [--seconds 6] [--repeats 3]

For each flavor (the same models bench/load.py trains, in the same folder):
- batch: `mnistctl batch` as the local stack runs it, on the held-out digits of mnist-t10k tiled to
  --images, in its own process with every core (MNIST_SERVING_THREADS = cores) and 1024 images per model
  call. Two figures: the report's images/s (model calls only) and the whole run's (process start, model
  load, reading the input and writing predictions, report and confusion matrix included).
- online: `mnistctl serve` with batching on (the defaults, as the stacks serve), MNIST_SERVING_THREADS=1 as
  bench/load.py runs it, under --clients keep-alive clients sending single images (bench/load.py's
  `run_load`, asyncio in this process), and again with 100-image requests.
Each is measured --repeats times, alternating; the medians are judged. Goal (issue 31): batch >= 3x the
online server's images/s at 32 single-image clients. Prints a table and writes bench/results/batch.json
with the machine (cores, load average) and every round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a checkout

from bench import load  # noqa: E402
from mnistctl.cli import serve_command  # noqa: E402
from serving.constants import THREADS_ENV, Flavor  # noqa: E402

DEFAULT_RESULT = REPO_ROOT / "bench" / "results" / "batch.json"
TARGET_RATIO = 3.0


def batch_input(data_dir: Path, images: int, folder: Path) -> Path:
    """The held-out digits of mnist-t10k tiled to `images` rows, as an .npz `mnistctl batch` reads."""
    from training.datasets import load_dataset

    split = load_dataset("mnist-t10k", data_dir)
    repeats = -(-images // len(split.x_test))
    path = folder / f"held-out-x{images}.npz"
    np.savez(
        path, x=np.tile(split.x_test, (repeats, 1, 1))[:images], y=np.tile(split.y_test, repeats)[:images]
    )
    return path


def run_batch(flavor: Flavor, model: Path, source: Path, out: Path) -> dict[str, Any]:
    """One `mnistctl batch` run in its own process: the report's figures and the whole run's time."""
    command = [sys.executable, "-m", "mnistctl", "batch", str(source), "--model-dir", str(model)]
    command += ["--flavor", flavor.value, "--model", load.FRAMEWORK[flavor], "--out", str(out)]
    env = {**load.server_env(), THREADS_ENV: str(os.cpu_count() or 1), "COLUMNS": "160"}
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO_ROOT, env=env)
    wall = time.perf_counter() - started
    report = json.loads((out / "report.json").read_text())
    return {
        "images": report["images"],
        "accuracy": report["accuracy"],
        "scoring_seconds": report["seconds"],
        "images_per_s": report["images_per_second"],
        "whole_run_seconds": round(wall, 3),
        "whole_run_images_per_s": round(report["images"] / wall, 1),
    }


def run_online(
    server: load.Server, images: np.ndarray, per_request: int, args: argparse.Namespace
) -> dict[str, Any]:
    """`--clients` clients against the server with `per_request` images a request: images/s and latency."""
    target = load.target_for(server.label, server.url, images[:per_request], load.NAME)
    load.run_load(target, clients=4, requests=load.WARMUP_REQUESTS, seconds=10)
    requests = args.max_requests if per_request == 1 else max(1, args.max_requests // 10)
    result = load.run_load(target, args.clients, requests, args.seconds).summary()
    return {
        **result,
        "images_per_request": per_request,
        "images_per_s": round(result["requests_per_s"] * per_request, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--models", type=Path, default=load.DEFAULT_MODELS, help="folder with <framework>/")
    parser.add_argument("--data-dir", type=Path, default=load.DEFAULT_T10K_DIR, help="the MNIST t10k files")
    parser.add_argument("--flavor", action="append", type=Flavor, help="only these flavors (repeatable)")
    parser.add_argument("--images", type=int, default=10_000, help="images a batch run scores")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=3000, help="per single-image online run")
    parser.add_argument("--seconds", type=float, default=6.0, help="time limit of each online run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULT)
    args = parser.parse_args(argv)

    from mnistctl.samples import sample_digits

    console = Console(width=200)
    info = load.machine()
    digits, _ = sample_digits(100, args.data_dir)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as scratch:
        source = batch_input(args.data_dir, args.images, Path(scratch))
        for flavor in args.flavor or list(Flavor):
            model = load.ensure_model(flavor, args.models, args.data_dir, console)
            console.print(f"{flavor.value}: starting the online server ...")
            server = load.Server(
                f"{flavor.value} on",
                serve_command(flavor, model, 0, load.NAME),
                None,
                "/ping",
                load.server_env(),
            )
            rounds: list[dict[str, Any]] = []
            try:
                for repeat in range(args.repeats):
                    batch = run_batch(flavor, model, source, Path(scratch) / f"{flavor.value}-{repeat}")
                    single = run_online(server, digits, 1, args)
                    hundred = run_online(server, digits, 100, args)
                    rounds.append({"batch": batch, "online_single": single, "online_100": hundred})
                    console.print(
                        f"  round {repeat + 1}: batch {batch['images_per_s']:,.0f} images/s "
                        f"(whole run {batch['whole_run_images_per_s']:,.0f}), "
                        f"online {single['images_per_s']:,.0f} "
                        f"(100-image requests {hundred['images_per_s']:,.0f})"
                    )
            finally:
                server.stop()

            def median(part: str, key: str) -> float:
                return float(statistics.median(r[part][key] for r in rounds))  # noqa: B023

            batch_rate = median("batch", "images_per_s")
            online_rate = median("online_single", "images_per_s")
            rows.append(
                {
                    "flavor": flavor.value,
                    "model": load.FRAMEWORK[flavor],
                    "batch_images_per_s": batch_rate,
                    "batch_whole_run_images_per_s": median("batch", "whole_run_images_per_s"),
                    "online_images_per_s": online_rate,
                    "online_100_images_per_s": median("online_100", "images_per_s"),
                    "ratio": round(batch_rate / online_rate, 2) if online_rate else None,
                    "whole_run_ratio": round(median("batch", "whole_run_images_per_s") / online_rate, 2)
                    if online_rate
                    else None,
                    "goal_met": bool(online_rate) and batch_rate >= TARGET_RATIO * online_rate,
                    "rounds": rounds,
                }
            )
    table = Table(title=f"batch vs online at {args.clients} clients ({args.images} images a batch run)")
    for column in (
        "flavor",
        "batch img/s",
        "whole run img/s",
        "online img/s",
        "online 100/req img/s",
        "ratio",
        ">= 3x",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["flavor"],
            f"{row['batch_images_per_s']:,.0f}",
            f"{row['batch_whole_run_images_per_s']:,.0f}",
            f"{row['online_images_per_s']:,.0f}",
            f"{row['online_100_images_per_s']:,.0f}",
            f"{row['ratio']}",
            "yes" if row["goal_met"] else "no",
        )
    console.print(table)
    document = {
        "benchmark": "batch",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {**info, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "settings": {
            "images": args.images,
            "clients": args.clients,
            "max_requests": args.max_requests,
            "seconds": args.seconds,
            "repeats": args.repeats,
            "batch_threads": os.cpu_count(),
            "online_threads": 1,
            "batch_size": 1024,
            "generator": "python (bench/load.py run_load)",
        },
        "target": f"batch >= {TARGET_RATIO}x online images/s at {args.clients} single-image clients",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

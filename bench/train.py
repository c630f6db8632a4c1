"""Benchmark the three trainers with their default hyperparameters: accuracy, seconds, artifact size.

    python bench/train.py [--data-dir ../shared/data/mnist] [--full-data-dir DIR] [--threads 2]

Runs each framework on mnist-t10k, and on full MNIST when its four files are already in
``--full-data-dir`` (the bench never downloads). Each run is a fresh subprocess, so one framework's
thread pools and imports do not slow another. Prints a table and writes bench/results/train.json.

    python bench/train.py --interop-python /tmp/old/bin/python

checks instead that the artifacts load in the runtimes the clouds serve them with and predict the
same: it trains dry-run artifacts here, then loads and runs them with another interpreter holding
the old runtimes (``pip install "numpy<2" xgboost==1.7.6 onnxruntime==1.16.3 tensorflow-cpu==2.15.1``:
SageMaker's XGBoost 1.7-1 image, watsonx.ai's onnxruntime_1.16, Vertex AI's TF 2.15 prediction
container) and writes bench/results/train-interop.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_T10K_DIR = REPO_ROOT.parent / "shared" / "data" / "mnist"
DEFAULT_RESULT = REPO_ROOT / "bench" / "results" / "train.json"
INTEROP_RESULT = REPO_ROOT / "bench" / "results" / "train-interop.json"
FRAMEWORKS = ("xgboost", "tensorflow", "pytorch")
MAX_TRAIN_SECONDS = 60.0  # the target applies to mnist-t10k on 2 CPU cores
TARGET_ACCURACY = {
    "mnist-t10k": {"xgboost": 0.960, "tensorflow": 0.985, "pytorch": 0.985},
    "mnist": {"xgboost": 0.975, "tensorflow": 0.990, "pytorch": 0.990},
}
PACKAGES = ("numpy", "xgboost", "tensorflow-cpu", "keras", "torch", "onnx", "onnxruntime")


def run_one(framework: str, dataset: str, data_dir: Path, threads: int) -> dict[str, Any]:
    """Train once in this process and measure it (the body of each benchmark subprocess)."""
    from training.run import ARTIFACTS, Framework, train_model

    with tempfile.TemporaryDirectory(prefix=f"bench-{framework}-") as out:
        cpu_before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        metrics = train_model(framework, dataset, data_dir, Path(out), {}, False, threads=threads)
        wall = time.perf_counter() - started
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        artifact = Path(out) / ARTIFACTS[Framework(framework)]
        size = sum(p.stat().st_size for p in artifact.rglob("*") if p.is_file()) if artifact.is_dir() else 0
        size = size or artifact.stat().st_size
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    return {
        "framework": framework,
        "dataset": dataset,
        "accuracy": metrics["accuracy"],
        "n_train": metrics["n_train"],
        "n_test": metrics["n_test"],
        "train_seconds": metrics["train_seconds"],
        "total_seconds": round(wall, 2),  # loading, conversion, training, export, evaluation
        "cpu_seconds": round(cpu, 2),  # all threads; unlike wall time, barely affected by other load
        "artifact": metrics["artifact"],
        "artifact_bytes": size,
        "hyperparameters": metrics["hyperparameters"],
    }


def run_in_subprocess(framework: str, dataset: str, data_dir: Path, threads: int) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        command = [
            sys.executable,
            __file__,
            "--single",
            framework,
            "--dataset",
            dataset,
            "--data-dir",
            str(data_dir),
            "--threads",
            str(threads),
            "--single-result",
            result.name,
        ]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        }
        subprocess.run(command, check=True, env=env)
        return json.loads(Path(result.name).read_text())


def judge(run: dict[str, Any]) -> dict[str, Any]:
    target = TARGET_ACCURACY[run["dataset"]][run["framework"]]
    met = run["accuracy"] >= target
    if run["dataset"] == "mnist-t10k":
        met = met and run["train_seconds"] <= MAX_TRAIN_SECONDS
    return {
        **run,
        "target_accuracy": target,
        "target_seconds": MAX_TRAIN_SECONDS if run["dataset"] == "mnist-t10k" else None,
        "met": met,
    }


def machine_info() -> dict[str, Any]:
    model = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "platform": platform.platform(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "versions": versions,
    }


def full_mnist_present(full_dir: Path) -> bool:
    from training.datasets import SOURCES, DatasetName, dataset_dir

    folder = dataset_dir(DatasetName.MNIST, full_dir)
    return all((folder / remote.name).is_file() for remote in SOURCES[DatasetName.MNIST].files)


def print_table(runs: list[dict[str, Any]], console: Console) -> None:
    table = Table(title="Training benchmark (defaults)")
    for column in (
        "framework",
        "dataset",
        "accuracy",
        "train s",
        "total s",
        "cpu s",
        "artifact bytes",
        "target",
        "met?",
    ):
        table.add_column(column, justify="left" if column in ("framework", "dataset") else "right")
    for run in runs:
        target = f">= {run['target_accuracy']:.1%}"
        if run["target_seconds"]:
            target += f", <= {run['target_seconds']:.0f} s"
        table.add_row(
            run["framework"],
            run["dataset"],
            f"{run['accuracy']:.2%}",
            f"{run['train_seconds']:.1f}",
            f"{run['total_seconds']:.1f}",
            f"{run['cpu_seconds']:.1f}",
            f"{run['artifact_bytes']:,}",
            target,
            "[green]yes[/green]" if run["met"] else "[red]no[/red]",
        )
    console.print(table)


# Run by the other interpreter: load the three artifacts as the cloud runtimes do, predict, save.
_PREDICT_SCRIPT = """
import json, os, sys, tarfile
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import numpy as np, onnxruntime, tensorflow as tf, xgboost as xgb
art, images_file, result_file = sys.argv[1:4]
x = np.load(images_file)
with tarfile.open(os.path.join(art, "xgboost", "model.tar.gz")) as tar:
    open(os.path.join(art, "xgboost-model"), "wb").write(tar.extractfile("xgboost-model").read())
booster = xgb.Booster()
booster.load_model(os.path.join(art, "xgboost-model"))  # by file name, as the SageMaker container does
session = onnxruntime.InferenceSession(os.path.join(art, "pytorch", "model.onnx"))
serve = tf.saved_model.load(os.path.join(art, "tensorflow", "model")).signatures["serving_default"]
np.savez(
    result_file,
    xgboost=booster.predict(xgb.DMatrix(x)),
    pytorch=session.run(None, {"input": x.reshape(-1, 1, 28, 28)})[0],
    tensorflow=serve(images=tf.constant(x))["probabilities"].numpy(),
    tensorflow_28x28=serve(images=tf.constant(x.reshape(-1, 28, 28)))["probabilities"].numpy(),
)
versions = {"xgboost": xgb.__version__, "onnxruntime": onnxruntime.__version__, "tensorflow": tf.__version__}
print(json.dumps(versions))
"""


def interop_check(python: str, data_dir: Path, console: Console) -> dict[str, Any]:
    """Predictions of the same artifacts here and under ``python`` (older runtimes), compared."""
    import numpy as np

    from training.datasets import load_dataset
    from training.run import train_model
    from training.xgboost_trainer import load_model
    from training.xgboost_trainer import predict_proba as xgb_predict

    split = load_dataset("mnist-t10k", data_dir)
    x = split.x_test[:200].reshape(-1, 784).astype(np.float32) / 255
    with tempfile.TemporaryDirectory(prefix="bench-interop-") as scratch:
        art = Path(scratch)
        for framework in FRAMEWORKS:
            console.print(f"dry-run training {framework} for the interop check ...")
            train_model(framework, "mnist-t10k", data_dir, art / framework, {}, dry_run=True, threads=2)
        import onnxruntime
        import tensorflow as tf

        session = onnxruntime.InferenceSession(str(art / "pytorch" / "model.onnx"))
        serve = tf.saved_model.load(str(art / "tensorflow" / "model")).signatures["serving_default"]
        here = {
            "xgboost": xgb_predict(load_model(art / "xgboost" / "model.tar.gz"), x),
            "pytorch": np.asarray(session.run(None, {"input": x.reshape(-1, 1, 28, 28)})[0]),
            "tensorflow": serve(images=tf.constant(x))["probabilities"].numpy(),
            "tensorflow_28x28": serve(images=tf.constant(x.reshape(-1, 28, 28)))["probabilities"].numpy(),
        }
        np.save(art / "images.npy", x)
        done = subprocess.run(
            [python, "-c", _PREDICT_SCRIPT, str(art), str(art / "images.npy"), str(art / "there.npz")],
            check=True,
            capture_output=True,
            text=True,
        )
        there_versions = json.loads(done.stdout.strip().splitlines()[-1])
        there = dict(np.load(art / "there.npz"))
    comparisons = {}
    for name, expected in here.items():
        got = there[name]
        comparisons[name] = {
            "max_abs_difference": float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max()),
            "same_classes": bool((got.argmax(axis=1) == expected.argmax(axis=1)).all()),
        }
    return {
        "here": machine_info()["versions"],
        "there": there_versions,
        "images": len(x),
        "comparisons": comparisons,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from training.datasets import default_data_dir

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DEFAULT_T10K_DIR, help="folder with the t10k IDX files"
    )
    parser.add_argument(
        "--full-data-dir", type=Path, default=default_data_dir(), help="where full MNIST may be"
    )
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=DEFAULT_RESULT)
    parser.add_argument("--interop-python", help="run the interop check with this interpreter instead")
    parser.add_argument("--single", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="mnist-t10k", help=argparse.SUPPRESS)
    parser.add_argument("--single-result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.single:
        result = run_one(args.single, args.dataset, args.data_dir, args.threads)
        args.single_result.write_text(json.dumps(result))
        return 0
    console = Console(width=max(Console().width, 132))  # the table needs room even when piped
    if args.interop_python:
        check = interop_check(args.interop_python, args.data_dir, console)
        check["date"] = datetime.now(UTC).isoformat(timespec="seconds")
        INTEROP_RESULT.write_text(json.dumps(check, indent=2) + "\n")
        console.print_json(data=check)
        return (
            0
            if all(
                c["same_classes"] and c["max_abs_difference"] < 1e-5 for c in check["comparisons"].values()
            )
            else 1
        )
    machine = machine_info()
    plan = [("mnist-t10k", args.data_dir)]
    if full_mnist_present(args.full_data_dir):
        plan.append(("mnist", args.full_data_dir))
    else:
        console.print(f"full MNIST not found under {args.full_data_dir}: only mnist-t10k is run")
    runs = []
    for dataset, data_dir in plan:
        for framework in args.frameworks:
            console.print(f"training {framework} on {dataset} ...")
            runs.append(judge(run_in_subprocess(framework, dataset, data_dir, args.threads)))
    machine["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    print_table(runs, console)
    result = {
        "benchmark": "train",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "threads": args.threads,
        "machine": machine,
        "note": (
            "train_seconds is the wall time of fitting only; on a shared machine it can be pessimistic. "
            "cpu_seconds (user+system, all threads) is the steadier measure of cost."
        ),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0 if all(run["met"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

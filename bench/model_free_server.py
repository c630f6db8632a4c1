"""The ceiling of batching, for bench/load.py: a flavor's server whose model call is taken away.

    python bench/model_free_server.py --flavor F --model OUT --port P [--name bench]

Batching makes a server faster by taking the model call off the event loop (and sharing it between
requests); everything else a request costs stays on the loop: HTTP, the body budget, parsing and checking
the pixels, writing the reply. This server is `mnistctl serve --max-batch 1` with `predict` answering
from a table made by the real model at start-up (a slice and a copy, about a microsecond): its
throughput over batching off's is the most that any batching of the model call could give at that load.
Everything else is the real server's code. Its answers are the right shape and encoding but not the
digits asked about, so it is measured, never checked for accuracy.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run as a script from a checkout

from serving.app import create_app, serve_app  # noqa: E402
from serving.batching import BatchingConfig  # noqa: E402
from serving.constants import PIXELS, Flavor  # noqa: E402
from serving.models import ServedModel  # noqa: E402

TABLE_ROWS = 128  # more images than a benchmark request holds (100)


def answer_from_table(model: ServedModel, rows: int = TABLE_ROWS) -> None:
    """Replace `model.predict` by a lookup: `rows` answers computed once, the first N returned for N images
    (a copy, as a runtime returns a new array). More images than `rows` is a bug of the benchmark: raise."""
    table = model.predict(np.zeros((rows, PIXELS), dtype=np.float32))

    def predict(images: np.ndarray) -> np.ndarray:
        if len(images) > rows:
            raise ValueError(f"the model-free server answers at most {rows} images a call, got {len(images)}")
        return table[: len(images)].copy()

    model.predict = predict  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--flavor", type=Flavor, required=True)
    parser.add_argument("--model", type=Path, required=True, help="the flavor's OUT folder")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="bench")
    args = parser.parse_args()
    app = create_app(args.flavor, args.model, args.name, BatchingConfig(max_batch=1))
    answer_from_table(app.state.model)
    serve_app(app, port=args.port)  # as `mnistctl serve` serves: the same server, but for the model call


if __name__ == "__main__":
    main()

"""The peer of bench/load.py: KServe's Python model server around the same ONNX artifact, v1 protocol.

    <kserve venv>/bin/python bench/kserve_peer.py --model OUT --port P --name bench

Runs in its own virtualenv (bench/load.py creates it: kserve's pins clash with the project's), so it
imports nothing from this repository. A minimal `kserve.Model`, as KServe's docs write one: `load` opens
an onnxruntime session (one intra-op thread, as `mnistctl serve` uses), `predict` takes
`{"instances": [784 floats, ...]}` and returns `{"predictions": [[10 probabilities], ...]}`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="OUT folder holding model.onnx")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--name", default="bench")
    args, _ = parser.parse_known_args()
    sys.argv = sys.argv[:1]  # kserve parses the command line itself when imported

    import kserve  # type: ignore[import-not-found]  (in the peer's own venv only)
    import numpy as np
    import onnxruntime
    import uvicorn

    # kserve's REST server hard-codes host 0.0.0.0; the benchmark stays on loopback.
    config_init = uvicorn.Config.__init__

    def loopback_only(self: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        kwargs["host"] = "127.0.0.1"
        config_init(self, *args, **kwargs)

    uvicorn.Config.__init__ = loopback_only  # type: ignore[method-assign]

    class OnnxMnist(kserve.Model):
        def __init__(self, name: str, path: Path) -> None:
            super().__init__(name)
            self.path = path

        def load(self) -> bool:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            self.session = onnxruntime.InferenceSession(
                str(self.path), options, providers=["CPUExecutionProvider"]
            )
            self.input_name = self.session.get_inputs()[0].name
            self.ready = True
            return self.ready

        def predict(self, payload: Any, headers: Any = None, response_headers: Any = None) -> Any:
            images = np.asarray(payload["instances"], dtype=np.float32).reshape(-1, 1, 28, 28)
            (probabilities,) = self.session.run(None, {self.input_name: images})
            return {"predictions": np.asarray(probabilities).tolist()}

    model = OnnxMnist(args.name, args.model / "model.onnx")
    model.load()
    kserve.ModelServer(http_port=args.port, workers=1, enable_grpc=False).start([model])


if __name__ == "__main__":
    main()

"""bench/model_free_server.py, the ceiling of bench/load.py's speedups: the real server of a flavor whose
model call is a table lookup. It must not call the runtime, and must answer like the real server."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from bench.load import target_for
from bench.model_free_server import answer_from_table
from serving.app import create_app, serve_in_thread
from serving.batching import BatchingConfig
from serving.constants import Flavor


def test_the_model_free_server_answers_every_request_size_without_its_runtime(model_dir, held_out):
    app = create_app(Flavor.WATSONX, model_dir(Flavor.WATSONX), "bench", BatchingConfig(max_batch=1))
    model = app.state.model
    answer_from_table(model)
    model._session = None  # a call that reached onnxruntime would now fail with a 500
    with serve_in_thread(app) as url:
        for images in (1, 50):
            target = target_for("watsonx", url, held_out[0][:images])
            request = urllib.request.Request(url + target.path, target.body, target.headers, method="POST")
            with urllib.request.urlopen(request, timeout=30) as response:
                reply = json.load(response)
            probabilities = np.asarray(reply["predictions"][0]["values"])
            assert probabilities.shape == (images, 10)
            np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_the_table_refuses_more_images_than_it_holds(model_dir):
    app = create_app(Flavor.WATSONX, model_dir(Flavor.WATSONX), "bench", BatchingConfig(max_batch=1))
    answer_from_table(app.state.model, rows=4)
    assert app.state.model.predict(np.zeros((4, 784), np.float32)).shape == (4, 10)
    with pytest.raises(ValueError, match="at most 4 images"):
        app.state.model.predict(np.zeros((5, 784), np.float32))
    app.state.batcher.close()

"""The champion gate reads `1 - validation:merror` on SageMaker and metrics.json's `accuracy` locally:
for the same model and validation channel they are the same number, and merror is reported by default."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb

from training.xgboost_trainer import Hyperparameters, evaluate


def test_accuracy_is_one_minus_the_merror_the_builtin_algorithm_reports():
    rng = np.random.default_rng(0)
    features = rng.random((600, 784), dtype=np.float32)
    labels = rng.integers(0, 10, 600)
    features[np.arange(600), labels * 70] += 2.0  # a learnable signal, far from perfect in 4 rounds
    dtrain = xgb.DMatrix(features[:400], label=labels[:400])
    dvalid = xgb.DMatrix(features[400:], label=labels[400:])
    hp = Hyperparameters.from_strings({"num_round": "4", "max_depth": "3"})
    assert hp.eval_metrics == ["merror", "mlogloss"]  # what the stack sends SageMaker, split as it splits
    history: dict = {}
    booster = xgb.train(
        hp.booster_params(), dtrain, hp.num_round, evals=[(dvalid, "validation")], evals_result=history
    )
    merror = history["validation"]["merror"][-1]
    assert 0.0 < merror < 0.9
    assert evaluate(booster, dvalid) == pytest.approx(1.0 - merror, abs=1e-6)

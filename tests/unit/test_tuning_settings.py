"""The `tuning` key: a search per model, checked against the trainer before any resource exists."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from infra.settings import (
    TUNABLE_HYPERPARAMETERS,
    Framework,
    ObjectiveGoal,
    ScalingType,
    TuningRange,
    TuningStrategy,
    load_settings,
)


class FakeConfig(dict):
    """Stands in for pulumi.Config: values are the raw strings `pulumi config set` stores."""

    def get(self, key: str) -> str | None:  # type: ignore[override]
        return dict.get(self, key)


AWS = FakeConfig(region="us-east-1")
GCP = FakeConfig(project="my-project")


def _load(tuning: Any, stack: str = "local", tmp_path: Path | None = None, **config: str):
    return load_settings(
        stack,
        FakeConfig(tuning=json.dumps(tuning), **config),
        aws_config=AWS,
        gcp_config=GCP,
        project_root=tmp_path or Path("/tmp"),
    )


def _xgboost(**search: Any) -> dict[str, Any]:
    return {"xgboost": {"maxTrials": 4, "ranges": {"eta": {"min": 0.05, "max": 0.5}}, **search}}


def test_no_tuning_key_means_no_tuning():
    settings = load_settings("aws", FakeConfig(), aws_config=AWS)
    assert settings.tuning == {}


def test_a_search_is_read_with_its_defaults_and_the_models_objective():
    settings = _load(
        {
            "xgboost": {
                "maxTrials": 4,
                "ranges": {"eta": {"min": 0.05, "max": 0.5, "scale": "Logarithmic"}, "max_depth": [4, 6, 8]},
            },
            "pytorch": {"maxTrials": 6, "parallelTrials": 2, "ranges": {"dropout": [0.1, 0.3]}},
        }
    )
    xgboost = settings.tuning[Framework.XGBOOST]
    assert (xgboost.max_trials, xgboost.parallel_trials, xgboost.strategy) == (4, 1, TuningStrategy.BAYESIAN)
    assert xgboost.ranges["eta"] == TuningRange(min=0.05, max=0.5, scale=ScalingType.LOGARITHMIC)
    assert xgboost.ranges["max_depth"] == [4, 6, 8]
    assert xgboost.objective is not None
    assert (xgboost.objective.metric, xgboost.objective.goal) == ("validation:merror", ObjectiveGoal.MINIMIZE)
    pytorch = settings.tuning[Framework.PYTORCH]
    assert pytorch.objective is not None
    assert (pytorch.objective.metric, pytorch.objective.goal) == ("accuracy", ObjectiveGoal.MAXIMIZE)
    assert pytorch.parallel_trials == 2


def test_an_objective_is_a_name_or_a_metric_with_its_goal():
    by_name = _load(_xgboost(objective="validation:mlogloss")).tuning[Framework.XGBOOST].objective
    spelled = _load(_xgboost(objective={"metric": "validation:mlogloss", "goal": "Minimize"}))
    assert by_name is not None and by_name.goal is ObjectiveGoal.MINIMIZE
    assert spelled.tuning[Framework.XGBOOST].objective == by_name


def test_aws_and_gcp_take_the_strategies_their_services_offer():
    assert (
        _load(_xgboost(strategy="Hyperband"), stack="aws").tuning[Framework.XGBOOST].strategy == "Hyperband"
    )
    tensorflow = {"tensorflow": {"maxTrials": 2, "strategy": "Random", "ranges": {"dropout": [0.1, 0.2]}}}
    assert _load(tensorflow, stack="gcp").tuning[Framework.TENSORFLOW].strategy is TuningStrategy.RANDOM


@pytest.mark.parametrize(
    ("tuning", "stack", "message"),
    [
        ([1], "local", "mnist-platform:tuning must be a JSON map of model -> search"),
        (
            {"xgbost": {"maxTrials": 1, "ranges": {"eta": [0.1]}}},
            "local",
            "tuning.xgbost.[key]: Input should be 'xgboost', 'tensorflow' or 'pytorch', got 'xgbost'",
        ),
        (
            {"pytorch": {"maxTrials": 1, "ranges": {"dropout": [0.1]}}},
            "aws",
            "tuning names ['pytorch'], which this stack does not train; allowed: xgboost",
        ),
        (
            _xgboost(maxTrials=0),
            "local",
            "tuning.xgboost.maxTrials: Input should be greater than or equal to 1",
        ),
        (
            _xgboost(parallelTrials=5),
            "local",
            "mnist-platform:tuning.xgboost: parallelTrials (5) must not exceed maxTrials (4)",
        ),
        (_xgboost(maxtrials=4), "local", "tuning.xgboost.maxtrials: Extra inputs are not permitted"),
        (
            {"xgboost": {"maxTrials": 2, "ranges": {"etta": [0.1]}}},
            "local",
            "mnist-platform:tuning: xgboost: no tunable hyperparameter 'etta'; allowed: num_round, max_depth",
        ),
        (
            {"xgboost": {"maxTrials": 2, "ranges": {"num_class": [5]}}},
            "local",
            "no tunable hyperparameter 'num_class'",
        ),
        (
            {"xgboost": {"maxTrials": 2, "ranges": {}}},
            "local",
            "tuning.xgboost.ranges: Dictionary should have",
        ),
        (
            {"xgboost": {"maxTrials": 2, "ranges": {"eta": {"min": 0.1, "max": 0.5, "scale": "Log"}}}},
            "local",
            "tuning.xgboost.ranges.eta.range.scale: Input should be 'Auto', 'Linear', 'Logarithmic' or "
            "'ReverseLogarithmic', got 'Log'",
        ),
        (
            {"xgboost": {"maxTrials": 2, "ranges": {"eta": 3}}},
            "local",
            'ranges.eta: expected a range {"min": .., "max": .., "scale": ..} or a list of choices',
        ),
        (
            {"xgboost": {"maxTrials": 2, "ranges": {"eta": {"min": 0.5, "max": 0.1}}}},
            "local",
            "tuning.xgboost.ranges.eta.range: min (0.5) must be less than max (0.1)",
        ),
        (
            {"xgboost": {"maxTrials": 2, "ranges": {"gamma": {"min": 0, "max": 2, "scale": "Logarithmic"}}}},
            "local",
            "a Logarithmic range needs min > 0, got min 0",
        ),
        (
            {
                "xgboost": {
                    "maxTrials": 2,
                    "ranges": {"subsample": {"min": 0.5, "max": 1, "scale": "ReverseLogarithmic"}},
                }
            },
            "local",
            "a ReverseLogarithmic range must lie within 0 <= x < 1, got 0.5 to 1",
        ),
        (
            {"xgboost": {"maxTrials": 2, "ranges": {"max_depth": {"min": 2.5, "max": 8}}}},
            "local",
            "xgboost: max_depth is an integer: min and max must be whole numbers, got 2.5 to 8",
        ),
        (
            {
                "xgboost": {
                    "maxTrials": 2,
                    "ranges": {"max_depth": {"min": 1, "max": 8, "scale": "ReverseLogarithmic"}},
                }
            },
            "local",
            "ReverseLogarithmic range must lie within 0 <= x < 1, got 1 to 8",
        ),
        (
            {"xgboost": {"maxTrials": 2, "ranges": {"max_depth": [3, "x"]}}},
            "local",
            "xgboost: max_depth is an integer: the choice 'x' is not one",
        ),
        (
            {"xgboost": {"maxTrials": 2, "ranges": {"tree_method": {"min": 1, "max": 2}}}},
            "local",
            "tree_method is a string: give a list of choices, not a min/max range",
        ),
        (
            {"pytorch": {"maxTrials": 2, "ranges": {"augment": [True, 1]}}},
            "local",
            "pytorch: augment is a boolean: the choice 1 is not one",
        ),
        (
            {"xgboost": {"maxTrials": 2, "ranges": {"max_depth": list(range(31))}}},
            "local",
            "max_depth: a list of choices holds 1 to 30 values, got 31",
        ),
        (
            _xgboost(objective="accuracy"),
            "local",
            "xgboost: cannot be tuned on 'accuracy'; allowed objectives: validation:merror (Minimize), "
            "validation:mlogloss (Minimize)",
        ),
        (
            _xgboost(objective="f1"),
            "local",
            "tuning.xgboost.objective: unknown objective 'f1'; allowed: accuracy, validation:merror",
        ),
        (
            _xgboost(objective={"metric": "validation:merror", "goal": "Maximize"}),
            "local",
            "validation:merror is to minimize, not to maximize",
        ),
        (
            _xgboost(strategy="Annealing"),
            "local",
            "xgboost.strategy: Input should be 'Bayesian', 'Random', 'Grid' or 'Hyperband', got 'Annealing'",
        ),
        (
            _xgboost(strategy="Grid"),
            "local",
            "strategy Grid searches lists of choices only (as SageMaker and Vertex require), but eta is a",
        ),
        (
            {"tensorflow": {"maxTrials": 2, "strategy": "Hyperband", "ranges": {"dropout": [0.1, 0.2]}}},
            "gcp",
            "tensorflow.strategy 'Hyperband' is not one Vertex AI offers; allowed on gcp: Bayesian, Random",
        ),
    ],
)
def test_a_bad_search_names_the_key_the_value_and_what_is_allowed(tuning: Any, stack: str, message: str):
    with pytest.raises(ValueError) as error:
        _load(tuning, stack=stack)
    assert message in str(error.value)
    assert "Traceback" not in str(error.value)


def test_the_tunable_names_and_types_are_the_trainers_own():
    # Listed in infra/settings.py so reading config imports no ML framework; kept in step here.
    from training import tf_trainer, torch_trainer, xgboost_trainer

    contract = {"objective", "num_class", "eval_metric"}  # what the gate and the servers rely on
    for model, trainer in (
        (Framework.XGBOOST, xgboost_trainer),
        (Framework.TENSORFLOW, tf_trainer),
        (Framework.PYTORCH, torch_trainer),
    ):
        hints = typing.get_type_hints(trainer.Hyperparameters)
        assert TUNABLE_HYPERPARAMETERS[model] == {n: t for n, t in hints.items() if n not in contract}, model

"""The endpoint's name suffix, as the engine drives its provider: one value per deployment, kept across
updates, new for a new instance type, and never the same twice (so the endpoint's log group name, which
SageMaker may recreate after the stack deleted it, is never asked for again)."""

from __future__ import annotations

from typing import Any

from infra.aws.names import sagemaker_name
from infra.aws.unique_suffix import UniqueSuffixProvider

PREFIX = "mnist-aws-xgboost"


def _inputs(instance_type: str) -> dict[str, Any]:
    return {"keepers": {"instance_type": instance_type}, "length_bytes": 4}


def _up(provider: UniqueSuffixProvider, state: dict[str, Any] | None, instance_type: str) -> dict[str, Any]:
    """One `pulumi up`: create, or diff and replace (the old value is dropped at the end)."""
    news = _inputs(instance_type)
    if state is not None and not provider.diff(state["suffix"], state, news).changes:
        return state
    return {**news, **(provider.create(news).outs or {})}


def _endpoint_log_group(state: dict[str, Any]) -> str:
    return f"/aws/sagemaker/Endpoints/{sagemaker_name(PREFIX, state['suffix'])}"


def test_an_update_with_the_same_instance_type_keeps_the_name() -> None:
    provider = UniqueSuffixProvider()
    state = _up(provider, None, "ml.m5.large")
    assert _up(provider, state, "ml.m5.large") == state


def test_a_redeploy_after_destroy_gets_a_log_group_name_never_used_before() -> None:
    provider = UniqueSuffixProvider()
    first = _up(provider, None, "ml.m5.large")
    provider.delete(first["suffix"], first)  # pulumi destroy
    second = _up(provider, None, "ml.m5.large")  # the next pulumi up, same config
    assert _endpoint_log_group(second) != _endpoint_log_group(first)


def test_switching_back_to_an_earlier_instance_type_gets_a_new_name() -> None:
    provider = UniqueSuffixProvider()
    names = []
    state = None
    for instance_type in ("ml.m5.large", "ml.c5.large", "ml.m5.large"):
        state = _up(provider, state, instance_type)
        names.append(_endpoint_log_group(state))
    assert len(set(names)) == 3, names


def test_the_suffix_makes_a_valid_sagemaker_endpoint_name() -> None:
    state = _up(UniqueSuffixProvider(), None, "ml.m5.large")
    name = sagemaker_name(PREFIX, state["suffix"])
    assert len(state["suffix"]) == 8 and len(name) <= 63

"""Drive the pack's policy objects the way the analyzer server does, without a server.

`run_resource_policy` / `run_stack_policy` build the SDK's own argument objects (props wrapped in its
unknown-checking proxy, as `Analyze`/`AnalyzeStack` do) and collect what `report_violation` receives.
`evaluate_stack` feeds every registered resource of a stack to every policy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

from pulumi_policy import (
    EnforcementLevel,
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import unknown_checking_proxy

from infra.plan import RegisteredResource
from policy import rules


@dataclass(frozen=True)
class Finding:
    policy: str
    level: EnforcementLevel
    message: str
    urn: str | None
    resource_type: str = ""

    def __str__(self) -> str:
        return f"[{self.level.value}] {self.policy}: {self.resource_type} {self.urn or ''}: {self.message}"


def policy_named(name: str) -> ResourceValidationPolicy | StackValidationPolicy:
    return next(p for p in rules.POLICIES if p.name == name)


def options(protect: bool = False, secret_outputs: Sequence[str] = ()) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), list(secret_outputs))


@contextmanager
def stack_context(
    stack: str, customer_key: bool = False, budget: rules.BudgetLimits | None = None, region: str = ""
) -> Iterator[None]:
    """What the CLI gives the policy process: the stack's name and its config."""
    with (
        mock.patch.object(rules, "current_stack", lambda: stack),
        mock.patch.object(rules, "stack_asks_for_customer_key", lambda: customer_key),
        mock.patch.object(rules, "stack_budget", lambda: budget or rules.BudgetLimits()),
        mock.patch.object(rules, "stack_region", lambda: region),
    ):
        yield


def run_resource_policy(
    name: str,
    resource_type: str,
    props: Mapping[str, Any],
    *,
    config: Mapping[str, Any] | None = None,
    provider_props: Mapping[str, Any] | None = None,
    protect: bool = False,
    secret_outputs: Sequence[str] = (),
    urn: str = "urn:pulumi:test::mnist-platform::test::res",
) -> list[str]:
    policy = policy_named(name)
    assert isinstance(policy, ResourceValidationPolicy)
    provider = None
    if provider_props is not None:
        provider = PolicyProviderResource(
            f"pulumi:providers:{resource_type.split(':')[0]}",
            unknown_checking_proxy(dict(provider_props)),
            "urn:pulumi:test::mnist-platform::pulumi:providers::default",
            "default",
        )
    args = ResourceValidationArgs(
        resource_type,
        unknown_checking_proxy(dict(props)),
        urn,
        urn.rsplit("::", 1)[-1],
        options(protect, secret_outputs),
        provider,
        dict(config) if config is not None else None,
    )
    messages: list[str] = []
    policy.validate(args, lambda message, _urn=None: messages.append(message))
    return messages


def policy_resources(resources: Sequence[RegisteredResource]) -> list[PolicyResource]:
    """The stack as AnalyzeStack hands it over: outputs, parents and property dependencies linked."""
    built = {
        r.urn: PolicyResource(
            r.resource_type,
            unknown_checking_proxy(dict(r.outputs)),
            r.urn,
            r.name,
            options(r.protect, r.additional_secret_outputs),
            None,
            None,
            [],
            {},
        )
        for r in resources
    }
    for r in resources:
        resource = built[r.urn]
        resource.parent = built.get(r.parent or "")
        resource.dependencies = [built[u] for u in r.dependencies if u in built]
        resource.property_dependencies = {
            key: [built[u] for u in urns if u in built] for key, urns in r.property_dependencies.items()
        }
    return list(built.values())


def run_stack_policy(name: str, resources: Sequence[PolicyResource]) -> list[tuple[str, str | None]]:
    policy = policy_named(name)
    assert isinstance(policy, StackValidationPolicy)
    found: list[tuple[str, str | None]] = []
    policy.validate(
        StackValidationArgs(list(resources)), lambda message, urn=None: found.append((message, urn))
    )
    return found


def evaluate_stack(
    resources: Sequence[RegisteredResource],
    stack: str,
    customer_key: bool = False,
    budget: rules.BudgetLimits | None = None,
    region: str = "",
) -> list[Finding]:
    """Every policy of the pack over every resource, as `pulumi preview --policy-pack policy` would."""
    findings: list[Finding] = []
    with stack_context(stack, customer_key, budget, region):
        for policy in rules.POLICIES:
            level = policy.enforcement_level or EnforcementLevel.ADVISORY
            if isinstance(policy, ResourceValidationPolicy):
                for r in resources:
                    for message in run_resource_policy(
                        policy.name,
                        r.resource_type,
                        r.inputs,
                        provider_props=r.provider.props if r.provider else None,
                        protect=r.protect,
                        secret_outputs=r.additional_secret_outputs,
                        urn=r.urn,
                    ):
                        findings.append(Finding(policy.name, level, message, r.urn, r.resource_type))
            else:
                types = {r.urn: r.resource_type for r in resources}
                for message, urn in run_stack_policy(policy.name, policy_resources(resources)):
                    findings.append(Finding(policy.name, level, message, urn, types.get(urn or "", "")))
    return findings

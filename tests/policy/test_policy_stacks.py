"""Each stack the project defines, run under mocks with its own `Pulumi.<stack>.yaml`, passes the pack.

The program runs in a child process (infra/plan.py); every resource it registers is
fed to every policy as `pulumi preview --policy-pack policy` would feed it. A stack whose program does
not exist yet is skipped with the reason. A reference project written against pulumi-aws 7 proves
the same path end to end today: its good variant passes, its bad variant trips every mandatory rule.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pytest
from evaluate import Finding, evaluate_stack
from pulumi_policy import EnforcementLevel

from infra.plan import PROJECT, REPO_ROOT, collect, missing_program_reason, stack_config
from policy import rules
from policy.rules import plaintext_secret_violations

REFERENCE = Path(__file__).resolve().parent / "reference_project"
KNOWN_STACKS = ("aws", "gcp", "ibm", "local")
STACKS = sorted({*KNOWN_STACKS, *(p.name.split(".")[1] for p in REPO_ROOT.glob("Pulumi.*.yaml"))})
# Secrets a user sets with `pulumi config set --secret` (never in a stack file), as the CLI passes them.
USER_SECRETS: dict[str, dict[str, dict[str, str]]] = {"ibm": {"ibm:apiKey": {"secure": "v1:policy-tests"}}}


def asks_for_customer_key(stack: str, root: Path = REPO_ROOT) -> bool:
    config = stack_config(stack, root)
    return any(config.get(key) for key in rules.CUSTOMER_KEY_STACK_CONFIG)


def mandatory(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.level is EnforcementLevel.MANDATORY]


def show(findings: list[Finding]) -> str:
    return "\n".join(str(f) for f in findings)


def offline_data(folder: Path) -> dict[str, str]:
    """Config that points a stack at the offline MNIST protocol (a copy of tests/data, so that
    whatever a program caches next to the data stays in `folder`). Which images a stack uploads is
    nothing the pack guards; a download from the internet is something this machine cannot do."""
    copy = folder / "mnist"
    shutil.copytree(REPO_ROOT / "tests" / "data" / "mnist", copy, ignore=shutil.ignore_patterns("staging"))
    return {f"{PROJECT}:dataset": "mnist-t10k", f"{PROJECT}:dataDir": str(copy)}


@pytest.fixture(scope="module", params=STACKS)
def stack_run(request, tmp_path_factory):
    stack = request.param
    reason = missing_program_reason(stack)
    if reason:
        pytest.skip(f"stack {stack}: {reason}; the test runs once it exists")
    overrides = {**offline_data(tmp_path_factory.mktemp(f"{stack}-data")), **USER_SECRETS.get(stack, {})}
    resources = collect(stack, overrides=overrides)
    return stack, resources, evaluate_stack(resources, stack, asks_for_customer_key(stack))


def test_stack_passes_every_mandatory_policy(stack_run):
    stack, resources, findings = stack_run
    assert resources, f"the {stack} stack registered no resource under mocks"
    assert mandatory(findings) == [], (
        f"the {stack} stack violates mandatory policies:\n{show(mandatory(findings))}"
    )
    for finding in findings:  # advisory: shown in the summary, as `pulumi preview` shows them
        warnings.warn(f"{stack}: {finding}", stacklevel=1)


def test_stack_credentials_are_pulumi_secrets(stack_run):
    # Stricter than the pack can be (policies see secrets decrypted): under mocks the secretness of
    # each input is visible, so every credential-like input must really be a Pulumi secret.
    stack, resources, _ = stack_run
    leaks = []
    for resource in resources:
        for message in plaintext_secret_violations(resource.resource_type, resource.inputs):
            path = message.split(" ", 2)[1]
            if not any(path == s or path.startswith(f"{s}.") for s in resource.secret_paths):
                leaks.append(f"{resource.urn}: {path}")
    assert leaks == [], f"the {stack} stack passes credentials in plain text:\n" + "\n".join(leaks)


# ---- the reference project ------------------------------------------------------------------------


def test_reference_stack_passes_the_whole_pack():
    resources = collect("good", root=REFERENCE)
    types = {r.resource_type for r in resources}
    assert {
        rules.SAGEMAKER_TRAINING_JOB,
        rules.SAGEMAKER_ENDPOINT_CONFIG,
        rules.S3_PUBLIC_ACCESS_BLOCK,
    } <= types
    findings = evaluate_stack(resources, "good")
    assert findings == [], show(findings)


def test_reference_stack_with_every_mistake_is_stopped():
    findings = evaluate_stack(collect("bad", root=REFERENCE), "bad")
    by_policy: dict[str, list[str]] = {}
    for finding in findings:
        by_policy.setdefault(finding.policy, []).append(finding.message)
    assert set(by_policy) == {p.name for p in rules.POLICIES} - {
        "storage-private",
        "storage-encrypted",
        "s3-encryption-declared",
        "budget",  # the bad stack sets no budget (test_policy_budget.py gives one)
    }, show(findings)
    no_block = by_policy["s3-public-access-blocked"]
    assert any("S3 bucket 'data' has no public access block" in m for m in no_block)
    # Findings come in the order the engine registers resources, which is not fixed: compare as sets.
    assert sorted(by_policy["least-privilege"]) == sorted(
        [
            "policy: statement #0 allows 's3:*' on Resource '*'; "
            "name the actions the job needs and the ARNs it needs them on",
            "policy: statement #0 allows 'logs:*' on Resource '*'; "
            "name the actions the job needs and the ARNs it needs them on",
            "attaching arn:aws:iam::aws:policy/AmazonSageMakerFullAccess "
            "grants far more than the platform needs; write a scoped policy",
        ]
    )
    assert "the training job has no stoppingCondition.maxRuntimeInSeconds" in "\n".join(
        by_policy["training-bounded"]
    )
    assert any("'ml.p4d.24xlarge'" in m for m in by_policy["training-bounded"])
    assert any("initialInstanceCount 10" in m for m in by_policy["endpoints-bounded"])
    assert any("allows 50 instances (maxCapacity)" in m for m in by_policy["endpoints-bounded"])
    assert any(
        m.startswith("input environment.variables.IBM_API_KEY looks like a credential")
        for m in by_policy["no-plaintext-secrets"]
    )
    assert all(m.startswith("missing tags project, stack") for m in by_policy["resources-tagged"])
    assert any(
        m.startswith("stack 'bad' is not a production stack") for m in by_policy["destroy-leaves-nothing"]
    )

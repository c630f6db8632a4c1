"""The policy pack's entry point: the Pulumi CLI runs this file; nothing else may import it.

`PolicyPack(...)` starts the analyzer's gRPC server and never returns, so the rules live in
rules.py, where tests import them without a server.
"""

from pulumi_policy import EnforcementLevel, Policy, PolicyPack
from rules import POLICIES  # the CLI runs this directory as a script: rules.py is a sibling module

policies: list[Policy] = [*POLICIES]
PolicyPack("mnist-platform-guardrails", policies=policies, enforcement_level=EnforcementLevel.ADVISORY)

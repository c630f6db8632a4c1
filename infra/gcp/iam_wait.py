"""A pause between making service accounts and grants and using them: IAM propagation.

Google documents that a new service account may not be usable at once ("wait 60 seconds or more") and
that an access change "typically" takes 2 minutes and "could take 7 minutes or longer" to reach every
service (IAM docs, "Access change propagation"). The dynamic providers retry a synchronous 403
PERMISSION_DENIED for that long (infra/gcp/clients.py), but some uses of a grant fail later and
elsewhere: a custom job's replicas writing to the bucket as the training account, a build reading its
source and pushing as the build account, a serving container reading as the serving account. Those end
the job, build or deployment FAILED instead of answering 403, so the stack waits here before them.

`create` sleeps `seconds`; a changed set of grants replaces the wait (and so waits again); a re-run with
the same grants waits for nothing; `delete` has nothing to remove. pulumiverse's `time.Sleep` does the
same, but is one more provider plugin to install for one sleep.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider

from infra.dynamic import changed_keys, log, state_of

# Google's "typically 2 minutes"; the providers' own retries cover the longer tail.
DEFAULT_PROPAGATION_SECONDS = 120.0


class IamPropagationProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        seconds = float(props.get("seconds") or 0.0)
        log(f"waiting {seconds:.0f}s for {len(props.get('grants') or [])} new IAM grants to propagate")
        time.sleep(seconds)
        return CreateResult(id_="iam-propagation", outs=state_of(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, ("grants",))
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


class IamPropagation(pulumi.dynamic.Resource, module="gcp", name="IamPropagation"):
    """Done `seconds` after every resource in `grants` exists; what uses those grants depends on it."""

    def __init__(
        self,
        name: str,
        grants: Sequence[pulumi.CustomResource],
        seconds: float = DEFAULT_PROPAGATION_SECONDS,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"grants": [grant.id for grant in grants], "seconds": seconds}
        super().__init__(IamPropagationProvider(), name, props, opts)

"""A model deployed to a `gcp.vertex.AiEndpoint`, taking all of its traffic.

pulumi-gcp cannot deploy a model (terraform-provider-google #15303), so this provider calls the v1
EndpointServiceClient. `create` deploys with `traffic_split {"0": 100}` (the new model takes all traffic)
and waits. A new model (or new machines) is a new deployment, created *before* the old one is undeployed
(Pulumi's default create-before-delete), so the endpoint never stops serving; meanwhile both are billed
and count against the serving quota. `delete` undeploys (404: already gone); it always runs before the
model's delete, since the deployment depends on the model.

A deploy that times out (or is interrupted) is not left to finish unseen: a deployment the operation
makes later would bill by the hour with nothing in the state to undeploy it. `create` cancels the
operation (google.longrunning's CancelOperation, "best effort"), waits for it to end and undeploys
whatever it deployed all the same.

A DeployedModel has no labels (aiplatform v1), so its identity (infra.dynamic.identity: the resource and
every input that forces a replacement) is in its display name, `<display_name>-<identity>`. A `pulumi up`
killed after the deploy finished leaves it serving with nothing in the state; `create` first looks on the
endpoint for a deployed model of that display name that serves what this create would deploy (the model,
machine type, replica counts, account) and adopts it. One of the same name that serves something else is
the deployment being replaced after `pulumi refresh` found it changed in the console: it is left to the
engine, which undeploys it once the replacement serves. A deploy still running when `up` was killed is
not on the endpoint yet (and its operation does not say what it deploys): `create` first waits for every
deploy in flight on the endpoint, which belongs to the stack, then looks.

`read` reports what the endpoint really serves: a deployed model that is gone is gone, one whose machine
type, replica counts or model changed reports those, and its share of the endpoint's traffic is recorded;
`diff` replaces a deployment that no longer takes all of it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from google.api_core import exceptions
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, log, state_of
from infra.gcp.clients import GcpProviderError, endpoint_service, ignore_not_found, retrying, wait_for
from infra.gcp.names import resource_id

DEPLOY_WAIT_SECONDS = 3600.0  # provisioning serving nodes takes 10-30 minutes
UNDEPLOY_WAIT_SECONDS = 1800.0
# How long a timed-out deploy is watched after its cancel, to undeploy what it may still deploy.
ABANDON_WAIT_SECONDS = 1800.0
_REPLACE_KEYS = (
    "project",
    "region",
    "endpoint",
    "model",
    "display_name",
    "instance_type",
    "min_replicas",
    "max_replicas",
    "service_account",
    "api_endpoint",
)
FULL_TRAFFIC = 100
IN_FLIGHT_POLL_SECONDS = 5.0  # how often a deployment left running by an interrupted `up` is polled


@dataclass
class VertexDeploymentArgs:
    """Inputs of a VertexDeployment (the policy pack reads instance_type, min_replicas, max_replicas)."""

    project: pulumi.Input[str]
    region: pulumi.Input[str]
    endpoint: pulumi.Input[str]
    """The endpoint's ID (the AiEndpoint's numeric `name`)."""
    model: pulumi.Input[str]
    """The model's resource name, projects/P/locations/L/models/ID."""
    display_name: pulumi.Input[str]
    service_account: pulumi.Input[str]
    """Email of the account the serving container runs as."""
    instance_type: str = "n1-standard-2"
    min_replicas: int = 1
    max_replicas: int = 2
    api_endpoint: str | None = None
    """Tests only: a loopback fake of the Vertex AI API."""


def endpoint_name(props: Mapping[str, Any]) -> str:
    return f"projects/{props['project']}/locations/{props['region']}/endpoints/{props['endpoint']}"


def deployed_display_name(props: Mapping[str, Any]) -> str:
    """The deployed model's display name: the resource's display name and its identity."""
    return f"{props['display_name']}-{identity(props, _REPLACE_KEYS)}"


def deployed_model_body(props: Mapping[str, Any]) -> dict[str, Any]:
    """The DeployedModel to create (field names of aiplatform_v1.DeployedModel)."""
    return {
        "model": props["model"],
        "display_name": deployed_display_name(props),
        "service_account": props["service_account"],
        "dedicated_resources": {
            "machine_spec": {"machine_type": props["instance_type"]},
            "min_replica_count": int(props["min_replicas"]),
            "max_replica_count": int(props["max_replicas"]),
        },
    }


def served_by(deployed: Any) -> dict[str, Any]:
    """What a DeployedModel (as the endpoint reports it) serves, in the provider's input names."""
    resources = deployed.dedicated_resources
    return {
        "model": deployed.model,
        "instance_type": resources.machine_spec.machine_type,
        "min_replicas": int(resources.min_replica_count),
        "max_replicas": int(resources.max_replica_count),
        "service_account": deployed.service_account,
    }


def serves_what_props_ask(served: Mapping[str, Any], props: Mapping[str, Any]) -> bool:
    """Whether a deployed model serves the model, machines and account `props` ask for (a model is
    compared by its ID: Vertex names it by project number, and may add a version `@N`)."""
    return (
        _model_id(served["model"]) == _model_id(str(props["model"]))
        and served["instance_type"] == props["instance_type"]
        and int(served["min_replicas"]) == int(props["min_replicas"])
        and int(served["max_replicas"]) == int(props["max_replicas"])
        and served["service_account"] == props["service_account"]
    )


def _model_id(model: str) -> str:
    return resource_id(model).split("@", 1)[0]


def traffic_after_undeploy(
    traffic: Mapping[str, int], leaving: str, remaining: list[str]
) -> dict[str, int] | None:
    """The split to send with an undeploy: the leaving model's share goes to another deployed model.

    None when no other model remains (Vertex accepts undeploying the last one without a split)."""
    others = [m for m in remaining if m != leaving]
    if not others:
        return None
    split = {m: int(traffic.get(m, 0)) for m in others}
    if sum(split.values()) != 100:
        split = {m: 0 for m in others}
        split[others[-1]] = 100  # the most recently deployed one
    return split


class VertexDeploymentProvider(ResourceProvider):
    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> CreateResult:
        from google.cloud import aiplatform_v1

        client = endpoint_service(props["region"], props.get("api_endpoint"))
        endpoint = endpoint_name(props)
        _wait_for_deploys_in_flight(client, endpoint)
        adopted = _left_by_an_interrupted_create(client, endpoint, props)
        if adopted is not None:
            return CreateResult(
                id_=f"{endpoint}/deployedModels/{adopted}",
                outs={
                    **state_of(props),
                    "deployed_model_id": adopted,
                    "endpoint_name": endpoint,
                    "traffic_percent": _traffic_of(client, endpoint, adopted),
                },
            )
        log(
            f"deploying {props['model']} to {endpoint} "
            f"({props['min_replicas']:.0f}-{props['max_replicas']:.0f} x {props['instance_type']})"
        )
        operation = retrying(
            client.deploy_model,
            endpoint=endpoint,
            deployed_model=aiplatform_v1.DeployedModel(deployed_model_body(props)),
            traffic_split={"0": 100},
        )
        try:
            response = wait_for(operation, f"deploying to {endpoint}", DEPLOY_WAIT_SECONDS)
        except exceptions.GoogleAPICallError as error:
            raise GcpProviderError(
                f"deploying {props['model']} to {endpoint} failed: {error.message}. The serving container "
                "must answer its health route on AIP_HTTP_PORT; see the endpoint's logs in the console."
            ) from error
        except GcpProviderError as error:  # timed out
            _abandon(client, operation, endpoint)
            raise GcpProviderError(
                f"deploying {props['model']} to {endpoint} did not finish within {DEPLOY_WAIT_SECONDS:.0f}s; "
                "it was cancelled (and undeployed if it had finished meanwhile), so nothing bills for it. "
                "Check the serving quota and the container's start-up time, then run `pulumi up` again."
            ) from error
        except BaseException:  # interrupted (Ctrl-C): same clean-up, then let it through
            _abandon(client, operation, endpoint)
            raise
        deployed_id = response.deployed_model.id
        _verify_serving(client, endpoint, deployed_id, props)
        log(f"deployed model {deployed_id} serves 100% of {endpoint}")
        return CreateResult(
            id_=f"{endpoint}/deployedModels/{deployed_id}",
            outs={
                **state_of(props),
                "deployed_model_id": deployed_id,
                "endpoint_name": endpoint,
                "traffic_percent": FULL_TRAFFIC,
            },
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        traffic = olds.get("traffic_percent")
        if traffic is not None and int(traffic) != FULL_TRAFFIC:
            # `pulumi refresh` found the endpoint's split changed by hand: a new deployment takes it all.
            replaces = [*replaces, "traffic_percent"]
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        """What the endpoint really serves under this deployed model's ID: gone when it is no longer there
        (undeployed in the console, or the endpoint deleted); otherwise its model, machines, replicas and
        share of the traffic, so the next `up` replaces a deployment changed behind the stack's back."""
        client = endpoint_service(props["region"], props.get("api_endpoint"))
        endpoint = ignore_not_found(client.get_endpoint, name=endpoint_name(props))
        deployed_id = str(props.get("deployed_model_id") or "")
        found = [m for m in endpoint.deployed_models if m.id == deployed_id] if endpoint is not None else []
        if endpoint is None or not found:
            return ReadResult(None, {})
        served = served_by(found[0])
        if _model_id(served["model"]) == _model_id(str(props.get("model") or "")):
            served["model"] = props["model"]  # the same model, however Vertex spells its name
        traffic = int(dict(endpoint.traffic_split).get(deployed_id, 0))
        return ReadResult(id_, {**state_of(props), **served, "traffic_percent": traffic})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        client = endpoint_service(props["region"], props.get("api_endpoint"))
        name, deployed_id = endpoint_name(props), str(props.get("deployed_model_id") or "")
        endpoint = ignore_not_found(client.get_endpoint, name=name)
        if endpoint is None or deployed_id not in {m.id for m in endpoint.deployed_models}:
            log(f"deployed model {deployed_id} is no longer on {name}")
            return
        _undeploy(client, endpoint, deployed_id)


def _left_by_an_interrupted_create(client: Any, endpoint: str, props: Mapping[str, Any]) -> str | None:
    """The ID of a deployed model on `endpoint` with this create's identity (its display name) serving
    what `props` ask for: a deploy an interrupted `pulumi up` finished, to adopt. None when there is none."""
    current = retrying(client.get_endpoint, name=endpoint)
    wanted = deployed_display_name(props)
    for deployed in current.deployed_models:
        if deployed.display_name != wanted:
            continue
        if not serves_what_props_ask(served_by(deployed), props):
            log(f"deployed model {deployed.id} has this identity but serves something else: being replaced")
            continue
        log(f"deployed model {deployed.id} on {endpoint} adopted: deployed by an interrupted `pulumi up`")
        return str(deployed.id)
    return None


def _wait_for_deploys_in_flight(client: Any, endpoint: str) -> None:
    """Wait for every DeployModel still running on `endpoint` (the stack's own). One an interrupted
    `pulumi up` started is not on the endpoint until it finishes, and its operation does not say what it
    deploys; once it has finished, what it deployed is found by its display name and adopted instead of
    being deployed a second time."""
    listing = retrying(client.list_operations, request={"name": endpoint})
    running = [
        operation
        for operation in listing.operations
        if not operation.done and operation.metadata.type_url.endswith(".DeployModelOperationMetadata")
    ]
    deadline = time.monotonic() + DEPLOY_WAIT_SECONDS
    for operation in running:
        log(f"waiting for {operation.name}, a deployment an interrupted `pulumi up` started")
        while not operation.done:
            if time.monotonic() > deadline:
                raise GcpProviderError(
                    f"the deployment {operation.name} to {endpoint} is still running after "
                    f"{DEPLOY_WAIT_SECONDS:.0f}s; see the endpoint in the console, then run `pulumi up` again"
                )
            time.sleep(IN_FLIGHT_POLL_SECONDS)
            operation = retrying(client.get_operation, request={"name": operation.name})


def serving_problem(endpoint: Any, deployed_id: str, props: Mapping[str, Any]) -> str | None:
    """Why `endpoint` (as Vertex AI reports it) does not serve the new deployment `deployed_id` with what
    `props` ask and all of its traffic, in the endpoint's own terms; None when it does."""
    found = [m for m in endpoint.deployed_models if m.id == deployed_id]
    split = dict(endpoint.traffic_split)
    if not found:
        listed = [m.id for m in endpoint.deployed_models]
        return f"its deployedModels ({listed}) do not include the new deployed model {deployed_id}"
    served = served_by(found[0])
    if not serves_what_props_ask(served, props):
        return f"deployed model {deployed_id} serves {served}, not {props['model']} as asked"
    share = int(split.get(deployed_id, 0))
    if share != FULL_TRAFFIC:
        return f"its trafficSplit {split} gives the new deployed model {deployed_id} {share} %"
    return None


def _verify_serving(client: Any, endpoint: str, deployed_id: str, props: Mapping[str, Any]) -> None:
    """Read the endpoint back after the deploy: fail the create unless it serves the new model with all of
    its traffic. The new deployed model is then undeployed (nothing bills for it) and Pulumi keeps the
    deployment it was to replace, which is left serving (docs/gate.md "What is verified")."""
    current = retrying(client.get_endpoint, name=endpoint)
    problem = serving_problem(current, deployed_id, props)
    if problem is None:
        return
    if any(m.id == deployed_id for m in current.deployed_models):
        _undeploy(client, current, deployed_id)
    raise GcpProviderError(
        f"deploying {props['model']} to {endpoint} did not take: {problem}. The new deployed model was "
        "undeployed; the deployment it was to replace keeps serving. Look at the endpoint in the console "
        "(something may have changed its traffic split meanwhile), then run `pulumi up` again."
    )


def _traffic_of(client: Any, endpoint: str, deployed_id: str) -> int:
    return int(dict(retrying(client.get_endpoint, name=endpoint).traffic_split).get(deployed_id, 0))


def _undeploy(client: Any, endpoint: Any, deployed_id: str) -> None:
    """Undeploy `deployed_id` from `endpoint` (as read just before), its traffic moved to what remains."""
    name = endpoint.name
    split = traffic_after_undeploy(
        dict(endpoint.traffic_split), deployed_id, [m.id for m in endpoint.deployed_models]
    )
    log(f"undeploying {deployed_id} from {name}")
    try:
        operation = retrying(
            client.undeploy_model, endpoint=name, deployed_model_id=deployed_id, traffic_split=split or {}
        )
        wait_for(operation, f"undeploying {deployed_id} from {name}", UNDEPLOY_WAIT_SECONDS)
    except exceptions.NotFound:
        pass
    log(f"undeployed {deployed_id} from {name}")


def _abandon(client: Any, operation: Any, endpoint: str) -> None:
    """Cancel a deploy the provider stops waiting for; undeploy what it deploys anyway."""
    log(f"cancelling the deployment to {endpoint}")
    try:
        # The client's own CancelOperation: google-api-core's `operation.cancel()` fails before sending
        # anything with google-cloud-aiplatform's http rules (KeyError 'body': they give the call no body).
        client.cancel_operation(request={"name": operation.operation.name})
        response = operation.result(timeout=ABANDON_WAIT_SECONDS)
    except exceptions.GoogleAPICallError:
        log(f"the deployment to {endpoint} was cancelled")
        return
    except TimeoutError:
        log(
            f"warning: the cancelled deployment to {endpoint} is still running; when it ends, undeploy it: "
            f"`gcloud ai endpoints undeploy-model {endpoint}` (see the endpoint in the console)"
        )
        return
    deployed_id = response.deployed_model.id
    log(f"the cancelled deployment {deployed_id} finished all the same; undeploying it")
    current = retrying(client.get_endpoint, name=endpoint)
    _undeploy(client, current, deployed_id)


class VertexDeployment(pulumi.dynamic.Resource, module="vertex", name="Deployment"):
    """A model deployed to an endpoint with dedicated resources and 100% of its traffic."""

    deployed_model_id: pulumi.Output[str]
    endpoint_name: pulumi.Output[str]
    traffic_percent: pulumi.Output[int]

    def __init__(
        self, name: str, args: VertexDeploymentArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        props = {
            "project": args.project,
            "region": args.region,
            "endpoint": args.endpoint,
            "model": args.model,
            "display_name": args.display_name,
            "service_account": args.service_account,
            "instance_type": args.instance_type,
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas,
            "api_endpoint": args.api_endpoint,
            IDENTITY_SEED: identity_seed("vertex:Deployment", name),
            "deployed_model_id": None,
            "endpoint_name": None,
            "traffic_percent": None,
        }
        super().__init__(VertexDeploymentProvider(), name, props, opts)

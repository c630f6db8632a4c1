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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
from google.api_core import exceptions
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider

from infra.dynamic import changed_keys, log, state_of
from infra.gcp.clients import GcpProviderError, endpoint_service, ignore_not_found, retrying, wait_for

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


def deployed_model_body(props: Mapping[str, Any]) -> dict[str, Any]:
    """The DeployedModel to create (field names of aiplatform_v1.DeployedModel)."""
    return {
        "model": props["model"],
        "display_name": props["display_name"],
        "service_account": props["service_account"],
        "dedicated_resources": {
            "machine_spec": {"machine_type": props["instance_type"]},
            "min_replica_count": int(props["min_replicas"]),
            "max_replica_count": int(props["max_replicas"]),
        },
    }


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
        log(f"deployed model {deployed_id} serves 100% of {endpoint}")
        return CreateResult(
            id_=f"{endpoint}/deployedModels/{deployed_id}",
            outs={**state_of(props), "deployed_model_id": deployed_id, "endpoint_name": endpoint},
        )

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        return DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        client = endpoint_service(props["region"], props.get("api_endpoint"))
        endpoint = ignore_not_found(client.get_endpoint, name=endpoint_name(props))
        deployed = {m.id for m in endpoint.deployed_models} if endpoint is not None else set()
        if props.get("deployed_model_id") not in deployed:
            return ReadResult(None, {})
        return ReadResult(id_, state_of(props))

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        client = endpoint_service(props["region"], props.get("api_endpoint"))
        name, deployed_id = endpoint_name(props), str(props.get("deployed_model_id") or "")
        endpoint = ignore_not_found(client.get_endpoint, name=name)
        if endpoint is None or deployed_id not in {m.id for m in endpoint.deployed_models}:
            log(f"deployed model {deployed_id} is no longer on {name}")
            return
        _undeploy(client, endpoint, deployed_id)


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
            "deployed_model_id": None,
            "endpoint_name": None,
        }
        super().__init__(VertexDeploymentProvider(), name, props, opts)

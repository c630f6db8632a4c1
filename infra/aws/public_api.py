"""An optional public HTTP API in front of the SageMaker endpoint: API Gateway (HTTP API) + one Lambda.

As in the SageMaker deployment tutorials, a small function forwards requests to the endpoint with
`sagemaker-runtime` InvokeEndpoint. By default every route uses IAM authorization (`AWS_IAM`): callers
sign with SigV4 for `execute-api` and need `execute-api:Invoke` on the API, which is what mnistctl's
SageMaker client does. `anonymous` (config `publicApi: open`) drops the authorization for a demo. Either
way the stage is throttled, the function checks every request before it costs an invocation, and the
function's role may invoke this one endpoint and write its own log group, nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from infra.aws.iam import invoke_endpoint_policy, service_trust_policy
from infra.aws.predict_lambda import handler as lambda_handler
from infra.aws.predict_lambda.handler import API_GATEWAY_TIMEOUT_SECONDS

HANDLER_FILE = Path(lambda_handler.__file__)
LAMBDA_RUNTIME = "python3.12"
LOG_RETENTION_DAYS = 14
PREDICT_ROUTE = "POST /predict"
# The SageMaker runtime path, so boto3's sagemaker-runtime client works with endpoint_url=<API URL>.
INVOCATIONS_ROUTE = "POST /endpoints/{name}/invocations"
ROUTES = (("predict", PREDICT_ROUTE), ("invocations", INVOCATIONS_ROUTE))
# The function may run a little longer than API Gateway waits (it is cut off there anyway).
LAMBDA_TIMEOUT_SECONDS = API_GATEWAY_TIMEOUT_SECONDS + 1


def per_route_throttling(total_rate: float, total_burst: int) -> tuple[float, int]:
    """The stage's per-route rate and burst such that all routes together stay within the totals."""
    return total_rate / len(ROUTES), max(1, total_burst // len(ROUTES))


@dataclass
class PublicPredictApiArgs:
    """What the public API needs to know about the endpoint it fronts."""

    provider: aws.Provider
    """The stack's AWS provider (region and default tags)."""
    endpoint_name: pulumi.Input[str]
    """Name of the SageMaker endpoint requests are forwarded to."""
    endpoint_arn: pulumi.Input[str]
    """ARN of that endpoint: the only resource the function may invoke."""
    account_id: pulumi.Input[str]
    """The account, for the trust policy's aws:SourceAccount condition."""
    anonymous: bool = False
    """Routes without authorization (`publicApi: open`); by default they require IAM (SigV4) auth."""
    throttling_rate_limit: float = 10.0
    """Steady-state requests per second the API lets through, all routes together."""
    throttling_burst_limit: int = 20
    """Requests the API accepts in a burst above the rate, all routes together."""


class PublicPredictApi(pulumi.ComponentResource):
    """HTTP API -> Lambda -> SageMaker endpoint, throttled and scoped to one endpoint."""

    url: pulumi.Output[str]
    """Base URL of the API (its `$default` stage); POST `/predict` or `/endpoints/{name}/invocations`."""
    function_name: pulumi.Output[str]
    role_arn: pulumi.Output[str]

    def __init__(
        self, name: str, args: PublicPredictApiArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mnist-platform:aws:PublicPredictApi", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, provider=args.provider)

        log_group = aws.cloudwatch.LogGroup(f"{name}-logs", retention_in_days=LOG_RETENTION_DAYS, opts=child)
        role = aws.iam.Role(
            f"{name}-role",
            description="mnist-platform public API function: invokes one SageMaker endpoint",
            assume_role_policy=pulumi.Output.from_input(args.account_id).apply(
                lambda account: json.dumps(service_trust_policy("lambda.amazonaws.com", account))
            ),
            opts=child,
        )
        role_policy = aws.iam.RolePolicy(
            f"{name}-invoke",
            role=role.id,
            policy=pulumi.Output.all(args.endpoint_arn, log_group.arn).apply(
                lambda values: json.dumps(invoke_endpoint_policy(values[0], values[1]))
            ),
            opts=child,
        )
        function = aws.lambda_.Function(
            f"{name}-function",
            description="Checks MNIST scoring requests and forwards them to the SageMaker endpoint",
            runtime=LAMBDA_RUNTIME,
            handler=f"{HANDLER_FILE.stem}.handler",
            code=pulumi.AssetArchive({HANDLER_FILE.name: pulumi.FileAsset(str(HANDLER_FILE))}),
            role=role.arn,
            timeout=LAMBDA_TIMEOUT_SECONDS,
            memory_size=256,
            environment={"variables": {lambda_handler.ENDPOINT_NAME_ENV: args.endpoint_name}},
            logging_config={"log_format": "JSON", "log_group": log_group.name},
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[role_policy])),
        )
        api = aws.apigatewayv2.Api(
            f"{name}-http",
            protocol_type="HTTP",
            description="MNIST digit scoring (SageMaker XGBoost endpoint)",
            opts=child,
        )
        integration = aws.apigatewayv2.Integration(
            f"{name}-lambda",
            api_id=api.id,
            integration_type="AWS_PROXY",
            integration_uri=function.invoke_arn,
            integration_method="POST",
            payload_format_version="2.0",
            timeout_milliseconds=API_GATEWAY_TIMEOUT_SECONDS * 1000,
            opts=child,
        )
        routes = [
            aws.apigatewayv2.Route(
                f"{name}-{suffix}",
                api_id=api.id,
                route_key=route_key,
                authorization_type="NONE" if args.anonymous else "AWS_IAM",
                target=integration.id.apply(lambda integration_id: f"integrations/{integration_id}"),
                opts=child,
            )
            for suffix, route_key in ROUTES
        ]
        # Default route settings are route-level limits: each route gets its own bucket of that size,
        # so the API's total is split between the routes.
        rate, burst = per_route_throttling(args.throttling_rate_limit, args.throttling_burst_limit)
        stage = aws.apigatewayv2.Stage(
            f"{name}-stage",
            api_id=api.id,
            name="$default",
            auto_deploy=True,
            default_route_settings={"throttling_rate_limit": rate, "throttling_burst_limit": burst},
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=routes)),
        )
        aws.lambda_.Permission(
            f"{name}-allow-api",
            action="lambda:InvokeFunction",
            function=function.name,
            principal="apigateway.amazonaws.com",
            # Only this API (any stage, any of its routes; both forward here) may invoke the function.
            source_arn=api.execution_arn.apply(lambda arn: f"{arn}/*/*"),
            opts=child,
        )

        self.url = stage.invoke_url.apply(lambda url: url.rstrip("/"))
        self.function_name = function.name
        self.role_arn = role.arn
        self.register_outputs(
            {"url": self.url, "function_name": self.function_name, "role_arn": self.role_arn}
        )

"""What the Vertex AI stack's dynamic providers share: how to reach Google, and when to try again.

Every provider takes an optional `api_endpoint`. Production leaves it unset: the regional
`{region}-aiplatform.googleapis.com` (or the service's global endpoint) with Application Default
Credentials, the same identity and project the pulumi-gcp provider uses. Tests point it at a loopback
fake (`http://127.0.0.1:P`), which gets a fixed placeholder token (LOOPBACK_ACCESS_TOKEN), never the
user's: the fakes, like Google, refuse a request without a bearer token, and no real token ever goes to
a plain-http URL.
Clients are built inside each provider method (the provider object is pickled into the state).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from google.api_core import exceptions
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_delay,
    wait_exponential,
)

from infra.dynamic import log

T = TypeVar("T")

# A freshly enabled API answers 403 SERVICE_DISABLED for a few minutes (projects.Service returns
# before every frontend knows); a fresh IAM grant or service account answers 403 PERMISSION_DENIED until
# it has propagated: "typically 2 minutes, could take 7 minutes or longer" (IAM docs, "Access change
# propagation"). 429 and 503 are quota and load. Everything else is a real answer.
RETRY_FOR_SECONDS = 300.0
IAM_PROPAGATION_SECONDS = 420.0
RETRY_MAX_WAIT_SECONDS = 30.0
DEFAULT_POLL_SECONDS = 15.0
# What a client of a plain-http loopback fake sends as its bearer token: a placeholder, not a credential.
LOOPBACK_ACCESS_TOKEN = "loopback-fake-token"


class GcpProviderError(Exception):
    """A Google Cloud operation of the stack failed; the message says which and what to do."""


def vertex_endpoint(region: str, api_endpoint: str | None) -> str:
    return api_endpoint or f"{region}-aiplatform.googleapis.com"


def client_kwargs(api_endpoint: str | None) -> dict[str, Any]:
    """`transport`, `credentials` and `client_options` for a google-cloud client (REST transport).

    Only a loopback fake over plain http gets the placeholder token; everything else uses ADC."""
    from google.api_core.client_options import ClientOptions
    from google.oauth2.credentials import Credentials

    kwargs: dict[str, Any] = {"transport": "rest"}
    if api_endpoint:
        kwargs["client_options"] = ClientOptions(api_endpoint=api_endpoint)
        if api_endpoint.startswith("http://"):
            # No refresh token and no expiry: the client sends it as it is and never tries to refresh it.
            kwargs["credentials"] = Credentials(token=LOOPBACK_ACCESS_TOKEN)
    return kwargs


def job_service(region: str, api_endpoint: str | None) -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1.JobServiceClient(**client_kwargs(vertex_endpoint(region, api_endpoint)))


def model_service(region: str, api_endpoint: str | None) -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1.ModelServiceClient(**client_kwargs(vertex_endpoint(region, api_endpoint)))


def endpoint_service(region: str, api_endpoint: str | None) -> Any:
    from google.cloud import aiplatform_v1

    return aiplatform_v1.EndpointServiceClient(**client_kwargs(vertex_endpoint(region, api_endpoint)))


def storage_client(project: str, storage_endpoint: str | None) -> Any:
    """A google-cloud-storage client (JSON API over HTTP: no `transport` to choose)."""
    from google.cloud import storage

    kwargs = client_kwargs(storage_endpoint)
    kwargs.pop("transport")
    return storage.Client(project=project, **kwargs)


def split_gs_uri(uri: str) -> tuple[str, str]:
    """(`bucket`, `name`) of gs://bucket/name."""
    if not uri.startswith("gs://") or not uri[5:].split("/", 1)[0]:
        raise ValueError(f"not a gs://bucket/name URI: {uri!r}")
    bucket, _, name = uri[5:].partition("/")
    return bucket, name


# A 403: google-api-core raises Forbidden for the HTTP status (REST) and PermissionDenied for the gRPC code.
_DENIED = (exceptions.Forbidden, exceptions.PermissionDenied)


def is_service_disabled(error: BaseException) -> bool:
    if not isinstance(error, _DENIED):
        return False
    reason = getattr(error, "reason", None)
    return (
        reason == "SERVICE_DISABLED" or "SERVICE_DISABLED" in str(error) or "has not been used" in str(error)
    )


def is_transient(error: BaseException) -> bool:
    """429, 503 (and 502/504 from Google's front ends), or an API enabled moments ago.

    Not 500: google-api-core's `if_transient_error` retries it, but Google's generated clients apply
    that only to idempotent calls (gets and lists). This predicate also guards creates (a custom job, a
    model upload, a deployment), where a 500 may come after the resource was made; a retry would then
    start a second, billed, job."""
    transient = (
        exceptions.TooManyRequests,
        exceptions.ServiceUnavailable,
        exceptions.BadGateway,
        exceptions.GatewayTimeout,
    )
    return isinstance(error, transient) or is_service_disabled(error)


def is_permission_denied(error: BaseException) -> bool:
    """403 PERMISSION_DENIED that is not a disabled API: a missing grant, or one not propagated yet."""
    return isinstance(error, _DENIED) and not is_service_disabled(error)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0
    if error is not None and is_permission_denied(error):
        log(
            f"permission denied ({_first_line(error)}): a grant or service account made moments ago takes "
            f"minutes to reach every Google service; retrying in {wait:.0f}s "
            f"(for up to {IAM_PROPAGATION_SECONDS:.0f}s in all)"
        )
        return
    log(f"transient error ({type(error).__name__}: {_first_line(error)}); retrying in {wait:.0f}s")


def _first_line(error: BaseException | None) -> str:
    return str(error).splitlines()[0][:200] if error else ""


def retrying(call: Callable[..., T], *args: Any, retry_for: float = RETRY_FOR_SECONDS, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`, retried with exponential backoff while the error is transient, and while
    it is PERMISSION_DENIED for up to IAM_PROPAGATION_SECONDS (the stack uses its grants right after
    making them). A permission that is really missing still fails, with Google's message, after that."""
    started = time.monotonic()

    def worth_retrying(error: BaseException) -> bool:
        if is_permission_denied(error):
            return time.monotonic() - started < IAM_PROPAGATION_SECONDS
        return is_transient(error) and time.monotonic() - started < retry_for

    wrapped = retry(
        retry=retry_if_exception(worth_retrying),
        wait=wait_exponential(multiplier=1, min=1, max=RETRY_MAX_WAIT_SECONDS),
        stop=stop_after_delay(max(retry_for, IAM_PROPAGATION_SECONDS)),
        before_sleep=_log_retry,
        reraise=True,
    )(call)
    return wrapped(*args, **kwargs)


def wait_for(operation: Any, what: str, timeout: float) -> Any:
    """The result of a long-running operation, polled until done; a transient poll error is retried."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return operation.result(timeout=max(1.0, deadline - time.monotonic()))
        except exceptions.GoogleAPICallError as error:
            if is_transient(error) and time.monotonic() < deadline:
                log(f"{what}: transient error while waiting ({_first_line(error)}); polling again")
                time.sleep(min(RETRY_MAX_WAIT_SECONDS, max(0.0, deadline - time.monotonic())))
                continue
            raise
        except TimeoutError as error:
            raise GcpProviderError(
                f"{what} did not finish within {timeout:.0f}s; it may still be running: look it up in the "
                "Google Cloud console, then run `pulumi refresh` and `pulumi up` again"
            ) from error


def ignore_not_found(call: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """`retrying(call, ...)`, with 404 meaning "already gone" (None)."""
    try:
        return retrying(call, *args, **kwargs)
    except exceptions.NotFound:
        return None

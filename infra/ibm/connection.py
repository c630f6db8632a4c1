"""What every IBM provider shares: how to reach IBM's APIs with the stack's API key, retries, errors.

Each provider receives two inputs besides its own: `api_key` (a Pulumi secret, read at run time from
the resource's state, so a key rotated with `pulumi up` is the one `pulumi destroy` uses) and
`endpoints` (URL overrides, empty in production: IBM's public regional URLs are used). Clients are
built inside each provider method from these, never kept on the provider (it is pickled).
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import httpx
import pulumi
import requests
from tenacity import RetryCallState, retry, stop_after_attempt, wait_exponential

from infra.dynamic import log

T = TypeVar("T")

IAM_URL = "https://iam.cloud.ibm.com"
RESOURCE_CONTROLLER_URL = "https://resource-controller.cloud.ibm.com"
GLOBAL_CATALOG_URL = "https://globalcatalog.cloud.ibm.com/api/v1"
IAM_POLICY_URL = "https://iam.cloud.ibm.com"
_STATUS_IN_TEXT = re.compile(r'(?:"status_code"\s*:\s*|Status code:\s*)(?P<status>[1-5]\d\d)')
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRY_ATTEMPTS = 6
DEFAULT_POLL_SECONDS = 5.0
HTTP_TIMEOUT_SECONDS = 60


class IbmProviderError(Exception):
    """An IBM resource could not be created, read or deleted; the message carries IBM's own words."""


def watsonx_url(region: str) -> str:
    """The public watsonx.ai Runtime API of a region (what the endpoint output names)."""
    return f"https://{region}.ml.cloud.ibm.com"


def cos_url(region: str) -> str:
    return f"https://s3.{region}.cloud-object-storage.appdomain.cloud"


@dataclass(frozen=True)
class Connection:
    """The API key and the URLs one provider call uses (built from the resource's inputs)."""

    api_key: str
    region: str
    iam_url: str = IAM_URL
    resource_controller_url: str = RESOURCE_CONTROLLER_URL
    global_catalog_url: str = GLOBAL_CATALOG_URL
    iam_policy_url: str = IAM_POLICY_URL
    cos_url: str | None = None
    wml_url: str | None = None
    platform_url: str | None = None
    ca_file: str | None = None
    poll_seconds: float = DEFAULT_POLL_SECONDS

    @classmethod
    def of(cls, props: Mapping[str, Any]) -> Connection:
        api_key = props.get("api_key")
        if not api_key:
            raise IbmProviderError(
                "no IBM Cloud API key in this resource's inputs: set it with "
                "`pulumi config set --secret ibm:apiKey <key>` and run `pulumi up`"
            )
        overrides = {k: v for k, v in dict(props.get("endpoints") or {}).items() if v not in (None, "")}
        if "poll_seconds" in overrides:
            overrides["poll_seconds"] = float(overrides["poll_seconds"])
        return cls(api_key=str(api_key), region=str(props["region"]), **overrides)

    @property
    def verify(self) -> str | bool:
        """What `requests` verifies servers with: the override CA bundle, else the system's."""
        return self.ca_file or True

    @property
    def iam_token_url(self) -> str:
        return f"{self.iam_url.rstrip('/')}/identity/token"

    def authenticator(self) -> Any:
        from ibm_cloud_sdk_core.authenticators import IAMAuthenticator

        return IAMAuthenticator(self.api_key, url=self.iam_url)

    def platform_service(self, service_class: type[T], url: str) -> T:
        """An ibm-platform-services client (ResourceControllerV2, GlobalCatalogV1, ...) on `url`."""
        service: Any = service_class(authenticator=self.authenticator())  # type: ignore[call-arg]
        service.set_service_url(url)
        # Also handed to the authenticator's token manager: the CA bundle reaches IAM calls too.
        service.set_http_config({"verify": self.verify, "timeout": HTTP_TIMEOUT_SECONDS})
        return service

    def cos_client(self, service_instance_crn: str | None = None) -> Any:
        """An ibm_boto3 S3 client with IAM (oauth) signing; `service_instance_crn` for bucket creation."""
        import ibm_boto3
        from ibm_botocore.client import Config

        return ibm_boto3.client(
            "s3",
            ibm_api_key_id=self.api_key,
            ibm_service_instance_id=service_instance_crn,
            ibm_auth_endpoint=self.iam_token_url,
            config=Config(signature_version="oauth", retries={"max_attempts": 1}),
            endpoint_url=self.cos_url or cos_url(self.region),
            verify=self.ca_file if self.ca_file else None,
        )

    def watsonx_client(self, space_id: str | None = None) -> Any:
        """An ibm-watsonx-ai APIClient in IBM Cloud mode (see notes/cloud-fakes.md for the overrides)."""
        from ibm_watsonx_ai import APIClient, Credentials

        extra: dict[str, Any] = {}
        if self.platform_url:
            extra["platform_url"] = self.platform_url
        if self.iam_url != IAM_URL:
            extra["auth_url"] = self.iam_token_url
        if self.ca_file:
            extra["verify"] = self.ca_file
        credentials = Credentials(url=self.wml_url or watsonx_url(self.region), api_key=self.api_key, **extra)
        # A plain httpx client instead of the SDK's default, whose transport repeats any request answered
        # 500/502/503/504 (a POST too): a create the service committed before a 5xx would be made twice,
        # the second copy outside Pulumi's state. Retries are this module's: `retrying` for reads and
        # deletes, `create_or_adopt` for creates.
        verify = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        http = httpx.Client(verify=verify, timeout=HTTP_TIMEOUT_SECONDS)
        return APIClient(credentials, space_id=space_id, httpx_client=http)

    def wait(
        self,
        what: str,
        check: Callable[[], T | None],
        timeout_seconds: float,
        progress: Callable[[], str] | None = None,
    ) -> T:
        """Call `check` until it returns something (not None), polling every `poll_seconds`."""
        deadline = time.monotonic() + timeout_seconds
        while True:
            result = check()
            if result is not None:
                return result
            if time.monotonic() >= deadline:
                state = f" (last state: {progress()})" if progress else ""
                raise IbmProviderError(
                    f"timed out after {timeout_seconds:.0f}s waiting for {what}{state}; look at it in the "
                    "IBM Cloud console and run `pulumi up` (or `pulumi refresh`) again"
                )
            time.sleep(self.poll_seconds)


# --- errors ----------------------------------------------------------------------------------------


def status_of(error: BaseException) -> int | None:
    """The HTTP status behind an error of any of IBM's SDKs (platform services, COS, watsonx.ai)."""
    code = getattr(error, "status_code", None)  # ibm-cloud-sdk-core's ApiException (`code` is deprecated)
    if isinstance(code, int):
        return code
    response = getattr(error, "response", None)
    if isinstance(response, Mapping):  # ibm_botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status else None
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        return status
    # ibm-watsonx-ai's WMLClientError carries only text: the reply's body or "Status code: 404".
    match = _STATUS_IN_TEXT.search(str(error))
    return int(match["status"]) if match else None


def message_of(error: BaseException) -> str:
    """IBM's own message for an error (the API's text, not a Python repr)."""
    response = getattr(error, "response", None)
    if isinstance(response, Mapping) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code', '')}: {err.get('Message', '')}".strip(": ")
    message = getattr(error, "message", None)
    if message:
        return str(message)
    return str(error)


def is_not_found(error: BaseException) -> bool:
    return status_of(error) in (404, 410) or "NoSuchBucket" in message_of(error)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, requests.ConnectionError | requests.Timeout):
        return True
    return status_of(error) in TRANSIENT_STATUSES


def retrying(call: Callable[[], T], transient: Callable[[BaseException], bool] = is_transient) -> T:
    """Run one API call, retrying with exponential backoff on 429, 5xx and dropped connections, and
    once on a 401.

    The 401: an IAM token that was valid when the SDK sent the call can expire before the service checks
    it. The SDK renews a token once 80 % of its life has passed, so the retry goes out with a new one; a
    401 is answered before anything is done, so even a POST is safe to repeat. A second 401 is a real
    refusal (a revoked key) and is reported."""
    refusals = 0

    def worth_retrying(state: RetryCallState) -> bool:
        nonlocal refusals
        error = state.outcome.exception() if state.outcome else None
        if error is None:
            return False
        if status_of(error) == 401:
            refusals += 1
            return refusals == 1
        return transient(error)

    @retry(
        retry=worth_retrying,
        wait=wait_exponential(multiplier=0.5, max=30),
        stop=stop_after_attempt(RETRY_ATTEMPTS),
        reraise=True,
    )
    def attempt() -> T:
        return call()

    return attempt()


def maybe_carried_out(error: BaseException) -> bool:
    """A create that failed this way may have been carried out all the same: a 5xx (from a proxy, or a
    service that committed and then failed to answer) or a connection lost before the answer."""
    status = status_of(error)
    if isinstance(error, requests.ConnectionError | requests.Timeout | httpx.TransportError):
        return True
    return status is not None and status >= 500


def refused_before_doing_anything(error: BaseException) -> bool:
    """A 429: the service refused before doing anything, so even a create may be sent again (a first
    401 is retried by `retrying` whatever this says)."""
    return status_of(error) == 429


def create_or_adopt(
    what: str, create: Callable[[], str], existing: Callable[[], set[str]], before: set[str] | None = None
) -> str:
    """Create something once, never blindly twice; the id of what was created.

    `existing()` lists the ids of what already bears the new thing's name. It is read before the first
    attempt (or given as `before`, when the caller has just listed them); when an attempt fails in a
    way that may have been carried out (5xx, lost connection), it is read again: one new id is the copy
    that landed, adopted instead of created again; none, and the create is sent again after a backoff.
    401 and 429 are answered before anything is done, so those are retried as `retrying` does."""
    if before is None:
        before = retrying(existing)
    last_error: BaseException | None = None
    for attempt in range(RETRY_ATTEMPTS):
        try:
            return retrying(create, transient=refused_before_doing_anything)
        except Exception as error:
            if not maybe_carried_out(error):
                raise
            last_error = error
        landed = retrying(existing) - before
        if len(landed) == 1:
            (adopted,) = landed
            log(
                f"{what}: the create was answered {status_of(last_error) or 'with a lost connection'} but "
                f"had landed as {adopted}; adopting it instead of creating a second copy"
            )
            return adopted
        if len(landed) > 1:
            raise IbmProviderError(
                f"{what}: the service answered {status_of(last_error) or 'nothing'} but {len(landed)} new "
                f"copies appeared ({', '.join(sorted(landed))}); delete all but one in the IBM Cloud console "
                "and run `pulumi up` again"
            )
        time.sleep(min(30.0, 0.5 * 2**attempt))
    assert last_error is not None
    raise last_error


def result_of(response: Any) -> dict[str, Any]:
    """The JSON result of an ibm-platform-services `DetailedResponse`."""
    return cast(dict[str, Any], response.get_result())


def tags_of(document: Mapping[str, Any]) -> list[str]:
    """The tags of a watsonx.ai document (models and deployments keep them in `metadata`, spaces in
    `entity`)."""
    return list(
        (document.get("metadata") or {}).get("tags") or (document.get("entity") or {}).get("tags") or []
    )


def left_behind(
    what: str,
    found: Iterable[Mapping[str, Any]],
    tag: str,
    state: Callable[[Mapping[str, Any]], str],
    usable: Collection[str],
    remove: Callable[[str], Any],
    matches: Callable[[Mapping[str, Any]], bool] = lambda _document: True,
) -> str | None:
    """The id of what an interrupted create left with this identity `tag` in a `usable` state, to be
    adopted instead of created again; what it left in any other state (failed, half made) is removed,
    so that the create makes it anew. None when nothing is left.

    One that bears the tag but no longer `matches` what this create would make is skipped, neither
    adopted nor removed: it is the resource being replaced because `pulumi refresh` found it changed
    behind the stack's back (same inputs, so same identity), and the engine deletes it after the
    replacement is up."""
    for document in found:
        if tag not in tags_of(document) or not matches(document):
            continue
        found_id = str(document["metadata"]["id"])
        current = state(document)
        if current in usable:
            log(f"adopting {what} {found_id} ({current or 'no state'}), left by an interrupted create")
            return found_id
        log(f"removing {what} {found_id}, left {current or 'half made'} by an earlier create")
        try:
            retrying(lambda i=found_id: remove(i))
        except Exception as error:
            if not is_not_found(error):
                raise failure(f"removing {what} {found_id}", error) from error
    return None


def api_result(call: Callable[[], Any]) -> dict[str, Any]:
    """One ibm-platform-services call, retried like any other; its JSON result."""
    return retrying(lambda: result_of(call()))


def failure(what: str, error: BaseException, hint: str = "") -> IbmProviderError:
    """An error naming what failed, IBM's own message and status, and what to do."""
    status = status_of(error)
    where = f" (HTTP {status})" if status else ""
    advice = f" {hint}" if hint else ""
    return IbmProviderError(f"{what} failed{where}: {message_of(error)}.{advice}")


def secret_key_opts(opts: pulumi.ResourceOptions | None) -> pulumi.ResourceOptions:
    """A resource's options with `api_key` marked secret in its outputs (the evidence the policy pack's
    no-plaintext-secrets rule reads; the input is a secret Output already)."""
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["api_key"]))


def update_connection(olds: Mapping[str, Any], news: Mapping[str, Any]) -> dict[str, Any]:
    """Outputs after an update that changed only the API key or the URLs: nothing changes at IBM,
    the new values are recorded so that the next call (a destroy too) uses them."""
    return {**olds, **{k: news[k] for k in CONNECTION_KEYS if k in news}}


CONNECTION_KEYS = ("api_key", "endpoints", "region")

"""What the loopback fakes of Google Cloud APIs share: an HTTP server on 127.0.0.1 in a thread, the
request log, injected failures, Google's error body, enum encoding, timestamps and long-running
operations.

The fakes speak the documented REST shapes (google.rpc.Status errors, google.longrunning.Operation),
so the vendors' own clients (`transport="rest"`, `api_endpoint="http://127.0.0.1:P"`) accept them.
Before any handler runs, a request must carry a bearer token (401 UNAUTHENTICATED otherwise, as Google's
front end answers) and must be a call that Google's discovery document of the service describes, with a
body its request schema accepts (gcp_fakes.discovery).
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from gcp_fakes.discovery import Contract, Method
    from gcp_fakes.iam import IamModel

# google.rpc.Code names by HTTP status, as Google's front ends pair them.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# google.rpc.Code numbers, for `error` inside an Operation or a job.
RPC_CODES = {
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "PERMISSION_DENIED": 7,
    "FAILED_PRECONDITION": 9,
    "INTERNAL": 13,
}


# Where the fakes' OAuth token endpoint answers (outside every API): processes the Vertex fake runs get an
# `authorized_user` credentials file whose `token_uri` points here, as a real replica gets its account's
# tokens from the metadata server.
TOKEN_PATH = "/oauth2/v4/token"
# The principal behind the providers' placeholder token (infra.gcp.clients.LOOPBACK_ACCESS_TOKEN): the
# identity that runs `pulumi up`.
DEPLOYER = "user:deployer@example.com"

# Google's front end, to a request without credentials (and with a token it cannot verify).
MISSING_CREDENTIALS = (
    "Request is missing required authentication credential. Expected OAuth 2 access token, login cookie or "
    "other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)
INVALID_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


class ApiError(Exception):
    """Raised by a handler: becomes Google's JSON error body with this HTTP status."""

    def __init__(self, status: int, message: str, status_name: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.status_name = status_name or STATUS_NAMES.get(status, "UNKNOWN")


def not_found(what: str) -> ApiError:
    return ApiError(404, f"{what} not found.")


def failed_precondition(message: str) -> ApiError:
    return ApiError(400, message, "FAILED_PRECONDITION")


def invalid_argument(message: str) -> ApiError:
    return ApiError(400, message, "INVALID_ARGUMENT")


def now() -> str:
    """An RFC 3339 timestamp, as the APIs write them."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any  # parsed JSON, or the raw bytes
    token: str | None = None  # the bearer token it carried

    @property
    def json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}


@dataclass
class _Injected:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    message: str


@dataclass
class Call:
    """One request as a handler sees it."""

    method: str
    path: str
    query: Mapping[str, str]
    body: Any
    headers: Mapping[str, str]
    size: int = 0  # the body's length in bytes, as received

    @property
    def token(self) -> str | None:
        """The bearer token of the `Authorization` header, if any."""
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return token.strip() or None

    @property
    def ints_for_enums(self) -> bool:
        # The REST clients ask `$alt=json;enum-encoding=int` and then expect enums as numbers.
        return "enum-encoding=int" in self.query.get("$alt", "")

    @property
    def json(self) -> dict[str, Any]:
        return self.body if isinstance(self.body, dict) else {}


@dataclass
class Operation:
    """A google.longrunning.Operation; `done` is set by the fake when its work is over."""

    name: str
    metadata: dict[str, Any]
    done: bool = False
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    polls_before_done: int = 0  # injected slowness: report done=false this many more times
    cancel_requested: bool = False  # CancelOperation was called (the work may honour it or not)

    def finish(self, response: dict[str, Any] | None = None, error: dict[str, Any] | None = None) -> None:
        self.response, self.error, self.done = response, error, True

    def document(self, count_poll: bool) -> dict[str, Any]:
        done = self.done and self.polls_before_done <= 0
        if count_poll and self.done and self.polls_before_done > 0:
            self.polls_before_done -= 1
        reply: dict[str, Any] = {"name": self.name, "metadata": self.metadata, "done": done}
        if done and self.error is not None:
            reply["error"] = self.error
        elif done:
            reply["response"] = self.response or {"@type": "type.googleapis.com/google.protobuf.Empty"}
        return reply


Handler = Callable[[Call, re.Match[str]], Any]


class FakeServer:
    """Serves `routes` (method, regex over the path after the host, handler) on 127.0.0.1.

    A handler returns a JSON-able reply (200), a `Response`, or raises `ApiError`."""

    def __init__(self, name: str, contract: Contract | None = None) -> None:
        self.name = name
        self.contract = contract
        # Identity and permission (gcp_fakes.iam): None checks nothing beyond a token being there.
        self.iam: IamModel | None = None
        # Discovery method id -> the IAM permission its caller needs on the project (see `authorize`).
        self.method_permissions: dict[str, str] = {}
        # Tokens the fake refuses as invalid (a revoked or expired one); every other bearer token is taken.
        self.rejected_tokens: set[str] = set()
        # Who holds which access token (the IAM model asks), and the refresh tokens of workload identities.
        from infra.gcp.clients import LOOPBACK_ACCESS_TOKEN

        self.principals: dict[str, str] = {LOOPBACK_ACCESS_TOKEN: DEPLOYER}
        self._key_holders: dict[str, str] = {}  # client_email of a key file -> principal
        self.requests: list[RecordedRequest] = []
        self.lock = threading.RLock()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._injected: list[_Injected] = []
        self._operations: dict[str, Operation] = {}
        self._ids = itertools.count(int(time.time()) % 100000 * 1000 + 1)
        self._slow_polls = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # -- setup -------------------------------------------------------------------------------------
    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern + r"\Z"), handler))

    def start(self) -> FakeServer:
        app = Starlette(
            routes=[Route("/{path:path}", self._handle_http, methods=["GET", "POST", "DELETE", "PATCH"])]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name=f"fake-{self.name}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the {self.name} fake did not start")
            time.sleep(0.01)
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)
        self._server = self._thread = None

    @property
    def api_endpoint(self) -> str:
        return self.url

    # -- identities --------------------------------------------------------------------------------
    def principal(self, call: Call) -> str | None:
        """The principal whose token the call carries (None: a token nobody was given)."""
        with self.lock:
            return self.principals.get(call.token or "")

    def principal_of(self, request: RecordedRequest) -> str | None:
        with self.lock:
            return self.principals.get(request.token or "")

    def credentials_file(self, principal: str, folder: Path) -> Path:
        """A service account key file for `principal` (GOOGLE_APPLICATION_CREDENTIALS) whose `token_uri` is
        this fake: google-auth signs a JWT with the key and exchanges it here for an access token of that
        principal, as a Vertex replica gets its account's tokens (an `authorized_user` file would not do:
        google-auth ignores its token_uri)."""
        email = principal.removeprefix("serviceAccount:").removeprefix("user:")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{email}.json"
        info = {
            "type": "service_account",
            "project_id": "mnist-test",
            "private_key_id": "loopback-fake",
            "private_key": _signing_key(),
            "client_email": email,
            "client_id": "1",
            "token_uri": self.url + TOKEN_PATH,
        }
        path.write_text(json.dumps(info))
        with self.lock:
            self._key_holders[email] = principal
        return path

    def _token(self, call: Call) -> Response:
        """The OAuth JWT-bearer grant: the assertion's issuer is the account whose token is asked for."""
        import jwt

        form = parse_qs(call.body.decode() if isinstance(call.body, bytes) else "")
        assertion = (form.get("assertion") or [""])[0]
        try:
            issuer = str(jwt.decode(assertion, options={"verify_signature": False}).get("iss", ""))
        except jwt.PyJWTError:
            issuer = ""
        principal = self._key_holders.get(issuer)
        if principal is None:
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, 400
            )
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self.lock:
            self.principals[token] = principal
        return JSONResponse({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    # -- failure injection -------------------------------------------------------------------------
    def fail_next(
        self, method: str, path_regex: str, status: int, times: int = 1, message: str | None = None
    ) -> None:
        """The next `times` requests of `method` whose path matches `path_regex` (re.search) get `status`
        (e.g. 429, 503, 404) with Google's error body, before any handler runs."""
        text = message or f"injected {status} {STATUS_NAMES.get(status, '')}".strip()
        with self.lock:
            self._injected.append(_Injected(method.upper(), re.compile(path_regex), status, times, text))

    def slow_operations(self, polls: int) -> None:
        """Every operation started from now on answers `done: false` to `polls` more polls after its
        work is over (as real operations lag)."""
        self._slow_polls = polls

    def requests_to(self, method: str, path_regex: str) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        return [r for r in self.requests if r.method == method.upper() and pattern.search(r.path)]

    # -- operations --------------------------------------------------------------------------------
    def new_id(self) -> str:
        return str(next(self._ids))

    def new_operation(self, name: str, metadata: dict[str, Any]) -> Operation:
        operation = Operation(name=name, metadata=metadata, polls_before_done=self._slow_polls)
        with self.lock:
            self._operations[name] = operation
        return operation

    def cancel_operation(self, name: str) -> dict[str, Any]:
        """google.longrunning CancelOperation: asks; whether the work stops is up to it (best effort)."""
        with self.lock:
            operation = self._operations.get(name)
            if operation is None:
                raise not_found(f"Operation {name}")
            operation.cancel_requested = True
        return {}

    def operations_under(self, parent: str) -> dict[str, Any]:
        """google.longrunning ListOperations of a resource: its operations (`<parent>/operations/ID`),
        done or not, in one page."""
        with self.lock:
            found = [
                operation.document(count_poll=False)
                for name, operation in self._operations.items()
                if name.startswith(parent + "/operations/")
            ]
        return {"operations": found} if found else {}

    def operation_reply(self, name: str, count_poll: bool = True) -> dict[str, Any]:
        with self.lock:
            operation = self._operations.get(name)
            if operation is None:
                raise not_found(f"Operation {name}")
            return operation.document(count_poll)

    # -- dispatch ----------------------------------------------------------------------------------
    async def _handle_http(self, request: Request) -> Response:
        raw = await request.body()
        body: Any = raw
        if raw and "json" in request.headers.get("content-type", "json"):
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        call = Call(
            request.method,
            _decode_path(raw_path),
            dict(request.query_params),
            body,
            dict(request.headers),
            len(raw),
        )
        return await run_in_threadpool(self._dispatch, call)

    def _dispatch(self, call: Call) -> Response:
        with self.lock:
            self.requests.append(
                RecordedRequest(call.method, call.path, dict(call.query), call.body, call.token)
            )
        if call.method == "POST" and call.path == TOKEN_PATH:
            return self._token(call)
        try:
            self._front_end(call)
        except ApiError as error:
            return error_response(error)
        with self.lock:
            for injected in self._injected:
                if injected.times > 0 and injected.method == call.method and injected.path.search(call.path):
                    injected.times -= 1
                    return error_response(ApiError(injected.status, injected.message))
        for method, pattern, handler in self._routes:
            match = pattern.match(call.path)
            if match and method == call.method:
                try:
                    reply = handler(call, match)
                except ApiError as error:
                    return error_response(error)
                return reply if isinstance(reply, Response) else JSONResponse(reply)
        return error_response(ApiError(404, f"{self.name} fake: no method {call.method} {call.path}"))

    def _front_end(self, call: Call) -> None:
        """What Google's front end refuses before the service sees a request: no credentials, a method the
        API does not have, a body its schema does not accept."""
        if call.token is None:
            raise ApiError(401, MISSING_CREDENTIALS)
        if call.token in self.rejected_tokens:
            raise ApiError(401, INVALID_CREDENTIALS)
        if self.contract is not None:
            # An empty body is an empty message (its required fields are missing); media is not JSON.
            body = {} if call.body in (b"", None) else call.body
            method = self.contract.check(call.method, call.path, body, is_json=isinstance(body, (dict, list)))
            if self.iam is not None:
                self.authorize(call, method, self.iam)

    def authorize(self, call: Call, method: Method, iam: IamModel) -> None:
        """The permission a method needs on the project (`method_permissions`, by discovery method id), in
        Google's words when it is missing. Fakes with finer resources (buckets) override this."""
        permission = self.method_permissions.get(method.id)
        if permission is not None:
            where = f"//{method.document.split('.')[0]}.googleapis.com/projects/{iam.project}"
            message = f"Permission '{permission}' denied on resource '{where}' (or it may not exist)."
            iam.require(self.principal(call), permission, f"projects/{iam.project}", message)


@functools.cache
def _signing_key() -> str:
    """One RSA key (PEM) for every key file the fakes write: only its holder's email matters to them."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _decode_path(raw: str) -> str:
    """The request path with percent-escapes decoded, except %2F: resource names use it inside one segment
    (Artifact Registry packages, Cloud Storage objects), and a decoded "/" would split that segment."""
    return "%2F".join(unquote(part) for part in re.split("%2[Ff]", raw))


def error_response(error: ApiError) -> JSONResponse:
    body = {"error": {"code": error.status, "message": error.message, "status": error.status_name}}
    return JSONResponse(body, status_code=error.status)


def enum_value(call: Call, names: list[str], name: str) -> int | str:
    """An enum field as the client asked for it: its number (`enum-encoding=int`) or its name."""
    return names.index(name) if call.ints_for_enums else name


def int64(value: Any, default: int = 0) -> int:
    """proto3 JSON writes int64 as a string and int32 as a number; accept both."""
    if value is None or value == "":
        return default
    return int(value)


def seconds(duration: Any, default: float) -> float:
    """A google.protobuf.Duration in JSON ("3600s", "1.5s")."""
    if not duration:
        return default
    return float(str(duration).removesuffix("s"))


_EQUALITY = re.compile(r'\s*(?P<field>[\w.-]+)\s*=\s*(?:"(?P<quoted>[^"]*)"|(?P<bare>[^\s"]+))\s*')


def equality_filter(expression: str, fields: re.Pattern[str]) -> dict[str, str]:
    """The `field=value` terms (joined by AND) of a list filter, for fields matching `fields`
    (Vertex AI's `labels.KEY`, Cloud Build's `tags`). Anything else in the filter grammar (OR, NOT,
    `:`, `!=`, comparisons) is refused: the fake would otherwise answer a filter it does not evaluate."""
    terms: dict[str, str] = {}
    for term in re.split(r"\s+AND\s+", expression.strip()) if expression.strip() else []:
        m = _EQUALITY.fullmatch(term)
        if m is None or not fields.fullmatch(m["field"]):
            raise invalid_argument(f'the fake evaluates only `field="value" AND ...` filters: {expression!r}')
        terms[m["field"]] = m["quoted"] if m["quoted"] is not None else m["bare"]
    return terms


def labels_match(resource: Mapping[str, Any], terms: Mapping[str, str]) -> bool:
    """Whether a Vertex AI resource's labels hold every `labels.KEY=VALUE` term."""
    labels = resource.get("labels") or {}
    return all(labels.get(field.removeprefix("labels.")) == value for field, value in terms.items())

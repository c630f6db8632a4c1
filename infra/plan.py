"""The plan of a stack: run its Pulumi program under mocks and collect every resource it would declare.

No Pulumi CLI, no cloud call, no credentials: `pulumi.runtime.set_mocks` stands in for the engine, so
dynamic providers are never created (their `create` is never called) and native resources get plausible
outputs. `mnistctl cost` prices what this returns; the policy tests (tests/policy) feed it to every policy.

`collect(stack)` runs the program (`main` of `Pulumi.yaml`, infra/ here) with the config of
`Pulumi.<stack>.yaml` (plus the project defaults of `Pulumi.yaml`) in a child process, so that Pulumi's
global runtime state and the program's modules start clean for every stack, and returns one
`RegisteredResource` per resource: its type, name, URN, the inputs a ResourceValidationPolicy would
receive (wire names, secrets decrypted), the outputs a StackValidationPolicy would receive, its
provider's inputs (explicit, or the default provider the engine would build from the stack's
`aws:*`/`gcp:*` config), its property dependencies and resource options.

Run directly for a look: `python -m infra.plan aws out.json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROJECT_FILE = "Pulumi.yaml"
# The folder holding the `infra` package: the child process imports the same code as its parent.
_PACKAGE_PARENT = Path(__file__).resolve().parents[1]


def find_project_root(start: Path | None = None) -> Path:
    """The project to plan: the nearest folder with Pulumi.yaml above `start` (or the cwd), else the
    checkout this module lives in."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / PROJECT_FILE).is_file():
            return folder
    return _PACKAGE_PARENT


REPO_ROOT = find_project_root(_PACKAGE_PARENT)
PROJECT = "mnist-platform"
FAKE_ACCOUNT = "123456789012"
FAKE_SECRET = "fake-secret-value-for-policy-tests"  # stands in for `secure:` values nobody can decrypt here

# Wire signatures (pulumi sdk/go/common/resource/properties.go).
_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_ASSET_SIGS = {"c44067f5952c0a294b673a41bacd8c17": "asset", "0def7320c3a5731c473e5ecbe6d01bc7": "archive"}


@dataclass
class ProviderInfo:
    resource_type: str
    urn: str
    name: str
    props: dict[str, Any]


@dataclass
class RegisteredResource:
    resource_type: str
    name: str
    urn: str
    custom: bool
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    provider: ProviderInfo | None = None
    parent: str | None = None
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    additional_secret_outputs: list[str] = field(default_factory=list)
    protect: bool = False
    secret_paths: list[str] = field(default_factory=list)  # inputs that were Pulumi secrets


# --------------------------------------------------------------------------------------------------
# What the parent (the test) calls
# --------------------------------------------------------------------------------------------------


def stack_file(stack: str, root: Path = REPO_ROOT) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def stack_config(stack: str, root: Path = REPO_ROOT) -> dict[str, Any]:
    """The stack's config: `Pulumi.yaml` project defaults overlaid by `Pulumi.<stack>.yaml`."""
    import yaml  # pulumi depends on pyyaml

    config: dict[str, Any] = {}
    project_file = root / "Pulumi.yaml"
    if project_file.exists():
        project = yaml.safe_load(project_file.read_text()) or {}
        for key, spec in (project.get("config") or {}).items():
            full = key if ":" in key else f"{PROJECT}:{key}"
            if isinstance(spec, dict):
                if "default" in spec:
                    config[full] = spec["default"]
            else:
                config[full] = spec
    if stack_file(stack, root).exists():
        stack_doc = yaml.safe_load(stack_file(stack, root).read_text()) or {}
        for key, value in (stack_doc.get("config") or {}).items():
            config[key if ":" in key else f"{PROJECT}:{key}"] = value
    return config


def cloud_of(stack: str) -> str:
    return str(stack_config(stack).get(f"{PROJECT}:cloud") or stack)


def missing_program_reason(stack: str) -> str | None:
    """Why `stack` cannot run under mocks yet, or None when it can.

    Only a missing stack file skips: a stack that exists is always run, so a component that was
    moved or broken fails the test instead of hiding behind a skip."""
    if not stack_file(stack).exists():
        return f"Pulumi.{stack}.yaml does not exist yet"
    return None


def collect(
    stack: str, root: Path = REPO_ROOT, overrides: dict[str, Any] | None = None, timeout: float = 300
) -> list[RegisteredResource]:
    """Run the program of the project at `root` (its `main`, infra/ here) under mocks, with the config
    of `stack` (and `overrides` on top), in a child process, and return what it registered."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "resources.json"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(_PACKAGE_PARENT), os.environ.get("PYTHONPATH")])),
        }
        run = subprocess.run(
            [sys.executable, "-m", "infra.plan", stack, str(out), str(root), json.dumps(overrides or {})],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if run.returncode != 0 or not out.exists():
            raise RuntimeError(
                f"the {stack} stack's program failed under mocks (exit {run.returncode}):\n"
                f"{run.stdout[-3000:]}\n{run.stderr[-6000:]}"
            )
        raw = json.loads(out.read_text())
    resources = []
    for item in raw:
        provider_raw = item.pop("provider", None)
        provider = ProviderInfo(**provider_raw) if provider_raw else None
        resources.append(RegisteredResource(provider=provider, **item))
    return resources


# --------------------------------------------------------------------------------------------------
# The child: the program under mocks
# --------------------------------------------------------------------------------------------------


def _policy_view(value: Any, path: str, secrets: list[str]) -> Any:
    """The wire value as the policy SDK hands it over: secrets unwrapped (their paths recorded),
    resource references downgraded to their id (custom) or URN (component), assets summarized."""
    if isinstance(value, list):
        return [_policy_view(v, f"{path}[{i}]", secrets) for i, v in enumerate(value)]
    if isinstance(value, dict):
        sig = value.get(_SIG)
        if sig == _SECRET_SIG:
            secrets.append(path)
            return _policy_view(value.get("value"), path, secrets)
        if sig == _RESOURCE_SIG:
            return value.get("id") or value.get("urn")
        if sig in _ASSET_SIGS:
            return {_ASSET_SIGS[sig]: {k: v for k, v in value.items() if k != _SIG and isinstance(v, str)}}
        return {k: _policy_view(v, f"{path}.{k}" if path else k, secrets) for k, v in value.items()}
    return value


def _render_policy_document(args: dict[str, Any]) -> str:
    """What aws.iam.get_policy_document returns, enough for policies to read the statements."""
    statements = []
    for stmt in args.get("statements") or []:
        out: dict[str, Any] = {"Effect": stmt.get("effect") or "Allow"}
        if stmt.get("sid"):
            out["Sid"] = stmt["sid"]
        for src, dst in (("actions", "Action"), ("notActions", "NotAction"), ("resources", "Resource")):
            if stmt.get(src):
                out[dst] = stmt[src]
        if stmt.get("notResources"):
            out["NotResource"] = stmt["notResources"]
        if stmt.get("principals"):
            out["Principal"] = {p["type"]: p["identifiers"] for p in stmt["principals"]}
        if stmt.get("conditions"):
            out["Condition"] = {
                c["test"]: {c["variable"]: c["values"]} for c in stmt["conditions"] if isinstance(c, dict)
            }
        statements.append(out)
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def _program_dir(root: Path) -> Path:
    import yaml

    project_file = root / "Pulumi.yaml"
    main = (yaml.safe_load(project_file.read_text()) or {}).get("main") if project_file.exists() else None
    return root / (main or ".")


def _run_child(stack: str, out_path: Path, root: Path, overrides: dict[str, Any]) -> None:
    import pulumi
    import pulumi.runtime
    from google.protobuf import json_format
    from pulumi.runtime.mocks import MockMonitor

    config = {**stack_config(stack, root), **overrides}
    secret_keys = []
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict) and set(value) == {"secure"}:
            value = FAKE_SECRET
            secret_keys.append(key)
        flat[key] = value if isinstance(value, str) else json.dumps(value)
    pulumi.runtime.set_all_config(flat, secret_keys)
    region = str(config.get("aws:region") or config.get("gcp:region") or "us-east-1")
    gcp_project = str(config.get("gcp:project") or "policy-tests")

    registered: list[RegisteredResource] = []
    by_urn: dict[str, RegisteredResource] = {}

    class Mocks(pulumi.runtime.Mocks):
        def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
            inputs = dict(args.inputs)
            physical_id = f"{args.name}-id"
            outputs: dict[str, Any] = dict(inputs)
            token = args.typ
            if token.startswith("aws:"):
                service = token.split(":")[1].split("/")[0]
                outputs.setdefault("arn", f"arn:aws:{service}:{region}:{FAKE_ACCOUNT}:{args.name}")
                outputs.setdefault("name", args.name)  # most AWS names are computed from the logical name
                if "tags" in inputs:
                    outputs.setdefault("tagsAll", inputs["tags"])
                if token in ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2"):
                    # A bucket's id is its name, as in AWS.
                    physical_id = outputs["bucket"] = inputs.get("bucket") or f"{args.name}-0a1b2c3"
                    outputs["arn"] = f"arn:aws:s3:::{physical_id}"
                    outputs.setdefault("bucketRegionalDomainName", f"{physical_id}.s3.{region}.amazonaws.com")
            elif token == "pulumi-python:dynamic/aws:UniqueSuffix":
                outputs["suffix"] = "0a1b2c3d"  # the endpoint's name suffix (random in the engine)
            elif token == "pulumi-python:dynamic/aws:TrainingJobAttempt":
                outputs["job_name"] = inputs["base_name"]  # a first attempt takes the base name
            elif token.startswith("gcp:"):
                outputs.setdefault("name", args.name)
                outputs.setdefault("project", gcp_project)
                outputs.setdefault("selfLink", f"https://example.invalid/{args.name}")
                if token == "gcp:serviceaccount/account:Account":
                    account = inputs.get("accountId") or args.name
                    outputs["email"] = f"{account}@{gcp_project}.iam.gserviceaccount.com"
            outputs["id"] = physical_id
            return physical_id, outputs

        def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
            token, inputs = args.token, dict(args.args)
            if token == "aws:index/getCallerIdentity:getCallerIdentity":
                return {
                    "accountId": FAKE_ACCOUNT,
                    "arn": f"arn:aws:iam::{FAKE_ACCOUNT}:user/policy-tests",
                    "userId": "AIDPOLICYTESTS",
                    "id": FAKE_ACCOUNT,
                }, []
            if token in ("aws:index/getRegion:getRegion", "aws:getRegion:getRegion"):
                return {
                    "name": region,
                    "region": region,
                    "id": region,
                    "endpoint": f"ec2.{region}.amazonaws.com",
                }, []
            if token in ("aws:index/getPartition:getPartition", "aws:getPartition:getPartition"):
                return {
                    "partition": "aws",
                    "dnsSuffix": "amazonaws.com",
                    "id": "aws",
                    "reverseDnsPrefix": "com.amazonaws",
                }, []
            if token == "aws:iam/getPolicyDocument:getPolicyDocument":
                document = _render_policy_document(inputs)
                return {"json": document, "minifiedJson": document, "id": "policy-document"}, []
            if token == "gcp:organizations/getProject:getProject":
                return {
                    "projectId": gcp_project,
                    "number": FAKE_ACCOUNT,
                    "name": gcp_project,
                    "id": gcp_project,
                }, []
            if token == "gcp:organizations/getClientOpenIdUserInfo:getClientOpenIdUserInfo":
                return {"email": f"deployer@{gcp_project}.iam.gserviceaccount.com", "id": "deployer"}, []
            if token == "gcp:organizations/getClientConfig:getClientConfig":
                return {"project": gcp_project, "region": region, "zone": f"{region}-a", "id": "client"}, []
            return inputs, []

    class RecordingMonitor(MockMonitor):
        """Keeps what a policy sees of each registration: the mocks alone lose dependencies and options."""

        def RegisterResource(self, request):
            response = super().RegisterResource(request)
            if request.type == "pulumi:pulumi:Stack":
                return response
            secrets: list[str] = []
            inputs = _policy_view(json_format.MessageToDict(request.object), "", secrets)
            outputs = _policy_view(json_format.MessageToDict(response.object), "", [])
            resource = RegisteredResource(
                resource_type=request.type,
                name=request.name,
                urn=response.urn,
                custom=bool(request.custom),
                inputs=inputs,
                outputs={**inputs, **outputs},
                parent=request.parent or None,
                dependencies=list(request.dependencies),
                property_dependencies={k: list(v.urns) for k, v in request.propertyDependencies.items()},
                additional_secret_outputs=list(request.additionalSecretOutputs),
                protect=bool(request.protect),
                secret_paths=secrets,
            )
            if request.provider:
                resource.provider = ProviderInfo(
                    resource_type="", urn=request.provider.rsplit("::", 1)[0], name="", props={}
                )
            registered.append(resource)
            by_urn[resource.urn] = resource
            return response

    mocks = Mocks()
    pulumi.runtime.set_mocks(
        mocks, project=PROJECT, stack=stack, preview=False, monitor=RecordingMonitor(mocks)
    )

    import runpy

    from pulumi.runtime.stack import run_pulumi_func
    from pulumi.runtime.sync_await import _sync_await

    # As the Python language host does: run the program directory as __main__, then wait for every
    # registration the program started.
    program = _program_dir(root)

    def run_program() -> None:
        runpy.run_path(str(program), run_name="__main__")

    _sync_await(run_pulumi_func(run_program))

    for resource in registered:
        if resource.provider is not None:
            explicit = by_urn.get(resource.provider.urn)
            if explicit is not None:
                resource.provider = ProviderInfo(
                    explicit.resource_type, explicit.urn, explicit.name, explicit.inputs
                )
        elif resource.custom and resource.resource_type.split(":")[0] in ("aws", "gcp"):
            # The engine's default provider takes its inputs from the stack's `<package>:*` config.
            package = resource.resource_type.split(":")[0]
            props = {k.split(":", 1)[1]: v for k, v in flat.items() if k.startswith(f"{package}:")}
            resource.provider = ProviderInfo(
                f"pulumi:providers:{package}",
                f"urn:pulumi:{stack}::{PROJECT}::pulumi:providers:{package}::default",
                "default",
                props,
            )
    out_path.write_text(json.dumps([asdict(r) for r in registered], default=str))


if __name__ == "__main__":
    root_arg = Path(sys.argv[3]) if len(sys.argv) > 3 else REPO_ROOT
    _run_child(sys.argv[1], Path(sys.argv[2]), root_arg, json.loads(sys.argv[4]) if len(sys.argv) > 4 else {})

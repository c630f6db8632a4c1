"""The trained model stored in the deployment space's repository (ibm-watsonx-ai `client.repository`).

What is stored is the archive the training job put in COS (model.tar.gz holding model.onnx). Its
model type and software specification are chosen together at run time from the service's list, never
hard-coded: the base specifications named `onnxruntime_opset_<N>` with N at least the model's opset,
only one whose life cycle is supported (a deprecated or retired one is followed to its
`replacement_name`), the lowest such N; the model type is the ONNX Runtime version that
specification includes (`onnxruntime_opset_19` includes onnxruntime 1.16: type `onnxruntime_1.16`).
"""

from __future__ import annotations

import re
import tarfile
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, ResourceProvider, UpdateResult

from infra.dynamic import IDENTITY_SEED, changed_keys, identity, identity_seed, identity_tag, log, state_of
from infra.ibm.connection import (
    CONNECTION_KEYS,
    Connection,
    IbmProviderError,
    create_or_adopt,
    failure,
    is_not_found,
    left_behind,
    retrying,
    secret_key_opts,
    update_connection,
)

ONNX_SPEC = re.compile(r"^onnxruntime_opset_(?P<opset>\d+)$")
# IBM's published pairs of ONNX software specification and model type ("Supported software
# specifications" in the watsonx.ai Runtime docs; IBM's ONNX samples store opset 19 models as
# onnxruntime_1.16 and opset 21 ones as onnxruntime_1.17). The service refuses any other pairing
# ("Unsupported model type and software specification combination"), whatever newer runtime a
# specification happens to bundle, so the type comes from here; deriving it from the bundled
# onnxruntime is only the fallback for a specification IBM adds after this table was written.
ONNX_MODEL_TYPES = {
    "onnxruntime_opset_19": "onnxruntime_1.16",
    "onnxruntime_opset_21": "onnxruntime_1.17",
}
UNSUPPORTED_STATES = ("retired", "constricted", "deprecated", "unsupported")
_RUNTIME_IN_DISPLAY_NAME = re.compile(r"ONNX ?Runtime (?P<version>\d+\.\d+)", re.IGNORECASE)
_REPLACE_KEYS = ("name", "space_id", "bucket", "archive_key", "artifact_hash", "tags")


@dataclass(frozen=True)
class Runtime:
    """A software specification and the model type stored with it."""

    spec_id: str
    spec_name: str
    model_type: str


@dataclass
class StoredModelArgs:
    """Inputs of a StoredModel."""

    name: pulumi.Input[str]
    space_id: pulumi.Input[str]
    """The deployment space whose repository stores the model."""
    bucket: pulumi.Input[str]
    """The COS bucket holding the archive."""
    archive_key: pulumi.Input[str]
    """Object key of model.tar.gz (holding model.onnx)."""
    artifact_hash: pulumi.Input[str]
    """What identifies the artifact (the stack passes the champion copy's URI, one per training run):
    a new one, a new stored model."""
    region: pulumi.Input[str]
    api_key: pulumi.Input[str]
    """IBM Cloud API key (a secret)."""
    tags: list[str] = field(default_factory=list)
    endpoints: pulumi.Input[dict[str, str]] = field(default_factory=dict)
    """URL overrides (empty in production)."""


def spec_state(spec: Mapping[str, Any]) -> str:
    """`supported`, or the state that makes a base specification unusable for new models."""
    life_cycle = (spec.get("metadata") or {}).get("life_cycle") or {}
    for state in UNSUPPORTED_STATES:
        if state in life_cycle:
            return state
    return "supported"


def model_type_of(spec: Mapping[str, Any]) -> str | None:
    """`onnxruntime_<major>.<minor>` from the ONNX Runtime the specification includes."""
    entity = (spec.get("entity") or {}).get("software_specification") or {}
    packages = (entity.get("software_configuration") or {}).get("included_packages") or []
    for package in packages:
        if str(package.get("name", "")).lower() == "onnxruntime" and package.get("version"):
            major_minor = ".".join(str(package["version"]).split(".")[:2])
            return f"onnxruntime_{major_minor}"
    match = _RUNTIME_IN_DISPLAY_NAME.search(str(entity.get("display_name", "")))
    return f"onnxruntime_{match['version']}" if match else None


def choose_runtime(specs: Sequence[Mapping[str, Any]], opset: int) -> Runtime:
    """The software specification (and model type) for an ONNX model of `opset`, from the service's list."""
    by_name = {str(s["metadata"]["name"]): s for s in specs if (s.get("metadata") or {}).get("name")}

    def usable(name: str, seen: frozenset[str] = frozenset()) -> Mapping[str, Any] | None:
        spec = by_name.get(name)
        if spec is None or name in seen:
            return None
        if spec_state(spec) == "supported":
            return spec
        replacement = (spec["metadata"].get("life_cycle") or {}).get("replacement_name")
        return usable(str(replacement), seen | {name}) if replacement else None

    candidates: dict[str, tuple[int, Mapping[str, Any]]] = {}
    for name in by_name:
        match = ONNX_SPEC.match(name)
        if not match or int(match["opset"]) < opset:
            continue
        spec = usable(name)
        spec_match = ONNX_SPEC.match(str(spec["metadata"]["name"])) if spec else None
        if spec is not None and spec_match and int(spec_match["opset"]) >= opset:
            candidates[str(spec["metadata"]["name"])] = (int(spec_match["opset"]), spec)
    offered = ", ".join(f"{n} ({spec_state(s)})" for n, s in sorted(by_name.items()) if ONNX_SPEC.match(n))
    for _, spec in sorted(candidates.values(), key=lambda item: item[0]):
        name = str(spec["metadata"]["name"])
        model_type = ONNX_MODEL_TYPES.get(name)
        if model_type is None:
            model_type = model_type_of(spec)
            if model_type is None:
                continue
            log(
                f"software specification {name} is not among IBM's published ONNX pairs "
                f"({', '.join(f'{k}: {v}' for k, v in ONNX_MODEL_TYPES.items())}); storing the model as "
                f"{model_type}, the ONNX Runtime it includes. If watsonx.ai refuses the pair, add the "
                "one IBM documents to ONNX_MODEL_TYPES in infra/ibm/model.py"
            )
        return Runtime(str(spec["metadata"]["asset_id"]), name, model_type)
    raise IbmProviderError(
        f"watsonx.ai offers no supported software specification for ONNX opset {opset} "
        f"(onnxruntime_opset_<N> with N >= {opset}); it offers: {offered or 'none'}. "
        "Export the model with an opset the service supports (training/torch_trainer.py ONNX_OPSET)."
    )


@dataclass(frozen=True)
class OnnxSignature:
    """What a stored ONNX model declares: its default-domain opset and one input image's shape."""

    opset: int
    image_shape: tuple[int, ...]


def onnx_signature(archive: Path) -> OnnxSignature:
    """The opset and input shape (without the batch axis) of the model.onnx inside the archive.

    The input shape is what a scoring request must send: watsonx.ai hands `values` to onnxruntime as
    they are (docs/serving.md), so the stack's endpoint output carries it for the clients."""
    import onnx

    with tarfile.open(archive) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(".onnx")), None)
        if member is None:
            raise IbmProviderError(
                f"{archive.name} holds no .onnx file; the training job wrote a bad archive"
            )
        data = tar.extractfile(member)
        assert data is not None  # a regular member
        proto = onnx.load_model_from_string(data.read())
    opset = max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)
    initializers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise IbmProviderError(
            f"{archive.name}: the ONNX model has {len(inputs)} inputs; expected one image input"
        )
    dims = inputs[0].type.tensor_type.shape.dim[1:]
    if not dims or any(not d.HasField("dim_value") for d in dims):
        raise IbmProviderError(
            f"{archive.name}: the ONNX input {inputs[0].name} has no fixed image shape after the batch axis"
        )
    return OnnxSignature(opset, tuple(int(d.dim_value) for d in dims))


class StoredModelProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        conn = Connection.of(props)
        tag = identity_tag(identity(props, _REPLACE_KEYS))
        with tempfile.TemporaryDirectory(prefix="mnist-watsonx-") as tmp:
            archive = Path(tmp) / Path(str(props["archive_key"])).name
            try:
                s3 = conn.cos_client()
                retrying(lambda: s3.download_file(props["bucket"], props["archive_key"], str(archive)))
            except Exception as error:
                raise failure(f"downloading cos://{props['bucket']}/{props['archive_key']}", error) from error
            signature = onnx_signature(archive)
            opset = signature.opset
            try:
                client = conn.watsonx_client(space_id=str(props["space_id"]))
                specs = retrying(lambda: client.software_specifications.get_details(state_info=True))
                runtime = choose_runtime(specs.get("resources", []), opset)
                names = client.repository.ModelMetaNames
                meta = {
                    names.NAME: props["name"],
                    names.TYPE: runtime.model_type,
                    names.SOFTWARE_SPEC_ID: runtime.spec_id,
                    names.TAGS: [*(props.get("tags") or []), tag],
                }
                log(
                    f"storing model {props['name']} as {runtime.model_type} "
                    f"on {runtime.spec_name} (opset {opset})"
                )

                def store() -> str:
                    details = client.repository.store_model(model=str(archive), meta_props=meta)
                    return str(details["metadata"]["id"])

                def listed() -> list[dict[str, Any]]:
                    return client.repository.get_model_details(get_all=True).get("resources", [])

                def same_name(resources: list[dict[str, Any]]) -> set[str]:
                    return {
                        str(m["metadata"]["id"])
                        for m in resources
                        if m["metadata"].get("name") == props["name"]
                    }

                found = retrying(listed)
                adopted = left_behind(
                    "stored model",
                    found,
                    tag,
                    lambda details: str((details.get("entity") or {}).get("content_import_state", "")),
                    ("completed",),
                    client.repository.delete,
                )
                model_id = adopted or _store_with_content(
                    client,
                    create_or_adopt(
                        f"storing model {props['name']}",
                        store,
                        lambda: same_name(listed()),
                        before=same_name(found),
                    ),
                    store,
                )
            except IbmProviderError:
                raise
            except Exception as error:
                raise failure(
                    f"storing model {props['name']} in space {props['space_id']}",
                    error,
                    "The API key needs Editor (or Admin) in the deployment space.",
                ) from error
        outs = {
            **state_of(props),
            "model_id": model_id,
            "model_type": runtime.model_type,
            "software_spec": runtime.spec_name,
            "software_spec_id": runtime.spec_id,
            "opset": opset,
            "input_shape": list(signature.image_shape),
        }
        return CreateResult(id_=model_id, outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        replaces = changed_keys(olds, news, _REPLACE_KEYS)
        updates = changed_keys(olds, news, CONNECTION_KEYS)
        return DiffResult(changes=bool(replaces or updates), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=update_connection(olds, news))

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        client = Connection.of(props).watsonx_client(space_id=str(props["space_id"]))
        try:
            retrying(lambda: client.repository.get_model_details(id_))
        except Exception as error:
            if is_not_found(error):
                return ReadResult(None, {})
            raise failure(f"reading model {id_}", error) from error
        return ReadResult(id_, props)

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        client = Connection.of(props).watsonx_client(space_id=str(props["space_id"]))
        log(f"deleting stored model {props.get('name')}")
        try:
            retrying(lambda: client.repository.delete(id_))
        except Exception as error:
            if is_not_found(error):
                return
            raise failure(
                f"deleting stored model {id_}", error, "Delete its deployments first (the stack does)."
            ) from error


def _store_with_content(client: Any, model_id: str, store: Callable[[], str]) -> str:
    """`model_id` if its content is in, else a new copy: storing is two calls (the model, then its
    content), and a model adopted after a lost answer may hold no content yet. Such a copy cannot be
    deployed, so it is deleted and the model stored again."""
    details = retrying(lambda: client.repository.get_model_details(model_id))
    if (details.get("entity") or {}).get("content_import_state") in (None, "completed"):
        return model_id
    log(f"model {model_id} was stored without its content; deleting it and storing the model again")
    retrying(lambda: client.repository.delete(model_id))
    return store()


class StoredModel(pulumi.dynamic.Resource, module="ibm", name="Model"):
    """The ONNX model in the space's repository."""

    model_id: pulumi.Output[str]
    model_type: pulumi.Output[str]
    software_spec: pulumi.Output[str]
    software_spec_id: pulumi.Output[str]
    opset: pulumi.Output[int]
    input_shape: pulumi.Output[list[int]]

    def __init__(self, name: str, args: StoredModelArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "name": args.name,
            "space_id": args.space_id,
            "bucket": args.bucket,
            "archive_key": args.archive_key,
            "artifact_hash": args.artifact_hash,
            "region": args.region,
            "tags": list(args.tags),
            "api_key": args.api_key,
            "endpoints": args.endpoints,
            "model_id": None,
            "model_type": None,
            "software_spec": None,
            "software_spec_id": None,
            "opset": None,
            "input_shape": None,
        }
        props[IDENTITY_SEED] = identity_seed("ibm:Model", name)
        super().__init__(StoredModelProvider(), name, props, secret_key_opts(opts))

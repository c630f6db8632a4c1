"""Software and hardware specifications (/v2/software_specifications, /v2/hardware_specifications on the
data platform host, where ibm-watsonx-ai 1.8 reads them).

The list is shaped like the service's: base specifications with a `metadata.life_cycle` map (state ->
since, plus `replacement_name` for an outdated one). It holds the ONNX specs the ibm stack chooses from
(`onnxruntime_opset_19`, supported, for model type `onnxruntime_1.16`; `onnxruntime_opset_21` for
`onnxruntime_1.17`, IBM's published pairs; `onnxruntime_opset_17`, deprecated in favour of opset 19;
`onnxruntime_opset_15`, retired) and a few Python runtimes beside them. The ids are stable
made-up UUIDs: a stack must look specs up by name.
"""

from __future__ import annotations

import uuid
from typing import Any

# name -> (life cycle, model types it runs, packages)
SOFTWARE_SPECS: dict[str, tuple[dict[str, Any], tuple[str, ...], dict[str, str]]] = {
    "onnxruntime_opset_19": (
        {"available": {"since": "5.0"}, "supported": {"since": "5.0"}},
        ("onnxruntime_1.16",),
        {"onnxruntime": "1.16.3", "onnx": "1.16.0"},
    ),
    "onnxruntime_opset_21": (
        {"available": {"since": "5.1"}, "supported": {"since": "5.1"}},
        ("onnxruntime_1.17",),
        {"onnxruntime": "1.17.3", "onnx": "1.17.0"},
    ),
    "onnxruntime_opset_17": (
        {"deprecated": {"since": "5.1"}, "replacement_name": "onnxruntime_opset_19"},
        ("onnxruntime_1.13",),
        {"onnxruntime": "1.13.1", "onnx": "1.13.1"},
    ),
    "onnxruntime_opset_15": (
        {"retired": {"since": "5.0"}, "replacement_name": "onnxruntime_opset_19"},
        ("onnxruntime_1.12",),
        {"onnxruntime": "1.12.1"},
    ),
    "runtime-24.1-py3.11": (
        {"available": {"since": "4.8"}, "supported": {"since": "4.8"}},
        ("scikit-learn_1.3", "xgboost_2.0", "tensorflow_2.14", "pytorch-onnx_2.1"),
        {"python": "3.11"},
    ),
    "runtime-23.1-py3.10": (
        {"deprecated": {"since": "5.1"}, "replacement_name": "runtime-24.1-py3.11"},
        ("scikit-learn_1.1", "xgboost_1.6", "tensorflow_2.12", "pytorch-onnx_1.13"),
        {"python": "3.10"},
    ),
}

# Hardware specifications a deployment may use: the sizes IBM's compute table for deployments lists.
DEPLOYMENT_SIZES = frozenset({"XS", "S", "M", "L", "XL"})
HARDWARE_SPECS: dict[str, tuple[str, str]] = {  # name -> (CPU units, memory); XXS is not for deployments
    "XXS": ("1", "2Gi"),
    "XS": ("1", "4Gi"),
    "S": ("2", "8Gi"),
    "M": ("4", "16Gi"),
    "L": ("8", "32Gi"),
    "XL": ("16", "64Gi"),
}


def spec_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"software_specification/{name}"))


def hardware_id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hardware_specification/{name}"))


def software_spec(name: str) -> dict[str, Any]:
    life_cycle, _, packages = SOFTWARE_SPECS[name]
    return {
        "metadata": {
            "name": name,
            "asset_id": spec_id(name),
            "asset_type": "software_specification",
            "href": f"/v2/software_specifications/{spec_id(name)}",
            "description": f"Software specification {name}",
            "created_at": "2024-03-01T00:00:00.000Z",
            "life_cycle": life_cycle,
        },
        "entity": {
            "software_specification": {
                "type": "base",
                "built_in": True,
                "display_name": name,
                "package_extensions": [],
                "software_configuration": {
                    "platform": {"name": "python", "version": "3.11"},
                    "included_packages": [{"name": k, "version": v} for k, v in packages.items()],
                },
            }
        },
    }


def hardware_spec(name: str) -> dict[str, Any]:
    cpu, memory = HARDWARE_SPECS[name]
    return {
        "metadata": {
            "name": name,
            "asset_id": hardware_id(name),
            "asset_type": "hardware_specification",
            "href": f"/v2/hardware_specifications/{hardware_id(name)}",
            "description": f"{cpu} CPU and {memory} RAM",
            "created_at": "2024-03-01T00:00:00.000Z",
        },
        "entity": {
            "hardware_specification": {
                "nodes": {"cpu": {"units": cpu}, "mem": {"size": memory}, "num_nodes": 1}
            }
        },
    }


def software_spec_state(name: str) -> str:
    """The spec's state as the SDK derives it (the most severe state in its life cycle)."""
    life_cycle = SOFTWARE_SPECS[name][0]
    for state in ("withdrawn", "retired", "constricted", "deprecated"):
        if state in life_cycle:
            return state
    return "supported"


def spec_by_id_or_name(key: str) -> str | None:
    return next((n for n in SOFTWARE_SPECS if key in (n, spec_id(n))), None)


def hardware_by_id_or_name(key: str) -> str | None:
    return next((n for n in HARDWARE_SPECS if key in (n, hardware_id(n))), None)

"""The CustomResourceDefinition, generated from the pydantic models (never written by hand).

pydantic emits JSON Schema (2020-12); the API server wants a structural OpenAPI v3.0 schema. The
translation: inline every $ref, drop titles and null branches, turn `str | int` into
x-kubernetes-int-or-string and free-form objects into x-kubernetes-preserve-unknown-fields, and keep
only scalar defaults (the API server applies them, so `kubectl get -o yaml` shows the effective spec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel

from llamacontroller.llamanode import NODE_KIND, NODE_PLURAL, LlamaNodeStatus
from llamacontroller.resource import GROUP, KIND, PLURAL, VERSION, LlamaModelSpec, LlamaModelStatus

CATEGORIES = ["llama"]

MODEL_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".status.model"},
    {"name": "Node", "type": "string", "jsonPath": ".status.node"},
    {"name": "Slot", "type": "string", "jsonPath": ".status.slot"},
    {"name": "Port", "type": "integer", "jsonPath": ".status.port"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Pod", "type": "string", "jsonPath": ".status.podName", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]
# One column per GPU for the usual two; `kubectl get ln -o yaml` shows every GPU.
NODE_COLUMNS: list[dict[str, Any]] = [
    {"name": "GPU 0", "type": "string", "jsonPath": ".status.gpus[0].summary"},
    {"name": "GPU 1", "type": "string", "jsonPath": ".status.gpus[1].summary"},
    {"name": "NVML", "type": "string", "jsonPath": ".status.nvml"},
    {"name": "Heartbeat", "type": "date", "jsonPath": ".status.heartbeatAt"},
    {"name": "Agent", "type": "string", "jsonPath": ".status.agentVersion", "priority": 1},
]


@dataclass(frozen=True)
class Definition:
    """What differs between this project's resources."""

    kind: str
    plural: str
    scope: str
    short_names: list[str]
    description: str
    spec: type[BaseModel] | None
    status: type[BaseModel]
    columns: list[dict[str, Any]]


DEFINITIONS = {
    KIND: Definition(
        kind=KIND,
        plural=PLURAL,
        scope="Namespaced",
        short_names=["lm"],
        description="A GGUF model served by llama-server on a slot of a GPU node.",
        spec=LlamaModelSpec,
        status=LlamaModelStatus,
        columns=MODEL_COLUMNS,
    ),
    NODE_KIND: Definition(
        kind=NODE_KIND,
        plural=NODE_PLURAL,
        scope="Cluster",
        short_names=["ln"],
        description="What the node agent of one node reads of its GPUs and models volume.",
        spec=None,
        status=LlamaNodeStatus,
        columns=NODE_COLUMNS,
    ),
}

_DROPPED_KEYS = {"title", "$defs", "discriminator"}


def _is_null(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "null"


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Translate one JSON Schema node (recursively) into a structural OpenAPI v3.0 node."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _structural(merged, defs)
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if not _is_null(b)]
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        if {b.get("type") for b in branches} == {"string", "integer"}:
            # each branch's bounds apply to its own kind of value (a pattern to strings only)
            bounds = {k: v for b in branches for k, v in _plain_keys(b).items() if k != "type"}
            return {**bounds, **_plain_keys(rest), "x-kubernetes-int-or-string": True}
        if len(branches) == 1:
            return _structural({**branches[0], **rest}, defs)
        raise ValueError(f"no structural form for anyOf {schema['anyOf']!r}")

    out = _plain_keys(schema)
    if "const" in out:
        out["enum"] = [out.pop("const")]
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(out.get(bound), int | float) and not isinstance(out.get(bound), bool):
            out[bound.replace("exclusiveM", "m")] = out[bound]
            out[bound] = True
    additional = out.pop("additionalProperties", None)
    if "properties" in schema:
        out["properties"] = {k: _structural(v, defs) for k, v in schema["properties"].items()}
        out["type"] = "object"
    if additional is True or additional == {}:
        out["x-kubernetes-preserve-unknown-fields"] = True
    elif isinstance(additional, dict) and "properties" not in schema:
        out["additionalProperties"] = _structural(additional, defs)
    if "items" in schema:
        out["items"] = _structural(schema["items"], defs)
    if "default" in out and (out["default"] is None or isinstance(out["default"], dict | list)):
        out.pop("default")
    return out


def _plain_keys(schema: dict[str, Any]) -> dict[str, Any]:
    skip = _DROPPED_KEYS | {"properties", "items", "$ref", "anyOf"}
    return {k: v for k, v in schema.items() if k not in skip}


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    """The structural schema of one pydantic model, in the resource's camelCase field names."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(schema, schema.get("$defs", {}))


def crd(kind: str = KIND) -> dict[str, Any]:
    """The whole CRD object of one of DEFINITIONS' kinds, for `kubectl apply`."""
    definition = DEFINITIONS[kind]
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
    }
    if definition.spec is not None:
        properties["spec"] = openapi_schema(definition.spec)
    properties["status"] = openapi_schema(definition.status)
    root: dict[str, Any] = {"type": "object", "description": definition.description}
    if definition.spec is not None:
        root["required"] = ["spec"]
    root["properties"] = properties
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{definition.plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": definition.scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": definition.plural,
                "singular": kind.lower(),
                "shortNames": definition.short_names,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": definition.columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


HEADER = "# Generated from the pydantic models by `llamacontroller crd`; do not edit by hand.\n"


class _Dumper(yaml.SafeDumper):
    """Writes a node shared by two places twice, never as an anchor and alias."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def crd_yaml(kind: str = KIND) -> str:
    return HEADER + yaml.dump(crd(kind), Dumper=_Dumper, sort_keys=False, width=110)

"""The CustomResourceDefinition, generated from the pydantic models (never written by hand).

pydantic emits JSON Schema (2020-12); the API server wants a structural OpenAPI v3.0 schema. The
translation: inline every $ref, drop titles and null branches, turn `str | int` into
x-kubernetes-int-or-string and free-form objects into x-kubernetes-preserve-unknown-fields, and keep
only scalar defaults (the API server applies them, so `kubectl get -o yaml` shows the effective spec).
"""

from __future__ import annotations

from typing import Any

import yaml

from llamacontroller.resource import GROUP, KIND, PLURAL, VERSION, LlamaModelSpec, LlamaModelStatus

SHORT_NAMES = ["lm"]
CATEGORIES = ["llama"]

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Model", "type": "string", "jsonPath": ".status.model"},
    {"name": "Node", "type": "string", "jsonPath": ".status.node"},
    {"name": "Slot", "type": "string", "jsonPath": ".status.slot"},
    {"name": "Port", "type": "integer", "jsonPath": ".status.port"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Pod", "type": "string", "jsonPath": ".status.podName", "priority": 1},
    {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
]

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


def crd() -> dict[str, Any]:
    """The whole CRD object for `kubectl apply`."""
    root = {
        "type": "object",
        "description": "A GGUF model served by llama-server on a slot of a GPU node.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": openapi_schema(LlamaModelSpec),
            "status": openapi_schema(LlamaModelStatus),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": CATEGORIES,
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
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


def crd_yaml() -> str:
    return HEADER + yaml.dump(crd(), Dumper=_Dumper, sort_keys=False, width=110)

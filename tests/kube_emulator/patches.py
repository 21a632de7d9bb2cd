"""The three patch formats of the API server: JSON merge patch, JSON patch, strategic merge patch.

All functions take a document that the caller owns (a deep copy of the stored object) and return the
patched document; stored objects are never mutated in place.

The strategic merge patch is an approximation: the real server reads patch strategies and merge keys
from the Go types. Here lists are merged by a fixed table of well-known field names (``containers``,
``env``, ``volumes`` and ``imagePullSecrets`` by ``name``, container ``ports`` by ``containerPort``,
service ``ports`` by ``port``, ``conditions`` by ``type``, ``ownerReferences`` by ``uid``, ...),
``metadata.finalizers`` is merged as a set, and every other list is replaced as a whole. The
directives ``$patch`` (replace/delete/merge), ``$retainKeys``, ``$setElementOrder/...`` and
``$deleteFromPrimitiveList/...`` that kubectl sends are honoured.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(ValueError):
    """A patch that cannot be applied (answered 422, like the real server)."""


class MalformedPatchError(ValueError):
    """A patch document that cannot be decoded (answered 400)."""


def json_equal(a: Any, b: Any) -> bool:
    """Equality of JSON values: ``1 == 1.0`` but ``true != 1``, and no dict/list coercions."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# --- RFC 7386: JSON merge patch -------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: objects merge recursively, ``null`` deletes, all else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902: JSON patch -------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str):
        raise PatchError(f"invalid JSON pointer: {path!r}")
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f'JSON pointer must start with "/": {path!r}')
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (token.startswith("0") and token != "0"):
        raise PatchError(f"invalid array index: {token!r}")
    index = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if index > limit:
        raise PatchError(f"array index out of bounds: {index}")
    return index


def _parent(doc: Any, parts: list[str]) -> Any:
    current = doc
    for token in parts[:-1]:
        if isinstance(current, dict):
            if token not in current:
                raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, allow_end=False)]
        else:
            raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
    return current


def _get(doc: Any, parts: list[str]) -> Any:
    if not parts:
        return doc
    parent = _parent(doc, parts)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"doc is missing key: /{'/'.join(parts)}")
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(parent, token, allow_end=False)]
    raise PatchError(f"doc is missing path: /{'/'.join(parts)}")


def _add(doc: Any, parts: list[str], value: Any) -> Any:
    if not parts:
        return value
    parent = _parent(doc, parts)
    token = parts[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, allow_end=True), value)
    else:
        raise PatchError(f"add operation does not apply: doc is missing path: /{'/'.join(parts)}")
    return doc


def _remove(doc: Any, parts: list[str]) -> tuple[Any, Any]:
    if not parts:
        raise PatchError("remove operation cannot remove the whole document")
    parent = _parent(doc, parts)
    token = parts[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchError(f"remove operation does not apply: doc is missing path: /{'/'.join(parts)}")
        return doc, parent.pop(token)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, token, allow_end=False))
    raise PatchError(f"remove operation does not apply: doc is missing path: /{'/'.join(parts)}")


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test); all or nothing."""
    if not isinstance(operations, list):
        raise MalformedPatchError(
            f"json: cannot unmarshal {type(operations).__name__} into Go value of type jsonpatch.Patch"
        )
    for operation in operations:
        if not isinstance(operation, dict):
            raise MalformedPatchError("json: cannot unmarshal into Go value of type jsonpatch.Operation")
        op = operation.get("op")
        parts = _pointer(operation.get("path"))
        match op:
            case "add":
                doc = _add(doc, parts, copy.deepcopy(operation.get("value")))
            case "remove":
                doc, _ = _remove(doc, parts)
            case "replace":
                if parts:
                    _get(doc, parts)  # must exist
                    doc, _ = _remove(doc, parts)
                doc = _add(doc, parts, copy.deepcopy(operation.get("value")))
            case "move":
                source = _pointer(operation.get("from"))
                doc, value = _remove(doc, source)
                doc = _add(doc, parts, value)
            case "copy":
                source = _pointer(operation.get("from"))
                doc = _add(doc, parts, copy.deepcopy(_get(doc, source)))
            case "test":
                try:
                    actual = _get(doc, parts)
                except PatchError:
                    actual = None
                if not json_equal(actual, operation.get("value")):
                    raise PatchError(f"testing value {operation.get('path')} failed: test failed")
            case _:
                raise PatchError(f"Unexpected kind: {op}")
    return doc


# --- Strategic merge patch (approximation) --------------------------------------------------------

_MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "conditions": "type",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "readinessGates": "conditionType",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "addresses": "type",
    "taints": "key",
}
_PRIMITIVE_MERGE_LISTS = {"finalizers"}
_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_ORDER_PREFIX = "$setElementOrder/"
_DELETE_PRIMITIVE_PREFIX = "$deleteFromPrimitiveList/"


def _merge_key(field: str, parent: str) -> str | None:
    if field == "ports":
        return "port" if parent == "spec" else "containerPort"
    return _MERGE_KEYS.get(field)


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def strategic_merge_patch(target: Any, patch: Any, field: str = "", parent: str = "") -> Any:
    """Apply a strategic merge patch to a document (see the module docstring for the approximation)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get(_DIRECTIVE) == "replace":
        return _strip_directives(copy.deepcopy({k: v for k, v in patch.items() if k != _DIRECTIVE}))
    result = target if isinstance(target, dict) else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN):
            continue
        if key.startswith(_ORDER_PREFIX):
            orders[key[len(_ORDER_PREFIX) :]] = value if isinstance(value, list) else []
            continue
        if key.startswith(_DELETE_PRIMITIVE_PREFIX):
            name = key[len(_DELETE_PRIMITIVE_PREFIX) :]
            if isinstance(result.get(name), list) and isinstance(value, list):
                result[name] = [item for item in result[name] if item not in value]
            continue
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            if value.get(_DIRECTIVE) == "delete":
                result.pop(key, None)
            else:
                result[key] = strategic_merge_patch(result.get(key), value, key, field)
        elif isinstance(value, list):
            result[key] = _merge_list(result.get(key), value, key, field)
        else:
            result[key] = value
    for name, order in orders.items():
        if isinstance(result.get(name), list):
            result[name] = _reorder(result[name], order, _merge_key(name, field))
    retain = patch.get(_RETAIN)
    if isinstance(retain, list):
        for key in list(result):
            if key not in retain:
                del result[key]
    return result


def _merge_list(current: Any, patch: list[Any], field: str, parent: str) -> list[Any]:
    current = current if isinstance(current, list) else []
    if any(isinstance(item, dict) and item.get(_DIRECTIVE) == "replace" for item in patch):
        return _strip_directives(
            [item for item in patch if not (isinstance(item, dict) and item.get(_DIRECTIVE) == "replace")]
        )
    if field in _PRIMITIVE_MERGE_LISTS and parent == "metadata":
        merged = list(current)
        merged.extend(item for item in patch if item not in merged)
        return merged
    key = _merge_key(field, parent)
    if key is None or not all(isinstance(item, dict) for item in patch):
        return _strip_directives(copy.deepcopy(patch))
    merged = list(current)
    for item in patch:
        if key not in item:
            merged.append(_strip_directives(copy.deepcopy(item)))
            continue
        position = next(
            (i for i, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == item[key]), None
        )
        if item.get(_DIRECTIVE) == "delete":
            if position is not None:
                merged.pop(position)
        elif position is None:
            merged.append(_strip_directives(copy.deepcopy(item)))
        else:
            merged[position] = strategic_merge_patch(merged[position], item, "[]", field)
    return merged


def _reorder(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    ranks = {repr(ident(entry) if isinstance(entry, dict) else entry): i for i, entry in enumerate(order)}
    return sorted(items, key=lambda item: ranks.get(repr(ident(item)), len(ranks)))

"""Structural-schema handling of custom resources: pruning, defaulting and validation.

The real API server prunes unknown fields (reporting them for ``fieldValidation``), drops ``null`` for
non-nullable fields, applies schema defaults and then validates with kube-openapi. The messages
here follow kube-openapi + apimachinery's field errors, e.g.
``spec.size: Invalid value: 200: spec.size in body should be less than or equal to 100``.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from .errors import FieldError, go_number
from .patches import json_equal

OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)
_ROOT_FIELDS = ("apiVersion", "kind", "metadata")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def unknown_metadata_fields(obj: Mapping[str, Any]) -> list[str]:
    meta = obj.get("metadata")
    if not isinstance(meta, Mapping):
        return []
    return [f"metadata.{key}" for key in meta if key not in OBJECT_META_FIELDS]


# --- pruning ---------------------------------------------------------------------------------------


def prune(obj: dict[str, Any], schema: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """Drop fields unknown to the schema; return the pruned object and the dropped field paths."""
    unknown = unknown_metadata_fields(obj)
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for key in [k for k in meta if k not in OBJECT_META_FIELDS]:
            del meta[key]
    if schema is None:
        return obj, unknown
    result: dict[str, Any] = {key: obj[key] for key in _ROOT_FIELDS if key in obj}
    rest = {key: val for key, val in obj.items() if key not in _ROOT_FIELDS}
    pruned = _prune_value(rest, schema, "", unknown, root=True)
    result.update(pruned if isinstance(pruned, dict) else {})
    return result, sorted(unknown, key=_path_sort_key)


def _path_sort_key(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def _prune_value(
    value: Any, schema: Mapping[str, Any], path: str, unknown: list[str], root: bool = False
) -> Any:
    if isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        result: dict[str, Any] = {}
        for key, item in value.items():
            sub = path + f".{key}" if path else key
            if (
                item is None
                and isinstance(props, Mapping)
                and key in props
                and not props[key].get("nullable")
            ):
                continue  # nulls of non-nullable fields are dropped (defaulting then applies)
            if isinstance(props, Mapping) and key in props:
                result[key] = _prune_value(item, props[key], sub, unknown)
            elif isinstance(additional, Mapping):
                result[key] = _prune_value(item, additional, sub, unknown)
            elif additional is True or preserve or ((embedded or root) and key in _ROOT_FIELDS):
                result[key] = item
            else:
                unknown.append(sub)
        return result
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            return [_prune_value(item, items, f"{path}[{i}]", unknown) for i, item in enumerate(value)]
    return value


# --- defaulting ------------------------------------------------------------------------------------


def apply_defaults(value: Any, schema: Mapping[str, Any] | None) -> Any:
    """Fill missing properties from schema ``default`` values, recursively (also inside defaults)."""
    if schema is None:
        return value
    if isinstance(value, dict):
        props = schema.get("properties")
        if isinstance(props, Mapping):
            for key, sub in props.items():
                if key not in value and isinstance(sub, Mapping) and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
            for key, sub in props.items():
                if key in value and isinstance(sub, Mapping):
                    value[key] = apply_defaults(value[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            for key in list(value):
                if not (isinstance(props, Mapping) and key in props):
                    value[key] = apply_defaults(value[key], additional)
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            return [apply_defaults(item, items) for item in value]
    return value


# --- validation ------------------------------------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "integer" if value == int(value) else "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _type_ok(value: Any, expected: str) -> bool:
    actual = _type_name(value)
    if expected == "number":
        return actual in ("integer", "number")
    return actual == expected


def validate(obj: Mapping[str, Any], schema: Mapping[str, Any] | None) -> list[FieldError]:
    """Validate an object (without apiVersion/kind/metadata) against an openAPIV3Schema."""
    if schema is None:
        return []
    errors: list[FieldError] = []
    body = {key: val for key, val in obj.items() if key not in _ROOT_FIELDS}
    props = schema.get("properties") or {}
    for key in schema.get("required") or []:
        if key not in _ROOT_FIELDS and key not in body:
            errors.append(FieldError("Required", key))
    for key, value in body.items():
        if key in props:
            _validate(value, props[key], key, errors)
    return errors


def _validate(value: Any, schema: Mapping[str, Any], path: str, errors: list[FieldError]) -> None:
    if value is None and schema.get("nullable"):
        return
    int_or_string = bool(schema.get("x-kubernetes-int-or-string"))
    expected = schema.get("type")
    if int_or_string:
        if _type_name(value) not in ("integer", "string"):
            errors.append(
                FieldError(
                    "TypeInvalid",
                    path,
                    _type_name(value),
                    f'{path} in body must be of type integer,string: "{_type_name(value)}"',
                )
            )
            return
    elif expected and not _type_ok(value, expected):
        actual = _type_name(value)
        errors.append(
            FieldError("TypeInvalid", path, actual, f'{path} in body must be of type {expected}: "{actual}"')
        )
        return
    elif value is None and not expected and not schema.get("x-kubernetes-preserve-unknown-fields"):
        return

    enum = schema.get("enum")
    if enum is not None and not any(json_equal(value, option) for option in enum):
        errors.append(
            FieldError(
                "NotSupported",
                path,
                value,
                "supported values: "
                + ", ".join(
                    '"' + (option if isinstance(option, str) else _json_text(option)) + '"' for option in enum
                ),
            )
        )

    if isinstance(value, str):
        _validate_string(value, schema, path, errors)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _validate_number(value, schema, path, errors)
    elif isinstance(value, list):
        _validate_array(value, schema, path, errors)
    elif isinstance(value, dict):
        _validate_object(value, schema, path, errors)

    for sub in schema.get("allOf") or []:
        _validate(value, sub, path, errors)
    for combinator, check in (("anyOf", lambda n, total: n >= 1), ("oneOf", lambda n, total: n == 1)):
        options = schema.get(combinator)
        if options:
            passed = sum(1 for sub in options if not _collect(value, sub, path))
            if not check(passed, len(options)):
                what = (
                    "at least one schema (anyOf)"
                    if combinator == "anyOf"
                    else "one and only one schema (oneOf)"
                )
                errors.append(FieldError("Invalid", path, value, f"{path} in body must validate {what}"))
    if "not" in schema and not _collect(value, schema["not"], path):
        errors.append(
            FieldError("Invalid", path, value, f"{path} in body must not validate the schema (not)")
        )


def _collect(value: Any, schema: Mapping[str, Any], path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    _validate(value, schema, path, errors)
    return errors


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


def _validate_string(value: str, schema: Mapping[str, Any], path: str, errors: list[FieldError]) -> None:
    max_length = schema.get("maxLength")
    if max_length is not None and len(value) > max_length:
        unit = "byte" if max_length == 1 else "bytes"
        errors.append(FieldError("TooLong", path, value, f"may not be more than {max_length} {unit}"))
    min_length = schema.get("minLength")
    if min_length is not None and len(value) < min_length:
        errors.append(
            FieldError("Invalid", path, value, f"{path} in body should be at least {min_length} chars long")
        )
    pattern = schema.get("pattern")
    if pattern is not None:
        try:
            matched = re.search(pattern, value) is not None
        except re.error:
            matched = True
        if not matched:
            errors.append(FieldError("Invalid", path, value, f"{path} in body should match '{pattern}'"))


def _validate_number(value: float, schema: Mapping[str, Any], path: str, errors: list[FieldError]) -> None:
    maximum = schema.get("maximum")
    if maximum is not None:
        if schema.get("exclusiveMaximum") and value >= maximum:
            errors.append(
                FieldError("Invalid", path, value, f"{path} in body should be less than {go_number(maximum)}")
            )
        elif value > maximum:
            errors.append(
                FieldError(
                    "Invalid",
                    path,
                    value,
                    f"{path} in body should be less than or equal to {go_number(maximum)}",
                )
            )
    minimum = schema.get("minimum")
    if minimum is not None:
        if schema.get("exclusiveMinimum") and value <= minimum:
            errors.append(
                FieldError(
                    "Invalid", path, value, f"{path} in body should be greater than {go_number(minimum)}"
                )
            )
        elif value < minimum:
            errors.append(
                FieldError(
                    "Invalid",
                    path,
                    value,
                    f"{path} in body should be greater than or equal to {go_number(minimum)}",
                )
            )
    multiple = schema.get("multipleOf")
    if multiple and (value / multiple) != int(value / multiple):
        errors.append(
            FieldError(
                "Invalid", path, value, f"{path} in body should be a multiple of {go_number(multiple)}"
            )
        )


def _validate_count(
    count: int, schema: Mapping[str, Any], keyword: str, noun: str, path: str, errors: list[FieldError]
) -> None:
    """``max<keyword>``/``min<keyword>`` (Items, Properties), with the API server's messages."""
    most = schema.get(f"max{keyword}")
    if most is not None and count > most:
        unit = "item" if most == 1 else "items"
        errors.append(FieldError("TooMany", path, count, f"must have at most {most} {unit}"))
    least = schema.get(f"min{keyword}")
    if least is not None and count < least:
        errors.append(
            FieldError("Invalid", path, count, f"{path} in body should have at least {least} {noun}")
        )


def _validate_array(value: list[Any], schema: Mapping[str, Any], path: str, errors: list[FieldError]) -> None:
    _validate_count(len(value), schema, "Items", "items", path, errors)
    if schema.get("uniqueItems"):
        for i, item in enumerate(value):
            if any(json_equal(item, other) for other in value[:i]):
                errors.append(FieldError("Duplicate", f"{path}[{i}]", item))
                break
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, item in enumerate(value):
            _validate(item, items, f"{path}[{i}]", errors)


def _validate_object(
    value: dict[str, Any], schema: Mapping[str, Any], path: str, errors: list[FieldError]
) -> None:
    _validate_count(len(value), schema, "Properties", "properties", path, errors)
    for key in schema.get("required") or []:
        if key not in value:
            errors.append(FieldError("Required", _join(path, key)))
    props = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if key in props:
            _validate(item, props[key], _join(path, key), errors)
        elif isinstance(additional, Mapping):
            _validate(item, additional, _join(path, key), errors)

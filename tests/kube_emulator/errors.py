"""Kubernetes-shaped API errors: ``Status`` objects as a real kube-apiserver renders them.

Clients (kubectl, the ``kubernetes`` client, kopf) parse ``reason``/``code``/``details`` to decide
what happened, so every failure of the emulator is raised as an :class:`ApiError` and rendered here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Cause types of metav1.CauseType for field errors, keyed by our short error types.
_CAUSE_TYPES = {
    "Required": "FieldValueRequired",
    "Invalid": "FieldValueInvalid",
    "TypeInvalid": "FieldValueTypeInvalid",
    "NotSupported": "FieldValueNotSupported",
    "Forbidden": "FieldValueForbidden",
    "TooLong": "FieldValueTooLong",
    "TooMany": "FieldValueTooMany",
    "Duplicate": "FieldValueDuplicate",
    "NotFound": "FieldValueNotFound",
}
_TYPE_TITLES = {
    "Required": "Required value",
    "Invalid": "Invalid value",
    "TypeInvalid": "Invalid value",
    "NotSupported": "Unsupported value",
    "Forbidden": "Forbidden",
    "TooLong": "Too long",
    "TooMany": "Too many",
    "Duplicate": "Duplicate value",
    "NotFound": "Not found",
}
_OMIT = object()


def go_value(value: Any) -> str:
    """Render a bad value the way apimachinery's field errors print it (strings quoted)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_number(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def go_number(value: float | int) -> str:
    """Format a number like Go's %v does for float64 (``100`` not ``100.0``)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(value)


@dataclass(frozen=True)
class FieldError:
    """One field-level validation error (k8s.io/apimachinery/pkg/util/validation/field.Error)."""

    type: str  # Required, Invalid, TypeInvalid, NotSupported, Forbidden, TooLong, TooMany, ...
    field: str
    value: Any = _OMIT
    detail: str = ""

    @property
    def body(self) -> str:
        """The message without the field path: ``Invalid value: 5: must be ...``."""
        title = _TYPE_TITLES[self.type]
        if self.type in ("Required", "Forbidden", "TooLong") or self.value is _OMIT:
            text = title
        else:
            text = f"{title}: {go_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    @property
    def message(self) -> str:
        return f"{self.field}: {self.body}" if self.field else self.body

    def cause(self) -> dict[str, Any]:
        return {"reason": _CAUSE_TYPES[self.type], "message": self.body, "field": self.field}


def aggregate(messages: Sequence[str]) -> str:
    """Join messages like utilerrors.Aggregate: one as is, several in brackets, duplicates dropped."""
    unique: list[str] = []
    for message in messages:
        if message not in unique:
            unique.append(message)
    if len(unique) == 1:
        return unique[0]
    return "[" + ", ".join(unique) + "]"


@dataclass
class ApiError(Exception):
    """An API failure that is rendered as a ``kind: Status`` body with the given HTTP code."""

    code: int
    reason: str
    message: str
    details: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"({self.code} {self.reason}) {self.message}"

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(name: str | None, group: str, kind: str, **extra: Any) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    if kind:
        details["kind"] = kind
    details.update({key: val for key, val in extra.items() if val})
    return details


def qualified(resource: str, group: str) -> str:
    """``pods`` for the core group, ``widgets.example.test`` otherwise (schema.GroupResource)."""
    return f"{resource}.{group}" if group else resource


def not_found(group: str, resource: str, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{qualified(resource, group)} "{name}" not found', _details(name, group, resource)
    )


def resource_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(group: str, resource: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{qualified(resource, group)} "{name}" already exists',
        _details(name, group, resource),
    )


def conflict(group: str, resource: str, name: str, why: str | None = None) -> ApiError:
    why = why or "the object has been modified; please apply your changes to the latest version and try again"
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {qualified(resource, group)} "{name}": {why}',
        _details(name, group, resource),
    )


def invalid(group: str, kind: str, name: str, errors: Iterable[FieldError]) -> ApiError:
    errs = list(errors)
    qualified_kind = f"{kind}.{group}" if group else kind
    message = f'{qualified_kind} "{name}" is invalid: {aggregate([err.message for err in errs])}'
    return ApiError(
        422, "Invalid", message, _details(name, group, kind, causes=[err.cause() for err in errs])
    )


def patch_rejected() -> ApiError:
    """What the real server answers for a JSON patch that cannot be applied (e.g. a failed ``test``)."""
    return ApiError(422, "Invalid", "the server rejected our request due to an error in our request", {})


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def forbidden(group: str, resource: str, name: str, why: str) -> ApiError:
    return ApiError(
        403,
        "Forbidden",
        f'{qualified(resource, group)} "{name}" is forbidden: {why}',
        _details(name, group, resource),
    )


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message, {})


def unsupported_media_type(content_type: str, accepted: Sequence[str], note: str = "") -> ApiError:
    message = (
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(accepted)}"
    )
    if note:
        message += f" ({note}; got {content_type or 'no content type'})"
    return ApiError(415, "UnsupportedMediaType", message, {})


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def internal(message: str) -> ApiError:
    return ApiError(
        500, "InternalError", f"Internal error occurred: {message}", {"causes": [{"message": message}]}
    )

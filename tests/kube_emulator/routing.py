"""Parsing of API paths and query parameters into what a request means (pure functions).

kmock's own path parser fails on ``/api/v1/namespaces`` (and so answers 500), and only recognises
``watch=true``; the emulator parses paths itself and gives kmock the correctly parsed request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import kmock

NAMESPACE_SUBRESOURCES = ("status", "finalize")


@dataclass(frozen=True)
class ApiPath:
    """A resource path: /api/v1/namespaces/ns/pods/name/status and all its shorter forms."""

    group: str
    version: str
    plural: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    legacy_watch: bool = False  # /api/v1/watch/... paths


def parse_api_path(path: str) -> ApiPath | None:
    """Parse an API path; None for non-API paths (/version, /openapi/...)."""
    parts = [part for part in path.split("/") if part]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    legacy_watch = bool(rest) and rest[0] == "watch"
    if legacy_watch:
        rest = rest[1:]
    if not rest:
        return ApiPath(group, version, legacy_watch=legacy_watch)
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in NAMESPACE_SUBRESOURCES:
        namespace, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) >= 2 else None
    subresource = "/".join(rest[2:]) or None
    return ApiPath(group, version, plural, namespace, name, subresource, legacy_watch)


def truthy(value: str | None) -> bool:
    """Query booleans as Go's strconv.ParseBool reads them (1, t, true, ...)."""
    return (value or "").strip().lower() in ("1", "t", "true")


def is_watch(method: str, api: ApiPath, params: dict[str, str]) -> bool:
    return method == "GET" and (api.legacy_watch or truthy(params.get("watch")))


def k8s_verb(method: str, api: ApiPath, params: dict[str, str]) -> str | None:
    """The Kubernetes verb of a resource request (as audit logs and RBAC name it)."""
    if api.plural is None:
        return None
    if is_watch(method, api, params):
        return "watch"
    collection = api.name is None
    return {
        ("GET", True): "list",
        ("GET", False): "get",
        ("POST", True): "create",
        ("POST", False): "create",
        ("PUT", False): "update",
        ("PATCH", False): "patch",
        ("DELETE", True): "deletecollection",
        ("DELETE", False): "delete",
    }.get((method, collection))


def kmock_action(verb: str | None) -> kmock.action | None:
    """kmock's notion of the action, for DSL filters like ``emu[kmock.action.WATCH]``."""
    return {
        "list": kmock.action.LIST,
        "watch": kmock.action.WATCH,
        "get": kmock.action.FETCH,
        "create": kmock.action.CREATE,
        "patch": kmock.action.UPDATE,
        "delete": kmock.action.DELETE,
    }.get(verb or "")


def accept_params(accept: str) -> list[dict[str, str]]:
    """Split an Accept header into media types with their parameters (``as``, ``g``, ``v``)."""
    result = []
    for part in accept.split(","):
        pieces = [p.strip() for p in part.split(";")]
        params = {"type": pieces[0]}
        for piece in pieces[1:]:
            if "=" in piece:
                key, _, value = piece.partition("=")
                params[key.strip()] = value.strip()
        result.append(params)
    return result


def wanted_form(accept: str) -> str:
    """Which representation the client prefers: Table, PartialObjectMetadata or the object itself."""
    for media in accept_params(accept):
        if (
            media.get("as") in ("Table", "PartialObjectMetadata", "PartialObjectMetadataList")
            and media.get("g") == "meta.k8s.io"
        ):
            return "Table" if media["as"] == "Table" else "PartialObjectMetadata"
        if media["type"] in ("application/json", "*/*", "application/yaml"):
            return "Object"
    return "Object"


def first_param(query: Any, name: str) -> str | None:
    value = query.get(name)
    return None if value is None else str(value)

"""OpenAPI v3 documents, as kubectl 1.32 reads them.

kubectl uses ``/openapi/v3`` (the index) and one document per group-version for three things:
* deciding whether the server validates fields itself: a PATCH operation carrying the resource's
  ``x-kubernetes-group-version-kind`` and a ``fieldValidation`` query parameter means "yes", so
  kubectl sends ``fieldValidation=Strict`` instead of validating client-side (the emulator then
  answers exactly like a real server would);
* ``kubectl explain``: the component schema with the matching ``x-kubernetes-group-version-kind``;
* choosing the patch computation of ``kubectl apply``: built-in kinds do not list
  ``application/strategic-merge-patch+json`` in their PATCH request bodies here, so kubectl computes
  strategic merge patches from its compiled-in types (always correct) rather than from the shallow
  schemas that the emulator publishes for built-in kinds.
``/openapi/v2`` is not served (404), which kubectl tolerates silently.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from .builtins import CORE_EVENT_FIELDS, EVENTS_V1_FIELDS, TOP_LEVEL_FIELDS
from .resources import Registry, ResourceDef

META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_API_VERSION_DESC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should "
    "convert recognized schemas to the latest internal value, and may reject unrecognized values. "
    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/"
    "api-conventions.md#resources"
)
_KIND_DESC = (
    "Kind is a string value representing the REST resource this object represents. Servers may infer this "
    "from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
_METADATA_DESC = (
    "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#metadata"
)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _str(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description, "default": ""}


COMMON_SCHEMAS: dict[str, dict[str, Any]] = {
    f"{META}.ObjectMeta": {
        "type": "object",
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all "
        "objects users must create.",
        "properties": {
            "name": _str("Name must be unique within a namespace."),
            "generateName": _str(
                "GenerateName is an optional prefix, used by the server, to generate a unique "
                "name ONLY IF the Name field has not been provided."
            ),
            "namespace": _str("Namespace defines the space within which each name must be unique."),
            "uid": _str("UID is the unique in time and space value for this object."),
            "resourceVersion": _str("An opaque value that represents the internal version of this object."),
            "generation": {
                "type": "integer",
                "format": "int64",
                "description": "A sequence number representing a specific generation of the desired state.",
            },
            "creationTimestamp": {
                "type": "string",
                "format": "date-time",
                "description": "CreationTimestamp is a timestamp representing the server time "
                "when this object was created.",
            },
            "deletionTimestamp": {
                "type": "string",
                "format": "date-time",
                "description": "DeletionTimestamp is RFC 3339 date and time at which this "
                "resource will be deleted.",
            },
            "deletionGracePeriodSeconds": {
                "type": "integer",
                "format": "int64",
                "description": "Number of seconds allowed for this object to gracefully "
                "terminate before it will be removed from the system.",
            },
            "labels": {
                "type": "object",
                "additionalProperties": {"type": "string", "default": ""},
                "description": "Map of string keys and values that can be used to organize and "
                "categorize (scope and select) objects.",
            },
            "annotations": {
                "type": "object",
                "additionalProperties": {"type": "string", "default": ""},
                "description": "Annotations is an unstructured key value map stored with a resource.",
            },
            "ownerReferences": {
                "type": "array",
                "items": {"default": {}, "allOf": [_ref(f"{META}.OwnerReference")]},
                "description": "List of objects depended by this object.",
                "x-kubernetes-list-map-keys": ["uid"],
                "x-kubernetes-list-type": "map",
                "x-kubernetes-patch-merge-key": "uid",
                "x-kubernetes-patch-strategy": "merge",
            },
            "finalizers": {
                "type": "array",
                "items": {"type": "string", "default": ""},
                "description": "Must be empty before the object is deleted from the registry.",
                "x-kubernetes-list-type": "set",
                "x-kubernetes-patch-strategy": "merge",
            },
            "managedFields": {
                "type": "array",
                "items": {"type": "object"},
                "description": "ManagedFields maps workflow-id and version to the set of fields "
                "that are managed by that workflow.",
            },
        },
    },
    f"{META}.OwnerReference": {
        "type": "object",
        "description": "OwnerReference contains enough information to let you identify an owning object.",
        "required": ["apiVersion", "kind", "name", "uid"],
        "properties": {
            "apiVersion": _str("API version of the referent."),
            "kind": _str("Kind of the referent."),
            "name": _str("Name of the referent."),
            "uid": _str("UID of the referent."),
            "controller": {
                "type": "boolean",
                "description": "If true, this reference points to the managing controller.",
            },
            "blockOwnerDeletion": {
                "type": "boolean",
                "description": "If true, AND if the owner has the "
                '"foregroundDeletion" finalizer, then the owner '
                "cannot be deleted until this reference is "
                "removed.",
            },
        },
        "x-kubernetes-map-type": "atomic",
    },
    f"{META}.ListMeta": {
        "type": "object",
        "description": "ListMeta describes metadata that synthetic resources must have.",
        "properties": {
            "continue": _str("continue may be set if the user set a limit on the number of items returned."),
            "remainingItemCount": {"type": "integer", "format": "int64"},
            "resourceVersion": _str("String that identifies the server's internal version of this object."),
        },
    },
    f"{META}.Status": {
        "type": "object",
        "description": "Status is a return value for calls that don't return other objects.",
        "properties": {
            "apiVersion": _str(_API_VERSION_DESC),
            "kind": _str(_KIND_DESC),
            "code": {"type": "integer", "format": "int32"},
            "message": _str("Message."),
            "reason": _str("Reason."),
            "status": _str("Status."),
            "details": {"type": "object"},
        },
    },
    f"{META}.DeleteOptions": {
        "type": "object",
        "description": "DeleteOptions may be provided when deleting an API object.",
        "properties": {
            "gracePeriodSeconds": {"type": "integer", "format": "int64"},
            "propagationPolicy": _str("Whether and how garbage collection will be performed."),
            "preconditions": {"type": "object"},
            "dryRun": {"type": "array", "items": {"type": "string", "default": ""}},
        },
    },
    f"{META}.Patch": {
        "type": "object",
        "description": "Patch is provided to give a concrete name and type to "
        "the Kubernetes PATCH request body.",
    },
}


def definition_name(rd: ResourceDef) -> str:
    """Schema names as the real server publishes them: io.k8s.api.core.v1.Pod, test.example.v1.Widget."""
    if rd.crd_name is None:
        package = {
            "": "io.k8s.api.core",
            "events.k8s.io": "io.k8s.api.events",
            "coordination.k8s.io": "io.k8s.api.coordination",
            "apiextensions.k8s.io": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions",
        }.get(rd.group, ".".join(reversed(rd.group.split("."))))
    else:
        package = ".".join(reversed(rd.group.split(".")))
    return f"{package}.{rd.version}.{rd.kind}"


def _gvk(rd: ResourceDef, kind: str | None = None) -> dict[str, str]:
    return {"group": rd.group, "version": rd.version, "kind": kind or rd.kind}


def resource_schema(rd: ResourceDef) -> dict[str, Any]:
    """The published schema of a resource: the CRD's openAPIV3Schema, or a shallow one for built-ins."""
    base: dict[str, Any]
    if rd.crd_name is not None:
        base = (
            copy.deepcopy(rd.schema)
            if rd.schema
            else {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        )
        props = dict(base.get("properties") or {})
    else:
        if rd.group == "events.k8s.io":
            fields = EVENTS_V1_FIELDS
        elif rd.kind == "Event":
            fields = CORE_EVENT_FIELDS
        else:
            fields = TOP_LEVEL_FIELDS.get(rd.kind, frozenset({"apiVersion", "kind", "metadata"}))
        base = {
            "type": "object",
            "description": f"{rd.kind} (a shallow schema published by the kube emulator).",
        }
        props = {
            name: {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            for name in sorted(fields - {"apiVersion", "kind", "metadata"})
        }
    props["apiVersion"] = {"type": "string", "description": _API_VERSION_DESC}
    props["kind"] = {"type": "string", "description": _KIND_DESC}
    props["metadata"] = {"allOf": [_ref(f"{META}.ObjectMeta")], "default": {}, "description": _METADATA_DESC}
    base["properties"] = props
    base["x-kubernetes-group-version-kind"] = [_gvk(rd)]
    return base


def _list_schema(rd: ResourceDef, item_name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"{rd.list_kind} is a list of {rd.kind}",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": _API_VERSION_DESC},
            "items": {"type": "array", "items": _ref(item_name), "description": f"List of {rd.plural}."},
            "kind": {"type": "string", "description": _KIND_DESC},
            "metadata": {"allOf": [_ref(f"{META}.ListMeta")], "default": {}},
        },
        "x-kubernetes-group-version-kind": [_gvk(rd, rd.list_kind)],
    }


def _param(
    name: str, description: str, kind: str = "string", where: str = "query", required: bool = False
) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": where, "description": description, "schema": {"type": kind}}
    if required:
        param["required"] = True
        param["schema"]["uniqueItems"] = True
    return param


_DRY_RUN = _param("dryRun", "When present, indicates that modifications should not be persisted.")
_FIELD_MANAGER = _param(
    "fieldManager", "fieldManager is a name associated with the actor or entity that is making these changes."
)
_FIELD_VALIDATION = _param(
    "fieldValidation",
    "fieldValidation instructs the server on how to handle objects in the "
    "request containing unknown or duplicate fields: Ignore, Warn or Strict.",
)
_PRETTY = _param("pretty", "If 'true', then the output is pretty printed.")
_LIST_PARAMS = [
    _param(
        "allowWatchBookmarks", 'allowWatchBookmarks requests watch events with type "BOOKMARK".', "boolean"
    ),
    _param("continue", "The continue option should be set when retrieving more results from the server."),
    _param("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
    _param("labelSelector", "A selector to restrict the list of returned objects by their labels."),
    _param("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
    _param(
        "resourceVersion",
        "resourceVersion sets a constraint on what resource versions a request may be served from.",
    ),
    _param(
        "resourceVersionMatch",
        "resourceVersionMatch determines how resourceVersion is applied to list calls.",
    ),
    _param("sendInitialEvents", "sendInitialEvents=true may be set together with watch=true.", "boolean"),
    _param("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
    _param("watch", "Watch for changes to the described resources.", "boolean"),
]
_DELETE_PARAMS = [
    _DRY_RUN,
    _param("gracePeriodSeconds", "The duration in seconds before the object should be deleted.", "integer"),
    _param("propagationPolicy", "Whether and how garbage collection will be performed."),
]


def _content(
    schema_name: str, mimes: tuple[str, ...] = ("application/json", "application/yaml")
) -> dict[str, Any]:
    return {mime: {"schema": _ref(schema_name)} for mime in mimes}


def _replace_operation(rd: ResourceDef, item: str, suffix: str = "") -> dict[str, Any]:
    """PUT of an object (or of its status): the same operation but for its name."""
    params = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]
    return _operation(rd, "put", "replace", item, params=params, body=_content(item), suffix=suffix)


def _patch_operation(
    rd: ResourceDef, item: str, body: dict[str, Any], *, suffix: str = "", force: bool = False
) -> dict[str, Any]:
    """PATCH of an object (with ``force`` for apply requests) or of its status."""
    params = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]
    if force:
        params.append(_param("force", 'Force is going to "force" Apply requests.', "boolean"))
    return _operation(rd, "patch", "patch", item, body=body, params=params, suffix=suffix)


def _operation(
    rd: ResourceDef,
    action: str,
    verb: str,
    schema_name: str,
    *,
    params: list[dict[str, Any]],
    body: dict[str, Any] | None = None,
    response: str | None = None,
    kind: str | None = None,
    suffix: str = "",
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": [f"{rd.group or 'core'}_{rd.version}"],
        "description": f"{verb} {rd.kind}{suffix}",
        "operationId": f"{verb}{rd.kind}{suffix.replace(' ', '')}",
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": _content(response or schema_name)},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rd, kind),
    }
    if body is not None:
        op["requestBody"] = {"content": body, "required": True}
    return op


def _paths_for(rd: ResourceDef) -> dict[str, Any]:
    item = definition_name(rd)
    list_name = f"{item}List"
    status_name = f"{META}.Status"
    patch_mimes = (
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    )
    patch_body = {mime: {"schema": _ref(f"{META}.Patch")} for mime in patch_mimes}
    namespaced = "/namespaces/{namespace}" if rd.namespaced else ""
    common: list[dict[str, Any]] = [_PRETTY]
    if rd.namespaced:
        common = [
            _param(
                "namespace",
                "object name and auth scope, such as for teams and projects",
                where="path",
                required=True,
            ),
            _PRETTY,
        ]
    name_param = _param("name", f"name of the {rd.kind}", where="path", required=True)
    collection = f"{rd.path_prefix}{namespaced}/{rd.plural}"
    paths: dict[str, Any] = {
        collection: {
            "get": _operation(
                rd, "list", "list", item, params=_LIST_PARAMS, response=list_name, kind=rd.kind
            ),
            "post": _operation(
                rd,
                "post",
                "create",
                item,
                params=[_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
                body=_content(item),
            ),
            "parameters": common,
        },
        f"{collection}/{{name}}": {
            "get": _operation(rd, "get", "read", item, params=[]),
            "put": _replace_operation(rd, item),
            "patch": _patch_operation(rd, item, patch_body, force=True),
            "delete": _operation(
                rd,
                "delete",
                "delete",
                item,
                params=_DELETE_PARAMS,
                response=status_name,
                body=_content(f"{META}.DeleteOptions"),
            ),
            "parameters": [name_param, *common],
        },
    }
    if "deletecollection" in rd.verbs:
        paths[collection]["delete"] = _operation(
            rd,
            "deletecollection",
            "deletecollection",
            item,
            params=_DELETE_PARAMS + _LIST_PARAMS,
            response=status_name,
            suffix=" collection",
        )
    if rd.has_status:
        paths[f"{collection}/{{name}}/status"] = {
            "get": _operation(rd, "get", "read", item, params=[], suffix=" status"),
            "put": _replace_operation(rd, item, suffix=" status"),
            "patch": _patch_operation(rd, item, patch_body, suffix=" status"),
            "parameters": [name_param, *common],
        }
    if rd.namespaced:
        paths[f"{rd.path_prefix}/{rd.plural}"] = {
            "get": _operation(
                rd,
                "list",
                "list",
                item,
                params=_LIST_PARAMS,
                response=list_name,
                suffix=" for all namespaces",
            ),
            "parameters": [_PRETTY],
        }
    return paths


def group_version_document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    defs = sorted(registry.in_group_version(group, version), key=lambda rd: rd.plural)
    if not defs:
        return None
    schemas = copy.deepcopy(COMMON_SCHEMAS)
    paths: dict[str, Any] = {}
    for rd in defs:
        name = definition_name(rd)
        schemas[name] = resource_schema(rd)
        schemas[f"{name}List"] = _list_schema(rd, name)
        paths.update(_paths_for(rd))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def _doc_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


class OpenAPIPublisher:
    """Renders and caches the documents until the registry changes."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._generation = -1
        self._documents: dict[str, bytes] = {}
        self._hashes: dict[str, str] = {}

    def _refresh(self) -> None:
        if self._generation == self.registry.generation:
            return
        self._documents.clear()
        self._hashes.clear()
        for group, version in self.registry.group_versions():
            doc = group_version_document(self.registry, group, version)
            if doc is None:
                continue
            body = json.dumps(doc, sort_keys=True).encode()
            path = _doc_path(group, version)
            self._documents[path] = body
            self._hashes[path] = hashlib.sha512(body).hexdigest().upper()[:128]
        self._generation = self.registry.generation

    def index(self) -> dict[str, Any]:
        self._refresh()
        return {
            "paths": {
                path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest}"}
                for path, digest in sorted(self._hashes.items())
            }
        }

    def document(self, path: str) -> bytes | None:
        self._refresh()
        return self._documents.get(path.strip("/"))

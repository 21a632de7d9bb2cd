"""The object store: objects, the global resourceVersion, per-resource event history, and watchers.

All methods are synchronous and must run on the emulator's event loop thread: each write is atomic
with respect to other requests and watchers without any locks. Stored objects are copy-on-write:
a write builds a new dict and never mutates a stored one, so watch history and the event log can
hold references to past states safely.
"""

from __future__ import annotations

import asyncio
import copy
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import builtins, schema
from .audit import RecordLog, WatchEventRecord
from .errors import (
    ApiError,
    FieldError,
    already_exists,
    bad_request,
    conflict,
    expired,
    forbidden,
    internal,
    invalid,
    method_not_allowed,
    not_found,
    unsupported_media_type,
)
from .patches import MalformedPatchError, PatchError, json_patch, merge_patch, strategic_merge_patch
from .resources import Registry, ResourceDef
from .selectors import Matcher

ObjKey = tuple[str, str]  # (namespace or "", name)
PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)
CR_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)
CRD_KEY = "customresourcedefinitions.apiextensions.k8s.io"
CRD_CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
_GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"
# Resources whose DELETE answers with the deleted object rather than a Status.
_RETURNS_DELETED_OBJECT = {"pods", "services", "namespaces", "nodes", CRD_KEY}


def now_rfc3339(offset: float = 0.0) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=offset)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    rv: int
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None = None


@dataclass
class DeleteOptions:
    grace_period: int | None = None
    propagation: str | None = None  # Background, Foreground, Orphan
    preconditions: Mapping[str, Any] | None = None
    dry_run: bool = False


@dataclass
class WriteResult:
    obj: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    created: bool = False


class Watcher:
    """A subscription of one watch request: a queue of raw events plus its filters."""

    def __init__(self, rd: ResourceDef, namespace: str | None, name: str | None, matcher: Matcher) -> None:
        self.rd = rd
        self.namespace = namespace
        self.name = name
        self.matcher = matcher
        self.queue: asyncio.Queue[WatchEvent | None] = asyncio.Queue()

    def _in_scope(self, obj: Mapping[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return self.name is None or meta.get("name") == self.name

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return self._in_scope(obj) and self.matcher(obj)

    def translate(self, event: WatchEvent) -> tuple[str, dict[str, Any]] | None:
        """What this watcher sees of a raw event: selector exits become DELETED, entries become ADDED."""
        if not self._in_scope(event.obj):
            return None
        new_ok = self.matcher(event.obj)
        if event.type != "MODIFIED" or event.old is None:
            return (event.type, event.obj) if new_ok else None
        old_ok = self.matcher(event.old)
        if new_ok and old_ok:
            return ("MODIFIED", event.obj)
        if new_ok:
            return ("ADDED", event.obj)
        if old_ok:
            # Like the watch cache: the previous content, but at the event's resourceVersion.
            old = dict(event.old)
            old["metadata"] = dict(old.get("metadata") or {}, resourceVersion=str(event.rv))
            return ("DELETED", old)
        return None


def _strip_volatile(obj: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(obj)
    meta = dict(result.get("metadata") or {})
    meta.pop("resourceVersion", None)
    meta.pop("managedFields", None)
    result["metadata"] = meta
    return result


def _spec_part(obj: Mapping[str, Any], has_status: bool) -> dict[str, Any]:
    """Everything that counts for metadata.generation: all but metadata (and status if a subresource)."""
    skip = {"metadata", "status"} if has_status else {"metadata"}
    return {key: val for key, val in obj.items() if key not in skip and key not in ("apiVersion", "kind")}


class Store:
    """The in-memory database behind the HTTP handler and the test helpers."""

    def __init__(
        self,
        registry: Registry,
        *,
        history_size: int = 20_000,
        pod_termination_seconds: float = 0.2,
        event_log: RecordLog | None = None,
    ) -> None:
        self.registry = registry
        self.history_size = history_size
        self.pod_termination_seconds = pod_termination_seconds
        self.event_log = event_log if event_log is not None else RecordLog()
        self.on_change: list[Callable[[], None]] = []  # called after every committed write
        self.on_write: list[Callable[[str, WatchEvent], None]] = []  # controllers' hooks
        self._objects: dict[str, dict[ObjKey, dict[str, Any]]] = {}
        self._by_uid: dict[str, tuple[str, ObjKey]] = {}
        self._rv = 0
        self._history: dict[str, deque[WatchEvent]] = {}
        self._evicted_rv: dict[str, int] = {}
        self._watchers: dict[str, set[Watcher]] = {}
        self._allocate_ip = builtins.ClusterIPAllocator()
        self._timers: list[asyncio.TimerHandle] = []

    # --- reading -----------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def objects(self, storage_key: str) -> dict[ObjKey, dict[str, Any]]:
        return self._objects.setdefault(storage_key, {})

    def storage_keys(self) -> list[str]:
        return list(self._objects)

    def by_uid(self, uid: str) -> dict[str, Any] | None:
        location = self._by_uid.get(uid)
        if location is None:
            return None
        return self._objects.get(location[0], {}).get(location[1])

    def location_of_uid(self, uid: str) -> tuple[str, ObjKey] | None:
        return self._by_uid.get(uid)

    def present(self, rd: ResourceDef, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as served by this group/version (all versions share storage; no conversion)."""
        if obj.get("apiVersion") == rd.api_version:
            return obj
        return dict(obj, apiVersion=rd.api_version)

    def _key(self, rd: ResourceDef, namespace: str | None, name: str) -> ObjKey:
        return ((namespace or "") if rd.namespaced else "", name)

    def get(self, rd: ResourceDef, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.objects(rd.storage_key).get(self._key(rd, namespace, name))
        if obj is None:
            raise not_found(rd.group, rd.plural, name)
        return self.present(rd, obj)

    def list(
        self, rd: ResourceDef, namespace: str | None, matcher: Matcher | None = None
    ) -> list[dict[str, Any]]:
        items = []
        for (ns, _), obj in sorted(self.objects(rd.storage_key).items()):
            if rd.namespaced and namespace and ns != namespace:
                continue
            if matcher is None or matcher(obj):
                items.append(self.present(rd, obj))
        return items

    def namespace_exists(self, name: str) -> bool:
        return ("", name) in self.objects("namespaces")

    # --- committing --------------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def _record(self, storage_key: str, event: WatchEvent) -> None:
        history = self._history.setdefault(storage_key, deque())
        if len(history) >= self.history_size:
            dropped = history.popleft()
            self._evicted_rv[storage_key] = dropped.rv
        history.append(event)
        for watcher in self._watchers.get(storage_key, ()):
            watcher.queue.put_nowait(event)
        meta = event.obj.get("metadata") or {}
        api_version = event.obj.get("apiVersion", "")
        group, _, version = api_version.rpartition("/")
        self.event_log.append(
            WatchEventRecord(
                seq=self.event_log.next_seq(),
                time=time.monotonic(),
                type=event.type,
                group=group,
                version=version,
                resource=storage_key.split(".", 1)[0],
                namespace=meta.get("namespace"),
                name=meta.get("name", ""),
                resource_version=str(event.rv),
                snapshot=event.obj,
            )
        )
        for hook in list(self.on_write):
            hook(storage_key, event)
        for callback in list(self.on_change):
            callback()

    def _commit(self, storage_key: str, obj: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        rv = self._next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        meta = obj["metadata"]
        key: ObjKey = (meta.get("namespace") or "", meta["name"])
        self.objects(storage_key)[key] = obj
        self._by_uid[meta["uid"]] = (storage_key, key)
        self._record(storage_key, WatchEvent(rv, "ADDED" if old is None else "MODIFIED", obj, old))
        return obj

    def _remove(self, storage_key: str, obj: dict[str, Any]) -> dict[str, Any]:
        rv = self._next_rv()
        meta = obj["metadata"]
        key: ObjKey = (meta.get("namespace") or "", meta["name"])
        self.objects(storage_key).pop(key, None)
        self._by_uid.pop(meta.get("uid", ""), None)
        final = dict(obj, metadata=dict(meta, resourceVersion=str(rv)))
        self._record(storage_key, WatchEvent(rv, "DELETED", final, obj))
        return final

    # --- admission pipeline ------------------------------------------------------------------------

    def _check_verb(self, rd: ResourceDef, verb: str) -> None:
        if verb not in rd.verbs:
            raise method_not_allowed("the server does not allow this method on the requested resource")

    def _decode(self, rd: ResourceDef, body: Any, field_validation: str) -> tuple[dict[str, Any], list[str]]:
        """Type checks, pruning of unknown fields per fieldValidation, schema defaults."""
        if not isinstance(body, dict):
            raise bad_request(
                f'{rd.kind} in version "{rd.version}" cannot be handled as a {rd.kind}: '
                "the body must be a JSON object"
            )
        obj = copy.deepcopy(body)
        api_version = obj.setdefault("apiVersion", rd.api_version)
        kind = obj.setdefault("kind", rd.kind)
        if kind != rd.kind:
            raise bad_request(f"the kind in the data ({kind}) does not match the expected kind ({rd.kind})")
        if api_version != rd.api_version:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({rd.api_version})"
            )
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request(
                f'{rd.kind} in version "{rd.version}" cannot be handled as a {rd.kind}: '
                "metadata must be an object"
            )
        if rd.crd_name is not None:
            obj, unknown = schema.prune(obj, rd.schema)
            obj = schema.apply_defaults(obj, rd.schema)
        else:
            unknown = schema.unknown_metadata_fields(obj) + builtins.unknown_fields(rd, obj)
            for path in unknown:
                parent, _, leaf = path.rpartition(".")
                (obj.get(parent) if parent else obj).pop(leaf, None)
        warnings: list[str] = []
        if unknown:
            if field_validation == "Strict":
                fields = ", ".join(f'unknown field "{path}"' for path in unknown)
                raise bad_request(
                    f'{rd.kind} in version "{rd.version}" cannot be handled as a {rd.kind}: '
                    f"strict decoding error: {fields}"
                )
            if field_validation == "Warn":
                warnings = [f'unknown field "{path}"' for path in unknown]
        return obj, warnings

    def _validate(self, rd: ResourceDef, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        errors: list[FieldError] = []
        name = obj["metadata"].get("name", "")
        if old is None:
            errors.extend(builtins.validate_name(rd, name))
            errors.extend(builtins.validate_create(rd, obj))
        else:
            errors.extend(builtins.validate_update(rd, obj, old))
            old_finalizers = set(old["metadata"].get("finalizers") or [])
            new_finalizers = [f for f in obj["metadata"].get("finalizers") or [] if f not in old_finalizers]
            if old["metadata"].get("deletionTimestamp") and new_finalizers:
                found = "[]string{" + ", ".join(f'"{f}"' for f in new_finalizers) + "}"
                errors.append(
                    FieldError(
                        "Forbidden",
                        "metadata.finalizers",
                        detail=(
                            "no new finalizers can be added if the object is being deleted, "
                            f"found new finalizers {found}"
                        ),
                    )
                )
        errors.extend(self._validate_metadata(obj))
        if rd.crd_name is not None:
            errors.extend(schema.validate(obj, rd.schema))
        if errors:
            raise invalid(rd.group, rd.kind, name, errors)

    def _validate_metadata(self, obj: dict[str, Any]) -> list[FieldError]:
        errors: list[FieldError] = []
        meta = obj["metadata"]
        for key in ("labels", "annotations"):
            value = meta.get(key)
            if value is not None and (
                not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values())
            ):
                errors.append(FieldError("Invalid", f"metadata.{key}", None, "must be a map of strings"))
        finalizers = meta.get("finalizers")
        if finalizers is not None and not (
            isinstance(finalizers, list) and all(isinstance(f, str) for f in finalizers)
        ):
            errors.append(FieldError("Invalid", "metadata.finalizers", None, "must be a list of strings"))
        for i, ref in enumerate(meta.get("ownerReferences") or []):
            for key in ("apiVersion", "kind", "name", "uid"):
                if not (isinstance(ref, dict) and ref.get(key)):
                    errors.append(
                        FieldError(
                            "Invalid",
                            f"metadata.ownerReferences[{i}].{key}",
                            "",
                            f"{key} must not be empty",
                        )
                    )
        return errors

    # --- create ------------------------------------------------------------------------------------

    def create(
        self,
        rd: ResourceDef,
        namespace: str | None,
        body: Any,
        *,
        dry_run: bool = False,
        field_validation: str = "Warn",
    ) -> WriteResult:
        self._check_verb(rd, "create")
        obj, warnings = self._decode(rd, body, field_validation)
        meta = obj["metadata"]
        if rd.namespaced:
            body_ns = meta.get("namespace")
            if namespace is None:
                namespace = body_ns or "default"
            if body_ns and body_ns != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if rd.crd_name is not None:
            crd = self.objects(CRD_KEY).get(("", rd.crd_name))
            if crd is not None and crd["metadata"].get("deletionTimestamp"):
                raise method_not_allowed("create not allowed while custom resource definition is terminating")
        if not meta.get("name"):
            if meta.get("generateName"):
                meta["name"] = self._generate_name(rd, namespace, meta["generateName"])
            else:
                raise invalid(
                    rd.group,
                    rd.kind,
                    "",
                    [FieldError("Required", "metadata.name", detail="name or generateName is required")],
                )
        name = meta["name"]
        if rd.namespaced:
            ns_obj = self.objects("namespaces").get(("", namespace or ""))
            if ns_obj is None:
                raise not_found("", "namespaces", namespace or "")
            if ns_obj["metadata"].get("deletionTimestamp") and not (rd.storage_key == "events"):
                raise forbidden(
                    rd.group,
                    rd.plural,
                    name,
                    f"unable to create new content in namespace {namespace} because it is being terminated",
                )
        if meta.get("resourceVersion"):
            raise internal("resourceVersion should not be set on objects to be created")
        for key in (
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "selfLink",
            "managedFields",
        ):
            meta.pop(key, None)
        if rd.has_status and rd.crd_name is not None:
            obj.pop("status", None)  # custom resources: status is set through the subresource only
        builtins.prepare_create(rd, obj, self._allocate_ip)
        self._validate(rd, obj, None)
        key = self._key(rd, namespace, name)
        if key in self.objects(rd.storage_key):
            raise already_exists(rd.group, rd.plural, name)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if dry_run:
            return WriteResult(obj, warnings, created=True)
        self._commit(rd.storage_key, obj, None)
        return WriteResult(obj, warnings, created=True)

    def _generate_name(self, rd: ResourceDef, namespace: str | None, prefix: str) -> str:
        for _ in range(16):
            name = prefix[:58] + "".join(random.choice(_GENERATE_CHARS) for _ in range(5))
            if self._key(rd, namespace, name) not in self.objects(rd.storage_key):
                return name
        raise already_exists(rd.group, rd.plural, prefix)

    # --- update & patch ----------------------------------------------------------------------------

    def _stored(self, rd: ResourceDef, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.objects(rd.storage_key).get(self._key(rd, namespace, name))
        if obj is None:
            raise not_found(rd.group, rd.plural, name)
        return obj

    def _check_identity(self, rd: ResourceDef, obj: dict[str, Any], namespace: str | None, name: str) -> None:
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if not meta.get("name"):
            meta["name"] = name
        if meta["name"] != name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
            )
        if rd.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace

    def update(
        self,
        rd: ResourceDef,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str = "Warn",
    ) -> WriteResult:
        self._check_verb(rd, "update")
        current = self._stored(rd, namespace, name)
        if not isinstance(body, dict):
            raise bad_request(
                f'{rd.kind} in version "{rd.version}" cannot be handled as a {rd.kind}: '
                "the body must be a JSON object"
            )
        new = copy.deepcopy(body)
        self._check_identity(rd, new, namespace, name)
        wanted_rv = new["metadata"].get("resourceVersion")
        if wanted_rv:
            if str(wanted_rv) != current["metadata"]["resourceVersion"]:
                raise conflict(rd.group, rd.plural, name)
        elif rd.crd_name is not None or rd.storage_key == CRD_KEY:
            raise invalid(
                rd.group,
                rd.kind,
                name,
                [FieldError("Invalid", "metadata.resourceVersion", "0x0", "must be specified for an update")],
            )
        return self._update_from(
            rd, current, new, subresource=subresource, dry_run=dry_run, field_validation=field_validation
        )

    def patch(
        self,
        rd: ResourceDef,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
        field_validation: str = "Warn",
    ) -> WriteResult:
        self._check_verb(rd, "patch")
        if patch_type == "application/apply-patch+yaml":
            raise unsupported_media_type(
                patch_type,
                PATCH_TYPES,
                "server-side apply is not supported by the kube emulator; use "
                "client-side `kubectl apply` or a merge patch",
            )
        accepted = CR_PATCH_TYPES if rd.crd_name is not None else PATCH_TYPES
        if patch_type not in accepted or patch_type == "application/apply-patch+yaml":
            raise unsupported_media_type(patch_type, accepted)
        current = self._stored(rd, namespace, name)
        doc = copy.deepcopy(current)
        try:
            if patch_type == "application/json-patch+json":
                patched = json_patch(doc, patch)
            elif not isinstance(patch, dict):
                raise bad_request(
                    f'{rd.kind} in version "{rd.version}" cannot be handled as a {rd.kind}: '
                    "the patch must be a JSON object"
                )
            elif patch_type == "application/merge-patch+json":
                patched = merge_patch(doc, patch)
            else:
                patched = strategic_merge_patch(doc, patch)
        except MalformedPatchError as exc:
            raise bad_request(str(exc)) from exc
        except PatchError as exc:
            raise ApiError(
                422, "Invalid", "the server rejected our request due to an error in our request", {}
            ) from exc
        if not isinstance(patched, dict):
            raise bad_request(
                f'{rd.kind} in version "{rd.version}" cannot be handled as a {rd.kind}: '
                "the patched object must be a JSON object"
            )
        self._check_identity(rd, patched, namespace, name)
        wanted_rv = patched["metadata"].get("resourceVersion")
        if wanted_rv and str(wanted_rv) != current["metadata"]["resourceVersion"]:
            raise conflict(rd.group, rd.plural, name)
        return self._update_from(
            rd, current, patched, subresource=subresource, dry_run=dry_run, field_validation=field_validation
        )

    def _update_from(
        self,
        rd: ResourceDef,
        current: dict[str, Any],
        new: dict[str, Any],
        *,
        subresource: str | None,
        dry_run: bool,
        field_validation: str,
    ) -> WriteResult:
        if subresource not in (None, "status"):
            raise method_not_allowed("the server does not allow this method on the requested resource")
        if subresource == "status" and not rd.has_status:
            raise not_found(rd.group, f"{rd.plural}/status", current["metadata"]["name"])
        new.setdefault("apiVersion", current.get("apiVersion"))
        new.setdefault("kind", current.get("kind"))
        decoded, warnings = self._decode(rd, new, field_validation)
        if subresource == "status":
            result = copy.deepcopy(current)
            if "status" in decoded:
                result["status"] = decoded["status"]
            else:
                result.pop("status", None)
        else:
            result = decoded
            if rd.has_status:
                if "status" in current:
                    result["status"] = copy.deepcopy(current["status"])
                else:
                    result.pop("status", None)
            meta, old_meta = result["metadata"], current["metadata"]
            for key in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ):
                if key in old_meta:
                    meta[key] = copy.deepcopy(old_meta[key])
                else:
                    meta.pop(key, None)
            builtins.prepare_update(rd, result, current)
        result["apiVersion"] = current.get("apiVersion", rd.api_version)
        result["kind"] = rd.kind
        result["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        self._validate(rd, result, current)
        if _strip_volatile(result) == _strip_volatile(current):
            return WriteResult(self.present(rd, current), warnings)
        if _spec_part(result, rd.has_status) != _spec_part(current, rd.has_status):
            result["metadata"]["generation"] = int(current["metadata"].get("generation") or 0) + 1
        if dry_run:
            return WriteResult(self.present(rd, result), warnings)
        self._commit(rd.storage_key, result, current)
        if self._ready_to_vanish(rd.storage_key, result):
            return WriteResult(self.present(rd, self._remove(rd.storage_key, result)), warnings)
        return WriteResult(self.present(rd, result), warnings)

    def _pending_finalizers(self, storage_key: str, obj: Mapping[str, Any]) -> list[str]:
        finalizers = list(obj["metadata"].get("finalizers") or [])
        if storage_key == "namespaces":
            finalizers += list((obj.get("spec") or {}).get("finalizers") or [])
        return finalizers

    def _ready_to_vanish(self, storage_key: str, obj: Mapping[str, Any]) -> bool:
        meta = obj["metadata"]
        return (
            bool(meta.get("deletionTimestamp"))
            and not self._pending_finalizers(storage_key, obj)
            and not meta.get("deletionGracePeriodSeconds")
        )

    # --- delete ------------------------------------------------------------------------------------

    def delete(
        self, rd: ResourceDef, namespace: str | None, name: str, options: DeleteOptions | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Delete an object; returns (the object as it now is, whether it is gone)."""
        self._check_verb(rd, "delete")
        options = options or DeleteOptions()
        current = self._stored(rd, namespace, name)
        preconditions = options.preconditions or {}
        meta = current["metadata"]
        if preconditions.get("uid") and preconditions["uid"] != meta.get("uid"):
            raise conflict(
                rd.group,
                rd.plural,
                name,
                "Precondition failed: UID in precondition: "
                f"{preconditions['uid']}, UID in object meta: {meta.get('uid')}",
            )
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != meta.get(
            "resourceVersion"
        ):
            raise conflict(
                rd.group,
                rd.plural,
                name,
                "Precondition failed: ResourceVersion in precondition: "
                f"{preconditions['resourceVersion']}, ResourceVersion in "
                f"object meta: {meta.get('resourceVersion')}",
            )
        obj, gone = self.delete_object(rd.storage_key, current, options)
        return self.present(rd, obj), gone

    def returns_deleted_object(self, rd: ResourceDef) -> bool:
        return rd.storage_key in _RETURNS_DELETED_OBJECT or rd.crd_name is not None

    def delete_object(
        self, storage_key: str, current: dict[str, Any], options: DeleteOptions
    ) -> tuple[dict[str, Any], bool]:
        """The deletion state machine shared by DELETE, deletecollection, GC and namespace cleanup."""
        meta = current["metadata"]
        is_pod = storage_key == "pods"
        grace = options.grace_period
        if is_pod and grace is None:
            grace = int((current.get("spec") or {}).get("terminationGracePeriodSeconds", 30) or 0)
        graceful = is_pod and bool(grace and grace > 0)
        if meta.get("deletionTimestamp"):
            # Already terminating: only a shorter grace period (pods) changes anything.
            if is_pod and grace == 0 and meta.get("deletionGracePeriodSeconds"):
                new = copy.deepcopy(current)
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                if options.dry_run:
                    return new, False
                self._commit(storage_key, new, current)
                if self._ready_to_vanish(storage_key, new):
                    return self._remove(storage_key, new), True
                return new, False
            return current, False
        finalizers = list(meta.get("finalizers") or [])
        policy = options.propagation or "Background"
        if policy == "Orphan" and "orphan" not in finalizers:
            finalizers.append("orphan")
        elif policy == "Foreground" and "foregroundDeletion" not in finalizers:
            finalizers.append("foregroundDeletion")
        extra_pending = storage_key == "namespaces" and (current.get("spec") or {}).get("finalizers")
        if not finalizers and not graceful and not extra_pending:
            if options.dry_run:
                return current, True
            return self._remove(storage_key, current), True
        new = copy.deepcopy(current)
        new_meta = new["metadata"]
        new_meta["deletionTimestamp"] = now_rfc3339(grace if graceful else 0)
        new_meta["deletionGracePeriodSeconds"] = grace if graceful else 0
        if finalizers:
            new_meta["finalizers"] = finalizers
        if new_meta.get("generation"):
            new_meta["generation"] += 1
        if storage_key == "namespaces":
            new.setdefault("status", {})["phase"] = "Terminating"
        if options.dry_run:
            return new, False
        self._commit(storage_key, new, current)
        if graceful:
            self._schedule(
                self.pod_termination_seconds,
                self._kubelet_kill,
                meta.get("namespace", ""),
                meta["name"],
                meta["uid"],
            )
        return new, False

    def _schedule(self, delay: float, callback: Callable[..., None], *args: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            callback(*args)
            return
        self._timers = [timer for timer in self._timers if not timer.cancelled()]
        self._timers.append(loop.call_later(delay, callback, *args))

    def cancel_timers(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _kubelet_kill(self, namespace: str, name: str, uid: str) -> None:
        """What the kubelet does after a pod's containers stopped: delete it with grace period 0."""
        current = self.objects("pods").get((namespace, name))
        if current is None or current["metadata"].get("uid") != uid:
            return
        if not current["metadata"].get("deletionGracePeriodSeconds"):
            return
        new = copy.deepcopy(current)
        new["metadata"]["deletionGracePeriodSeconds"] = 0
        if self._ready_to_vanish("pods", new):
            self._remove("pods", current)
        else:
            self._commit("pods", new, current)

    def delete_collection(
        self, rd: ResourceDef, namespace: str | None, matcher: Matcher | None, options: DeleteOptions
    ) -> list[dict[str, Any]]:
        self._check_verb(rd, "deletecollection")
        result = []
        for obj in self.list(rd, namespace, matcher):
            current = self._stored(rd, obj["metadata"].get("namespace"), obj["metadata"]["name"])
            deleted, _ = self.delete_object(rd.storage_key, current, options)
            result.append(self.present(rd, deleted))
        return result

    # --- internal writes for controllers -----------------------------------------------------------

    def replace_stored(
        self, storage_key: str, current: dict[str, Any], new: dict[str, Any]
    ) -> dict[str, Any]:
        """Commit a controller's change to an object (no admission); removes it if it may now vanish."""
        if _strip_volatile(new) == _strip_volatile(current):
            return current
        committed = self._commit(storage_key, new, current)
        if self._ready_to_vanish(storage_key, committed):
            return self._remove(storage_key, committed)
        return committed

    def drop_all(self, storage_key: str) -> None:
        """Forget all objects of a group-resource without events (its CRD vanished)."""
        for obj in self._objects.pop(storage_key, {}).values():
            self._by_uid.pop(obj["metadata"].get("uid", ""), None)
        self._history.pop(storage_key, None)
        self._evicted_rv.pop(storage_key, None)
        self.close_watchers(storage_key)

    # --- watching ----------------------------------------------------------------------------------

    def watch(
        self,
        rd: ResourceDef,
        namespace: str | None,
        name: str | None,
        matcher: Matcher,
        resource_version: str | None,
        send_initial: bool = False,
    ) -> tuple[Watcher, list[tuple[str, dict]]]:
        """Subscribe; return the watcher and the events to send first (initial state or history replay)."""
        watcher = Watcher(rd, namespace if rd.namespaced else None, name, matcher)
        initial: list[tuple[str, dict[str, Any]]] = []
        if resource_version in (None, "", "0") or send_initial:
            for obj in sorted(
                self.objects(rd.storage_key).values(),
                key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
            ):
                if watcher.matches(obj):
                    initial.append(("ADDED", obj))
        else:
            try:
                since = int(resource_version)
            except ValueError as exc:
                raise bad_request(f"invalid resource version: {resource_version!r}") from exc
            evicted = self._evicted_rv.get(rd.storage_key, 0)
            if since < evicted:
                raise expired(f"too old resource version: {since} ({evicted + 1})")
            for event in self._history.get(rd.storage_key, ()):
                if event.rv > since:
                    seen = watcher.translate(event)
                    if seen is not None:
                        initial.append(seen)
        self._watchers.setdefault(rd.storage_key, set()).add(watcher)
        return watcher, initial

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.get(watcher.rd.storage_key, set()).discard(watcher)

    def close_watchers(self, storage_key: str | None = None) -> None:
        """End watch streams (all, or of one group-resource) by sending them the end sentinel."""
        keys: Iterable[str] = [storage_key] if storage_key else list(self._watchers)
        for key in keys:
            for watcher in self._watchers.pop(key, set()):
                watcher.queue.put_nowait(None)

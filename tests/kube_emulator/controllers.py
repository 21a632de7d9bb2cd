"""The controllers that a real control plane runs next to the API server, reduced to what tests see.

* CRD controller: registers/unregisters custom resources, sets NamesAccepted/Established, and on CRD
  deletion removes all its objects before letting the CRD go.
* Garbage collector: deletes dependents whose owners are all gone (Background), strips dangling owner
  references of dependents that still have live owners, handles the ``orphan`` and
  ``foregroundDeletion`` finalizers (Foreground is approximated: dependents are deleted in the
  background and the owner waits until they are gone).
* Namespace controller: deletes everything in a terminating namespace, then the namespace.
* Service-account controller: a ``default`` service account in every namespace.

They run asynchronously on the emulator's loop, shortly after the writes that concern them.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from .errors import ApiError
from .resources import ResourceDef
from .store import CRD_CLEANUP_FINALIZER, CRD_KEY, DeleteOptions, Store, WatchEvent, now_rfc3339

_BACKGROUND = DeleteOptions(propagation="Background")


class Controllers:
    """Reconciles the store after writes; the work is debounced by ``delay`` seconds."""

    def __init__(self, store: Store, *, delay: float = 0.02, retry_delay: float = 0.1) -> None:
        self.store = store
        self.delay = delay
        self.retry_delay = retry_delay
        self._scheduled: asyncio.TimerHandle | asyncio.Handle | None = None
        self._stopped = False
        store.on_write.append(self._on_write)

    def stop(self) -> None:
        self._stopped = True
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None

    # --- reacting to writes ------------------------------------------------------------------------

    def _on_write(self, storage_key: str, event: WatchEvent) -> None:
        meta = event.obj.get("metadata") or {}
        if storage_key == CRD_KEY:
            self._on_crd(event)
        if storage_key == "namespaces" and event.type == "ADDED":
            self._later(0, self._ensure_service_account, meta.get("name", ""))
        if event.type == "DELETED" or meta.get("deletionTimestamp") or meta.get("ownerReferences"):
            self.kick()

    def _on_crd(self, event: WatchEvent) -> None:
        registry = self.store.registry
        name = event.obj["metadata"]["name"]
        if event.type == "DELETED":
            defs = registry.crd_defs(name)
            registry.unregister_crd(name)
            for storage_key in {rd.storage_key for rd in defs}:
                self.store.drop_all(storage_key)
            return
        if event.old is None or event.old.get("spec") != event.obj.get("spec"):
            registry.register_crd(event.obj)
        if not event.obj["metadata"].get("deletionTimestamp"):
            self._later(0, self._establish_crd, name)

    def _later(self, delay: float, callback: Any, *args: Any) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            callback(*args)
            return
        if delay:
            loop.call_later(delay, callback, *args)
        else:
            loop.call_soon(callback, *args)

    def kick(self, *, retry: bool = False) -> None:
        """Schedule a reconciliation soon (once, however many writes ask for it)."""
        if self._stopped or self._scheduled is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._scheduled = loop.call_later(self.retry_delay if retry else self.delay, self._run)

    def _run(self) -> None:
        self._scheduled = None
        if self._stopped:
            return
        try:
            self.reconcile()
        except ApiError:  # pragma: no cover  # a race with a client; the next write kicks again
            self.kick()

    # --- single-shot reconcilers -------------------------------------------------------------------

    def _ensure_service_account(self, namespace: str) -> None:
        registry = self.store.registry
        rd = registry.get("", "v1", "serviceaccounts")
        ns = self.store.objects("namespaces").get(("", namespace))
        if rd is None or ns is None or ns["metadata"].get("deletionTimestamp"):
            return
        if (namespace, "default") in self.store.objects("serviceaccounts"):
            return
        self.store.create(rd, namespace, {"metadata": {"name": "default"}})

    def _establish_crd(self, name: str) -> None:
        current = self.store.objects(CRD_KEY).get(("", name))
        if current is None or current["metadata"].get("deletionTimestamp"):
            return
        names = (current.get("spec") or {}).get("names") or {}
        accepted = {
            key: copy.deepcopy(names[key])
            for key in ("plural", "singular", "shortNames", "kind", "listKind", "categories")
            if key in names
        }
        status = copy.deepcopy(current.get("status") or {})
        conditions = status.get("conditions") or []
        have = {c.get("type") for c in conditions if c.get("status") == "True"}
        if status.get("acceptedNames") == accepted and {"NamesAccepted", "Established"} <= have:
            return
        status["acceptedNames"] = accepted
        stamp = now_rfc3339()
        status["conditions"] = [
            {
                "type": "NamesAccepted",
                "status": "True",
                "lastTransitionTime": stamp,
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                "type": "Established",
                "status": "True",
                "lastTransitionTime": stamp,
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
            },
        ]
        new = copy.deepcopy(current)
        new["status"] = status
        self.store.replace_stored(CRD_KEY, current, new)

    # --- the periodic reconciliation ---------------------------------------------------------------

    def reconcile(self) -> None:
        self._cleanup_namespaces()
        self._cleanup_crds()
        self._collect_garbage()

    def _fresh(self, obj: dict[str, Any]) -> dict[str, Any] | None:
        """The current stored state of an object seen earlier in this reconciliation (None if gone)."""
        return self.store.by_uid(obj["metadata"].get("uid", ""))

    def _delete(self, storage_key: str, obj: dict[str, Any]) -> None:
        current = self._fresh(obj)
        if current is not None and not current["metadata"].get("deletionTimestamp"):
            self.store.delete_object(storage_key, current, _BACKGROUND)

    def _without_finalizer(self, storage_key: str, obj: dict[str, Any], finalizer: str) -> None:
        current = self._fresh(obj)
        if current is None or finalizer not in (current["metadata"].get("finalizers") or []):
            return
        obj = current
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = [f for f in obj["metadata"].get("finalizers") or [] if f != finalizer]
        if not new["metadata"]["finalizers"]:
            del new["metadata"]["finalizers"]
        self.store.replace_stored(storage_key, obj, new)

    def _namespaced_keys(self) -> list[str]:
        keys = set()
        for rd in self.store.registry:
            if rd.namespaced:
                keys.add(rd.storage_key)
        return sorted(keys | {key for key in self.store.storage_keys() if key != "namespaces"})

    def _cleanup_namespaces(self) -> None:
        for ns in list(self.store.objects("namespaces").values()):
            if not ns["metadata"].get("deletionTimestamp"):
                continue
            name = ns["metadata"]["name"]
            remaining = 0
            for storage_key in self._namespaced_keys():
                for (namespace, _), obj in list(self.store.objects(storage_key).items()):
                    if namespace != name:
                        continue
                    remaining += 1
                    self._delete(storage_key, obj)
            if remaining:
                self.kick(retry=True)
                continue
            spec_finalizers = (ns.get("spec") or {}).get("finalizers") or []
            if "kubernetes" in spec_finalizers:
                new = copy.deepcopy(ns)
                new["spec"]["finalizers"] = [f for f in spec_finalizers if f != "kubernetes"]
                self.store.replace_stored("namespaces", ns, new)

    def _cleanup_crds(self) -> None:
        for crd in list(self.store.objects(CRD_KEY).values()):
            meta = crd["metadata"]
            if not meta.get("deletionTimestamp") or CRD_CLEANUP_FINALIZER not in (
                meta.get("finalizers") or []
            ):
                continue
            conditions = (crd.get("status") or {}).get("conditions") or []
            if not any(c.get("type") == "Terminating" for c in conditions):
                new = copy.deepcopy(crd)
                new.setdefault("status", {}).setdefault("conditions", []).append(
                    {
                        "type": "Terminating",
                        "status": "True",
                        "lastTransitionTime": now_rfc3339(),
                        "reason": "InstanceDeletionInProgress",
                        "message": "CustomResource deletion is in progress",
                    }
                )
                crd = self.store.replace_stored(CRD_KEY, crd, new)
            defs: list[ResourceDef] = self.store.registry.crd_defs(meta["name"])
            remaining = 0
            for storage_key in {rd.storage_key for rd in defs}:
                for obj in list(self.store.objects(storage_key).values()):
                    remaining += 1
                    self._delete(storage_key, obj)
            if remaining:
                self.kick(retry=True)
            else:
                self._without_finalizer(CRD_KEY, crd, CRD_CLEANUP_FINALIZER)

    def _collect_garbage(self) -> None:
        store = self.store
        dependents: dict[str, list[tuple[str, dict[str, Any]]]] = {}
        for storage_key in store.storage_keys():
            for obj in store.objects(storage_key).values():
                for ref in obj["metadata"].get("ownerReferences") or []:
                    dependents.setdefault(ref.get("uid", ""), []).append((storage_key, obj))

        # Owners being deleted with the orphan or foreground policies.
        for owner_uid, deps in dependents.items():
            owner = store.by_uid(owner_uid)
            if owner is None or not owner["metadata"].get("deletionTimestamp"):
                continue
            finalizers = owner["metadata"].get("finalizers") or []
            if "orphan" in finalizers:
                for storage_key, dep in deps:
                    self._strip_owner_refs(storage_key, dep, {owner_uid})
            elif "foregroundDeletion" in finalizers:
                for storage_key, dep in deps:
                    self._delete(storage_key, dep)
        for storage_key in store.storage_keys():
            for obj in list(store.objects(storage_key).values()):
                meta = obj["metadata"]
                if not meta.get("deletionTimestamp"):
                    continue
                finalizers = meta.get("finalizers") or []
                uid = meta["uid"]
                if "orphan" in finalizers:
                    self._without_finalizer(storage_key, obj, "orphan")
                elif "foregroundDeletion" in finalizers:
                    alive = [
                        dep
                        for _, dep in dependents.get(uid, ())
                        if store.by_uid(dep["metadata"]["uid"]) is not None
                    ]
                    if alive:
                        self.kick(retry=True)
                    else:
                        self._without_finalizer(storage_key, obj, "foregroundDeletion")

        # Dependents whose owners are (partly) gone.
        for storage_key in store.storage_keys():
            for obj in list(store.objects(storage_key).values()):
                refs = obj["metadata"].get("ownerReferences") or []
                if not refs or obj["metadata"].get("deletionTimestamp"):
                    continue
                dangling = {ref.get("uid", "") for ref in refs if store.by_uid(ref.get("uid", "")) is None}
                if not dangling:
                    continue
                if len(dangling) == len({ref.get("uid", "") for ref in refs}):
                    self._delete(storage_key, obj)
                else:
                    self._strip_owner_refs(storage_key, obj, dangling)

    def _strip_owner_refs(self, storage_key: str, obj: dict[str, Any], uids: set[str]) -> None:
        current = self.store.by_uid(obj["metadata"]["uid"])
        if current is None:
            return
        refs = current["metadata"].get("ownerReferences") or []
        kept = [ref for ref in refs if ref.get("uid") not in uids]
        if len(kept) == len(refs):
            return
        new = copy.deepcopy(current)
        if kept:
            new["metadata"]["ownerReferences"] = kept
        else:
            del new["metadata"]["ownerReferences"]
        self.store.replace_stored(storage_key, current, new)

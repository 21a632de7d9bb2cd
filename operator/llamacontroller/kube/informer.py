"""One kind of object, listed and watched, held in memory; every change said to a callback.

An Informer lists its objects, then watches from the list's resourceVersion. A watch that ends is
resumed from the last version seen; one that expired (410 Gone) or failed is answered by a new list,
whose difference with what is held becomes changes too (objects deleted meanwhile included), so the
store is exactly the cluster's after every list. Objects are kept stripped to the fields the
operator reads (``strip``): memory grows with the number of objects watched, not with their size.

The operator's own writes go in at once (``put``), before their watch events arrive: a decision
taken right after a write sees it, whatever the watch's lag. A write's answer never replaces a newer
version the watch brought first, and never brings back an object whose deletion came first: the
UIDs of the last deleted objects are kept (a UID is never reused).

An ``optional`` informer watches a kind that a cluster may not serve or grant (a CRD or a role not
yet applied after the operator was upgraded): a list answered 404 or 403 counts as an empty list,
so the operator does not wait for it, and is tried again every ``RELIST_MAX`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llamacontroller.kube.api import ApiError, KubeApi

log = logging.getLogger(__name__)

Object = dict[str, Any]
RELIST_FIRST = 0.5  # seconds before listing again after a failure, doubling up to RELIST_MAX
RELIST_MAX = 30.0
TOMBSTONES = 4096  # deleted UIDs remembered: far more than writes in flight at once


@dataclass(frozen=True)
class Change:
    """``old`` None: added; ``new`` None: deleted."""

    old: Object | None
    new: Object | None


def uid_of(obj: Object) -> str:
    return str(obj["metadata"]["uid"])


def newer(candidate: Object, held: Object | None) -> bool:
    """Whether ``candidate`` may replace ``held``: resourceVersions are etcd revisions (numbers) on
    every API server this operator meets; anything else is taken as newer."""
    if held is None:
        return True
    mine, theirs = (
        candidate["metadata"].get("resourceVersion", ""),
        held["metadata"].get("resourceVersion", ""),
    )
    if mine.isdigit() and theirs.isdigit():
        return int(mine) >= int(theirs)
    return True


class Informer:
    """The objects at ``path`` (a collection URL of the API, all namespaces or one) that match
    ``label_selector`` and ``field_selector``, by UID."""

    def __init__(
        self,
        api: KubeApi,
        path: str,
        on_change: Callable[[Change], None],
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        strip: Callable[[Object], Object] = lambda obj: obj,
        optional: bool = False,
    ) -> None:
        self.api = api
        self.optional = optional
        self.path = path
        self.on_change = on_change
        self.params = {"labelSelector": label_selector} if label_selector else {}
        if field_selector:
            self.params["fieldSelector"] = field_selector
        self.strip = strip
        self.store: dict[str, Object] = {}
        self.synced = asyncio.Event()  # set once the first list is held
        self._deleted: set[str] = set()
        self._deleted_order: deque[str] = deque()

    def put(self, obj: Object) -> None:
        """An object the operator wrote, as the API server answered it."""
        if uid_of(obj) not in self._deleted:
            self._apply(self.strip(obj))

    def forget(self, uid: str) -> None:
        """An object the operator deleted and the API server removed at once."""
        self._remove(uid)

    async def run(self) -> None:
        delay = RELIST_FIRST
        while True:
            try:
                version = await self._list()
                delay = RELIST_FIRST
                while version:
                    version = await self._watch(version)
            except ApiError as exc:
                if self.optional and exc.status in (403, 404):
                    if not self.synced.is_set():
                        log.warning("cannot list %s (%s): taken as empty until it can", self.path, exc)
                    self._absent()
                    await asyncio.sleep(RELIST_MAX)
                    continue
                delay = await self._wait_to_relist(exc, delay)
            except (OSError, ValueError, KeyError) as exc:
                delay = await self._wait_to_relist(exc, delay)

    async def _wait_to_relist(self, exc: Exception, delay: float) -> float:
        """After a failure: the next delay, doubled up to RELIST_MAX."""
        log.warning("watching %s failed (%s); listing again in %.1f s", self.path, exc, delay)
        await asyncio.sleep(delay)
        return min(delay * 2, RELIST_MAX)

    async def _list(self) -> str:
        """The store becomes the list: what is not in it is gone, unless the operator wrote it after
        the list's version (its own create, still on its way to the watch)."""
        items, version = await self.api.list_objects(self.path, self.params)
        listed = {uid_of(obj): self.strip(obj) for obj in items}
        snapshot = {"metadata": {"resourceVersion": version}}
        gone = [uid for uid, held in self.store.items() if uid not in listed and newer(snapshot, held)]
        for uid in gone:
            self._remove(uid)
        for obj in listed.values():
            self._apply(obj)
        self.synced.set()
        return version

    async def _watch(self, version: str) -> str:
        """Apply events until the stream ends; the version to resume from, '' to list again."""
        async for event in self.api.watch_objects(self.path, version, self.params):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                return ""  # 410 Gone: the history moved on
            version = obj.get("metadata", {}).get("resourceVersion", version)
            if kind == "DELETED":
                self._remove(uid_of(obj))
            elif kind in {"ADDED", "MODIFIED"}:
                self._apply(self.strip(obj))
        return version

    def _absent(self) -> None:
        """The kind is not served: none of its objects exist."""
        for uid in list(self.store):
            self._remove(uid)
        self.synced.set()

    def _remove(self, uid: str) -> None:
        if uid not in self._deleted:
            self._deleted.add(uid)
            self._deleted_order.append(uid)
            if len(self._deleted_order) > TOMBSTONES:
                self._deleted.discard(self._deleted_order.popleft())
        old = self.store.pop(uid, None)
        if old is not None:
            self.on_change(Change(old, None))

    def _apply(self, obj: Object) -> None:
        uid = uid_of(obj)
        held = self.store.get(uid)
        if held == obj or not newer(obj, held):
            return
        self.store[uid] = obj
        self.on_change(Change(held, obj))

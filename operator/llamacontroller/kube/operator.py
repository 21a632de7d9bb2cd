"""The operator at run time: the cluster cache, the work queue, and who gets reconciled when what
changes.

- A LlamaModel that changes is reconciled; one deleted frees its place in its node's queue.
- A server Pod or slot Service that changes makes its holder reconciled; a Pod gone frees its
  slot, so the waiters of its node are reconciled, oldest first.
- A Node whose readiness or GPU count changes makes every LlamaModel on it reconciled.
- A LlamaNode whose GPUs (their memory, the other processes on them), model files or trust (its
  agent's heartbeat going stale or fresh) change makes the LlamaModels on its node that have no
  server reconciled: the fit check gates a creation, so a model waits for other processes to leave
  and is placed once they do. Its heartbeat alone changes nothing.
- Every `resyncSeconds`, every LlamaModel is looked at again, from the cache (no API read), if
  anything its last decision read has changed since (a missed wake-up would show here), or if its
  status may change with nothing in the cache changed (a loading server's startup budget, a write
  the API server refused). Otherwise deciding again would decide the same: an idle operator with
  1,000 LlamaModels does no work per resync.

No decision is taken before every informer holds its first list: a restarted operator sees the
whole ledger before it grants a slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Hashable
from datetime import UTC, datetime

from llamacontroller.config import OperatorConfig
from llamacontroller.fit.check import fresh
from llamacontroller.kube.api import KubeApi
from llamacontroller.kube.cache import ClusterCache, llamanode_facts, node_facts
from llamacontroller.kube.informer import Change, Object
from llamacontroller.kube.metrics import OperatorMetrics
from llamacontroller.kube.reconciler import Reconciler, wanted_node
from llamacontroller.kube.workqueue import WorkQueue
from llamacontroller.render import names
from llamacontroller.resource import Phase

log = logging.getLogger(__name__)

WORKERS = 16  # reconciles at once: different nodes proceed in parallel, one node's in turn


def key_of(obj: Object) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def _status_node(obj: Object | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("node")


def _looked_at_again(body: Object) -> bool:
    """Whether its next decision may differ while nothing in the cache changes: time alone fails a
    loading server past its startup budget, a download moves on (its progress), and a write the API
    server refused may pass once something the cache does not hold changed (a ResourceQuota, an
    admission rule, a RuntimeClass)."""
    status = body.get("status") or {}
    ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
    refused = status.get("phase") == "Failed" and any(c.get("reason") == "Refused" for c in ready)
    return bool(status.get("phase") in ("Loading", "Downloading") or refused)


def _generation(obj: Object | None) -> int:
    return int(((obj or {}).get("metadata") or {}).get("generation") or 0)


def _ready_at_generation(obj: Object | None) -> bool:
    """Its status says Ready for its current spec."""
    status = (obj or {}).get("status") or {}
    return status.get("phase") == Phase.READY and status.get("observedGeneration") == _generation(obj)


class Operator:
    def __init__(
        self,
        api: KubeApi,
        config: OperatorConfig,
        namespaces: list[str] | None = None,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.api = api
        self.metrics = metrics
        # when this operator saw each LlamaModel's spec change (a generation), for apply-to-Ready
        self._applied: dict[str, tuple[int, datetime]] = {}
        self.config = config
        self.cache = ClusterCache(
            api, namespaces, config.gpu_count_label, self._changed, config.fit.node_stale_seconds
        )
        self.reconciler = Reconciler(api, self.cache, config)
        self.queue = WorkQueue(self._work, WORKERS)
        self._tasks: list[asyncio.Task[None]] = []
        self._decided: dict[str, Hashable] = {}  # by key: what its last decision read
        if metrics is not None:
            metrics.watch_cluster(self.cache.all_llamamodels)

    @property
    def synced(self) -> bool:
        return all(informer.synced.is_set() for informer in self.cache.informers)

    async def start(self) -> None:
        """Returns once the cache holds the cluster and the workers run."""
        self._tasks = [asyncio.create_task(i.run(), name=f"informer {i.path}") for i in self.cache.informers]
        await asyncio.gather(*(informer.synced.wait() for informer in self.cache.informers))
        log.info(
            "Watching %d LlamaModels, %d server Pods", len(self.cache.all_llamamodels()), self._pod_count()
        )
        self.queue.start()
        for lm in self.cache.all_llamamodels():
            self.queue.add(key_of(lm))
        self._tasks.append(asyncio.create_task(self._resync(), name="resync"))

    async def stop(self) -> None:
        await self.queue.stop()
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _pod_count(self) -> int:
        return sum(len(informer.store) for informer in self.cache.pods)

    def _inputs(self, key: str) -> Hashable:
        """What a decision about `key` reads from the cache now (None: nothing, it is gone)."""
        namespace, name = key.split("/", 1)
        body = self.cache.llamamodel(namespace, name)
        if body is None:
            return None
        return self.cache.decision_inputs(body, wanted_node(body, self.config))

    async def _work(self, key: str) -> None:
        namespace, name = key.split("/", 1)
        before = self.cache.llamamodel(namespace, name)
        # Taken before the decision observes (under its node's lock): what changes meanwhile makes
        # the inputs differ at the next resync, never the other way round.
        inputs = self._inputs(key)
        self._decided.pop(key, None)
        started = time.monotonic()
        try:
            decision, left = await self.reconciler.reconcile(namespace, name)
        except Exception:
            if self.metrics is not None:
                self.metrics.reconciled("error", None, time.monotonic() - started)
            raise
        if self.metrics is not None:
            reason = decision.report.reason if decision else None
            self.metrics.reconciled("ok" if decision else "gone", reason, time.monotonic() - started)
            if (
                decision is not None
                and decision.report.phase is Phase.READY
                and not _ready_at_generation(before)
            ):
                self._observe_ready(key, before)
        log.debug("Reconciled %s: %s", key, decision.report.reason if decision else "gone")
        if decision is not None:
            self._decided[key] = inputs
        if left:
            self.wake(left)

    def _observe_ready(self, key: str, body: Object | None) -> None:
        """Ready now: the time since its spec changed (as this operator saw it), or since its
        creation for a first spec."""
        assert self.metrics is not None
        generation = _generation(body)
        seen = self._applied.pop(key, None)
        if seen is not None and seen[0] == generation:
            applied: datetime | None = seen[1]
        elif generation <= 1 and body is not None and body["metadata"].get("creationTimestamp"):
            applied = datetime.fromisoformat(body["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
        else:
            applied = None  # changed before this operator ran: when is not known
        if applied is not None:
            self.metrics.ready(applied, datetime.now(UTC))

    def wake(self, node: str) -> None:
        """A slot on `node` may have freed: its waiters try, oldest first."""
        for waiter in self.reconciler.waiters_of(node):
            self.queue.add(waiter)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            self.resync()

    def resync(self) -> None:
        """Looks again at every LlamaModel whose decision may have changed since its last one."""
        for lm in self.cache.all_llamamodels():
            key = key_of(lm)
            if _looked_at_again(lm) or key not in self._decided or self._decided[key] != self._inputs(key):
                self.queue.add(key)

    def _changed(self, kind: str, change: Change) -> None:
        if not self.synced:
            return  # the first lists: every LlamaModel is reconciled once they are all held
        obj = change.new or change.old
        assert obj is not None
        if kind == "llamamodel":
            if change.new is not None:
                self.queue.add(key_of(change.new))
                if change.old is not None and _generation(change.new) != _generation(change.old):
                    self._applied[key_of(change.new)] = (_generation(change.new), datetime.now(UTC))
            else:
                self._applied.pop(key_of(obj), None)
                self._decided.pop(key_of(obj), None)
            gone = change.new is None or change.new["metadata"].get("deletionTimestamp")
            if gone and _status_node(change.old):
                self.wake(str(_status_node(change.old)))
        elif kind in ("pod", "service"):
            holder = obj["metadata"].get("annotations", {}).get(names.ANNOTATION_HOLDER, "")
            if "/" in holder:
                self.queue.add(holder)
            node = obj["metadata"].get("annotations", {}).get(names.ANNOTATION_NODE)
            if kind == "pod" and change.new is None and node:
                self.wake(node)
        elif kind == "node" and node_facts(change.old) != node_facts(change.new):
            name = obj["metadata"]["name"]
            for pod in self.cache.pods_on(name):
                holder = pod["metadata"].get("annotations", {}).get(names.ANNOTATION_HOLDER, "")
                if "/" in holder:
                    self.queue.add(holder)
            for lm in self.cache.llamamodels_on(name):
                self.queue.add(key_of(lm))
        elif kind == "llamanode" and self._fit_changed(change):
            for lm in self.cache.llamamodels_on(obj["metadata"]["name"]):
                if not self.cache.pods_of(lm["metadata"]["uid"]):
                    self.queue.add(key_of(lm))

    def _fit_changed(self, change: Change) -> bool:
        """Whether a LlamaNode's change may change a fit check: what it reads changed, or whether
        its agent is trusted."""
        now, stale = datetime.now(UTC), self.config.fit.node_stale_seconds

        def trusted(obj: Object | None) -> bool:
            return obj is not None and fresh(obj["status"].get("heartbeatAt"), stale, now)

        return llamanode_facts(change.old) != llamanode_facts(change.new) or trusted(change.old) != trusted(
            change.new
        )

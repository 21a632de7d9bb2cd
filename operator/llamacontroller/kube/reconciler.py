"""Observe, decide, act, report: what the operator does for one LlamaModel.

The observation comes from the cluster cache (no API read); the decision is pure
(reconcile.decide); the actions and the status are the only API calls, and each write's answer goes
into the cache at once. Decisions about one node are serialized by that node's lock, so two
LlamaModels racing for one slot cannot both see it free: the first creates its Pod (and the cache
holds it) before the second observes. Decisions about different nodes run side by side.

A write that fails in a way that may pass (an error of the API server, a throttle, a conflict, an
answer lost) is reported in the status (reason ``Retrying``), and the work queue tries again. A Pod
create whose answer is lost may have created the Pod: until a read of the API says whether it
exists, the node's decisions wait (its ``doubts``), so no other server is put on GPUs it may hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.kube.api import ApiError, KubeApi
from llamacontroller.kube.cache import ClusterCache
from llamacontroller.ledger import waiter_of
from llamacontroller.reconcile import (
    Decision,
    Observed,
    decide,
    left_queue,
    refused,
    retrying,
    status_patch,
)
from llamacontroller.render.service import service_matches
from llamacontroller.slots import gpu_count_of
from llamacontroller.status import (
    FETCH_CONTAINER,
    fetch_progress_line,
    fetch_running,
    node_health,
    rfc3339,
    transition_event,
)

log = logging.getLogger(__name__)

# Client errors that a later try may not meet: an object gone meanwhile (the cache was behind), a
# conflict (someone wrote first) and a throttle.
RETRIED_STATUSES = frozenset({404, 409, 429})


def status_changed(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Skip writes that change nothing: no churn, no watch events, no event storms."""
    return any(current.get(key) != value for key, value in wanted.items())


class ActionRefused(Exception):
    """The API server refused a write for good (invalid, forbidden, over quota): only a change of the
    LlamaModel or of the cluster helps, so the status says it instead of a retry loop."""


class ActionFailed(Exception):
    """A write failed in a way that may pass (a conflict, a throttle, an error of the server, no
    answer): the status says so, and the work queue tries again."""


def in_doubt(exc: ApiError) -> bool:
    """Whether a write that failed so may have been carried out all the same: its answer was lost
    (0), or the server failed on its way (5xx: an etcd timeout may follow a write)."""
    return exc.status == 0 or exc.status >= 500


@contextlib.asynccontextmanager
async def refusal(what: str) -> AsyncIterator[None]:
    """A client error (4xx) of the API server becomes ActionRefused; a conflict, a throttle,
    server-side errors and lost answers become ActionFailed."""
    try:
        yield
    except ApiError as exc:
        if 400 <= exc.status < 500 and exc.status not in RETRIED_STATUSES:
            raise ActionRefused(f"the API server refused to {what}: {exc}") from exc
        raise ActionFailed(f"could not {what} ({exc})") from exc


def wanted_node(body: dict[str, Any], config: OperatorConfig) -> str | None:
    return ((body.get("spec") or {}).get("nodeName")) or config.default_node or None


class Reconciler:
    def __init__(self, api: KubeApi, cache: ClusterCache, config: OperatorConfig) -> None:
        self.api = api
        self.cache = cache
        self.config = config
        self._node_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Pods whose create may have happened though its answer was lost (`namespace/name`): their
        # node and their owner's UID
        self._doubts: dict[str, tuple[str, str]] = {}

    async def reconcile(self, namespace: str, name: str) -> tuple[Decision | None, str | None]:
        """Bring one LlamaModel's children and status in line with its spec. The decision (None if
        the LlamaModel is gone), and the node whose waiters may move now (it left that queue)."""
        while True:
            body = self.cache.llamamodel(namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None, None
            node = wanted_node(body, self.config)
            # read before the node's lock: a node slow to show a log delays no decision of others
            progress = await self._fetch_progress(self.cache.pods_of(body["metadata"]["uid"]))
            async with self._node_locks[node] if node else contextlib.nullcontext():
                body = self.cache.llamamodel(namespace, name)  # what the cache holds now, under the lock
                if body is None or wanted_node(body, self.config) != node:
                    continue  # gone, or moved to another node while it waited: under that node's lock
                return await self._decide_and_act(body, node, progress)

    async def _decide_and_act(
        self, body: dict[str, Any], node: str | None, progress: dict[str, str]
    ) -> tuple[Decision | None, str | None]:
        """Under the lock of the LlamaModel's node: its decision, carried out and reported."""
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        await self._settle_doubts(node, body["metadata"]["uid"])
        observed = self._observe(body, node)
        observed.fetch_progress.update(progress)
        decision = decide(body, self.config, observed, datetime.now(UTC))
        try:
            await self._act(body, decision, node)
        except ActionRefused as exc:  # a refusal is reported; errors that may pass are retried
            log.warning("%s/%s: %s", namespace, name, exc)
            decision = refused(decision, str(exc))
        except ActionFailed as exc:
            await self._report(body, retrying(decision, str(exc)))
            raise
        await self._report(body, decision)
        return decision, left_queue(body, decision)

    async def _settle_doubts(self, node: str | None, owner: str) -> None:
        """Whether each Pod in doubt on the node, or of the owner, exists, from a read of the API
        (not the cache, which a broken watch may keep behind): one that exists goes into the cache.
        Raises while the API cannot say: no decision about them is taken before it can."""
        for key, (where, whose) in sorted(self._doubts.items()):
            if where != node and whose != owner:
                continue
            namespace, name = key.split("/", 1)
            found = await self.api.find_pod(namespace, name)
            if found is not None:
                self.cache.informer_of("pod", namespace).put(found)
            log.info("Pod %s, created without an answer, %s", key, "exists" if found else "does not exist")
            self._doubts.pop(key, None)

    def _observe(self, body: dict[str, Any], node: str | None) -> Observed:
        uid = body["metadata"]["uid"]
        pods = self.cache.pods_of(uid)
        node_object = self.cache.node(node) if node else None
        return Observed(
            pods=pods,
            services=self.cache.services_of(uid),
            node_pods=self.cache.pods_on(node) if node else [],
            # only a LlamaModel without a server takes its place in the queue
            llamamodels=self.cache.llamamodels_on(node) if node and not pods else [],
            gpu_count=gpu_count_of(node_object, self.config.gpu_count_label),
            node=node_health(node_object),
            node_exists=node_object is not None or node is None,
            llamanode=self.cache.llamanode(node) if node else None,
        )

    async def _fetch_progress(self, pods: list[dict[str, Any]]) -> dict[str, str]:
        """How far each fetch of a model source is: the last line of its log (``43 % of 4.9 GiB``),
        read only while it runs. Without an answer the status says Downloading all the same."""
        progress: dict[str, str] = {}
        for pod in pods:
            if not fetch_running(pod):
                continue
            meta = pod["metadata"]
            try:
                tail = await self.api.pod_log_tail(meta["namespace"], meta["name"], FETCH_CONTAINER)
            except ApiError as exc:
                log.debug("No progress of the fetch in pod %s/%s: %s", meta["namespace"], meta["name"], exc)
                continue
            line = fetch_progress_line(tail)
            if line:
                progress[meta["name"]] = line
        return progress

    def waiters_of(self, node: str) -> list[str]:
        """The LlamaModels waiting for a slot of `node`, oldest first, as `namespace/name`."""
        count = gpu_count_of(self.cache.node(node), self.config.gpu_count_label) or self.config.gpus_per_node
        waiters = [
            w for w in (waiter_of(lm, count, self.config) for lm in self.cache.llamamodels_on(node)) if w
        ]
        return [w.who for w in sorted(waiters, key=lambda w: w.key)]

    async def _act(self, body: dict[str, Any], decision: Decision, node: str | None) -> None:
        namespace = body["metadata"]["namespace"]
        pods = self.cache.informer_of("pod", namespace)
        for pod_name in decision.delete_pods:
            log.debug("Deleting pod %s/%s", namespace, pod_name)
            async with refusal(f"delete pod {pod_name}"):
                deleted = await self.api.delete_pod(namespace, pod_name)
            if deleted is not None:
                pods.put(deleted)
            else:
                for pod in self.cache.pods_of(body["metadata"]["uid"]):
                    if pod["metadata"]["name"] == pod_name:
                        pods.forget(pod["metadata"]["uid"])
        if decision.create_pod is not None:
            pod_name = decision.create_pod["metadata"]["name"]
            log.debug("Creating pod %s/%s", namespace, pod_name)
            async with refusal(f"create pod {pod_name}"):
                try:
                    created = await self.api.create_pod(decision.create_pod)
                except ApiError as exc:
                    if in_doubt(exc):
                        self._doubts[f"{namespace}/{pod_name}"] = (node or "", body["metadata"]["uid"])
                    raise
                pods.put(created)
        services = self.cache.informer_of("service", namespace)
        if decision.apply_service is not None:
            wanted = decision.apply_service
            existing = self.cache.service(namespace, wanted["metadata"]["name"])
            if existing is None or not service_matches(existing, wanted):
                async with refusal(f"create or update service {wanted['metadata']['name']}"):
                    services.put(await self.api.apply_service(wanted, existing))
        for service in self.cache.services_of(body["metadata"]["uid"]):
            if service["metadata"]["name"] in decision.delete_services:
                async with refusal(f"delete service {service['metadata']['name']}"):
                    await self.api.delete_service(namespace, service["metadata"]["name"])
                services.forget(service["metadata"]["uid"])

    async def _report(self, body: dict[str, Any], decision: Decision) -> None:
        meta, now = body["metadata"], datetime.now(UTC)
        previous = body.get("status") or {}
        wanted = status_patch(body, decision, now)
        if status_changed(previous, wanted):
            patched = await self.api.patch_llamamodel_status(meta["namespace"], meta["name"], wanted)
            if patched is not None:
                self.cache.informer_of("llamamodel", meta["namespace"]).put(patched)
        event = transition_event(previous, decision.report)
        if event is not None:
            log.info(
                "%s/%s: %s: %s",
                meta["namespace"],
                meta["name"],
                decision.report.reason,
                decision.report.message,
            )
            try:
                await self.api.post_event(body, *event, now=rfc3339(now))
            except ApiError as exc:  # the story is lost, the state is not: never fail a reconcile for it
                log.warning("Could not post an event on %s/%s: %s", meta["namespace"], meta["name"], exc)

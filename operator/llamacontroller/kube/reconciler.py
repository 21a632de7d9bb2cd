"""Observe, decide, act, report: the one loop that every trigger (kopf event, timer, Pod change) runs.

The decision is pure (reconcile.decide); this module only gathers the observation and carries the
decision out. One lock makes observe-decide-act atomic, so two LlamaModels racing for one slot cannot
both see it free: the first to decide creates its Pod before the second observes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.kube.api import ApiError, KubeApi
from llamacontroller.ledger import waiter_of
from llamacontroller.reconcile import Decision, Observed, decide, left_queue, refused, status_patch
from llamacontroller.render import names
from llamacontroller.render.service import service_matches
from llamacontroller.slots import gpu_count_of
from llamacontroller.status import node_health, rfc3339, transition_event

log = logging.getLogger(__name__)

WAKE_RETRY_FIRST = 1.0  # seconds before waking a node's waiters again after a failed API call
WAKE_RETRY_MAX = 30.0
# Client errors that a later try may not meet: a conflict (someone wrote first) and a throttle.
RETRIED_STATUSES = frozenset({409, 429})


def _selector(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items())


def status_changed(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Skip writes that change nothing: no churn, no watch events, no event storms."""
    return any(current.get(key) != value for key, value in wanted.items())


class Reconciler:
    def __init__(self, api: KubeApi, config: OperatorConfig, namespaces: list[str] | None = None) -> None:
        self.api = api
        self.config = config
        self.namespaces = namespaces  # None: every namespace
        self._lock = asyncio.Lock()
        self._waking: dict[str, asyncio.Task[None]] = {}  # by node: waking its waiters
        self._wake_again: set[str] = set()  # nodes whose slots moved again while being woken

    async def reconcile(self, namespace: str, name: str) -> Decision | None:
        """Bring one LlamaModel's children and status in line with its spec; None if it is gone."""
        async with self._lock:
            body = await self.api.get_llamamodel(namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None
            observed = await self._observe(body)
            decision = decide(body, self.config, observed, datetime.now(UTC))
            try:
                await self._act(body, decision)
            except ActionRefused as exc:  # a refusal is reported; errors that may pass are retried
                log.warning("%s/%s: %s", namespace, name, exc)
                decision = refused(decision, str(exc))
            await self._report(body, decision)
        left = left_queue(body, decision)
        if left:
            self.wake(left)
        return decision

    async def _observe(self, body: dict[str, Any]) -> Observed:
        meta = body["metadata"]
        own = _selector({names.LABEL_OWNER_UID: meta["uid"]})
        pods = await self.api.list_pods(own, meta["namespace"])
        services = await self.api.list_services(meta["namespace"], own)
        node = _wanted_node(body, self.config)
        node_pods: list[dict[str, Any]] = []
        llamamodels: list[dict[str, Any]] = []
        node_object = await self.api.get_node(node) if node else None
        gpu_count = gpu_count_of(node_object, self.config.gpu_count_label)
        if node:
            on_node = {names.LABEL_MANAGED_BY: names.MANAGER, names.LABEL_NODE: names.label_value(node)}
            node_pods = await self.api.list_pods(_selector(on_node))
        if node and not pods:  # only a LlamaModel without a server takes its place in the queue
            llamamodels = await self._list_llamamodels()
        return Observed(pods, services, node_pods, llamamodels, gpu_count, node_health(node_object))

    async def _gpu_count(self, node: str) -> int | None:
        return gpu_count_of(await self.api.get_node(node), self.config.gpu_count_label)

    async def _list_llamamodels(self) -> list[dict[str, Any]]:
        scopes: list[str | None] = list(self.namespaces) if self.namespaces else [None]
        return [lm for namespace in scopes for lm in await self.api.list_llamamodels(namespace)]

    async def _act(self, body: dict[str, Any], decision: Decision) -> None:
        namespace = body["metadata"]["namespace"]
        for pod_name in decision.delete_pods:
            log.info("Deleting pod %s/%s: %s", namespace, pod_name, decision.report.message)
            await self.api.delete_pod(namespace, pod_name)
        if decision.create_pod is not None:
            pod_name = decision.create_pod["metadata"]["name"]
            log.info("Creating pod %s/%s", namespace, pod_name)
            async with refusal(f"create pod {pod_name}"):
                await self.api.create_pod(decision.create_pod)
        if decision.apply_service is not None:
            wanted = decision.apply_service
            existing = await self.api.get_service(namespace, wanted["metadata"]["name"])
            if existing is None or not service_matches(existing, wanted):
                async with refusal(f"create or update service {wanted['metadata']['name']}"):
                    await self.api.apply_service(wanted, existing)
        for service_name in decision.delete_services:
            await self.api.delete_service(namespace, service_name)

    async def _report(self, body: dict[str, Any], decision: Decision) -> None:
        meta, now = body["metadata"], datetime.now(UTC)
        previous = body.get("status") or {}
        wanted = status_patch(body, decision, now)
        if status_changed(previous, wanted):
            await self.api.patch_llamamodel_status(meta["namespace"], meta["name"], wanted)
        event = transition_event(previous, decision.report)
        if event is not None:
            try:
                await self.api.post_event(body, *event, now=rfc3339(now))
            except ApiError as exc:  # the story is lost, the state is not: never fail a reconcile for it
                log.warning("Could not post an event on %s/%s: %s", meta["namespace"], meta["name"], exc)

    async def resync_forever(self, interval: float) -> None:
        """Reconcile every LlamaModel every `interval` seconds; one that fails waits for the next
        round, the others go on."""
        while True:
            await asyncio.sleep(interval)
            try:
                llamamodels = await self._list_llamamodels()
            except (ApiError, OSError) as exc:
                log.warning("Resync failed, trying again in %.0f s: %s", interval, exc)
                continue
            for lm in llamamodels:
                meta = lm["metadata"]
                try:
                    await self.reconcile(meta["namespace"], meta["name"])
                except (ApiError, OSError) as exc:
                    log.warning("Resync of %s/%s failed: %s", meta["namespace"], meta["name"], exc)

    def wake(self, node: str) -> None:
        """Let the waiters of `node` try for its slots soon, and until it worked: an event handler
        that calls this returns at once, and a failed API call is retried with backoff instead of
        leaving the queue stuck until the next resync."""
        if node in self._waking:
            self._wake_again.add(node)  # the running round starts over once it is done
            return
        self._waking[node] = asyncio.create_task(self._wake_until_done(node), name=f"wake {node}")

    async def _wake_until_done(self, node: str) -> None:
        delay = WAKE_RETRY_FIRST
        try:
            while True:
                self._wake_again.discard(node)
                try:
                    await self.wake_waiters(node)
                except (ApiError, OSError) as exc:
                    log.warning(
                        "Waking the waiters of %s failed, trying again in %.0f s: %s", node, delay, exc
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, WAKE_RETRY_MAX)
                    continue
                if node not in self._wake_again:
                    return
        finally:
            del self._waking[node]

    async def close(self) -> None:
        """Stop waking (a stopping operator leaves the queue to its successor, which reads it anew)."""
        for task in list(self._waking.values()):
            task.cancel()
        await asyncio.gather(*self._waking.values(), return_exceptions=True)

    async def wake_waiters(self, node: str) -> None:
        """A slot on `node` may have freed: let the LlamaModels waiting there try, oldest first."""
        count = await self._gpu_count(node) or self.config.gpus_per_node
        waiters = [
            w for w in (waiter_of(lm, count, self.config) for lm in await self._list_llamamodels()) if w
        ]
        for waiter in sorted((w for w in waiters if w.node == node), key=lambda w: w.key):
            namespace, name = waiter.who.split("/", 1)
            await self.reconcile(namespace, name)


class ActionRefused(Exception):
    """The API server refused a write for good (invalid, forbidden, over quota): only a change of the
    LlamaModel or of the cluster helps, so the status says it instead of a retry loop."""


@contextlib.asynccontextmanager
async def refusal(what: str) -> AsyncIterator[None]:
    """A client error (4xx) of the API server becomes ActionRefused; a conflict, a throttle and
    server-side errors stay ApiErrors, which kopf retries."""
    try:
        yield
    except ApiError as exc:
        if 400 <= exc.status < 500 and exc.status not in RETRIED_STATUSES:
            raise ActionRefused(f"the API server refused to {what}: {exc}") from exc
        raise


def _wanted_node(body: dict[str, Any], config: OperatorConfig) -> str | None:
    return ((body.get("spec") or {}).get("nodeName")) or config.default_node or None

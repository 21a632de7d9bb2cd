"""Observe, decide, act, report: the one loop that every trigger (kopf event, timer, Pod change) runs.

The decision is pure (reconcile.decide); this module only gathers the observation and carries the
decision out. One lock makes observe-decide-act atomic, so two LlamaModels racing for one slot cannot
both see it free: the first to decide creates its Pod before the second observes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.kube.api import KubeApi
from llamacontroller.reconcile import Decision, Observed, decide, status_patch
from llamacontroller.render import names
from llamacontroller.render.service import service_matches
from llamacontroller.resource import Phase
from llamacontroller.status import now_rfc3339

log = logging.getLogger(__name__)


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

    async def reconcile(self, namespace: str, name: str) -> Decision | None:
        """Bring one LlamaModel's children and status in line with its spec; None if it is gone."""
        async with self._lock:
            body = await self.api.get_llamamodel(namespace, name)
            if body is None or body["metadata"].get("deletionTimestamp"):
                return None
            observed = await self._observe(body)
            decision = decide(body, self.config, observed)
            await self._act(body, decision)
            await self._report(body, decision)
            return decision

    async def _observe(self, body: dict[str, Any]) -> Observed:
        meta = body["metadata"]
        own = _selector({names.LABEL_OWNER_UID: meta["uid"]})
        pods = await self.api.list_pods(own, meta["namespace"])
        services = await self.api.list_services(meta["namespace"], own)
        node = _wanted_node(body, self.config)
        node_pods: list[dict[str, Any]] = []
        if node:
            on_node = {names.LABEL_MANAGED_BY: names.MANAGER, names.LABEL_NODE: names.label_value(node)}
            node_pods = await self.api.list_pods(_selector(on_node))
        return Observed(pods=pods, services=services, node_pods=node_pods)

    async def _act(self, body: dict[str, Any], decision: Decision) -> None:
        namespace = body["metadata"]["namespace"]
        for pod_name in decision.delete_pods:
            log.info("Deleting pod %s/%s: %s", namespace, pod_name, decision.report.message)
            await self.api.delete_pod(namespace, pod_name)
        if decision.create_pod is not None:
            log.info("Creating pod %s/%s", namespace, decision.create_pod["metadata"]["name"])
            await self.api.create_pod(decision.create_pod)
        if decision.apply_service is not None:
            wanted = decision.apply_service
            existing = await self.api.get_service(namespace, wanted["metadata"]["name"])
            if existing is None or not service_matches(existing, wanted):
                await self.api.apply_service(wanted, existing)
        for service_name in decision.delete_services:
            await self.api.delete_service(namespace, service_name)

    async def _report(self, body: dict[str, Any], decision: Decision) -> None:
        meta = body["metadata"]
        wanted = status_patch(body, decision, now_rfc3339())
        if status_changed(body.get("status") or {}, wanted):
            await self.api.patch_llamamodel_status(meta["namespace"], meta["name"], wanted)

    async def wake_waiters(self, node: str) -> None:
        """A slot on `node` may have freed: let the LlamaModels waiting there try, oldest first."""
        waiting = [
            lm
            for namespace in self.namespaces or [None]
            for lm in await self.api.list_llamamodels(namespace)
            if (lm.get("status") or {}).get("phase") == Phase.WAITING.value
            and (lm.get("status") or {}).get("node") == node
        ]
        waiting.sort(key=lambda lm: (lm["metadata"].get("creationTimestamp", ""), lm["metadata"]["name"]))
        for lm in waiting:
            await self.reconcile(lm["metadata"]["namespace"], lm["metadata"]["name"])


def _wanted_node(body: dict[str, Any], config: OperatorConfig) -> str | None:
    return ((body.get("spec") or {}).get("nodeName")) or config.default_node or None

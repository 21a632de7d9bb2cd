"""The gateway's view of the cluster: a watch of LlamaModels that keeps a catalog's routes in line
with the Ready ones (never an API call per request)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from llamacontroller.kube.api import ApiError, KubeApi
from llamacontroller.resource import Phase
from llamacontroller.serving.catalog.routing import Route

if TYPE_CHECKING:
    from llamacontroller.serving.catalog.routing import RoutingCatalog

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


def routes_from(llamamodels: Iterable[dict[str, Any]]) -> dict[str, list[Route]]:
    """Model name -> the slots' llama-servers (and their adapters), for every Ready LlamaModel with
    an endpoint: several LlamaModels serving one name are its replicas."""
    routes: dict[str, list[Route]] = {}
    for lm in llamamodels:
        status = lm.get("status") or {}
        if status.get("phase") == Phase.READY.value and status.get("model") and status.get("endpoint"):
            routes.setdefault(status["model"], []).append(
                Route(status["endpoint"], status.get("apiEndpoint"))
            )
    return routes


class LlamaModelWatch:
    """Keeps a catalog's routes in line with the LlamaModels of some namespaces (None: all)."""

    def __init__(self, api: KubeApi, catalog: RoutingCatalog, namespaces: list[str] | None = None) -> None:
        self.api = api
        self.catalog = catalog
        self.namespaces = namespaces
        self._objects: dict[str | None, dict[str, dict[str, Any]]] = {}
        self.synced = asyncio.Event()

    def _publish(self) -> None:
        self.catalog.set_routes(routes_from(o for objs in self._objects.values() for o in objs.values()))

    async def run(self) -> None:
        namespaces: list[str | None] = [*self.namespaces] if self.namespaces else [None]
        await asyncio.gather(*(self._follow(namespace) for namespace in namespaces))

    async def _follow(self, namespace: str | None) -> None:
        """List, then watch from the list's resourceVersion; list again when the watch expires."""
        while True:
            try:
                items, version = await self.api.list_llamamodels_at(namespace)
                self._objects[namespace] = {lm["metadata"]["uid"]: lm for lm in items}
                self._publish()
                self.synced.set()
                while version:
                    version = await self._watch(namespace, version)
            except (ApiError, OSError, ValueError) as exc:
                log.warning("watching LlamaModels failed (%s); retrying in %.0f s", exc, RETRY_SECONDS)
            await asyncio.sleep(RETRY_SECONDS)

    async def _watch(self, namespace: str | None, version: str) -> str:
        """Apply events; the version to resume from, or '' when a fresh list is needed."""
        objects = self._objects[namespace]
        async for event in self.api.watch_llamamodels(namespace, version):
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                return ""  # 410 Gone: the history moved on; list again
            version = obj.get("metadata", {}).get("resourceVersion", version)
            if kind == "DELETED":
                objects.pop(obj["metadata"]["uid"], None)
            elif kind in {"ADDED", "MODIFIED"}:
                objects[obj["metadata"]["uid"]] = obj
            self._publish()
        return version

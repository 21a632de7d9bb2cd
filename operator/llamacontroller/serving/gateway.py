"""`llamacontroller gateway`: the Ollama and OpenAI APIs for every Ready LlamaModel it can see,
routed by model name to the slot's Service.

It learns the models from a watch of LlamaModels (never an API call per request), keeps nothing but
that cache, and so runs with as many replicas as wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from llamacontroller.kube.api import ApiError as KubeApiError
from llamacontroller.kube.api import KubeApi
from llamacontroller.resource import Phase
from llamacontroller.serving.adapter import build_api_app
from llamacontroller.serving.asgi import App, Lifecycle
from llamacontroller.serving.auth import DEFAULT_ENV, describe_keys, load_api_keys
from llamacontroller.serving.metadata import FileDigests
from llamacontroller.serving.router import Route, RoutingCatalog
from llamacontroller.serving.serve import parse_listen, serve
from llamacontroller.serving.upstream import make_client

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0


def routes_from(llamamodels: Iterable[dict[str, Any]]) -> dict[str, Route]:
    """Model name -> the slot's llama-server (and its adapter), for every Ready LlamaModel with an
    endpoint."""
    routes = {}
    for lm in llamamodels:
        status = lm.get("status") or {}
        if status.get("phase") == Phase.READY.value and status.get("model") and status.get("endpoint"):
            routes[status["model"]] = Route(status["endpoint"], status.get("apiEndpoint"))
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
        await asyncio.gather(*(self._follow(ns) for ns in self.namespaces or [None]))

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
            except (KubeApiError, OSError, ValueError) as exc:
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


def gateway_lifecycle(watch: LlamaModelWatch, closing: Callable[[], Any]) -> Lifecycle:
    @contextlib.asynccontextmanager
    async def context(app: App) -> AsyncIterator[None]:
        task = asyncio.create_task(watch.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await closing()

    return context


def run_gateway(
    listen: str,
    namespaces: list[str] | None = None,
    *,
    api_keys_file: str | None = None,
    api_keys_env: str | None = DEFAULT_ENV,
) -> None:
    """Serve the cluster's models on `listen`; blocks."""
    host, port = parse_listen(listen)
    keys = load_api_keys(api_keys_file, api_keys_env)
    client, digests = make_client(), FileDigests()
    # The slots' adapters report their model files to the gateway (the real sha256): they are asked
    # with the gateway's first key, so adapters with API keys must accept it.
    catalog = RoutingCatalog(client, digests, sidecar_api_key=min(keys) if keys else None)
    api = KubeApi.from_environment(user_agent="llamacontroller-gateway")
    watch = LlamaModelWatch(api, catalog, namespaces)

    async def closing() -> None:
        digests.close()
        await client.aclose()
        await api.close()

    app = build_api_app(catalog, keys)
    app.lifecycle.append(gateway_lifecycle(watch, closing))
    serve(app, host, port, f"the gateway ({describe_keys(keys)})")

"""The gateway's view of the cluster: a watch of LlamaModels that keeps a catalog's routes in line
with the Ready ones (never an API call per request)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from llamacontroller.kube.api import LLAMAMODELS, KubeApi
from llamacontroller.kube.cache import collection, strip_llamamodel
from llamacontroller.kube.informer import Change, Informer
from llamacontroller.resource import PLURAL, Phase
from llamacontroller.serving.catalog.routing import Route

if TYPE_CHECKING:
    from llamacontroller.serving.catalog.routing import RoutingCatalog


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
    """Keeps a catalog's routes in line with the LlamaModels of some namespaces (None: all): an
    Informer of LlamaModels per namespace, whose every change publishes the routes anew."""

    def __init__(
        self,
        api: KubeApi,
        catalog: RoutingCatalog,
        namespaces: list[str] | None = None,
        strip: Callable[[dict[str, Any]], dict[str, Any]] = strip_llamamodel,
    ) -> None:
        """``strip``: what is kept of each LlamaModel (the console keeps its labels too)."""
        self.catalog = catalog
        scopes: list[str | None] = list(namespaces) if namespaces else [None]
        self.informers = [
            Informer(api, collection(LLAMAMODELS, PLURAL, scope), self._publish, strip=strip)
            for scope in scopes
        ]

    @property
    def synced(self) -> bool:
        return all(informer.synced.is_set() for informer in self.informers)

    def _publish(self, _: Change) -> None:
        self.catalog.set_routes(routes_from(lm for i in self.informers for lm in i.store.values()))

    def llamamodels(self) -> list[dict[str, Any]]:
        """Every LlamaModel the watch holds now, as stripped."""
        return [lm for informer in self.informers for lm in informer.store.values()]

    async def run(self) -> None:
        await asyncio.gather(*(informer.run() for informer in self.informers))

"""A catalog of many llama-servers, routed by model name: the gateways' (cluster and local).

Routes (model name -> Route) are replaced as a whole by whoever learns them (a watch of LlamaModels,
or the local runtime); each route keeps its Target, and so its cached metadata and prompt renderer,
for as long as the name points at the same Route.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from llamacontroller.serving.catalog.digests import FileDigests
from llamacontroller.serving.catalog.model_names import same_model, with_tag
from llamacontroller.serving.catalog.prompts import PromptRenderer
from llamacontroller.serving.catalog.source import DIGEST_WAIT, MetadataSource
from llamacontroller.serving.catalog.target import Target
from llamacontroller.serving.errors import HttpError, ModelNotFound
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.upstream.llama_server import Upstream


class Route(NamedTuple):
    """Where a model is served: its llama-server, and the adapter beside it that reads the model
    file for a gateway that cannot (None: this process reads it, or nobody does)."""

    upstream: str
    sidecar: str | None = None


class RoutingCatalog:
    """The models the gateway serves, by name; ``set_routes`` replaces them."""

    def __init__(
        self,
        client: Client,
        digests: FileDigests,
        digest_wait: float = DIGEST_WAIT,
        upstream_api_key: str | None = None,
        sidecar_api_key: str | None = None,
    ) -> None:
        self.client = client
        self.digests = digests
        self.digest_wait = digest_wait
        self.upstream_api_key = upstream_api_key
        self.sidecar_api_key = sidecar_api_key
        self._routes: dict[str, Route] = {}
        self._targets: dict[tuple[str, Route], Target] = {}

    def set_routes(self, routes: Mapping[str, Route]) -> None:
        """The served models now; a name's Target is kept while its Route stays the same."""
        self._routes = {with_tag(name): route for name, route in routes.items()}
        self._targets = {key: t for key, t in self._targets.items() if self._routes.get(key[0]) == key[1]}

    @property
    def routes(self) -> dict[str, Route]:
        return dict(self._routes)

    def _target(self, name: str, route: Route) -> Target:
        target = self._targets.get((name, route))
        if target is None:
            upstream = Upstream(route.upstream, self.client, self.upstream_api_key)
            sidecar = Upstream(route.sidecar, self.client, self.sidecar_api_key) if route.sidecar else None
            metadata = MetadataSource(upstream, self.digests, self.digest_wait, sidecar)
            target = Target(name, upstream, metadata, PromptRenderer(upstream))
            self._targets[(name, route)] = target
        return target

    async def resolve(self, model: str | None) -> Target:
        if not model:
            raise HttpError(400, "model is required")
        for name, route in self._routes.items():
            if same_model(model, name):
                return self._target(name, route)
        raise ModelNotFound(model)

    async def targets(self) -> list[Target]:
        return [self._target(name, route) for name, route in sorted(self._routes.items())]

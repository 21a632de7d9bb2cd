"""A catalog of many llama-servers, routed by model name: the gateways' (cluster and local).

Routes (model name -> its Routes) are replaced as a whole by whoever learns them (a watch of
LlamaModels, or the local runtime); each route keeps its Target, and so its cached metadata and
prompt renderer, for as long as the name points at the same Route.

Several LlamaModels may serve one model name (on two GPUs, or two nodes): each request goes to the
one with the fewest requests in flight from this process, and among equals to the next in turn, so
that replicas add up instead of one taking every request.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
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
        self._routes: dict[str, tuple[Route, ...]] = {}
        self._targets: dict[tuple[str, Route], Target] = {}
        self._turn = itertools.count()  # breaks ties between equally busy replicas

    def set_routes(self, routes: Mapping[str, Iterable[Route]]) -> None:
        """The served models now, each with its replicas; a Target is kept while its Route stays."""
        merged: dict[str, set[Route]] = {}
        for name, replicas in routes.items():
            merged.setdefault(with_tag(name), set()).update(replicas)
        self._routes = {name: tuple(sorted(replicas)) for name, replicas in merged.items() if replicas}
        self._targets = {key: t for key, t in self._targets.items() if key[1] in self._routes.get(key[0], ())}

    @property
    def routes(self) -> dict[str, tuple[Route, ...]]:
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
        for name, replicas in self._routes.items():
            if same_model(model, name):
                return self._least_busy(name, replicas)
        raise ModelNotFound(model)

    def _least_busy(self, name: str, replicas: tuple[Route, ...]) -> Target:
        if len(replicas) == 1:
            return self._target(name, replicas[0])
        targets = [self._target(name, route) for route in replicas]
        load = [self.client.busy(t.upstream.host, t.upstream.port) for t in targets]
        fewest = [t for t, busy in zip(targets, load, strict=True) if busy == min(load)]
        return fewest[next(self._turn) % len(fewest)]

    async def targets(self) -> list[Target]:
        """Every model once (its first replica): what /api/tags and /api/ps list."""
        return [self._target(name, replicas[0]) for name, replicas in sorted(self._routes.items())]

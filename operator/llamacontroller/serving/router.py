"""A catalog of many llama-servers, routed by model name: the gateway's (cluster or local).

Routes (model name -> llama-server URL) are replaced as a whole by whoever learns them (a watch of
LlamaModels, or the local runtime); each route keeps its Target, and so its cached metadata and
prompt renderer, for as long as the name points at the same URL.
"""

from __future__ import annotations

from llamacontroller.serving.catalog import Target
from llamacontroller.serving.errors import ApiError, ModelNotFound
from llamacontroller.serving.metadata import DIGEST_WAIT, FileDigests, MetadataSource
from llamacontroller.serving.names import same_model, with_tag
from llamacontroller.serving.prompts import PromptRenderer
from llamacontroller.serving.upstream import Client, Upstream


class RoutingCatalog:
    def __init__(
        self,
        client: Client,
        digests: FileDigests,
        digest_wait: float = DIGEST_WAIT,
        upstream_api_key: str | None = None,
    ) -> None:
        self.client = client
        self.digests = digests
        self.digest_wait = digest_wait
        self.upstream_api_key = upstream_api_key
        self._routes: dict[str, str] = {}
        self._targets: dict[tuple[str, str], Target] = {}

    def set_routes(self, routes: dict[str, str]) -> None:
        """The served models now; a name's Target is kept while its URL stays the same."""
        self._routes = {with_tag(name): url for name, url in routes.items()}
        self._targets = {key: t for key, t in self._targets.items() if self._routes.get(key[0]) == key[1]}

    @property
    def routes(self) -> dict[str, str]:
        return dict(self._routes)

    def _target(self, name: str, url: str) -> Target:
        target = self._targets.get((name, url))
        if target is None:
            upstream = Upstream(url, self.client, self.upstream_api_key)
            metadata = MetadataSource(upstream, self.digests, self.digest_wait)
            target = Target(name, upstream, metadata, PromptRenderer(upstream))
            self._targets[(name, url)] = target
        return target

    async def resolve(self, model: str | None) -> Target:
        if not model:
            raise ApiError(400, "model is required")
        for name, url in self._routes.items():
            if same_model(model, name):
                return self._target(name, url)
        raise ModelNotFound(model)

    async def targets(self) -> list[Target]:
        return [self._target(name, url) for name, url in sorted(self._routes.items())]

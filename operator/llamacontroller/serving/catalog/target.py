"""Which llama-server answers which model name.

The route handlers ask the app's ``Catalog`` for the ``Target`` of a request's model; the adapter's
catalog has one target, a gateway's many (``routing``). Nothing else in the handlers knows how many
servers there are.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from llamacontroller.serving.catalog.metadata import ModelMetadata
from llamacontroller.serving.catalog.model_names import same_model, with_tag
from llamacontroller.serving.catalog.prompts import PromptRenderer
from llamacontroller.serving.catalog.source import MetadataSource
from llamacontroller.serving.errors import HttpError, ModelNotFound
from llamacontroller.serving.upstream.llama_server import Upstream

if TYPE_CHECKING:
    from llamacontroller.serving.web.request import Request

log = logging.getLogger(__name__)

CATALOG = "catalog"  # the app.state key of the app's catalog
UNKNOWN_MODEL = "unknown"  # the metrics' model label for a model no target serves


@dataclass(frozen=True)
class Target:
    """A served model: its listed name (with tag), its llama-server, metadata and prompt renderer."""

    name: str
    upstream: Upstream
    metadata: MetadataSource
    prompts: PromptRenderer


class Catalog(Protocol):
    async def resolve(self, model: str | None) -> Target:
        """The target serving ``model`` (any spelling); raises ModelNotFound. None: the default."""
        ...

    async def targets(self) -> list[Target]:
        """Every served model, for the listings."""
        ...


def catalog_of(request: Request) -> Catalog:
    catalog: Catalog = request.app.state[CATALOG]
    return catalog


async def resolve(request: Request, model: str | None) -> Target:
    """The target of ``model`` for this request, whose metrics then carry the catalog's name for
    it (``unknown`` when there is none): never the client's spelling, so the label stays bounded."""
    try:
        target = await catalog_of(request).resolve(model)
    except HttpError:
        request.model = UNKNOWN_MODEL
        raise
    request.model = target.name
    return target


class SingleModelCatalog:
    """One llama-server; its model's name is given or read from llama-server's ``--alias``."""

    def __init__(self, upstream: Upstream, metadata: MetadataSource, name: str | None = None) -> None:
        self.upstream = upstream
        self.metadata = metadata
        self.prompts = PromptRenderer(upstream)
        self._target = Target(with_tag(name), upstream, metadata, self.prompts) if name else None

    async def target(self) -> Target:
        if self._target is None:
            facts = await self.metadata.server_facts()  # raises while llama-server is unreachable
            self._target = Target(with_tag(facts.alias), self.upstream, self.metadata, self.prompts)
        return self._target

    async def resolve(self, model: str | None) -> Target:
        target = await self.target()
        if model and not same_model(model, target.name):
            raise ModelNotFound(model)
        return target

    async def targets(self) -> list[Target]:
        return [await self.target()]


async def available(catalog: Catalog) -> list[tuple[Target, ModelMetadata]]:
    """Every target whose metadata can be had now, for the listings: one that is down (or loading)
    is left out and logged, as Ollama lists what it can serve."""
    try:
        targets = await catalog.targets()
    except HttpError as exc:
        log.warning("no model to list: %s", exc.message)
        return []
    found = await asyncio.gather(*(target.metadata.get() for target in targets), return_exceptions=True)
    out = []
    for target, metadata in zip(targets, found, strict=True):
        if isinstance(metadata, HttpError):
            log.warning("%s is not listed: %s", target.name, metadata.message)
        elif isinstance(metadata, BaseException):
            raise metadata
        else:
            out.append((target, metadata))
    return out

"""``llamacontroller adapter``: the API in front of one llama-server, the sidecar of every slot Pod.

It mounts the models volume at llama-server's path, so the ``model_path`` llama-server reports is
the GGUF file it reads metadata from, and it reports that file to the gateway (``FILE_PATH``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from llamacontroller.serving.app import build_app
from llamacontroller.serving.auth import DEFAULT_ENV, describe_keys, load_api_keys
from llamacontroller.serving.catalog.digests import FileDigests
from llamacontroller.serving.catalog.source import DIGEST_WAIT, FILE_PATH, MetadataSource
from llamacontroller.serving.catalog.target import Catalog, SingleModelCatalog
from llamacontroller.serving.errors import HttpError
from llamacontroller.serving.upstream.client import READ_TIMEOUT, Client
from llamacontroller.serving.upstream.llama_server import Upstream
from llamacontroller.serving.upstream.pool import Connect, open_tcp
from llamacontroller.serving.web.asgi import App, Lifecycle
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import Response, json_response
from llamacontroller.serving.web.router import Handler
from llamacontroller.serving.web.server import parse_listen, serve

log = logging.getLogger(__name__)

UPSTREAM_KEY_ENV = "LLAMACONTROLLER_UPSTREAM_API_KEY"  # llama-server's own --api-key, if it has one


def adapter_app(
    upstream_url: str,
    *,
    api_keys: frozenset[str] = frozenset(),
    model_name: str | None = None,
    upstream_api_key: str | None = None,
    read_timeout: float = READ_TIMEOUT,
    digest_wait: float = DIGEST_WAIT,
    connect: Connect = open_tcp,
) -> App:
    """The app for one upstream, its model named by llama-server's ``--alias`` unless given;
    ``connect`` opens the connections to it (see ``upstream.pool``)."""
    client = Client(read_timeout, connect=connect)
    digests = FileDigests()
    upstream = Upstream(upstream_url, client, upstream_api_key)
    metadata = MetadataSource(upstream, digests, digest_wait)
    catalog = SingleModelCatalog(upstream, metadata, model_name)
    app = build_app(catalog, api_keys)
    app.router.add("GET", FILE_PATH, file_report(metadata))
    app.lifecycle.append(lifecycle(catalog, client, digests))
    return app


def file_report(metadata: MetadataSource) -> Handler:
    """The model file's facts and sha256, for the gateway, which does not mount the models."""

    async def handler(request: Request) -> Response:
        return json_response(await metadata.file_report())

    return handler


def lifecycle(catalog: Catalog, client: Client, digests: FileDigests) -> Lifecycle:
    @contextlib.asynccontextmanager
    async def context(app: App) -> AsyncIterator[None]:
        warming = asyncio.create_task(warm_up(catalog))
        yield
        warming.cancel()
        digests.close()
        await client.aclose()

    return context


async def warm_up(catalog: Catalog, max_delay: float = 10.0) -> None:
    """Learn the model and start hashing its file at start-up, retrying while llama-server loads."""
    delay = 0.25
    while True:
        try:
            for target in await catalog.targets():
                await target.metadata.get()
            return
        except HttpError as exc:
            log.info("llama-server not ready yet (%s); retrying in %.1f s", exc.message, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


def run_adapter(
    upstream: str,
    listen: str,
    *,
    api_keys_file: str | None = None,
    api_keys_env: str | None = DEFAULT_ENV,
    model_name: str | None = None,
    read_timeout: float = READ_TIMEOUT,
    access_log: bool = True,
) -> None:
    """Serve the Ollama and OpenAI APIs on ``listen`` for the llama-server at ``upstream``; blocks.

    API keys: the lines of ``api_keys_file`` and the comma-separated ``$api_keys_env``; none means
    open. The upstream's own key (llama-server ``--api-key``) is read from $LLAMACONTROLLER_UPSTREAM_API_KEY.
    """
    host, port = parse_listen(listen)
    keys = load_api_keys(api_keys_file, api_keys_env)
    app = adapter_app(
        upstream,
        api_keys=keys,
        model_name=model_name,
        upstream_api_key=os.environ.get(UPSTREAM_KEY_ENV) or None,
        read_timeout=read_timeout,
    )
    what = f"the Ollama and OpenAI APIs for llama-server at {upstream} ({describe_keys(keys)})"
    serve(app, host, port, what, access_log=access_log)

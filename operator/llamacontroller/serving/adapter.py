"""The web app in front of one llama-server (the per-slot sidecar), and ``run_adapter``.

``build_api_app`` takes any ``Catalog``: the adapter passes its single-model catalog, a router its
own. ``serve.serve`` runs it (uvicorn on uvloop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from llamacontroller.serving import ollama_routes, openai_routes
from llamacontroller.serving.asgi import App, Handler, Lifecycle, Request, Response
from llamacontroller.serving.auth import DEFAULT_ENV, describe_keys, load_api_keys
from llamacontroller.serving.catalog import Catalog, SingleModelCatalog
from llamacontroller.serving.errors import ApiError
from llamacontroller.serving.http import API_KEYS, CATALOG, auth_middleware, error_middleware, json_response
from llamacontroller.serving.http11 import Observer
from llamacontroller.serving.metadata import DIGEST_WAIT, FILE_PATH, FileDigests, MetadataSource
from llamacontroller.serving.serve import parse_listen, serve
from llamacontroller.serving.upstream import READ_TIMEOUT, Client, Upstream, make_client

log = logging.getLogger(__name__)

MAX_BODY = 256 << 20  # chat histories with images are large; a limit still bounds a request's memory
UPSTREAM_KEY_ENV = "LLAMACONTROLLER_UPSTREAM_API_KEY"  # llama-server's own --api-key, if it has one


def build_api_app(catalog: Catalog, api_keys: frozenset[str] = frozenset()) -> App:
    """The Ollama and OpenAI routes over a catalog; errors in each API's shape; optional keys."""
    app = App([error_middleware, auth_middleware], max_body=MAX_BODY)
    app.state[CATALOG] = catalog
    app.state[API_KEYS] = api_keys
    ollama_routes.add_routes(app.router)
    openai_routes.add_routes(app.router)
    return app


def build_app(
    upstream_url: str,
    *,
    api_keys: frozenset[str] = frozenset(),
    model_name: str | None = None,
    upstream_api_key: str | None = None,
    read_timeout: float = READ_TIMEOUT,
    digest_wait: float = DIGEST_WAIT,
    observer: Observer | None = None,
) -> App:
    """The adapter's app: one upstream, the model named by llama-server's ``--alias`` unless given;
    ``observer`` sees each upstream request (for tests)."""
    client = make_client(read_timeout, observer=observer)
    digests = FileDigests()
    upstream = Upstream(upstream_url, client, upstream_api_key)
    metadata = MetadataSource(upstream, digests, digest_wait)
    catalog = SingleModelCatalog(upstream, metadata, model_name)
    app = build_api_app(catalog, api_keys)
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
        except ApiError as exc:
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
    app = build_app(
        upstream,
        api_keys=keys,
        model_name=model_name,
        upstream_api_key=os.environ.get(UPSTREAM_KEY_ENV) or None,
        read_timeout=read_timeout,
    )
    what = f"the Ollama and OpenAI APIs for llama-server at {upstream} ({describe_keys(keys)})"
    serve(app, host, port, what, access_log=access_log)

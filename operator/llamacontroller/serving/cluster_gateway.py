"""``llamacontroller gateway``: the Ollama and OpenAI APIs for every Ready LlamaModel it can see,
routed by model name to the slot's Service.

It learns the models from a watch of LlamaModels (``kube.watch``), keeps nothing but that cache, and
so runs with as many replicas as wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from llamacontroller.config import OperatorConfig
from llamacontroller.console.routes import Console, off_routes
from llamacontroller.console.session import Access
from llamacontroller.console.source import ClusterSource
from llamacontroller.console.view import strip_for_console
from llamacontroller.kube.api import TIMEOUT, KubeApi
from llamacontroller.kube.watch import LlamaModelWatch
from llamacontroller.serving.app import build_app
from llamacontroller.serving.auth import DEFAULT_ENV, describe_keys, load_api_keys
from llamacontroller.serving.catalog.digests import FileDigests
from llamacontroller.serving.catalog.routing import RoutingCatalog
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.web.asgi import App, Lifecycle
from llamacontroller.serving.web.server import parse_listen, serve


def gateway_lifecycle(watch: LlamaModelWatch, closing: Callable[[], Awaitable[None]]) -> Lifecycle:
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
    api_timeout: float = TIMEOUT,
    console: Access | None = None,
    config: OperatorConfig | None = None,
) -> None:
    """Serve the cluster's models on `listen`; blocks. ``console``: who may use the web console at
    /ui (off without a key or a trusted header); ``config``: the settings it renders and places with."""
    host, port = parse_listen(listen)
    keys = load_api_keys(api_keys_file, api_keys_env)
    client, digests = Client(), FileDigests()
    # The slots' adapters report their model files to the gateway (the real sha256): they are asked
    # with the gateway's first key, so adapters with API keys must accept it.
    catalog = RoutingCatalog(client, digests, sidecar_api_key=min(keys) if keys else None)
    api = KubeApi.from_environment(user_agent="llamacontroller-gateway", timeout=api_timeout)
    access = console or Access()
    strip = strip_for_console if access.enabled else None
    watch = LlamaModelWatch(api, catalog, namespaces, **({"strip": strip} if strip else {}))

    async def closing() -> None:
        digests.close()
        await client.aclose()
        await api.close()

    if access.enabled:
        source = ClusterSource(api, watch.llamamodels)
        routes = Console(access, source, config or OperatorConfig()).add_routes
    else:
        routes = off_routes
    app = build_app(catalog, keys, routes)
    app.lifecycle.append(gateway_lifecycle(watch, closing))
    serve(app, host, port, f"the gateway ({describe_keys(keys)}; {describe_console(access)})")


def describe_console(access: Access) -> str:
    if not access.enabled:
        return "console off"
    how = "a console key" if access.key else f"the proxy header {access.user_header}"
    return f"console at /ui by {how}, writes {'on' if access.writes else 'off'}"

"""The web app that the adapter and both gateways serve: the Ollama and OpenAI routes over a catalog.

The routes know nothing of how many llama-servers there are: they ask the catalog. The adapter
passes its one llama-server's (``catalog.target.SingleModelCatalog``), the gateways one routed by
model name (``catalog.routing.RoutingCatalog``).
"""

from __future__ import annotations

from collections.abc import Callable

from llamacontroller.serving.auth import require_keys
from llamacontroller.serving.catalog.target import CATALOG, Catalog
from llamacontroller.serving.metrics import METRICS, METRICS_PATH, ServingMetrics, metrics_handler
from llamacontroller.serving.ollama import routes as ollama_routes
from llamacontroller.serving.openai import routes as openai_routes
from llamacontroller.serving.web.asgi import App, Middleware
from llamacontroller.serving.web.middleware import error_middleware
from llamacontroller.serving.web.router import Router

# Bounds on request bodies in memory, so that a sidecar stays well under its 512 MiB limit (a body
# held is parsed and translated too: about 2.5 times its size at the peak). A chat with a 20 MB
# photo is a 27 MB body.
MAX_BODY = 48 << 20  # one request
BODY_BUDGET = 96 << 20  # every request being read or answered at once


def build_app(
    catalog: Catalog,
    api_keys: frozenset[str] = frozenset(),
    console: Callable[[Router], None] | None = None,
) -> App:
    """Errors in each API's shape; API keys required when there are any; metrics of its own on
    ``/metrics`` (``app.state[METRICS]``). ``console``: adds the web console's routes under ``/ui``
    (the gateways' console/routes.py; it has its own sign-in, not the API keys)."""
    middlewares: list[Middleware] = [error_middleware]
    if api_keys:
        middlewares.append(require_keys(api_keys))
    app = App(middlewares, max_body=MAX_BODY, body_budget=BODY_BUDGET)
    app.state[CATALOG] = catalog
    metrics = ServingMetrics()
    app.state[METRICS] = metrics
    app.observer = metrics
    ollama_routes.add_routes(app.router)
    openai_routes.add_routes(app.router)
    app.router.add("GET", METRICS_PATH, metrics_handler(metrics))
    if console is not None:
        console(app.router)
    return app

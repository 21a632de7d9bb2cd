"""The web app that the adapter and both gateways serve: the Ollama and OpenAI routes over a catalog.

The routes know nothing of how many llama-servers there are: they ask the catalog. The adapter
passes its one llama-server's (``catalog.target.SingleModelCatalog``), the gateways one routed by
model name (``catalog.routing.RoutingCatalog``).
"""

from __future__ import annotations

from llamacontroller.serving.auth import require_keys
from llamacontroller.serving.catalog.target import CATALOG, Catalog
from llamacontroller.serving.ollama import routes as ollama_routes
from llamacontroller.serving.openai import routes as openai_routes
from llamacontroller.serving.web.asgi import App, Middleware
from llamacontroller.serving.web.middleware import error_middleware

MAX_BODY = 256 << 20  # chat histories with images are large; a limit still bounds a request's memory


def build_app(catalog: Catalog, api_keys: frozenset[str] = frozenset()) -> App:
    """Errors in each API's shape; API keys required when there are any."""
    middlewares: list[Middleware] = [error_middleware]
    if api_keys:
        middlewares.append(require_keys(api_keys))
    app = App(middlewares, max_body=MAX_BODY)
    app.state[CATALOG] = catalog
    ollama_routes.add_routes(app.router)
    openai_routes.add_routes(app.router)
    return app

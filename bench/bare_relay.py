"""The least a relay on the adapter's stack costs: the baseline of adapter_overhead.py.

    python bench/bare_relay.py UPSTREAM_URL HOST:PORT

Forwards each request's method, path and body to llama-server and its answer back, on the same
stack as the adapter (its ASGI app under uvicorn on uvloop, its pooled upstream client) and nothing
else: no middleware, no parsing, no translation, no access log. What the adapter adds beyond this is
its own work.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator

from llamacontroller.serving.errors import UpstreamError
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.upstream.llama_server import Upstream
from llamacontroller.serving.web.asgi import App
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import Response
from llamacontroller.serving.web.server import parse_listen, serve


def relay_app(upstream_url: str) -> App:
    client = Client()
    upstream = Upstream(upstream_url, client)

    async def relay(request: Request) -> Response:
        try:
            async with upstream.open(request.method, request.path, request.body or None) as answer:
                return Response(await answer.aread(), answer.status_code)
        except UpstreamError as exc:  # llama-server's error status, passed on
            return Response(exc.message.encode(), exc.status, "text/plain")

    @contextlib.asynccontextmanager
    async def closing(app: App) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = App(max_body=1 << 30)
    app.router.add("*", "/{path}", relay)
    app.lifecycle.append(closing)
    return app


if __name__ == "__main__":
    serve(relay_app(sys.argv[1]), *parse_listen(sys.argv[2]), "the bare relay", access_log=False)

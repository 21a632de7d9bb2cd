"""The least a relay on the adapter's stack costs: the baseline of adapter_overhead.py.

    python bench/bare_relay.py UPSTREAM_URL HOST:PORT

Forwards each request's method, path and body to llama-server and its answer back, on the same
stack as the adapter (aiohttp's server on uvloop, the adapter's pooled upstream client) and nothing
else: no parsing, no translation, no access log. What the adapter adds beyond this is its own work.
"""

from __future__ import annotations

import sys

from aiohttp import web

from llamacontroller.serving.errors import UpstreamError
from llamacontroller.serving.serve import new_event_loop, parse_listen
from llamacontroller.serving.upstream import Upstream, make_client


def relay_app(upstream_url: str) -> web.Application:
    client = make_client()
    upstream = Upstream(upstream_url, client)

    async def relay(request: web.Request) -> web.Response:
        body = await request.read()
        try:
            async with upstream.open(request.method, request.path, body or None) as answer:
                body = await answer.aread()
                return web.Response(body=body, status=answer.status_code, content_type="application/json")
        except UpstreamError as exc:  # llama-server's error status, passed on
            return web.Response(text=exc.message, status=exc.status)

    async def close(app: web.Application) -> None:
        await client.aclose()

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", relay)
    app.on_cleanup.append(close)
    return app


if __name__ == "__main__":
    host, port = parse_listen(sys.argv[2])
    web.run_app(
        relay_app(sys.argv[1]), host=host, port=port, access_log=None, print=None, loop=new_event_loop()
    )

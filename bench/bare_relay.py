"""The least a Python relay in front of llama-server can cost: the baseline of adapter_overhead.py.

    python bench/bare_relay.py UPSTREAM_URL HOST:PORT

Forwards each request's method, path and body to llama-server and its answer back, with the same
stack as the adapter (aiohttp server and client, uvloop, a pooled keep-alive connection) and nothing
else: no parsing, no translation, no access log. What the adapter adds beyond this is its own work.
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web

from llamacontroller.serving.serve import new_event_loop, parse_listen


def relay_app(upstream: str) -> web.Application:
    sessions: list[aiohttp.ClientSession] = []

    async def relay(request: web.Request) -> web.Response:
        if not sessions:
            sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        body = await request.read()
        headers = {"Content-Type": request.content_type}
        async with sessions[0].request(
            request.method, upstream + request.path, data=body, headers=headers
        ) as up:
            answer = await up.read()
        return web.Response(body=answer, status=up.status, content_type=up.content_type)

    async def close(app: web.Application) -> None:
        for session in sessions:
            await session.close()

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", relay)
    app.on_cleanup.append(close)
    return app


if __name__ == "__main__":
    host, port = parse_listen(sys.argv[2])
    web.run_app(
        relay_app(sys.argv[1]), host=host, port=port, access_log=None, print=None, loop=new_event_loop()
    )

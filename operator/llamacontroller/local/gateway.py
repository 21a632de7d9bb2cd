"""The local runtime's Ollama/OpenAI gateway on 127.0.0.1:11434: the cluster gateway's routes, fed
by the runtime instead of a watch, served from a thread beside the supervisor's loop."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

from llamacontroller.serving.app import build_app
from llamacontroller.serving.catalog.digests import FileDigests
from llamacontroller.serving.catalog.routing import Route, RoutingCatalog
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.web.router import Router
from llamacontroller.serving.web.server import (
    ListenError,
    Serving,
    listening_socket,
    new_event_loop,
    parse_listen,
)

START_TIMEOUT = 30.0


class GatewayThread:
    def __init__(
        self,
        listen: str,
        api_keys: frozenset[str] = frozenset(),
        console: Callable[[Router], None] | None = None,
    ) -> None:
        """``console``: the web console's routes (console/routes.py over console/local.py)."""
        self.host, self.port = parse_listen(listen)
        self.api_keys = api_keys
        self.console = console
        self._loop = new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateway", daemon=True)
        self._serving: Serving | None = None
        self.catalog: RoutingCatalog | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> None:
        """Listening when this returns; a taken port raises here, not later."""
        try:
            sock = listening_socket(self.host, self.port)
        except ListenError as exc:
            raise ListenError(
                f"gateway: {exc} (choose another with --gateway-listen HOST:PORT, or off)"
            ) from exc
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(sock), self._loop).result(START_TIMEOUT)

    async def _start(self, sock: socket.socket) -> None:
        self._client, self._digests = Client(), FileDigests()
        self.catalog = RoutingCatalog(self._client, self._digests)
        self._serving = Serving(build_app(self.catalog, self.api_keys, self.console), sock)
        await self._serving.start()

    def set_routes(self, routes: dict[str, list[Route]]) -> None:
        if self.catalog is not None:
            self._loop.call_soon_threadsafe(self.catalog.set_routes, dict(routes))

    def stop(self) -> None:
        if not self._thread.is_alive():
            return  # never started: the port was taken
        if self._serving is not None:
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(START_TIMEOUT)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(START_TIMEOUT)

    async def _stop(self) -> None:
        assert self._serving is not None
        await self._serving.stop()
        self._digests.close()
        await self._client.aclose()

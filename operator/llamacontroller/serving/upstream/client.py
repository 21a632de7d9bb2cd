"""The process's client to llama-servers: a pool of keep-alive connections per server, and the
background work on them.

One ``Client`` per process (a gateway shares it between the ``Upstream`` of every model): opening a
connection per request would cost more than the whole adapter is allowed to add.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from llamacontroller.serving.upstream.pool import Connect, Pool, open_tcp

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 600.0  # a long prompt on a busy GPU sends nothing until its first token
MAX_CONNECTIONS = 512  # per server


class Client:
    """``connect`` opens each connection (TCP; see ``pool``)."""

    def __init__(
        self,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        connect: Connect = open_tcp,
    ) -> None:
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.connect = connect
        self._pools: dict[tuple[str, int], Pool] = {}
        self._closed = False
        self._background: set[asyncio.Task[object]] = set()

    def pool(self, host: str, port: int) -> Pool:
        if self._closed:  # a request during shutdown: fail it, do not open what nobody closes
            raise ConnectionError("the client is closed")
        pool = self._pools.get((host, port))
        if pool is None:
            pool = self._pools[(host, port)] = Pool(
                host,
                port,
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=self.read_timeout,
                max_connections=self.max_connections,
                connect=self.connect,
            )
        return pool

    def busy(self, host: str, port: int) -> int:
        """Requests in flight from this process to ``host:port`` (0 when it has asked nothing yet)."""
        pool = self._pools.get((host, port))
        return pool.busy if pool is not None else 0

    def spawn(self, work: Coroutine[Any, Any, object]) -> asyncio.Task[object]:
        """Run ``work`` beside the requests; ``aclose()`` cancels it if it is still running."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def aclose(self) -> None:
        self._closed = True
        for task in list(self._background):
            task.cancel()
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

"""Keep-alive connections to one server, and how a connection is opened.

``connect`` opens the network connection for a ``Connection`` (asyncio's TCP by default): whoever
builds the pool may pass another, as encode/httpcore's pools take a network backend (the tests
pass one that records what goes over the wire).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from llamacontroller.serving.upstream.connection import Connection

KEEPALIVE_EXPIRY = 4.0  # llama-server closes idle keep-alive connections after 5 s: drop ours first

ProtocolFactory = Callable[[], asyncio.Protocol]
Connect = Callable[[ProtocolFactory, str, int], Awaitable[object]]


async def open_tcp(protocol: ProtocolFactory, host: str, port: int) -> None:
    """A TCP connection to ``host:port`` whose bytes go to the protocol ``protocol()`` makes."""
    await asyncio.get_running_loop().create_connection(protocol, host, port)


class Pool:
    """Keep-alive connections to one server; at most ``max_connections`` open at once."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float,
        read_timeout: float,
        max_connections: int,
        pool_timeout: float = 60.0,
        connect: Connect = open_tcp,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout  # waiting for a free connection when all are busy
        self.read_timeout = read_timeout
        self._connect = connect
        self._idle: list[Connection] = []
        self._slots = asyncio.BoundedSemaphore(max_connections)
        self._open: set[Connection] = set()

    async def acquire(self, read_timeout: float | None = None) -> Connection:
        """An idle connection that is still good, else a new one."""
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if self._fresh(connection, now):
                connection.read_timeout = read_timeout or self.read_timeout
                return connection
            self._discard(connection)
        return await self.connect(read_timeout or self.read_timeout)

    @staticmethod
    def _fresh(connection: Connection, now: float) -> bool:
        return connection.settle() and now - connection.idle_since < KEEPALIVE_EXPIRY

    async def connect(self, read_timeout: float) -> Connection:
        # asyncio.timeout, not wait_for: wait_for wraps the awaitable in a task of its own (3.11)
        async with asyncio.timeout(self.pool_timeout):
            await self._slots.acquire()
        connection = Connection(read_timeout)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await self._connect(lambda: connection, self.host, self.port)
        except BaseException:
            self._slots.release()
            raise
        connection.pool = self
        self._open.add(connection)
        return connection

    @property
    def busy(self) -> int:
        """Connections carrying a request now: the requests this process has in flight there."""
        return len(self._open) - len(self._idle)

    def release(self, connection: Connection) -> None:
        """Back to the pool if its answer was read to the end and the server keeps it open."""
        if connection.settle():
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            self._discard(connection)

    async def warm(self, spares: int) -> None:
        """Open connections and leave them idle until ``spares`` wait for the next requests."""
        now = time.monotonic()
        for _ in range(spares - sum(self._fresh(connection, now) for connection in self._idle)):
            self.release(await self.connect(self.read_timeout))

    def _discard(self, connection: Connection) -> None:
        connection.close()
        if connection in self._open:
            self._open.discard(connection)
            self._slots.release()

    def close(self) -> None:
        for connection in list(self._open):
            self._discard(connection)
        self._idle.clear()

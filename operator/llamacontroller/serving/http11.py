"""HTTP/1.1 to llama-server on pooled keep-alive connections: the adapter's upstream transport.

aiohttp's client cost about 0.4 ms per request on the machine of bench/adapter_overhead.py (request
and response objects, cookie jar, URL handling, timers): more than everything else the adapter does.
The adapter talks to one known server, mostly over loopback, and needs none of that: a request is a
request line, a few headers and a body with its length; the answer is parsed by httptools (llhttp:
status, headers, chunked bodies, keep-alive). One request at a time per connection.

Reading: ``head()`` waits for the status and headers, ``chunk()`` for the body received since the
last read (``b""`` at its end). Every wait has the read timeout; a connection that buffers more than
``HIGH_WATER`` bytes nobody reads yet stops reading from the socket until they are read.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Mapping
from typing import cast

import httptools

HIGH_WATER = 1 << 20  # bytes of answer read from the socket but not yet by the caller
KEEPALIVE_EXPIRY = 4.0  # llama-server closes idle keep-alive connections after 5 s: drop ours first

Observer = Callable[[str, str], None]  # ("connect", "") or ("request", "METHOD /path"): for tests


class ConnectionClosed(ConnectionError):
    """The server closed the connection before the answer was complete."""


class ReadTimeout(TimeoutError):
    """The server sent nothing for the read timeout."""


class Connection(asyncio.Protocol):
    """One TCP connection to the server and the answer being read on it."""

    def __init__(self, read_timeout: float) -> None:
        self.read_timeout = read_timeout
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.requests = 0  # sent on this connection: a reused one may have been closed meanwhile
        self.pool: Pool | None = None  # where it goes back once its answer is read
        self._reset()
        self.complete = True  # no answer pending: ready for a request

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self._head_done = False
        self.complete = False
        self.received = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without the base class

    def data_received(self, data: bytes) -> None:
        self.received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
            self.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self._head_done and self._ends_with_connection():
            self.on_message_complete()  # a body without length or chunks ends when the server closes
        else:
            reason = f": {exc}" if exc else ""
            self._fail(
                ConnectionClosed(f"the server closed the connection before its answer was complete{reason}")
            )

    def _ends_with_connection(self) -> bool:
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        return "content-length" not in self.headers and not chunked

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self._head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        if not self._parser.should_keep_alive():
            self.closed = True
        self._wake()

    # -- the client's side

    def send(self, request: bytes) -> None:
        """Write a request (after the previous answer was read to its end)."""
        assert self.transport is not None
        self._reset()
        self.requests += 1
        self.transport.write(request)

    async def head(self) -> tuple[int, dict[str, str]]:
        while not self._head_done:
            await self._wait()
        return self.status, self.headers

    async def chunk(self) -> bytes:
        """All of the body that arrived and was not read yet, in one piece; ``b""`` once it is
        complete. One piece per wake-up: a reader that fell behind catches up in one step (one
        write to its own client instead of one per token)."""
        while not self._chunks:
            if self.complete:
                return b""
            await self._wait()
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused and self._buffered < HIGH_WATER // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def release(self) -> None:
        """Back to its pool if it can serve another request, else closed (synchronous: safe in any
        cleanup, also while the task is being cancelled or the client closed)."""
        if self.pool is not None:
            self.pool.release(self)
        else:
            self.close()

    def close(self) -> None:
        """Close now: a server still generating for this answer sees its client gone."""
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    @property
    def reusable(self) -> bool:
        """No answer pending or unread, and the connection still open."""
        transport = self.transport
        idle = self.complete and not self._chunks and self._error is None
        return idle and not self.closed and transport is not None and not transport.is_closing()

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(self.read_timeout, self._time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _time_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(ReadTimeout(f"no answer within {self.read_timeout:g} s"))


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
        observer: Observer | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self.pool_timeout = pool_timeout  # waiting for a free connection when all are busy
        self.read_timeout = read_timeout
        self.observer = observer
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
        return connection.reusable and now - connection.idle_since < KEEPALIVE_EXPIRY

    async def connect(self, read_timeout: float) -> Connection:
        # asyncio.timeout, not wait_for: wait_for wraps the awaitable in a task of its own (3.11)
        async with asyncio.timeout(self.pool_timeout):
            await self._slots.acquire()
        try:
            if self.observer:
                self.observer("connect", "")
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self.connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: Connection(read_timeout), self.host, self.port
                )
        except BaseException:
            self._slots.release()
            raise
        connection.pool = self
        self._open.add(connection)
        return connection

    def release(self, connection: Connection) -> None:
        """Back to the pool if its answer was read to the end and the server keeps it open."""
        if connection.reusable:
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


def request_bytes(method: str, path: str, host: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head

"""One HTTP/1.1 connection to a server, and the answer being read on it.

Requests are written by hand (a request line, a few headers, a body with its length); answers are
parsed by httptools (llhttp: status, headers, chunked bodies, keep-alive). One request at a time.
Why not an HTTP client library: docs/decisions/serving-stack.md.

The connection is in one ``State`` at a time, as encode/httpcore's connections are: a request may
be sent only when it is ``IDLE``, it can go back to its pool only once its answer is read to its end,
and ``CLOSED`` is final. Reading: ``head()`` waits for the status and headers, ``chunk()`` for the
body received since the last read (``b""`` at its end). Every wait has the read timeout; a
connection that buffers more than ``HIGH_WATER`` bytes nobody reads yet stops reading from the
socket until they are read.
"""

from __future__ import annotations

import asyncio
import collections
import enum
from collections.abc import Mapping
from typing import TYPE_CHECKING, cast

import httptools

if TYPE_CHECKING:
    from llamacontroller.serving.upstream.pool import Pool

HIGH_WATER = 1 << 20  # bytes of answer read from the socket but not yet by the caller


class State(enum.Enum):
    IDLE = "idle"  # open, no answer pending: ready for a request
    SENT = "sent"  # a request is out, nothing of its answer has arrived
    HEAD = "head"  # the answer's status and headers are arriving
    BODY = "body"  # the head is read; the body is arriving
    COMPLETE = "complete"  # the whole answer arrived (the caller may not have read all of it yet)
    CLOSED = "closed"  # closed by either side, or failed: never used again


WAITING = (State.SENT, State.HEAD, State.BODY)  # an answer is on its way


class ConnectionClosed(ConnectionError):
    """The server closed the connection before the answer was complete."""


class ClosedBeforeAnswer(ConnectionClosed):
    """Closed before any byte of the answer: on a kept-alive connection, the server had closed it
    meanwhile, and the request may be sent again on another."""


class ReadTimeout(TimeoutError):
    """The server sent nothing for the read timeout."""


class Connection(asyncio.Protocol):
    """An asyncio protocol: the transport feeds ``data_received``, the caller awaits the answer."""

    def __init__(self, read_timeout: float) -> None:
        self.read_timeout = read_timeout
        self.state = State.IDLE
        self.transport: asyncio.Transport | None = None
        self.requests = 0  # sent on this connection: a reused one may have been closed meanwhile
        self.idle_since = 0.0
        self.pool: Pool | None = None  # where it goes back once its answer is read
        self.status = 0
        self.headers: dict[str, str] = {}
        self._parser = httptools.HttpResponseParser(self)
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, without the base class

    def data_received(self, data: bytes) -> None:
        if self.state is State.SENT:
            self.state = State.HEAD
        elif self.state not in WAITING:
            self._hang_up()  # bytes nobody asked for: no request can trust what follows on it
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.state in WAITING:
                self._fail(exc)
            else:
                self._hang_up()  # garbage after a complete answer: the answer stands

    def connection_lost(self, exc: BaseException | None) -> None:
        reason = f": {exc}" if exc else ""
        message = f"the server closed the connection before its answer was complete{reason}"
        if self.state is State.SENT:
            self._fail(ClosedBeforeAnswer(message))
        elif self.state is State.BODY and self._ends_with_connection():
            self.on_message_complete()  # a body without length or chunks ends when the server closes
        elif self.state in WAITING:
            self._fail(ConnectionClosed(message))
        elif self.state is State.IDLE:
            self.state = State.CLOSED
        # COMPLETE: the answer stays readable, and the connection goes nowhere once it is read

    def _ends_with_connection(self) -> bool:
        chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        return "content-length" not in self.headers and not chunked

    # -- httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.state = State.BODY
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.state = State.COMPLETE
        if not self._parser.should_keep_alive():
            self._hang_up()  # the server closes it after this answer: not for another one
        self._wake()

    # -- the client's side

    def send(self, request: bytes) -> None:
        """Write a request; the connection must be ``IDLE``."""
        assert self.state is State.IDLE and self.transport is not None, self.state
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers = {}
        self._chunks.clear()
        self._buffered = 0
        self.state = State.SENT
        self.requests += 1
        self.transport.write(request)

    async def head(self) -> tuple[int, dict[str, str]]:
        while self.state in (State.SENT, State.HEAD):
            await self._wait()
        self._raise_if_closed()
        return self.status, self.headers

    async def chunk(self) -> bytes:
        """All of the body that arrived and was not read yet, in one piece; ``b""`` once it is
        complete. One piece per wake-up: a reader that fell behind catches up in one step (one
        write to its own client instead of one per token)."""
        while not self._chunks:
            if self.state is State.COMPLETE:
                return b""
            await self._wait()
        chunks = self._chunks
        data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def settle(self) -> bool:
        """Whether it can take another request: its answer arrived and was read to the end, and
        the server keeps it open. It is ``IDLE`` then; an answer left unread makes it useless."""
        if self.state is State.COMPLETE and not self._chunks:
            self.state = State.IDLE
        transport = self.transport
        return self.state is State.IDLE and transport is not None and not transport.is_closing()

    def release(self) -> None:
        """Back to its pool if it can serve another request, else closed (synchronous: safe in any
        cleanup, also while the task is being cancelled or the client closed)."""
        if self.pool is not None:
            self.pool.release(self)
        else:
            self.close()

    def close(self) -> None:
        """Close now: a server still generating for this answer sees its client gone."""
        self.state = State.CLOSED
        self._hang_up()
        self._wake()

    def _hang_up(self) -> None:
        """Close the socket; the state follows when asyncio reports it lost."""
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: BaseException) -> None:
        """The answer cannot complete: its reader gets ``error``."""
        if self._error is None:
            self._error = error
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._raise_if_closed()
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(self.read_timeout, self._time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        self._raise_if_closed()

    def _raise_if_closed(self) -> None:
        if self.state is State.CLOSED:
            raise self._error or ConnectionClosed("the connection was closed")

    def _time_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(ReadTimeout(f"no answer within {self.read_timeout:g} s"))


def request_bytes(method: str, path: str, host: str, headers: Mapping[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head + body if body else head

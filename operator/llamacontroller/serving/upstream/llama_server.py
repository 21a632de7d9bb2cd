"""One llama-server (or the adapter beside it) over the process's ``Client``: plain JSON requests,
streamed events, and ``/health``.

llama-server closes the connection after each streamed answer, so a streamed request says
``Connection: close``, and the connections the next one will take are opened in the background
meanwhile (``keep_spare``). Connecting is quick or the server is down; reading may wait minutes.
Every failure becomes an ``HttpError``: ``UpstreamError`` when llama-server answered with an error,
``UpstreamUnavailable`` when it could not be reached or died mid-answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httptools

from llamacontroller.serving.codec import dumps, loads
from llamacontroller.serving.errors import UpstreamUnavailable, from_upstream
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.upstream.connection import ClosedBeforeAnswer, Connection, request_bytes
from llamacontroller.serving.upstream.sse import DONE, SseDecoder, parse_event

HEALTH_TIMEOUT = 5.0
# Idle connections kept open after a streamed answer: the next streamed request's, and one for the
# request it may send beside it (a generate's /tokenize, for its context). llama-server keeps idle
# connections without holding a thread for each.
SPARES = 2

JSON_HEADERS = {"Content-Type": "application/json"}
CLOSE = {"Connection": "close"}
# What fails a request: the network, the server closing or timing out, an answer that is no HTTP.
FAILURES = (OSError, asyncio.TimeoutError, httptools.HttpParserError)


class UpstreamResponse:
    """An answer of llama-server whose body is not read yet; reading it fails with
    ``UpstreamUnavailable`` when llama-server dies or times out."""

    __slots__ = ("_connection", "_upstream", "status_code")

    def __init__(self, upstream: Upstream, connection: Connection) -> None:
        self._upstream = upstream
        self._connection = connection
        self.status_code = connection.status

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_raw()])

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the pieces it arrives in."""
        read = self._connection.chunk
        try:
            while chunk := await read():
                yield chunk
        except FAILURES as exc:
            raise self._upstream.unavailable(exc) from exc


class Upstream:
    """The server at ``base_url``; the client may be shared with other upstreams."""

    def __init__(self, base_url: str, client: Client, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
        parts = urlsplit(self.base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"llama-server's URL must be http://host:port, not {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path  # llama-server behind a path (a proxy): rarely anything
        self.netloc = parts.netloc
        self.headers = JSON_HEADERS | ({"Authorization": f"Bearer {api_key}"} if api_key else {})
        self._streamed_headers = self.headers | CLOSE
        self._spare: asyncio.Task[object] | None = None

    def __repr__(self) -> str:
        return f"Upstream({self.base_url!r})"

    def unavailable(self, exc: BaseException) -> UpstreamUnavailable:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return UpstreamUnavailable(f"llama-server at {self.base_url} failed: {reason}")

    @asynccontextmanager
    async def open(
        self, method: str, path: str, content: bytes | None = None, streamed: bool = False
    ) -> AsyncIterator[UpstreamResponse]:
        """A response whose body is not read yet; error statuses raise ``UpstreamError``.

        Leaving the block before the body's end closes the connection, which is how llama-server
        learns that the client went away and stops generating; a body read to its end gives a
        plain request's connection back to the pool. ``streamed``: llama-server closes the
        connection after a streamed answer (whatever its Keep-Alive header says), so such a
        request says ``Connection: close`` and its connection never goes back to the pool.
        """
        headers = self._streamed_headers if streamed else self.headers
        connection = await self._send(method, path, headers, content)
        try:
            response = UpstreamResponse(self, connection)
            if response.status_code >= 400:
                raise await self._error(response)
            yield response
        finally:
            # When the client went away this task is being cancelled, and an interrupted close would
            # leave the connection open and llama-server generating for nobody: closing and
            # releasing are synchronous (nothing to interrupt).
            if streamed:
                connection.close()
                self.keep_spare()
            connection.release()

    async def _send(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        content: bytes | None,
        timeout: float | None = None,
    ) -> Connection:
        """The request sent and the answer's head read. A kept-alive connection that the server
        closed meanwhile (before answering anything) is replaced once by a new one."""
        request = request_bytes(method, self.prefix + path, self.netloc, headers, content)
        for attempt in (1, 2):
            try:
                pool = self.client.pool(self.host, self.port)
                connection = await pool.acquire(timeout)
            except FAILURES as exc:
                raise self.unavailable(exc) from exc
            reused = connection.requests > 0
            connection.send(request)
            try:
                await connection.head()
            except FAILURES as exc:
                connection.release()
                if attempt == 1 and reused and isinstance(exc, ClosedBeforeAnswer):
                    continue
                raise self.unavailable(exc) from exc
            except BaseException:
                connection.close()
                connection.release()
                raise
            return connection
        raise AssertionError("unreachable: the second attempt returns or raises")

    def keep_spare(self) -> None:
        """Open the connections the next streamed request will take, off any request's path.

        A streamed answer's connection is closed after it, and opening a connection on a request's
        path costs it a round trip of the event loop: this opens them after the answer and leaves
        them in the pool (for ``KEEPALIVE_EXPIRY``): ``SPARES`` of them, as a generate sends its
        ``/tokenize`` beside its stream.
        """
        if self._spare is None or self._spare.done():
            self._spare = self.client.spawn(self._warm())

    async def _warm(self) -> None:
        with contextlib.suppress(*FAILURES):  # llama-server is down: the next request says so
            await self.client.pool(self.host, self.port).warm(SPARES)

    async def _error(self, response: UpstreamResponse) -> Exception:
        body = await response.aread()
        try:
            payload = loads(body)
        except ValueError:
            payload = None
        return from_upstream(response.status_code, payload, body.decode(errors="replace")[:500])

    async def request_json(self, method: str, path: str, body: Any = None) -> Any:
        async with self.open(method, path, None if body is None else dumps(body)) as response:
            raw = await response.aread()
        try:
            return loads(raw)
        except ValueError as exc:
            raise UpstreamUnavailable(f"llama-server sent no JSON on {path}: {raw[:200]!r}") from exc

    async def get_json(self, path: str) -> Any:
        return await self.request_json("GET", path)

    async def post_json(self, path: str, body: Any) -> Any:
        return await self.request_json("POST", path, body)

    @asynccontextmanager
    async def events(self, path: str, body: Any) -> AsyncIterator[AsyncIterator[list[Any]]]:
        """The JSON events of a streamed POST, in batches: those that arrived together (one when
        the reader keeps up). An ``error:`` event is given as ``{"error": ...}``."""
        async with self.open("POST", path, dumps(body), streamed=True) as response:
            yield self._decode(response)

    async def _decode(self, response: UpstreamResponse) -> AsyncIterator[list[Any]]:
        decoder = SseDecoder()
        async for chunk in response.aiter_raw():
            # [DONE] ends OpenAI streams: skipped, and the body read on to its end
            if batch := [parse_event(event) for event in decoder.feed(chunk) if event.payload != DONE]:
                yield batch
        if batch := [parse_event(event) for event in decoder.close() if event.payload != DONE]:
            yield batch

    async def health(self) -> int | None:
        """The status of ``/health`` (200 ready, 503 loading), None when unreachable."""
        try:
            connection = await self._send("GET", "/health", self.headers, None, HEALTH_TIMEOUT)
        except UpstreamUnavailable:
            return None
        try:
            while await connection.chunk():
                pass
        except FAILURES:
            return None
        finally:
            connection.release()
        return connection.status

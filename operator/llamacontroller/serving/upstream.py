"""The HTTP client to one llama-server.

One pooled ``aiohttp.ClientSession`` with keep-alive per process (a router shares one client between
many ``Upstream`` objects): creating a client or a connection per request would cost more than the
whole adapter is allowed to add, and aiohttp's client costs far less per request than httpx's.
(llama-server closes the connection after each streamed answer, so only plain requests reuse one.)
Timeouts: connecting is quick or the server is down; reading may wait minutes, since a long prompt
on a busy GPU sends nothing until its first token.
Every failure becomes an ``ApiError``: ``UpstreamError`` when llama-server answered with an error,
``UpstreamUnavailable`` when it could not be reached or died mid-answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from llamacontroller.serving.errors import UpstreamUnavailable, from_upstream
from llamacontroller.serving.sse import DONE, Event, SseDecoder

CONNECT_TIMEOUT = 5.0
POOL_TIMEOUT = 60.0  # waiting for a free connection when all ``max_connections`` are busy
HEALTH_TIMEOUT = 5.0
READ_TIMEOUT = 600.0
# llama-server closes idle keep-alive connections after 5 s: drop ours first, never reuse a dying one.
KEEPALIVE_EXPIRY = 4.0

JSON_HEADERS = {"Content-Type": "application/json"}
CLOSE = {"Connection": "close"}
# What fails a request: aiohttp's errors, and its timeouts (``TimeoutError`` on some paths).
FAILURES = (aiohttp.ClientError, asyncio.TimeoutError)


class Client:
    """The pooled session to llama-servers, created on first use.

    An ``aiohttp.ClientSession`` belongs to the event loop that runs when it is created, and
    ``make_client()`` is called before the app's loop runs (``web.run_app`` starts it later): the
    session is made inside that loop, on the first request, and closed by ``aclose()``.
    """

    def __init__(
        self,
        read_timeout: float = READ_TIMEOUT,
        max_connections: int = 512,
        trace_configs: Sequence[aiohttp.TraceConfig] = (),
    ) -> None:
        self.read_timeout = read_timeout
        self.max_connections = max_connections
        self.trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._background: set[asyncio.Task[object]] = set()

    @property
    def session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            if self._closed:  # a request during shutdown: fail it, do not open a session nobody closes
                raise aiohttp.ClientConnectionError("the client is closed")
            session = self._session = self._new_session()
        return session

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections, limit_per_host=0, keepalive_timeout=KEEPALIVE_EXPIRY
        )
        timeout = aiohttp.ClientTimeout(
            total=None, connect=POOL_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=self.read_timeout
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            trust_env=False,  # no proxies from the environment
            trace_configs=self.trace_configs or None,
        )

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
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def make_client(
    read_timeout: float = READ_TIMEOUT,
    max_connections: int = 512,
    trace_configs: Sequence[aiohttp.TraceConfig] = (),
) -> Client:
    """A client for llama-servers: pooled, keep-alive, no proxies from the environment."""
    return Client(read_timeout, max_connections, trace_configs)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # one, not one per call


def dumps(body: Any) -> bytes:
    """Compact JSON, UTF-8 as is."""
    return _ENCODER.encode(body).encode()


def parse_event(event: Event) -> Any:
    """An event's JSON; an ``error:`` event becomes ``{"error": ...}`` like a ``data:`` error."""
    try:
        value = json.loads(event.payload)
    except ValueError as exc:
        raise UpstreamUnavailable(
            f"llama-server sent an event that is no JSON: {event.payload[:200]!r}"
        ) from exc
    return {"error": value} if event.field == b"error" else value


class Response:
    """An answer of llama-server whose body is not read yet; reading it fails with
    ``UpstreamUnavailable`` when llama-server dies or times out."""

    __slots__ = ("_upstream", "raw", "status_code")

    def __init__(self, upstream: Upstream, raw: aiohttp.ClientResponse) -> None:
        self._upstream = upstream
        self.raw = raw
        self.status_code = raw.status

    async def aread(self) -> bytes:
        try:
            return await self.raw.read()
        except FAILURES as exc:
            raise self._upstream.unavailable(exc) from exc

    async def aiter_raw(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the chunks it arrives in."""
        read = self.raw.content.readany
        try:
            while chunk := await read():
                yield chunk
        except FAILURES as exc:
            raise self._upstream.unavailable(exc) from exc


class Upstream:
    """One llama-server at ``base_url``; the client may be shared with other upstreams."""

    def __init__(self, base_url: str, client: Client, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
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
    ) -> AsyncIterator[Response]:
        """A response whose body is not read yet; error statuses raise ``UpstreamError``.

        Leaving the block closes the response: a body not read to its end closes the connection,
        which is how llama-server learns that the client went away and stops generating.
        ``streamed``: llama-server closes the connection after a streamed answer (whatever its
        Keep-Alive header says), so such a request says ``Connection: close`` and its connection
        never goes back to the pool; otherwise a later request could go out on it and fail as the
        server closes it.
        """
        headers = self._streamed_headers if streamed else self.headers
        try:
            raw = await self.client.session.request(
                method, self.base_url + path, data=content, headers=headers
            )
        except FAILURES as exc:
            raise self.unavailable(exc) from exc
        try:
            if streamed and (connection := raw.connection) is not None and connection.protocol:
                connection.protocol.force_close()  # aiohttp does not honour the request's header
            response = Response(self, raw)
            if response.status_code >= 400:
                raise await self._error(response)
            yield response
        finally:
            # When the client went away this task is being cancelled, and an interrupted close would
            # leave the connection open and llama-server generating for nobody: this close is
            # synchronous (nothing to interrupt). A body read to its end has already given its
            # connection back to the pool, and then this closes nothing.
            raw.close()
            if streamed:
                self.keep_spare()

    def keep_spare(self) -> None:
        """Open the connection the next streamed request will take, off any request's path.

        A streamed answer's connection is closed after it, and opening a connection costs the
        client about a fifth of a millisecond: this does it after the answer, with a ``/health``
        request that leaves its connection in the pool (for ``KEEPALIVE_EXPIRY``).
        """
        if self._spare is None or self._spare.done():
            self._spare = self.client.spawn(self.health())

    async def _error(self, response: Response) -> Exception:
        body = await response.aread()
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        return from_upstream(response.status_code, payload, body.decode(errors="replace")[:500])

    async def request_json(self, method: str, path: str, body: Any = None) -> Any:
        async with self.open(method, path, None if body is None else dumps(body)) as response:
            raw = await response.aread()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise UpstreamUnavailable(f"llama-server sent no JSON on {path}: {raw[:200]!r}") from exc

    async def get_json(self, path: str) -> Any:
        return await self.request_json("GET", path)

    async def post_json(self, path: str, body: Any) -> Any:
        return await self.request_json("POST", path, body)

    @asynccontextmanager
    async def events(self, path: str, body: Any) -> AsyncIterator[AsyncIterator[Any]]:
        """The JSON events of a streamed POST; an ``error:`` event is yielded as ``{"error": ...}``."""
        async with self.open("POST", path, dumps(body), streamed=True) as response:
            yield self._decode(response)

    async def _decode(self, response: Response) -> AsyncIterator[Any]:
        decoder = SseDecoder()
        async for chunk in response.aiter_raw():
            for event in decoder.feed(chunk):
                if event.payload != DONE:  # and read on to the end of the body
                    yield parse_event(event)
        for event in decoder.close():
            if event.payload != DONE:
                yield parse_event(event)

    async def health(self) -> int | None:
        """The status of ``/health`` (200 ready, 503 loading), None when unreachable."""
        timeout = aiohttp.ClientTimeout(
            total=None, connect=HEALTH_TIMEOUT, sock_connect=HEALTH_TIMEOUT, sock_read=HEALTH_TIMEOUT
        )
        try:
            async with self.client.session.get(
                self.base_url + "/health", headers=self.headers, timeout=timeout
            ) as response:
                await response.read()
                return response.status
        except FAILURES:
            return None

"""The HTTP client to one llama-server.

One pooled ``httpx.AsyncClient`` with keep-alive (a router shares one client between many
``Upstream`` objects): creating a client or a connection per request would cost more than the whole
adapter is allowed to add. (llama-server closes the connection after each streamed answer, so only
plain requests reuse one.) Timeouts: connecting is quick or the server is down; reading may wait
minutes, since a long prompt on a busy GPU sends nothing until its first token.
Every failure becomes an ``ApiError``: ``UpstreamError`` when llama-server answered with an error,
``UpstreamUnavailable`` when it could not be reached or died mid-answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from llamacontroller.serving.errors import UpstreamUnavailable, from_upstream
from llamacontroller.serving.sse import DONE, Event, SseDecoder

CONNECT_TIMEOUT = 5.0
HEALTH_TIMEOUT = 5.0
READ_TIMEOUT = 600.0
# llama-server closes idle keep-alive connections after 5 s: drop ours first, never reuse a dying one.
KEEPALIVE_EXPIRY = 4.0

JSON_HEADERS = {"Content-Type": "application/json"}
CLOSE = {"Connection": "close"}


def make_client(read_timeout: float = READ_TIMEOUT, max_connections: int = 512) -> httpx.AsyncClient:
    """A client for llama-servers: pooled, keep-alive, no proxies from the environment."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(connect=CONNECT_TIMEOUT, read=read_timeout, write=60.0, pool=60.0),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=64, keepalive_expiry=KEEPALIVE_EXPIRY
        ),
        trust_env=False,
    )


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


class Upstream:
    """One llama-server at ``base_url``; the client may be shared with other upstreams."""

    def __init__(self, base_url: str, client: httpx.AsyncClient, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client
        self.headers = JSON_HEADERS | ({"Authorization": f"Bearer {api_key}"} if api_key else {})

    def __repr__(self) -> str:
        return f"Upstream({self.base_url!r})"

    def unavailable(self, exc: httpx.HTTPError) -> UpstreamUnavailable:
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return UpstreamUnavailable(f"llama-server at {self.base_url} failed: {reason}")

    @asynccontextmanager
    async def open(
        self, method: str, path: str, content: bytes | None = None, streamed: bool = False
    ) -> AsyncIterator[httpx.Response]:
        """A response whose body is not read yet; error statuses raise ``UpstreamError``.

        Leaving the block closes the response: a body not read to its end closes the connection,
        which is how llama-server learns that the client went away and stops generating.
        ``streamed``: llama-server closes the connection after a streamed answer (whatever its
        Keep-Alive header says), so such a request says ``Connection: close``; otherwise the pool
        would keep the connection and a later request would fail on it as the server closes it.
        """
        headers = self.headers | CLOSE if streamed else self.headers
        request = self.client.build_request(method, self.base_url + path, content=content, headers=headers)
        try:
            response = await self.client.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise self.unavailable(exc) from exc
        try:
            if response.status_code >= 400:
                raise await self._error(response)
            yield response
        except httpx.HTTPError as exc:
            raise self.unavailable(exc) from exc
        finally:
            # Shielded: when the client went away this task is being cancelled, and an interrupted
            # close would leave the connection open and llama-server generating for nobody.
            await asyncio.shield(response.aclose())

    async def _error(self, response: httpx.Response) -> Exception:
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

    async def _decode(self, response: httpx.Response) -> AsyncIterator[Any]:
        decoder = SseDecoder()
        try:
            async for chunk in response.aiter_raw():
                for event in decoder.feed(chunk):
                    if event.payload != DONE:  # and read on to the end of the body
                        yield parse_event(event)
        except httpx.HTTPError as exc:
            raise self.unavailable(exc) from exc
        for event in decoder.close():
            if event.payload != DONE:
                yield parse_event(event)

    async def health(self) -> int | None:
        """The status of ``/health`` (200 ready, 503 loading), None when unreachable."""
        try:
            response = await self.client.get(
                self.base_url + "/health", headers=self.headers, timeout=HEALTH_TIMEOUT
            )
        except httpx.HTTPError:
            return None
        return response.status_code

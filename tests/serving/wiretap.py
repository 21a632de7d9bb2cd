"""What goes over the client's connections to llama-server, recorded: a ``connect`` for the
client (``Client(connect=wiretap(seen))``) that opens real TCP connections and notes each one
opened, ``("connect", "")``, and each request written on them, ``("request", "POST /completion")``
(``close`` added when the request says ``Connection: close``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from llamacontroller.serving.upstream.pool import Connect, ProtocolFactory, open_tcp

Seen = Callable[[str, str], None]


def request_line(data: bytes) -> str:
    """``METHOD /path`` of a request as written, and ``close`` if it closes its connection."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    method, path = head.split(" ", 2)[:2]
    closes = "\r\nconnection: close" in head.lower()
    return f"{method} {path} close" if closes else f"{method} {path}"


class TappedTransport(asyncio.Transport):
    """The real transport; what is written on it is noted first."""

    def __init__(self, inner: asyncio.Transport, seen: Seen) -> None:
        super().__init__()
        self.inner = inner
        self.seen = seen

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.seen("request", request_line(bytes(data)))
        self.inner.write(data)

    def close(self) -> None:
        self.inner.close()

    def is_closing(self) -> bool:
        return self.inner.is_closing()

    def pause_reading(self) -> None:
        self.inner.pause_reading()

    def resume_reading(self) -> None:
        self.inner.resume_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)


class Tap(asyncio.Protocol):
    """Between the transport and the client's protocol: hands the protocol a tapped transport."""

    def __init__(self, inner: asyncio.Protocol, seen: Seen) -> None:
        self.inner = inner
        self.seen = seen

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports have asyncio.Transport's methods, not its class
        self.inner.connection_made(TappedTransport(cast(asyncio.Transport, transport), self.seen))

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)


def wiretap(seen: Seen) -> Connect:
    async def connect(protocol: ProtocolFactory, host: str, port: int) -> None:
        seen("connect", "")
        await open_tcp(lambda: Tap(protocol(), seen), host, port)

    return connect

"""Running the API app as a server: where it listens, its event loop, uvicorn's settings.

Shared by the per-slot adapter, the cluster gateway and the local runtime's gateway, which serve
the same app over different catalogs. All sit on the path of every request, so they run on uvicorn's
httptools protocol and uvloop (bench/adapter_overhead.py measures what that costs).

On the cluster's network anyone may connect, so the server bounds what a client can hold: at most
MAX_CONNECTIONS connections (beyond: 503), HEAD_TIMEOUT for a request's line and headers to arrive
(a client that trickles them, or connects and says nothing, is answered 408 and dropped) and
MAX_HEAD bytes for them (431); the app bounds the bodies (web/asgi.py).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from dataclasses import dataclass
from types import FrameType

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from llamacontroller.errors import UserError
from llamacontroller.serving.web.asgi import App

log = logging.getLogger(__name__)

ACCESS_LOG = logging.getLogger("llamacontroller.access")
SHUTDOWN_TIMEOUT = 5  # seconds open requests get to finish on SIGTERM
# Idle client connections stay open this long: longer than the keep-alive of the clients in front
# (httpx, Go's net/http, aiohttp keep theirs 5 s to 90 s), so a server close never races a request.
KEEP_ALIVE = 75
MAX_CONNECTIONS = 1024  # beyond: 503; above the most streams one llama-server serves at once
HEAD_TIMEOUT = 30.0  # seconds for a request's line and headers, from its first byte or the connection
MAX_HEAD = 64 << 10  # bytes of a request's line and headers


@dataclass(frozen=True)
class Limits:
    """What one client may hold of the server (the defaults above; tests make them small)."""

    max_connections: int = MAX_CONNECTIONS
    head_timeout: float = HEAD_TIMEOUT
    max_head: int = MAX_HEAD


class GuardedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline and a size limit for each request's head."""

    limits = Limits()
    _head_deadline: asyncio.TimerHandle | None = None
    _head_bytes = 0
    _refused = False  # answered and closing: whatever the parser still finds is ignored

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head()  # a connection that never says anything is a slow head too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm_head()

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        if not self._refused:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        if not self._refused:
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_head()
        if not self._refused:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._refused:
            super().on_message_complete()

    def _arm_head(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(
                self.limits.head_timeout, self._refuse, 408, "Request Timeout"
            )

    def _disarm_head(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_head:
            self._refuse(431, "Request Header Fields Too Large")

    def _refuse(self, status: int, reason: str) -> None:
        self._disarm_head()
        self._refused = True
        if not self.transport.is_closing():
            self.transport.write(
                f"HTTP/1.1 {status} {reason}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".encode()
            )
            self.transport.close()


class ListenError(UserError):
    """A listen address that is malformed, or that this process cannot bind."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:port`` or ``port`` (all interfaces)."""
    host, sep, port = listen.rpartition(":")
    if not sep:
        host, port = "", listen
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ListenError(f"listen address {listen!r}: expected host:port")
    return host, int(port)


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound and listening on return: a taken port is a ListenError here, not a log line later."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        raise ListenError(f"cannot listen on {where}: {exc.strerror or exc}") from exc


def make_server(app: App, limits: Limits = Limits()) -> uvicorn.Server:
    class Protocol(GuardedHttpTools):  # uvicorn makes the protocol from a class: the limits go in it
        pass

    Protocol.limits = limits
    config = uvicorn.Config(
        app,
        http=Protocol,
        limit_concurrency=limits.max_connections,
        ws="none",
        lifespan="on",
        log_config=None,  # ours (llamacontroller.logs), not uvicorn's
        access_log=False,  # the app logs each request itself, without the query string
        server_header=False,
        proxy_headers=False,  # no X-Forwarded-* rewriting: a middleware on every request, unused
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=SHUTDOWN_TIMEOUT,
    )
    return uvicorn.Server(config)


class Serving:
    """An app served on an event loop that already runs (a thread's, a test's), stopped on demand."""

    def __init__(self, app: App, sock: socket.socket, limits: Limits = Limits()) -> None:
        self.server = make_server(app, limits)
        self.sock = sock
        self.task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"

    async def start(self) -> None:
        """Returns once the app's lifespan started and requests are answered."""
        self.task = asyncio.create_task(self.server.serve([self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises what stopped it
                raise RuntimeError("the server stopped while starting")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Open requests get SHUTDOWN_TIMEOUT to finish; then the lifespan ends."""
        if self.task is not None:
            self.server.should_exit = True
            await self.task


def serve(app: App, host: str, port: int, what: str, *, access_log: bool = True) -> None:
    """Serve ``app`` until SIGINT/SIGTERM, then let open requests finish (SHUTDOWN_TIMEOUT).

    ``what`` is logged once the port is bound: the line says the process serves, not that it tries."""
    app.access_log = ACCESS_LOG if access_log else None
    sock = listening_socket(host, port)
    # uvicorn stops gracefully on these, then raises the signal again for the handler it replaced:
    # this one ends the process normally (exit 0, as a stop is no error), also when the signal
    # comes before uvicorn took over, right after the line below.
    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, _stopped)
    log.info("%s on %s:%d", what, host, port)
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(make_server(app).serve([sock]))


def _stopped(signum: int, frame: FrameType | None) -> None:
    log.info("stopped by %s", signal.Signals(signum).name)
    raise SystemExit(0)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop (less overhead per request and per streamed chunk: bench/adapter_overhead.py); asyncio's
    own loop where uvloop does not exist (Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()

"""Running an API app as a process: where it listens, its event loop, its access log.

Shared by the per-slot adapter and the cluster gateway, which are the same web app over different
catalogs. Both sit on the path of every request, so they run on uvloop and log each request with a
lean one-line logger instead of aiohttp's format-string one.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SHUTDOWN_TIMEOUT = 5.0  # seconds open requests get to finish on SIGTERM


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:port`` or ``port`` (all interfaces)."""
    host, sep, port = listen.rpartition(":")
    if not sep:
        host, port = "", listen
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit():
        raise ValueError(f"--listen {listen!r}: expected host:port")
    return host, int(port)


class AccessLog(AbstractAccessLogger):
    """``client "METHOD /path" status 12ms``: no headers (keys travel in them), no local-time
    formatting per request. Milliseconds are whole: uvloop's clock ticks in milliseconds."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %d %.0fms', request.remote, request.method, request.path, response.status, time * 1e3
        )


def configure_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def serve(app: web.Application, host: str, port: int, *, access_log: bool = True) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; a client that disconnects cancels its handler (and with
    it the upstream request, so llama-server stops generating)."""
    web.run_app(
        app,
        host=host,
        port=port,
        handler_cancellation=True,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
        access_log_class=AccessLog,
        print=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
        loop=new_event_loop(),
    )


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop (less overhead per request and per streamed chunk: bench/adapter_overhead.py); asyncio's
    own loop where uvloop does not exist (Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()

"""The operator's HTTP endpoint: ``/healthz`` and ``/readyz`` for the kubelet's probes and
``/metrics`` for Prometheus, on the one address of ``--liveness`` (docs/decisions/metrics.md says
why it is ours and not kopf's liveness endpoint).

It is served from the process's start, before the operator holds the Lease: a stand-by is alive.
``/healthz`` (the path of ``--liveness``) answers 200 while the process's event loop runs, with
``{"leading": ..., "synced": ...}`` (it holds the Lease or runs without election; its cache holds
the cluster); ``/readyz`` answers 200 only while both are true, 503 while it stands by or starts, so
that a probe (and a test) that gets a 200 there knows the operator acts.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp.web

from llamacontroller.kube.metrics import CONTENT_TYPE, OperatorMetrics

METRICS_PATH = "/metrics"
READY_PATH = "/readyz"


class Endpoint:
    """``/healthz`` (or the path of ``url``), ``/readyz`` and ``/metrics`` at ``url``'s host and port."""

    def __init__(
        self, url: str, metrics: OperatorMetrics, leading: Callable[[], bool], synced: Callable[[], bool]
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.port is None:
            raise ValueError(f"--liveness must be http://HOST:PORT/PATH, not {url!r}")
        self.host, self.port, self.path = parts.hostname or "0.0.0.0", parts.port, parts.path or "/healthz"
        self.metrics = metrics
        self.leading = leading
        self.synced = synced
        if self.path in (READY_PATH, METRICS_PATH):
            raise ValueError(f"--liveness: {self.path} is served already; use /healthz")
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.router.add_get(self.path, self._health)
        app.router.add_get(READY_PATH, self._ready)
        app.router.add_get(METRICS_PATH, self._metrics)
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, self.host, self.port, shutdown_timeout=1.0).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"leading": self.leading(), "synced": self.synced()})

    async def _ready(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        acting = self.leading() and self.synced()
        return aiohttp.web.json_response({"acting": acting}, status=200 if acting else 503)

    async def _metrics(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = self.metrics.exposition()
        return aiohttp.web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

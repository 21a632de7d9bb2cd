"""The operator's HTTP endpoint: ``/healthz`` for the kubelet's probes and ``/metrics`` for
Prometheus, on the one address of ``--liveness`` (docs/decisions/metrics.md says why it is ours and
not kopf's liveness endpoint).

``/healthz`` answers as kopf's did: 200 and the probes' results (``{"synced": true}`` once the
cache holds the cluster) while the process's event loop runs; it is served once the operator has
started, so a kubelet probe (and a test) that gets an answer knows the operator acts or stands by.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import aiohttp.web

from llamacontroller.kube.metrics import CONTENT_TYPE, OperatorMetrics

METRICS_PATH = "/metrics"


class Endpoint:
    """``/healthz`` (or the path of ``url``) and ``/metrics`` at ``url``'s host and port."""

    def __init__(self, url: str, metrics: OperatorMetrics, synced: Callable[[], bool]) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.port is None:
            raise ValueError(f"--liveness must be http://HOST:PORT/PATH, not {url!r}")
        self.host, self.port, self.path = parts.hostname or "0.0.0.0", parts.port, parts.path or "/healthz"
        self.metrics = metrics
        self.synced = synced
        self._runner: aiohttp.web.AppRunner | None = None

    async def start(self) -> None:
        app = aiohttp.web.Application()
        app.router.add_get(self.path, self._health)
        app.router.add_get(METRICS_PATH, self._metrics)
        self._runner = aiohttp.web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await aiohttp.web.TCPSite(self._runner, self.host, self.port, shutdown_timeout=1.0).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _health(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"synced": self.synced()})

    async def _metrics(self, request: aiohttp.web.Request) -> aiohttp.web.Response:
        body = self.metrics.exposition()
        return aiohttp.web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

"""A proxy between a client of the Kubernetes API (the operator, the gateway) and the test cluster's
API server that fails some of the calls, as an API server under load or a flaky network does.

The client's kubeconfig points at the proxy (plain HTTP on the cluster's bridge address, so that a
process in the client network namespace reaches it too); the proxy forwards each call over TLS to
the real API server with the client's own credentials (its bearer token passes through), so RBAC and
the audit log see the client as they would without the proxy.

On a seeded schedule, about ``rate`` of the calls get a fault instead of (or on top of) the answer:

| fault | calls | what the client sees |
|---|---|---|
| ``error`` | all | 500 InternalError; the call is not forwarded |
| ``throttle`` | all | 429 TooManyRequests with ``Retry-After``; not forwarded |
| ``conflict`` | POST, PUT, PATCH | 409 Conflict; not forwarded |
| ``slow`` | all | forwarded (a write is done); the answer (a watch's headers) held past the timeout |
| ``reset`` | watches | the watch forwarded, then the connection reset (RST) mid-stream |
| ``expire`` | watches | the watch forwarded, then an ERROR event 410 Gone, as when its version is compacted |

A watch that draws no fault is forwarded for a few seconds and then ended cleanly, as the API server
ends a watch whose ``timeoutSeconds`` passed: the client resumes, and draws again. The schedule is
the draws of one ``random.Random(seed)`` in the order the calls arrive. Every call is recorded
(``calls``), and so is every fault injected (``injected``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from aiohttp import web

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FAULTS_OF_CALLS = ("error", "throttle", "slow")
FAULTS_OF_WRITES = ("error", "throttle", "conflict", "slow")
FAULTS_OF_WATCHES = ("error", "throttle", "slow", "reset", "expire")
# Headers passed on to the API server: who the client is and what it sends and accepts.
FORWARDED = ("Authorization", "Content-Type", "Accept", "User-Agent")


@dataclass
class Call:
    """One call as the proxy saw it: ``fault`` None when it was forwarded untouched."""

    seq: int
    at: float  # time.monotonic() when it arrived
    method: str
    path: str
    watch: bool
    fault: str | None
    agent: str = ""  # the client's User-Agent
    status: int | None = None  # the status the client was sent (None: reset, or never sent)
    body: Any = None  # a write's JSON body


@dataclass
class Schedule:
    """Which calls fail: ``rate`` of them, drawn from ``seed``; ``on`` turns faults on and off."""

    seed: int
    rate: float = 0.2
    on: bool = True
    rng: random.Random = field(init=False)
    _turns: dict[tuple[str, ...], Iterator[str]] = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        # Each kind of call takes its faults in turn, from a seeded start: every fault that applies
        # to it comes up, however few of its calls are faulty.
        self._turns = {
            kinds: itertools.islice(itertools.cycle(kinds), self.rng.randrange(len(kinds)), None)
            for kinds in (FAULTS_OF_CALLS, FAULTS_OF_WRITES, FAULTS_OF_WATCHES)
        }

    def draw(self, method: str, watch: bool) -> tuple[str | None, float]:
        """A call's fault (None: none) and, for a watch, how long to forward it (seconds)."""
        faulty, lifetime = self.rng.random(), self.rng.uniform(0.2, 1.5)
        if not self.on or faulty >= self.rate:
            return None, lifetime
        if watch:
            kinds = FAULTS_OF_WATCHES
        else:
            kinds = FAULTS_OF_WRITES if method in WRITES - {"DELETE"} else FAULTS_OF_CALLS
        return next(self._turns[kinds]), lifetime


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


EXPIRED = {"type": "ERROR", "object": status_body(410, "Expired", "too old resource version (fault proxy)")}


class FaultProxy:
    """``start()`` serves on ``host`` (a free port) in a thread of its own; ``url`` is where."""

    def __init__(
        self,
        upstream: str,
        ca_file: Path,
        host: str,
        schedule: Schedule,
        *,
        slow_seconds: float,
        retry_after: int = 1,
    ) -> None:
        self.upstream = upstream
        self.ca_file = ca_file
        self.host = host
        self.schedule = schedule
        self.slow_seconds = slow_seconds
        self.retry_after = retry_after
        self.port = 0
        self.calls: list[Call] = []
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def injected(self) -> list[Call]:
        return [call for call in list(self.calls) if call.fault is not None]

    def counts(self) -> Counter[str]:
        """Faults injected, by kind."""
        return Counter(str(call.fault) for call in self.injected)

    def faults(self, on: bool) -> None:
        self.schedule.on = on

    # -- life -------------------------------------------------------------------------------------

    def start(self) -> FaultProxy:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="fault proxy", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), loop).result(30)
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        self._http = httpx.AsyncClient(
            base_url=self.upstream,
            verify=ssl.create_default_context(cafile=str(self.ca_file)),
            timeout=httpx.Timeout(30.0, read=None),
            trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=50),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.aclose()
        held = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in held:  # answers still held back (slow faults)
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)

    # -- calls ------------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        watch = request.query.get("watch") in ("true", "1")
        fault, lifetime = self.schedule.draw(request.method, watch)
        try:
            body = await request.read()
        except ConnectionError:  # the client went away mid-request (a SIGKILL)
            return web.Response(status=499)
        agent = request.headers.get("User-Agent", "")
        call = Call(next(self._seq), time.monotonic(), request.method, request.path, watch, fault, agent)
        if request.method in WRITES and body:
            with contextlib.suppress(ValueError):
                call.body = json.loads(body)
        self.calls.append(call)
        refusal = {
            "error": (500, "InternalError", "an internal error (fault proxy)"),
            "throttle": (429, "TooManyRequests", "too many requests, please try again later (fault proxy)"),
            "conflict": (
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the "
                "latest version and try again (fault proxy)",
            ),
        }.get(fault or "")
        if refusal is not None:
            call.status = refusal[0]
            headers = {"Retry-After": str(self.retry_after)} if fault == "throttle" else {}
            return web.json_response(status_body(*refusal), status=refusal[0], headers=headers)
        headers = {k: request.headers[k] for k in FORWARDED if k in request.headers}
        if watch:
            return await self._watch(request, call, headers, lifetime)
        assert self._http is not None
        try:
            answer = await self._http.request(
                request.method, request.path, params=request.query, content=body or None, headers=headers
            )
        except httpx.HTTPError as exc:
            call.status = 502
            return web.json_response(status_body(502, "BadGateway", str(exc)), status=502)
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)  # the client has given up: the answer is lost
        call.status = answer.status_code
        content_type = answer.headers.get("Content-Type", "application/json")
        return web.Response(
            status=answer.status_code,
            body=answer.content,
            content_type=None,
            headers={"Content-Type": content_type},
        )

    async def _watch(
        self, request: web.Request, call: Call, headers: dict[str, str], lifetime: float
    ) -> web.StreamResponse:
        assert self._http is not None
        upstream = self._http.stream("GET", request.path, params=request.query, headers=headers)
        async with upstream as answer:
            if call.fault == "slow":
                await asyncio.sleep(self.slow_seconds)
            response = web.StreamResponse(status=answer.status_code)
            response.content_type = answer.headers.get("Content-Type", "application/json").split(";")[0]
            call.status = answer.status_code
            try:
                await response.prepare(request)
                if answer.status_code >= 400:
                    await response.write(await answer.aread())
                    await response.write_eof()
                    return response
                await self._relay(answer, response, lifetime)
                if call.fault == "reset":
                    call.status = None
                    _reset(request)
                    return response
                if call.fault == "expire":
                    await response.write(json.dumps(EXPIRED).encode() + b"\n")
                await response.write_eof()
            except (ConnectionError, RuntimeError):
                pass  # the client left (a timeout, a reset of its own)
            except httpx.HTTPError:
                _reset(request)  # the API server's stream broke: so does the client's
        return response

    async def _relay(self, answer: httpx.Response, response: web.StreamResponse, lifetime: float) -> None:
        """The upstream watch's lines, passed on until ``lifetime`` seconds have passed."""
        deadline = asyncio.get_running_loop().time() + lifetime
        lines: AsyncIterator[str] = answer.aiter_lines()
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                line = await asyncio.wait_for(anext(lines), left)
            except (TimeoutError, StopAsyncIteration):
                return
            if line.strip():
                await response.write(line.encode() + b"\n")


def _reset(request: web.Request) -> None:
    """Close the client's connection with a TCP reset (SO_LINGER 0), not a clean end."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def proxied_kubeconfig(kubeconfig: Path, proxy: FaultProxy, path: Path) -> Path:
    """A copy of ``kubeconfig`` whose server is the proxy (plain HTTP: the proxy speaks TLS to the
    API server); the credentials stay the same."""
    config = yaml.safe_load(kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"] = {"server": proxy.url}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path

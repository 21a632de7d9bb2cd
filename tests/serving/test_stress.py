"""Stress: 500 streaming clients at once through the adapter (a process of its own, as in the Pod),
spoken to over raw asyncio sockets, in front of a real llama-server with the tiny model.

Ollama's /api/chat and OpenAI's /v1/chat/completions, streamed: most clients read their answers
whole, some read them slowly (a small receive buffer, a pause between small reads), some leave
mid-stream or before the first byte. Every client gets its answer or an error line, within a bound
on the wall time (nothing hangs); no generation goes on for a client who left (llama-server's
/slots and /metrics are idle afterwards); the adapter's resident memory returns near its base. A
second test kills llama-server while streams run: each ends with an error line, or an error answer
when it had not started.

The bounds are generous on purpose (a loaded two-core machine): how fast this goes is for bench/.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from llamacontroller.serving.upstream.llama_server import SPARES
from tests.support.polling import eventually
from tests.support.stacks import MODEL, AdapterProcess, Stacks, busy_slots

pytestmark = pytest.mark.timeout(300)

# llama-server with more slots than the suite's chat stack, so that 500 short answers take seconds.
STRESS_PARAMETERS = {"threads": 1, "parallel": 8, "ctxSize": 8 * 512, "extraArgs": ["--context-shift"]}
WALL = 150.0  # seconds for all 500 clients together: far above a normal run, finite
ENDLESS = 200_000  # tokens: minutes of generation, unless the client's leaving stops it
MiB = 1 << 20
# Resident memory the adapter may keep above its base once the clients are gone. CPython keeps an
# arena of its allocator while one object lives in it, and glibc the top of its heap, so a burst
# leaves a high-water mark: 500 clients peak about 12 MiB above a base of 44 MiB, and after four
# bursts in a row the adapter holds 18 MiB above it, where it stays (measured while writing this:
# sys._debugmallocstats showed 10 of those MiB in arenas that each hold a few live objects).
RSS_SLACK = 24 * MiB


@dataclass
class Client:
    """One client's part: what it asks, how it reads, and what it got."""

    api: str  # "ollama" or "openai"
    tokens: int
    read: str = "whole"  # whole, slow, leave (after two lines), gone (before the answer)
    status: int = 0
    started: bool = False  # a byte of its answer's body arrived
    lines: list[bytes] = field(default_factory=list)
    failure: str = ""

    def request(self, index: int) -> bytes:
        messages = [{"role": "user", "content": f"hello {index}"}]
        if self.api == "ollama":
            path = "/api/chat"
            body: dict[str, Any] = {
                "model": MODEL,
                "messages": messages,
                "options": {"num_predict": self.tokens},
            }
        else:
            path = "/v1/chat/completions"
            body = {"model": MODEL, "messages": messages, "max_tokens": self.tokens, "stream": True}
        content = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nhost: stress\r\ncontent-type: application/json\r\n"
            f"content-length: {len(content)}\r\nconnection: close\r\n\r\n"
        )
        return head.encode() + content

    @property
    def events(self) -> list[bytes]:
        """The answer's JSON objects: NDJSON lines, or SSE data payloads."""
        if self.api == "ollama":
            return [line for line in self.lines if line.strip()]
        return [line.removeprefix(b"data: ") for line in self.lines if line.startswith(b"data: ")]

    @property
    def answered(self) -> bool:
        """The whole answer: Ollama's last line says done, OpenAI's stream ends with [DONE]."""
        events = self.events
        if not events or self.status != 200:
            return False
        if self.api == "ollama":
            return json.loads(events[-1]).get("done") is True
        return events[-1] == b"[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "length"

    @property
    def told_error(self) -> bool:
        """An error line ending a started stream, or an error answer when none had started."""
        events = self.events
        if self.status == 200:
            return bool(events) and b'"error"' in events[-1]
        return self.status >= 500 and b'"error"' in b"".join(self.lines)


class Body:
    """A chunked (or length-delimited) HTTP body, decoded as it arrives, split into lines."""

    def __init__(self, headers: dict[str, str]) -> None:
        self.chunked = "chunked" in headers.get("transfer-encoding", "")
        self.remaining = int(headers.get("content-length", "-1"))
        self.raw = bytearray()
        self.data = bytearray()
        self.ended = False

    def feed(self, data: bytes) -> None:
        if not self.chunked:
            self.data += data
            self.ended = 0 <= self.remaining <= len(self.data)
            return
        self.raw += data
        while not self.ended:
            end = self.raw.find(b"\r\n")
            if end < 0:
                return
            size = int(self.raw[:end].split(b";")[0], 16)
            if len(self.raw) < end + 2 + size + 2:
                return
            self.data += self.raw[end + 2 : end + 2 + size]
            del self.raw[: end + 2 + size + 2]
            self.ended = size == 0

    def lines(self) -> list[bytes]:
        return bytes(self.data).split(b"\n")


async def converse(port: int, index: int, client: Client) -> None:
    """One request over a raw socket, read as the client's kind says."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if client.read == "slow":
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(
        sock=sock, limit=1024 if client.read == "slow" else 1 << 16
    )
    try:
        writer.write(client.request(index))
        await writer.drain()
        if client.read == "gone":
            return  # it leaves while its request waits for a slot
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        client.status = int(status_line.split()[1])
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        body = Body(headers)
        while not body.ended:
            data = await reader.read(256 if client.read == "slow" else 65536)
            if not data:
                break
            body.feed(data)
            client.started = True
            if client.read == "leave" and len([line for line in body.lines() if line.strip()]) >= 2:
                return  # it has seen the stream start, and goes away
            if client.read == "slow":
                await asyncio.sleep(0.01)
        client.lines = body.lines()
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        client.failure = f"{type(exc).__name__}: {exc}"
    finally:
        writer.transport.abort()  # at once, without waiting for the server: a client that leaves


def rss(adapter: AdapterProcess) -> int:
    """The adapter process's resident memory, in bytes."""
    assert adapter.process is not None
    for line in Path(f"/proc/{adapter.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def open_files(adapter: AdapterProcess) -> int:
    """The adapter's file descriptors: its sockets to clients and to llama-server among them."""
    assert adapter.process is not None
    return len(os.listdir(f"/proc/{adapter.process.pid}/fd"))


def processing(upstream: str) -> float:
    """llama-server's own count of requests it is generating for (its /metrics)."""
    for line in httpx.get(f"{upstream}/metrics", timeout=10).text.splitlines():
        if line.startswith("llamacpp:requests_processing"):
            return float(line.split()[-1])
    raise AssertionError("no llamacpp:requests_processing in /metrics")


def crowd() -> list[Client]:
    """500 clients: 300 that read their answers whole, 100 slowly, 100 that leave."""
    clients = [Client(api, 4) for _ in range(150) for api in ("ollama", "openai")]
    clients += [Client(api, 48, read="slow") for _ in range(50) for api in ("ollama", "openai")]
    clients += [Client(api, ENDLESS, read="leave") for _ in range(25) for api in ("ollama", "openai")]
    clients += [Client(api, ENDLESS, read="gone") for _ in range(25) for api in ("ollama", "openai")]
    return clients


async def gather_within(port: int, clients: list[Client], wall: float) -> float:
    """Every client at once; the seconds they took together (an AssertionError past ``wall``)."""
    started = time.monotonic()
    try:
        async with asyncio.timeout(wall):
            await asyncio.gather(*(converse(port, index, client) for index, client in enumerate(clients)))
    except TimeoutError:
        raise AssertionError(f"the clients were not all done after {wall:.0f} s: something hangs") from None
    return time.monotonic() - started


def test_500_streaming_clients_all_get_answers_and_leave_nothing_behind(
    stacks: Stacks, model_file: Path
) -> None:
    server = stacks.server(STRESS_PARAMETERS, model_file)
    adapter = stacks.adapter(server.url, ("--no-access-log",))
    adapter.wait_ready()
    # warmed up: the code paths run once, the pool's connections made, before the base is taken
    asyncio.run(
        gather_within(adapter.port, [Client(api, 4) for _ in range(10) for api in ("ollama", "openai")], 60)
    )
    base, base_files = rss(adapter), open_files(adapter)

    clients = crowd()
    peak = base

    async def run() -> float:
        nonlocal peak

        async def sample() -> None:
            nonlocal peak
            while True:
                peak = max(peak, rss(adapter))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        try:
            return await gather_within(adapter.port, clients, WALL)
        finally:
            sampler.cancel()

    took = asyncio.run(run())
    kinds = Counter(
        (c.api, c.read, "answer" if c.answered else "error line" if c.told_error else c.failure or "nothing")
        for c in clients
    )
    print(f"500 clients in {took:.1f} s; adapter RSS base {base / MiB:.0f} MiB, peak {peak / MiB:.0f} MiB")
    print(dict(kinds))
    readers = [c for c in clients if c.read in ("whole", "slow")]
    broken = [c for c in readers if not (c.answered or c.told_error)]
    assert not broken, [(c.api, c.read, c.status, c.failure, c.lines[-3:]) for c in broken[:5]]
    assert sum(c.answered for c in readers) == len(readers), dict(kinds)  # llama-server lived: all answers
    # the leavers asked for minutes of generation: their slots are free as soon as they are gone
    eventually(lambda: busy_slots(server.url) == 0, timeout=60, what="every slot of llama-server idle")
    assert processing(server.url) == 0
    # every connection, to the clients and to llama-server, is closed (but the pool's spares)
    eventually(
        lambda: open_files(adapter) <= base_files + SPARES, timeout=30, what="the adapter's sockets closed"
    )
    # what 500 clients held is given back, but for what the allocator keeps as its high-water mark
    eventually(
        lambda: rss(adapter) <= base + RSS_SLACK, timeout=30, what="the adapter's memory near its base"
    )
    print(
        f"adapter RSS after: {rss(adapter) / MiB:.0f} MiB; {open_files(adapter)} files, {base_files} before"
    )


def test_llama_server_killed_mid_stream_ends_every_stream_with_an_error(
    stacks: Stacks, model_file: Path
) -> None:
    server = stacks.server(STRESS_PARAMETERS, model_file)
    adapter = stacks.adapter(server.url, ("--no-access-log",))
    adapter.wait_ready()
    clients = [Client(api, ENDLESS) for _ in range(30) for api in ("ollama", "openai")]

    async def run() -> float:
        crowd = asyncio.ensure_future(gather_within(adapter.port, clients, WALL))
        # once every slot streams (the other clients wait for one), llama-server dies; its /slots
        # cannot tell: all its HTTP threads serve streams, and the question would wait behind them
        deadline = time.monotonic() + 60
        while sum(c.started for c in clients) < STRESS_PARAMETERS["parallel"] and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGKILL)
        return await crowd

    took = asyncio.run(run())
    kinds = Counter(
        (c.api, c.status, "error line" if c.told_error else c.failure or "nothing") for c in clients
    )
    print(f"{len(clients)} streams ended in {took:.1f} s: {dict(kinds)}")
    assert all(c.told_error for c in clients), dict(kinds)
    assert sum(c.status == 200 for c in clients) >= STRESS_PARAMETERS["parallel"], "no stream had started"
    assert httpx.get(adapter.url + "/", timeout=10).status_code == 200  # the adapter lives on

"""Hostile and malformed clients, spoken to in raw bytes over TCP: what the adapter and the gateways
(one app, one server) do with a client without a key, a body too large or too slow, a head that
trickles or never ends, too many connections, and keys in odd forms. Memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from llamacontroller.serving.app import build_app
from llamacontroller.serving.catalog.digests import FileDigests
from llamacontroller.serving.catalog.routing import RoutingCatalog
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.web.asgi import App
from llamacontroller.serving.web.server import Limits
from tests.support.stacks import KEYS_ENV, Stack, Stacks, serve_during

pytestmark = pytest.mark.timeout(120)

KEY = "sk-hostile-test"
MiB = 1 << 20


def keyed_app(**app_options: int | float) -> App:
    app = build_app(RoutingCatalog(Client(), FileDigests()), frozenset({KEY}))
    for name, value in app_options.items():
        setattr(app, name, value)
    return app


async def exchange(url: str, raw: bytes, *, then: bytes = b"", wait: float = 10.0) -> bytes:
    """Send ``raw`` (and ``then``, if the server still reads), return all the server said before
    it closed or ``wait`` passed."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw)
        if then:
            writer.write(then)
        await writer.drain()
    except ConnectionError:
        pass  # the server closed first: what it said is still to read
    said = b""
    try:
        async with asyncio.timeout(wait):
            while chunk := await reader.read(65536):
                said += chunk
    except ConnectionResetError:
        pass  # a server that closes with our bytes unread resets the connection after answering
    finally:
        writer.close()
    return said


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: test\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    return head.encode() + b"\r\n" + body


def run(app: App, scenario: Callable[[str], Awaitable[None]], limits: Limits | None = None) -> None:
    serve_during(app, scenario, limits or Limits())


# --- keys ----------------------------------------------------------------------------------------


def test_no_key_is_refused_before_the_body_is_read():
    """A request that declares 200 MiB gets its 401 at once and a closed connection; nothing was read."""

    async def scenario(url: str) -> None:
        started = time.monotonic()
        headers = {"content-type": "application/json", "content-length": str(200 * MiB)}
        answer = await exchange(url, request("POST", "/api/chat", headers, b'{"model": "m"'))
        assert status_of(answer) == 401 and b"connection: close" in answer.lower()
        assert time.monotonic() - started < 5  # not waiting for 200 MiB that never come

    run(keyed_app(), scenario)


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        ([f"Bearer {KEY}"], 404),  # accepted: the model does not exist
        ([f"bearer {KEY}"], 404),  # the scheme in any case
        ([f"BEARER   {KEY}  "], 404),  # and spaces around the key
        ([f"Basic {KEY}"], 401),
        (["Bearer"], 401),
        ([f"Bearer {KEY}", f"Bearer {KEY}"], 401),  # two headers: which one would count?
        ([f"Bearer {KEY}", "Bearer other"], 401),
    ],
)
def test_keys_in_odd_forms(authorization: list[str], status: int):
    async def scenario(url: str) -> None:
        body = b'{"model": "nope", "messages": []}'
        head = f"POST /api/chat HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\nconnection: close\r\n"
        head += "".join(f"authorization: {value}\r\n" for value in authorization)
        assert status_of(await exchange(url, head.encode() + b"\r\n" + body)) == status

    run(keyed_app(), scenario)


def test_an_empty_keys_file_is_a_start_up_error(stacks: Stacks, chat_stack: Stack, tmp_path: Path):
    empty = tmp_path / "keys"
    empty.write_text("# nobody\n\n")
    adapter = stacks.adapter(chat_stack.upstream, ("--api-keys-file", str(empty)))
    assert adapter.process is not None and adapter.process.wait(30) == 2
    assert f"error: API keys file {empty} holds no key" in adapter.log_tail()
    blank_env = stacks.adapter(chat_stack.upstream, env={KEYS_ENV: " , "})
    assert blank_env.process is not None and blank_env.process.wait(30) == 2
    assert f"error: ${KEYS_ENV} is set but holds no key" in blank_env.log_tail()


# --- bodies --------------------------------------------------------------------------------------


def test_a_declared_body_over_the_limit_is_refused_unread():
    async def scenario(url: str) -> None:
        headers = {"authorization": f"Bearer {KEY}", "content-length": str(64 * MiB)}
        answer = await exchange(url, request("POST", "/api/chat", headers, b"{"))
        assert status_of(answer) == 413 and b"connection: close" in answer.lower()

    run(keyed_app(max_body=MiB), scenario)


def test_a_chunked_body_over_the_limit_is_refused_once_it_passes_it():
    async def scenario(url: str) -> None:
        chunk = b"x" * (256 << 10)
        chunks = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(8))
        headers = {"authorization": f"Bearer {KEY}", "transfer-encoding": "chunked"}
        answer = await exchange(url, request("POST", "/api/chat", headers, chunks))
        assert status_of(answer) == 413

    run(keyed_app(max_body=MiB), scenario)


def test_bodies_held_at_once_are_bounded():
    """Two requests declaring 3 MiB each against a 4 MiB budget: the second is turned away (503)
    while the first is still arriving."""

    async def scenario(url: str) -> None:
        headers = {"authorization": f"Bearer {KEY}", "content-length": str(3 * MiB)}
        host, port = url.removeprefix("http://").rsplit(":", 1)
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(request("POST", "/api/chat", headers, b"x" * 1024))  # the rest never comes
        await writer.drain()
        await asyncio.sleep(0.2)
        second = await exchange(url, request("POST", "/api/chat", headers, b"x"))
        assert status_of(second) == 503 and b"too many large requests" in second
        writer.close()

    run(keyed_app(max_body=4 * MiB, body_budget=4 * MiB), scenario)


def test_a_body_that_does_not_arrive_in_time_is_refused():
    async def scenario(url: str) -> None:
        headers = {"authorization": f"Bearer {KEY}", "content-length": "100"}
        answer = await exchange(url, request("POST", "/api/chat", headers, b"x" * 10), wait=10)
        assert status_of(answer) == 408

    run(keyed_app(body_timeout=1.0), scenario)


# --- heads and connections ------------------------------------------------------------------------

SHORT = Limits(head_timeout=1.0, max_head=8 << 10, max_connections=8)


def test_a_connection_that_says_nothing_is_dropped():
    async def scenario(url: str) -> None:
        assert status_of(await exchange(url, b"", wait=10)) == 408

    run(keyed_app(), scenario, SHORT)


def test_a_head_that_trickles_is_dropped():
    """A header line every 0.3 s would keep a connection forever without a deadline for the head."""

    async def scenario(url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET / HTTP/1.1\r\nhost: t\r\n")

        async def trickle() -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    await asyncio.sleep(0.3)
                    writer.write(b"x-slow: 1\r\n")
                    await writer.drain()

        dripping = asyncio.create_task(trickle())
        started = time.monotonic()
        answer = await asyncio.wait_for(reader.read(-1), 10)
        dripping.cancel()
        writer.close()
        assert status_of(answer) == 408 and time.monotonic() - started < 5

    run(keyed_app(), scenario, SHORT)


def test_a_head_too_large_is_refused():
    async def scenario(url: str) -> None:
        headers = {f"x-big-{i}": "y" * 1000 for i in range(16)}
        assert status_of(await exchange(url, request("GET", "/", headers))) == 431

    run(keyed_app(), scenario, SHORT)


def test_connections_beyond_the_bound_are_answered_503():
    async def scenario(url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        held = [await asyncio.open_connection(host, int(port)) for _ in range(SHORT.max_connections)]
        answer = await exchange(url, request("GET", "/", {"connection": "close"}))
        assert status_of(answer) == 503
        for _, writer in held:
            writer.close()

    run(keyed_app(), scenario, SHORT)


def test_the_health_check_stays_open_without_a_key():
    async def scenario(url: str) -> None:
        answer = await exchange(url, request("GET", "/", {"connection": "close"}))
        assert status_of(answer) == 200 and answer.endswith(b"Ollama is running")

    run(keyed_app(), scenario)


# --- memory of the real adapter -------------------------------------------------------------------


def peak_rss(pid: int) -> int:
    """The process's peak resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def test_three_unauthenticated_200_mib_posts_leave_the_adapters_memory_flat(
    stacks: Stacks, chat_stack: Stack, tmp_path: Path
):
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n")
    adapter = stacks.adapter(chat_stack.upstream, ("--api-keys-file", str(keys)))
    adapter.wait_ready({"Authorization": f"Bearer {KEY}"})
    assert adapter.process is not None
    before = peak_rss(adapter.process.pid)
    body = b"x" * (200 * MiB)
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", adapter.port)) as sock:
            head = f"POST /api/chat HTTP/1.1\r\nhost: t\r\ncontent-length: {len(body)}\r\n\r\n"
            with contextlib.suppress(OSError):  # refused and closed before all of it went out
                sock.sendall(head.encode() + body)
            assert sock.recv(12).startswith(b"HTTP/1.1 401")
    grown = peak_rss(adapter.process.pid) - before
    assert grown < 16 * MiB, f"the adapter's peak memory grew by {grown / MiB:.0f} MiB"

"""The upstream client against a scripted HTTP server: what llama-server cannot be made to do on
demand (close a kept-alive connection at the wrong moment, stall, answer garbage, end a body by
closing). The everyday paths run against the real llama-server in the other serving tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from llamacontroller.serving.errors import UpstreamUnavailable
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.upstream.llama_server import Upstream
from tests.serving.wiretap import wiretap

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def run(script: Script, scenario: Callable[[Upstream, list[tuple[str, str]]], Awaitable[None]]) -> None:
    """Serve ``script`` (called per connection with its number) and run ``scenario`` against it."""

    async def main() -> None:
        connections = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                await script(reader, writer, connections)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        seen: list[tuple[str, str]] = []
        connect = wiretap(lambda what, detail: seen.append((what, detail)))
        async with server, Client(connect=connect) as client:
            await scenario(Upstream(f"http://127.0.0.1:{port}", client), seen)

    asyncio.run(main())


def test_a_kept_alive_connection_is_reused():
    async def keep_alive(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        while True:
            await read_request(reader)
            writer.write(OK)

    async def scenario(upstream: Upstream, seen: list[tuple[str, str]]) -> None:
        for _ in range(5):
            assert await upstream.post_json("/tokenize", {"content": "hi"}) == {"ok": True}
        assert [what for what, _ in seen].count("connect") == 1

    run(keep_alive, scenario)


def test_a_connection_the_server_closed_meanwhile_is_replaced_once():
    """The race aiohttp also guards against: the server drops an idle connection just as a request
    goes out on it. Nothing was answered, so the request is sent again on a new connection."""

    async def one_answer_per_connection(reader, writer, number: int) -> None:
        await read_request(reader)
        writer.write(OK)
        await reader.read(1)  # the next request arrives: close without answering it

    async def scenario(upstream: Upstream, seen: list[tuple[str, str]]) -> None:
        assert await upstream.get_json("/props") == {"ok": True}
        assert await upstream.get_json("/props") == {"ok": True}
        assert [what for what, _ in seen] == ["connect", "request", "request", "connect", "request"]

    run(one_answer_per_connection, scenario)


def test_a_fresh_connection_that_fails_is_not_retried():
    async def hang_up(reader, writer, number: int) -> None:
        await read_request(reader)  # and close without a word

    async def scenario(upstream: Upstream, seen: list[tuple[str, str]]) -> None:
        with pytest.raises(UpstreamUnavailable, match="closed the connection"):
            await upstream.post_json("/completion", {"prompt": "hi"})
        assert [what for what, _ in seen] == ["connect", "request"]

    run(hang_up, scenario)


def test_a_chunked_body_arrives_in_pieces_and_a_body_may_end_with_the_connection():
    async def chunked_then_eof(reader, writer, number: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"data: 1\n\n", b"data: 2\n\n"):
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
            await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")
        await read_request(reader)
        writer.write(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"until":"eof"}')

    async def scenario(upstream: Upstream, seen: list[tuple[str, str]]) -> None:
        async with upstream.open("POST", "/completion", b"{}") as response:
            assert [chunk async for chunk in response.aiter_raw()] == [b"data: 1\n\n", b"data: 2\n\n"]
        assert await upstream.get_json("/props") == {"until": "eof"}

    run(chunked_then_eof, scenario)


def test_pieces_that_arrived_while_nobody_read_are_read_as_one():
    """A reader that fell behind (llama-server produced tokens faster than the adapter relayed them)
    catches up in one read, and so in one write to its own client."""

    async def three_events_at_once(reader, writer, number: int) -> None:
        await read_request(reader)
        pieces = [b"data: %d\n\n" % n for n in (1, 2, 3)]
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        writer.write(head + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n")

    async def scenario(upstream: Upstream, seen: list[tuple[str, str]]) -> None:
        async with upstream.events("/completion", {}) as batches:
            await asyncio.sleep(0.2)  # all three arrive before the first read
            assert [batch async for batch in batches] == [[1, 2, 3]]

    run(three_events_at_once, scenario)


def test_a_server_that_stalls_times_out_and_garbage_is_unavailable():
    async def stall_then_garbage(reader, writer, number: int) -> None:
        await read_request(reader)
        if number == 1:
            await asyncio.sleep(5)
        else:
            writer.write(b"SPAM\r\n\r\n")
            await asyncio.sleep(1)

    async def scenario(upstream: Upstream, seen: list[tuple[str, str]]) -> None:
        upstream.client.read_timeout = 0.2
        with pytest.raises(UpstreamUnavailable, match="ReadTimeout"):
            await upstream.get_json("/props")
        with pytest.raises(UpstreamUnavailable, match="HttpParser"):
            await upstream.get_json("/props")

    run(stall_then_garbage, scenario)


def test_an_unreachable_server_is_unavailable_and_health_says_none():
    async def scenario() -> None:
        async with Client() as client:
            upstream = Upstream("http://127.0.0.1:9", client)  # discard: nobody listens
            assert await upstream.health() is None
            with pytest.raises(UpstreamUnavailable, match=r"127\.0\.0\.1:9"):
                await upstream.get_json("/props")

    asyncio.run(scenario())

"""The API app under uvicorn: listening, routing, bodies, disconnects, lifespan, the access log.

The routes' own behaviour runs against real llama-servers in the other serving tests; these pin what
the app does around every route, with handlers written for the purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from llamacontroller.serving.app import build_app
from llamacontroller.serving.catalog.digests import FileDigests
from llamacontroller.serving.catalog.routing import RoutingCatalog
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.web.asgi import App
from llamacontroller.serving.web.middleware import error_middleware
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import Response, StreamedResponse
from llamacontroller.serving.web.server import ListenError, listening_socket, new_event_loop, parse_listen
from tests.ports import free_port
from tests.support.stacks import serve_during


def api_app() -> App:
    """The real API app over a catalog with no models: what the app answers before any route does."""
    return build_app(RoutingCatalog(Client(), FileDigests()))


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("0.0.0.0:11434", ("0.0.0.0", 11434)),
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("[::1]:11434", ("::1", 11434)),
        (":11434", ("0.0.0.0", 11434)),
        ("11434", ("0.0.0.0", 11434)),
    ],
)
def test_listen_addresses(listen: str, expected: tuple[str, int]):
    assert parse_listen(listen) == expected


@pytest.mark.parametrize("listen", ["localhost", "host:port", "1.2.3.4:"])
def test_a_listen_address_without_a_port_is_refused(listen: str):
    with pytest.raises(ListenError, match="expected host:port"):
        parse_listen(listen)


def test_a_taken_port_fails_when_the_socket_is_made():
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(ListenError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            listening_socket("127.0.0.1", port)


def test_the_event_loop_is_uvloop():
    loop = new_event_loop()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()


def test_unknown_paths_and_methods_get_each_apis_error_shape():
    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url) as client:
            ollama = await client.post("/api/nothing-here", json={})
            assert (ollama.status_code, ollama.json()) == (404, {"error": "404 page not found"})
            openai = await client.get("/v1/nothing-here")
            assert openai.status_code == 404
            assert openai.json()["error"]["message"] == "404 page not found"
            wrong_method = await client.get("/api/chat")
            assert (wrong_method.status_code, wrong_method.json()) == (
                405,
                {"error": "405 method not allowed"},
            )
            error = (await client.get("/v1/chat/completions")).json()["error"]
            assert (error["message"], error["type"]) == ("405 method not allowed", "invalid_request_error")

    serve_during(api_app(), scenario)


def test_get_routes_answer_head_without_a_body():
    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url) as client:
            head = await client.head("/")
            get = await client.get("/")
        assert (head.status_code, head.content) == (200, b"")
        assert (get.status_code, get.text) == (200, "Ollama is running")
        assert head.headers["content-length"] == get.headers["content-length"]

    serve_during(api_app(), scenario)


def echo_app(max_body: int) -> App:
    async def echo(request: Request) -> Response:
        return Response(request.body, content_type="application/octet-stream")

    app = App([error_middleware], max_body=max_body)
    app.router.add("POST", "/api/echo", echo)
    return app


def test_a_body_up_to_the_limit_arrives_whole_in_one_piece_or_many():
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"0123", b"4567", b"89abcdef"):
            yield piece

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url) as client:
            whole = await client.post("/api/echo", content=b"0123456789abcdef")
            chunked = await client.post("/api/echo", content=pieces())
        assert whole.content == chunked.content == b"0123456789abcdef"

    serve_during(echo_app(max_body=16), scenario)


def test_a_body_over_the_limit_is_a_413_and_the_connection_closes():
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"0123456789", b"0123456789"):
            yield piece

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url) as client:
            for content in (b"x" * 17, pieces()):
                answer = await client.post("/api/echo", content=content)
                assert answer.status_code == 413
                assert answer.json() == {"error": "the request body is larger than 16 bytes"}
                assert answer.headers["connection"] == "close"

    serve_during(echo_app(max_body=16), scenario)


def test_a_client_that_disconnects_cancels_its_handler(caplog: pytest.LogCaptureFixture):
    """What stops llama-server generating for nobody: the handler is cancelled mid-stream."""
    events: list[str] = []

    async def endless(request: Request) -> StreamedResponse:
        stream = StreamedResponse(request, headers={"Content-Type": "application/x-ndjson"})
        await stream.prepare()
        try:
            while True:
                await stream.write(b"{}\n")
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            events.append("cancelled")
            raise

    app = App(max_body=1024)
    app.router.add("POST", "/api/chat", endless)

    async def scenario(url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /api/chat HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        await reader.readuntil(b"{}\n")
        writer.close()
        for _ in range(200):
            if events:
                break
            await asyncio.sleep(0.01)

    caplog.set_level(logging.INFO, logger="llamacontroller.serving.web.asgi")
    serve_during(app, scenario)
    assert events == ["cancelled"]
    assert "POST /api/chat: the client went away; the request is cancelled" in caplog.text
    assert "Exception in ASGI application" not in caplog.text


def test_a_client_that_gives_up_before_any_answer_is_logged_as_499(caplog: pytest.LogCaptureFixture):
    waiting = asyncio.Event()

    async def never_answers(request: Request) -> Response:
        waiting.set()
        await asyncio.Event().wait()  # an upstream that takes its time
        raise AssertionError("unreachable")

    app = App(max_body=1024, access_log=logging.getLogger("test.access"))
    app.router.add("POST", "/api/generate", never_answers)

    async def scenario(url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"POST /api/generate HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        await asyncio.wait_for(waiting.wait(), 10)
        writer.close()
        for _ in range(200):
            if any(r.name == "test.access" for r in caplog.records):
                break
            await asyncio.sleep(0.01)

    caplog.set_level(logging.INFO, logger="test.access")
    serve_during(app, scenario)
    [line] = [record.getMessage() for record in caplog.records if record.name == "test.access"]
    assert line.startswith('127.0.0.1 "POST /api/generate" 499 ')


def test_a_handler_that_answered_is_not_cancelled_by_the_close_that_follows():
    events: list[str] = []

    async def answer_then_clean_up(request: Request) -> StreamedResponse:
        stream = StreamedResponse(request)
        await stream.prepare()
        await stream.write(b"done")
        await stream.finish()
        try:
            await asyncio.sleep(0.2)  # closing an upstream, say: the client may be gone already
        except asyncio.CancelledError:
            events.append("cancelled")
            raise
        events.append("cleaned up")
        return stream

    app = App(max_body=1024)
    app.router.add("GET", "/slow-cleanup", answer_then_clean_up)

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/slow-cleanup")).content == b"done"
        await asyncio.sleep(0.4)

    serve_during(app, scenario)
    assert events == ["cleaned up"]


def test_the_lifespan_enters_the_apps_contexts_and_leaves_them_in_reverse():
    events: list[str] = []

    def context(name: str) -> Callable[[App], contextlib.AbstractAsyncContextManager[None]]:
        @contextlib.asynccontextmanager
        async def lifecycle(app: App) -> AsyncIterator[None]:
            events.append(f"enter {name}")
            yield
            events.append(f"leave {name}")

        return lifecycle

    app = App(max_body=1024)
    app.lifecycle += [context("client"), context("watch")]

    async def scenario(url: str) -> None:
        assert events == ["enter client", "enter watch"]

    serve_during(app, scenario)
    assert events == ["enter client", "enter watch", "leave watch", "leave client"]


def test_the_access_log_says_who_what_and_status_but_no_header(caplog: pytest.LogCaptureFixture):
    async def teapot(request: Request) -> Response:
        return Response(status=418)

    app = App(max_body=1024, access_log=logging.getLogger("test.access"))
    app.router.add("POST", "/api/chat", teapot)

    async def scenario(url: str) -> None:
        headers = {"Authorization": "Bearer sk-secret", "User-Agent": "ollama-python"}
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.post("/api/chat?x=1", headers=headers)).status_code == 418

    caplog.set_level(logging.INFO, logger="test.access")
    serve_during(app, scenario)
    [line] = [record.getMessage() for record in caplog.records if record.name == "test.access"]
    assert line.startswith('127.0.0.1 "POST /api/chat" 418 ') and line.endswith("ms")
    assert "secret" not in line and "ollama-python" not in line and "x=1" not in line


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_process_gracefully_with_exit_0(stop: signal.Signals):
    """What the kubelet (SIGTERM) and a terminal (SIGINT) do: no traceback, no error status."""
    port = free_port()
    command = [sys.executable, "-m", "llamacontroller.cli", "adapter", "--upstream", "http://127.0.0.1:9"]
    process = subprocess.Popen(
        [*command, "--listen", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200:
                    break
            time.sleep(0.05)
        process.send_signal(stop)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, output
    assert f"stopped by {stop.name}" in output and "Traceback" not in output

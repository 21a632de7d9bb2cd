"""How the adapter and gateway processes listen and log."""

from __future__ import annotations

import logging

import aiohttp
import pytest
from aiohttp import web

from llamacontroller.serving.serve import AccessLog, new_event_loop, parse_listen


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
    with pytest.raises(ValueError, match="expected host:port"):
        parse_listen(listen)


def test_the_access_log_says_who_what_and_status_but_no_header(caplog: pytest.LogCaptureFixture):
    async def teapot(request: web.Request) -> web.Response:
        return web.Response(status=418)

    async def one_request() -> None:
        app = web.Application()
        app.router.add_post("/api/chat", teapot)
        runner = web.AppRunner(app, access_log=logging.getLogger("test.access"), access_log_class=AccessLog)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with aiohttp.ClientSession() as session:
                headers = {"Authorization": "Bearer sk-secret", "User-Agent": "ollama-python"}
                async with session.post(f"http://127.0.0.1:{port}/api/chat?x=1", headers=headers) as answer:
                    assert answer.status == 418
        finally:
            await runner.cleanup()

    caplog.set_level(logging.INFO, logger="test.access")
    loop = new_event_loop()
    try:
        loop.run_until_complete(one_request())
    finally:
        loop.close()
    [line] = [record.getMessage() for record in caplog.records if record.name == "test.access"]
    assert line.startswith('127.0.0.1 "POST /api/chat" 418 ') and line.endswith("ms")
    assert "secret" not in line and "ollama-python" not in line


def test_the_event_loop_is_uvloop():
    loop = new_event_loop()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()

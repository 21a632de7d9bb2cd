"""The console's HTTP face on the app the gateways serve, over the local runtime's source (its real
files; no llama-server needed for what is checked here): off without a key, the sign-in, cookies
and headers, CSRF and origin checks, writes off unless enabled, a trusted proxy header, and the
inference API keys neither guarding nor opening it. The browser test on the cluster:
tests/e2e/test_console.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from llamacontroller.config import OperatorConfig
from llamacontroller.console.local import LocalSource
from llamacontroller.console.routes import Console, off_routes
from llamacontroller.console.session import Access
from llamacontroller.serving.app import build_app
from llamacontroller.serving.catalog.digests import FileDigests
from llamacontroller.serving.catalog.routing import RoutingCatalog
from llamacontroller.serving.upstream.client import Client
from tests.support.builders import llamamodel

KEY = "a-console-key-for-the-tests"
BASE = "http://gateway.test"


def run(test: Callable[[httpx.AsyncClient], Any], app: Any) -> None:
    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE) as client:
            await test(client)

    asyncio.run(go())


def app_with(tmp_path: Path, access: Access | None, api_keys: frozenset[str] = frozenset()) -> Any:
    folder, state = tmp_path / "lms", tmp_path / "state"
    folder.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    (folder / "one.yaml").write_text(yaml.safe_dump(llamamodel("one")))
    source = LocalSource([folder], tmp_path, state, OperatorConfig(), converge=lambda: None)
    routes = Console(access, source, OperatorConfig()).add_routes if access else off_routes
    return build_app(RoutingCatalog(Client(), FileDigests()), api_keys, routes)


async def sign_in(client: httpx.AsyncClient) -> str:
    answer = await client.post("/ui/login", data={"key": KEY})
    assert answer.status_code == 303 and answer.headers["location"] == "/ui"
    board = await client.get("/ui")
    assert board.status_code == 200
    return client.cookies["lc_csrf"]


def test_off_without_a_key_or_a_header(tmp_path: Path) -> None:
    async def test(client: httpx.AsyncClient) -> None:
        answer = await client.get("/ui")
        assert answer.status_code == 404 and "The console is off" in answer.text
        assert (await client.post("/ui/login", data={"key": KEY})).status_code == 404

    run(test, app_with(tmp_path, None))


def test_sign_in_cookies_and_headers(tmp_path: Path) -> None:
    async def test(client: httpx.AsyncClient) -> None:
        first = await client.get("/ui")
        assert first.status_code == 303 and first.headers["location"] == "/ui/login"
        assert (await client.get("/ui/part/board")).status_code == 401
        wrong = await client.post("/ui/login", data={"key": KEY + "x"})
        assert wrong.status_code == 401 and "not the console key" in wrong.text
        assert "lc_session" not in wrong.headers.get("set-cookie", "")
        answer = await client.post("/ui/login", data={"key": KEY})
        cookie = answer.headers["set-cookie"]
        assert cookie.startswith("lc_session=v1.") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        board = await client.get("/ui")
        assert board.status_code == 200 and 'data-slot="local/gpu0"' in board.text and KEY not in board.text
        assert "default-src 'self'" in board.headers["content-security-policy"]
        assert board.headers["x-frame-options"] == "DENY" and board.headers["cache-control"] == "no-store"
        assert "lc_csrf=" in board.headers["set-cookie"]
        script = await client.get("/ui/static/console.js")
        assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")

    run(test, app_with(tmp_path, Access(key=KEY, writes=True)))


def test_writes_need_their_token_the_same_origin_and_the_settings(tmp_path: Path) -> None:
    async def writes_on(client: httpx.AsyncClient) -> None:
        csrf = await sign_in(client)
        form = {"ref": "default/one"}
        no_token = await client.post("/ui/unload", data=form)
        assert no_token.status_code == 403 and "CSRF" in no_token.text
        other_site = await client.post(
            "/ui/unload", data=form | {"csrf": csrf}, headers={"origin": "https://evil.example"}
        )
        assert other_site.status_code == 403 and "another site" in other_site.text
        assert (tmp_path / "on" / "lms" / "one.yaml").exists()
        done = await client.post("/ui/unload", data=form | {"csrf": csrf}, headers={"origin": BASE})
        assert done.status_code == 303 and not (tmp_path / "on" / "lms" / "one.yaml").exists()

    (tmp_path / "on").mkdir()
    run(writes_on, app_with(tmp_path / "on", Access(key=KEY, writes=True)))

    async def writes_off(client: httpx.AsyncClient) -> None:
        csrf = await sign_in(client)
        refused = await client.post("/ui/unload", data={"ref": "default/one", "csrf": csrf})
        assert refused.status_code == 403 and "writes are off" in refused.text
        assert "data-unload" not in (await client.get("/ui")).text
        assert (await client.get("/ui/load")).status_code == 403

    (tmp_path / "off").mkdir()
    run(writes_off, app_with(tmp_path / "off", Access(key=KEY, writes=False)))
    assert (tmp_path / "off" / "lms" / "one.yaml").exists()


def test_a_trusted_proxy_header(tmp_path: Path) -> None:
    async def test(client: httpx.AsyncClient) -> None:
        assert (await client.get("/ui")).status_code == 303
        login = await client.get("/ui/login")
        assert login.status_code == 401 and "through the proxy" in login.text and "password" not in login.text
        board = await client.get("/ui", headers={"x-auth-request-user": "ada@example.org"})
        assert board.status_code == 200 and "ada@example.org" in board.text and "Sign out" not in board.text

    run(test, app_with(tmp_path, Access(user_header="x-auth-request-user")))


@pytest.mark.parametrize("with_api_key", [False, True])
def test_api_keys_neither_guard_nor_open_the_console(tmp_path: Path, with_api_key: bool) -> None:
    api_key = "an-inference-api-key"
    headers = {"authorization": f"Bearer {api_key}"} if with_api_key else {}

    async def test(client: httpx.AsyncClient) -> None:
        answer = await client.get("/ui", headers=headers)
        assert answer.status_code == 303 and answer.headers["location"] == "/ui/login"  # not a 401
        assert (await client.get("/api/tags")).status_code == 401  # the API stays guarded
        refused = await client.post("/ui/login", data={"key": api_key})
        assert refused.status_code == 401

    run(test, app_with(tmp_path, Access(key=KEY), frozenset({api_key})))

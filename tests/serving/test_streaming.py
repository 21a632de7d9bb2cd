"""Streams end to end: a client that leaves stops llama-server; a llama-server that dies ends the stream."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator

import httpx
import pytest

from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.upstream.llama_server import SPARES, Upstream
from tests.ports import free_port
from tests.serving.wiretap import wiretap
from tests.support.polling import eventually
from tests.support.stacks import CHAT_PARAMETERS, MODEL, Stack, Stacks, busy_slots

pytestmark = pytest.mark.timeout(180)

ENDLESS = 200_000  # tokens: minutes of generation (context shift keeps it going), unless cancelled
TIMEOUT = httpx.Timeout(60.0)

STREAMS = {
    "generate": ("/api/generate", {"model": MODEL, "prompt": "hello", "options": {"num_predict": ENDLESS}}),
    "chat": (
        "/api/chat",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "options": {"num_predict": ENDLESS},
        },
    ),
    "openai-chat": (
        "/v1/chat/completions",
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": ENDLESS,
            "stream": True,
        },
    ),
    "openai-completions": (
        "/v1/completions",
        {"model": MODEL, "prompt": "hello", "max_tokens": ENDLESS, "stream": True},
    ),
}


def read_some(lines: Iterator[str], count: int = 5) -> list[str]:
    return [line for line, _ in zip(lines, range(count), strict=False)]


@pytest.mark.parametrize(("path", "body"), STREAMS.values(), ids=STREAMS.keys())
def test_a_client_that_disconnects_stops_the_generation(chat_stack: Stack, path: str, body: dict):
    eventually(lambda: busy_slots(chat_stack.upstream) == 0, what="idle slots before the test")
    with (
        httpx.Client(timeout=TIMEOUT) as client,
        client.stream("POST", chat_stack.url + path, json=body) as response,
    ):
        lines = response.iter_lines()
        assert len(read_some(lines)) == 5
        assert busy_slots(chat_stack.upstream) == 1
    # the full answer would take minutes; cancelled, the slot is free again at once
    eventually(
        lambda: busy_slots(chat_stack.upstream) == 0, timeout=30, what="llama-server to stop generating"
    )


def test_a_waiting_non_stream_client_that_gives_up_stops_the_generation(chat_stack: Stack):
    eventually(lambda: busy_slots(chat_stack.upstream) == 0, what="idle slots before the test")
    body = {"model": MODEL, "prompt": "hello", "stream": False, "options": {"num_predict": ENDLESS}}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(chat_stack.url + "/api/generate", json=body, timeout=httpx.Timeout(60.0, read=2.0))
    eventually(
        lambda: busy_slots(chat_stack.upstream) == 0, timeout=30, what="llama-server to stop generating"
    )


def test_streamed_requests_never_leave_a_connection_llama_server_closes(chat_stack: Stack):
    """llama-server closes the connection after every streamed answer, whatever its Keep-Alive header
    says. Were it pooled, a request sent right after could go out on it and fail with "Server
    disconnected without sending a response" (a race, seen under load): streamed requests say
    ``Connection: close``, plain ones keep their connection alive."""
    seen: list[tuple[str, str]] = []

    async def back_to_back() -> None:
        async with Client(connect=wiretap(lambda what, detail: seen.append((what, detail)))) as client:
            upstream = Upstream(chat_stack.upstream, client)
            for _ in range(100):
                assert (await upstream.post_json("/tokenize", {"content": "hi"}))["tokens"]
                async with upstream.events(
                    "/completion", {"prompt": "hi", "n_predict": 1, "stream": True}
                ) as events:
                    assert [event async for batch in events for event in batch][-1]["stop"] is True

    asyncio.run(back_to_back())
    requests = {detail for what, detail in seen if what == "request"}
    assert requests == {"POST /tokenize", "POST /completion close"}  # HTTP/1.1: keep-alive unsaid
    # each streamed answer costs one connection, which goes away with it; the others are reused
    # (and up to SPARES are opened ahead)
    assert 100 <= sum(1 for what, _ in seen if what == "connect") <= 100 + SPARES


def test_a_streamed_request_and_the_one_beside_it_find_their_connections_open(chat_stack: Stack):
    """Opening a connection costs a round trip of the event loop: after a streamed answer (whose
    connection llama-server closes) the next ones are opened in the background, off any request's
    path; two, as a generate streams its answer and asks ``/tokenize`` for its context at once."""
    log: list[tuple[str, str]] = []

    async def one_after_another() -> None:
        async with Client(connect=wiretap(lambda what, detail: log.append((what, detail)))) as client:
            upstream = Upstream(chat_stack.upstream, client)
            for _ in range(10):
                log.append(("begin", ""))
                body = {"prompt": "hi", "n_predict": 1, "stream": True}
                async with upstream.events("/completion", body) as events:
                    tokens = await upstream.post_json("/tokenize", {"content": "hi"})
                    assert [event async for batch in events for event in batch][-1]["stop"] is True
                assert tokens["tokens"]
                await asyncio.sleep(0.2)  # a client reading the answer

    asyncio.run(one_after_another())
    begins = [i for i, (what, _) in enumerate(log) if what == "begin"]
    on_path = [log[i + 1 : log.index(("request", "POST /tokenize"), i)] for i in begins]
    assert on_path[0] == [("connect", ""), ("request", "POST /completion close"), ("connect", "")]
    assert all(steps == [("request", "POST /completion close")] for steps in on_path[1:]), on_path


@pytest.fixture
def doomed(stacks: Stacks, model_file) -> Stack:
    """A stack of its own: the test kills its llama-server."""
    return stacks.stack(CHAT_PARAMETERS, model_file)


def kill(stack: Stack) -> None:
    assert stack.server.process is not None
    os.kill(stack.server.process.pid, signal.SIGKILL)
    stack.server.process.wait(30)


def lines_after_a_kill(stack: Stack, name: str) -> list[str]:
    """Start stream ``name``, read a few lines, kill llama-server, and read the rest of the stream:
    it ends (no hang: the read timeout would fail the test)."""
    path, body = STREAMS[name]
    with httpx.stream("POST", stack.url + path, json=body, timeout=TIMEOUT) as response:
        lines = response.iter_lines()
        read_some(lines)
        kill(stack)
        return [line for line in lines if line]


@pytest.mark.parametrize("name", ["generate", "chat"])
def test_an_upstream_that_dies_mid_stream_ends_it_with_an_error_line(doomed: Stack, name: str):
    rest = lines_after_a_kill(doomed, name)
    last = json.loads(rest[-1])
    assert set(last) == {"error"} and "llama-server" in last["error"]
    assert all(not json.loads(line).get("done") for line in rest[:-1])


@pytest.mark.parametrize("name", ["openai-chat", "openai-completions"])
def test_an_upstream_that_dies_mid_sse_stream_ends_it_with_an_error_event(doomed: Stack, name: str):
    events = lines_after_a_kill(doomed, name)
    assert events[-1].startswith("data: ")
    error = json.loads(events[-1].removeprefix("data: "))["error"]
    assert set(error) == {"message", "type", "param", "code"} and "llama-server" in error["message"]


def test_a_dead_upstream_is_a_502_and_the_adapter_stays_up(doomed: Stack):
    kill(doomed)
    generate = httpx.post(
        doomed.url + "/api/generate", json={"model": MODEL, "prompt": "hi"}, timeout=TIMEOUT
    )
    assert generate.status_code == 502 and "llama-server" in generate.json()["error"]
    openai = httpx.post(doomed.url + "/v1/chat/completions", json={"messages": []}, timeout=TIMEOUT)
    assert openai.status_code == 502 and "llama-server" in openai.json()["error"]["message"]
    assert httpx.get(doomed.url + "/", timeout=TIMEOUT).text == "Ollama is running"


def test_an_adapter_started_before_llama_server_waits_for_it(stacks: Stacks, model_file):
    """Until llama-server answers, nothing is listed and requests fail clearly; then all works."""
    port = free_port()
    adapter = stacks.adapter(f"http://127.0.0.1:{port}")
    eventually(lambda: _root(adapter.url), what="the adapter to listen")
    assert httpx.get(adapter.url + "/api/tags", timeout=TIMEOUT).json() == {"models": []}
    assert httpx.post(adapter.url + "/api/show", json={"model": MODEL}, timeout=TIMEOUT).status_code == 502
    stacks.server(CHAT_PARAMETERS, model_file, port)
    adapter.wait_ready()
    assert httpx.post(adapter.url + "/api/show", json={"model": MODEL}, timeout=TIMEOUT).status_code == 200


def _root(url: str) -> bool:
    try:
        return httpx.get(url + "/", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False

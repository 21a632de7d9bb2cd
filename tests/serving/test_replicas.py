"""Two llama-servers serving one model name (two LlamaModels on two GPUs): a gateway spreads the
requests over them, the least busy first, with the official client; /api/tags lists the model once."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import ollama
import pytest

from llamacontroller.serving.app import build_app
from llamacontroller.serving.catalog.digests import FileDigests
from llamacontroller.serving.catalog.routing import Route, RoutingCatalog
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.web.asgi import App
from tests.support.stacks import CHAT_PARAMETERS, MODEL, Stacks, serve_during

pytestmark = pytest.mark.timeout(180)

ALIAS = f"{MODEL}:latest"


@pytest.fixture(scope="module")
def replicas(session_stacks: Stacks, model_file: Path) -> list[str]:
    return [session_stacks.server(CHAT_PARAMETERS, model_file).url for _ in range(2)]


def prompts_seen(upstream: str) -> float:
    """llama-server's own count of prompt tokens it processed (its /metrics)."""
    metrics = httpx.get(f"{upstream}/metrics", timeout=10).text
    found = re.search(r"^llamacpp:prompt_tokens_total (\S+)$", metrics, re.M)
    assert found, metrics
    return float(found.group(1))


def gateway(replicas: list[str]) -> tuple[App, Client]:
    client = Client()
    catalog = RoutingCatalog(client, FileDigests())
    catalog.set_routes({ALIAS: [Route(url) for url in replicas]})
    return build_app(catalog), client


def test_requests_take_turns_between_idle_replicas(replicas: list[str]):
    before = [prompts_seen(url) for url in replicas]
    app, client = gateway(replicas)

    async def scenario(url: str) -> list[str]:
        answers = []
        for _ in range(4):
            answer = await asyncio.to_thread(
                ollama.Client(host=url).generate, model=MODEL, prompt="hello", options={"num_predict": 1}
            )
            answers.append(answer.response)
        await client.aclose()
        return answers

    serve_during(app, lambda url: scenario(url))
    grown = [prompts_seen(url) - b for url, b in zip(replicas, before, strict=True)]
    assert all(g > 0 for g in grown), grown


def test_a_busy_replica_is_passed_over(replicas: list[str]):
    app, client = gateway(replicas)
    streaming, done = asyncio.Event(), asyncio.Event()

    async def endless(url: str) -> None:
        """A stream that only ends when told (the tiny model with context shift never stops)."""
        body = {"model": MODEL, "prompt": "go on", "options": {"num_predict": -1}}
        async with (
            httpx.AsyncClient(timeout=60) as http,
            http.stream("POST", f"{url}/api/generate", json=body) as answer,
        ):
            async for _ in answer.aiter_lines():
                streaming.set()
                if done.is_set():
                    return

    async def scenario(url: str) -> tuple[list[float], list[float]]:
        stream = asyncio.create_task(endless(url))
        await asyncio.wait_for(streaming.wait(), 30)
        busy = [client.busy(*hostport(r)) for r in replicas]
        before = [prompts_seen(r) for r in replicas]
        for _ in range(3):
            await asyncio.to_thread(
                ollama.Client(host=url).generate, model=MODEL, prompt="hello", options={"num_predict": 1}
            )
        after = [prompts_seen(r) for r in replicas]
        done.set()
        await stream
        await client.aclose()
        return busy, [a - b for a, b in zip(after, before, strict=True)]

    result: dict[str, tuple[list[float], list[float]]] = {}

    async def run(url: str) -> None:
        result["seen"] = await scenario(url)

    serve_during(app, run)
    busy, grown = result["seen"]
    (streaming_on,) = [i for i, requests in enumerate(busy) if requests]  # the stream (and its /tokenize)
    assert grown[streaming_on] == 0 and grown[1 - streaming_on] > 0, (busy, grown)


def test_the_model_is_listed_once(replicas: list[str]):
    app, client = gateway(replicas)
    names: list[str] = []

    async def scenario(url: str) -> None:
        listed = await asyncio.to_thread(ollama.Client(host=url).list)
        names.extend(m.model or "" for m in listed.models)
        await client.aclose()

    serve_during(app, scenario)
    assert names == [ALIAS]


def hostport(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)

"""The API's Prometheus metrics on /metrics: an adapter app in front of the real llama-server with
the tiny model, asked through the Ollama and OpenAI routes; the exposition parsed, and linted by
promtool."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llamacontroller.serving.adapter import adapter_app
from llamacontroller.serving.app import build_app
from llamacontroller.serving.catalog.digests import FileDigests
from llamacontroller.serving.catalog.routing import Route, RoutingCatalog
from llamacontroller.serving.metrics import tokens_in
from llamacontroller.serving.upstream.client import Client
from tests.ports import free_port
from tests.support.stacks import ALIAS, MODEL, Stack, serve_during

pytestmark = pytest.mark.timeout(120)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(exposition: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def promtool_check(exposition: str) -> None:
    """promtool's lint of the exposition (Debian's prometheus package): no complaint."""
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: bash .ci/setup installs Debian's prometheus package"
    checked = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, text=True)
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr


def test_requests_are_counted_by_catalog_model_route_and_status(chat_stack: Stack):
    answers: dict[str, str] = {}

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
            options = {"num_predict": 4}
            async with http.stream("POST", "/api/chat", json=chat | {"options": options}) as streamed:
                assert streamed.status_code == 200
                await streamed.aread()
            done = await http.post(
                "/api/generate", json={"model": MODEL, "prompt": "a", "stream": False, "options": options}
            )
            assert done.status_code == 200
            openai = chat | {"max_tokens": 3}
            assert (await http.post("/v1/chat/completions", json=openai)).status_code == 200
            async with http.stream("POST", "/v1/chat/completions", json=openai | {"stream": True}) as sse:
                await sse.aread()
            assert (await http.get("/api/tags")).status_code == 200
            assert (await http.get(f"/v1/models/{MODEL}")).status_code == 200
            # a model nobody serves, spelled anew each time: one label value, never the client's text
            for name in ("no-such-model", "another:tag"):
                assert (await http.post("/api/show", json={"model": name})).status_code == 404
            assert (await http.get("/no/such/path")).status_code == 404
            exposition = await http.get("/metrics")
            assert exposition.headers["content-type"].startswith("text/plain; version=0.0.4")
            answers["metrics"] = exposition.text

    serve_during(adapter_app(chat_stack.upstream), scenario)
    text = answers["metrics"]
    found = samples(text)
    total = "llamacontroller_requests_total"
    assert value(found, total, model=ALIAS, route="/api/chat", code="200") == 1
    assert value(found, total, model=ALIAS, route="/api/generate", code="200") == 1
    assert value(found, total, model=ALIAS, route="/v1/chat/completions", code="200") == 2
    assert value(found, total, model="none", route="/api/tags", code="200") == 1
    assert value(found, total, model=ALIAS, route="/v1/models/{model}", code="200") == 1
    assert value(found, total, model="unknown", route="/api/show", code="404") == 2
    assert value(found, total, model="none", route="other", code="404") == 1
    assert "no-such-model" not in text and "another" not in text and "/no/such" not in text
    # the scrape itself is in flight while it is answered
    assert value(found, "llamacontroller_requests_in_flight") == 1

    # streamed answers: time to first token, time per token after it; tokens from llama-server
    for route in ("/api/chat", "/v1/chat/completions"):
        assert (
            value(found, "llamacontroller_time_to_first_token_seconds_count", model=ALIAS, route=route) == 1
        )
        assert (
            value(found, "llamacontroller_time_per_output_token_seconds_count", model=ALIAS, route=route) == 1
        )
        assert (value(found, "llamacontroller_prompt_tokens_total", model=ALIAS, route=route) or 0) > 0
    assert value(found, "llamacontroller_generated_tokens_total", model=ALIAS, route="/api/chat") == 4
    assert (
        value(found, "llamacontroller_generated_tokens_total", model=ALIAS, route="/v1/chat/completions") == 6
    )
    # a non-streamed answer has no first token for its client
    assert (
        value(found, "llamacontroller_time_to_first_token_seconds_count", model=ALIAS, route="/api/generate")
        is None
    )
    assert (
        value(found, "llamacontroller_generated_tokens_total", model=ALIAS, route="/api/generate") or 0
    ) > 0
    duration = "llamacontroller_request_duration_seconds_count"
    assert value(found, duration, model=ALIAS, route="/api/chat") == 1
    assert (value(found, "process_resident_memory_bytes") or 0) > 0
    promtool_check(text)


def test_upstream_failures_and_client_disconnects_are_counted(chat_stack: Stack):
    """A llama-server that is gone: 502 and an upstream error; a client that leaves a stream: a
    disconnect (with status 499 in the requests)."""
    found: dict[str, Samples] = {}
    gone = f"http://127.0.0.1:{free_port()}"

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            answer = await http.post("/api/generate", json={"model": MODEL, "prompt": "a", "stream": False})
            assert answer.status_code == 502
            found["down"] = samples((await http.get("/metrics")).text)

    serve_during(adapter_app(gone, model_name=MODEL), scenario)
    down = found["down"]
    assert value(down, "llamacontroller_upstream_errors_total", model=ALIAS, kind="unavailable") == 1
    assert value(down, "llamacontroller_requests_total", model=ALIAS, route="/api/generate", code="502") == 1

    async def leave(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            body = {"model": MODEL, "prompt": "a", "options": {"num_predict": 100_000}}
            async with http.stream("POST", "/api/generate", json=body) as streamed:
                async for _ in streamed.aiter_lines():
                    break  # the first token, then away
            for _ in range(200):
                found["left"] = samples((await http.get("/metrics")).text)
                gone_clients = "llamacontroller_client_disconnects_total"
                if value(found["left"], gone_clients, model=ALIAS, route="/api/generate"):
                    return
                await asyncio.sleep(0.05)

    serve_during(adapter_app(chat_stack.upstream), leave)
    left = found["left"]
    assert value(left, "llamacontroller_client_disconnects_total", model=ALIAS, route="/api/generate") == 1
    assert value(left, "llamacontroller_requests_total", model=ALIAS, route="/api/generate", code="499") == 1


def test_metrics_stay_open_when_the_api_needs_a_key_and_apps_count_apart(chat_stack: Stack):
    """/metrics answers without a key (the refusals are counted), and each app has its own registry:
    two gateways in one process do not add up each other's requests."""
    client = Client()
    catalog = RoutingCatalog(client, FileDigests())
    catalog.set_routes({ALIAS: [Route(chat_stack.upstream)]})
    keyed = build_app(catalog, frozenset({"sk-metrics-test-key"}))
    other = build_app(catalog)
    found: dict[str, str] = {}

    async def scenario(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            assert (await http.get("/api/tags")).status_code == 401
            metrics = await http.get("/metrics")
            assert metrics.status_code == 200
            found["keyed"] = metrics.text

    serve_during(keyed, scenario)

    async def scrape(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            found["other"] = (await http.get("/metrics")).text
        await client.aclose()

    serve_during(other, scrape)
    keyed_samples, other_samples = samples(found["keyed"]), samples(found["other"])
    total = "llamacontroller_requests_total"
    assert value(keyed_samples, total, model="none", route="/api/tags", code="401") == 1
    assert value(other_samples, total, model="none", route="/api/tags", code="401") is None


def test_tokens_are_read_from_the_usage_at_an_answers_end():
    """llama-server's answers, as it writes them (streamed, the last events)."""
    body = (
        b'{"choices":[],"timings":{"cache_n":4,"prompt_n":3,"prompt_ms":1.2,"predicted_n":5},'
        b'"usage":{"completion_tokens":5,"prompt_tokens":7,"total_tokens":12}}'
    )
    assert tokens_in(body) == (7, 5)
    streamed = (
        b'data: {"choices":[{"delta":{}}],"timings":{"cache_n":0,"prompt_n":22,"predicted_n":3}}\n\n'
        b'data: {"choices":[],"usage":{"completion_tokens":3,"prompt_tokens":22},'
        b'"timings":{"cache_n":21,"prompt_n":1,"predicted_n":3}}\n\ndata: [DONE]\n\n'
    )
    assert tokens_in(streamed) == (22, 3)
    embeddings = b'{"data":[],"model":"m","object":"list","usage":{"prompt_tokens":4,"total_tokens":4}}'
    assert tokens_in(embeddings) == (4, 0)
    assert tokens_in(b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n') is None

"""A real Prometheus scrapes a real llama-server (tiny model), the adapter in front of it (its own
process, as in the Pod) and the local runtime's gateway routing to it; after a few requests, PromQL
through Prometheus's HTTP API finds the series of each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from llamacontroller.local.gateway import GatewayThread
from llamacontroller.serving.catalog.routing import Route
from tests.ports import free_port
from tests.support.polling import eventually
from tests.support.prometheus import Prometheus, dashboard_queries, promtool_check_metrics
from tests.support.stacks import ALIAS, MODEL, AdapterProcess, Stack, Stacks

pytestmark = pytest.mark.timeout(180)


def hostport(url: str) -> str:
    return urlsplit(url).netloc


@pytest.fixture
def gateway(chat_stack: Stack) -> Iterator[GatewayThread]:
    gateway = GatewayThread(f"127.0.0.1:{free_port()}")
    gateway.start()
    gateway.set_routes({ALIAS: [Route(chat_stack.upstream)]})
    yield gateway
    gateway.stop()


@pytest.fixture
def adapter(stacks: Stacks, chat_stack: Stack) -> AdapterProcess:
    """An adapter of its own in front of the shared llama-server: its counts are this test's."""
    adapter = stacks.adapter(chat_stack.upstream)
    adapter.wait_ready()
    return adapter


@pytest.fixture
def prometheus(
    tmp_path: Path, chat_stack: Stack, adapter: AdapterProcess, gateway: GatewayThread
) -> Iterator[Prometheus]:
    jobs = {
        "adapter": [hostport(adapter.url)],
        "gateway": [hostport(gateway.url)],
        "llama-server": [hostport(chat_stack.upstream)],
    }
    prometheus = Prometheus(tmp_path, jobs)
    prometheus.start()
    yield prometheus
    prometheus.stop()


def scalar(prometheus: Prometheus, expr: str) -> float:
    result = prometheus.query(expr)
    assert len(result) == 1, (expr, result)
    return float(result[0]["value"][1])


def test_prometheus_scrapes_the_gateway_the_adapter_and_llama_server(
    prometheus: Prometheus, gateway: GatewayThread, adapter: AdapterProcess, chat_stack: Stack
):
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 5}}
    for url in (gateway.url, adapter.url):
        for _ in range(3):
            with httpx.stream("POST", f"{url}/api/chat", json=chat, timeout=60) as streamed:
                assert streamed.status_code == 200
                streamed.read()
        assert httpx.post(f"{url}/api/show", json={"model": "nobody"}, timeout=10).status_code == 404
    for url in (gateway.url, adapter.url):
        promtool_check_metrics(httpx.get(f"{url}/metrics", timeout=10).text)
    # llama.cpp's own names break two of promtool's conventions (llamacpp:*, where colons are meant
    # for recording rules; a counter without _total): it parses, and nothing else is found
    llama_server = httpx.get(f"{chat_stack.upstream}/metrics", timeout=10).text
    conventions = ("metric names should not contain ':'", 'counter metrics should have "_total" suffix')
    promtool_check_metrics(llama_server, tolerated=conventions)

    def scraped() -> bool:
        # every target up, and a scrape after the last request seen
        up = prometheus.targets_up()
        total = 'sum(llamacontroller_requests_total{route="/api/chat",code="200"})'
        return len(up) == 3 and set(up.values()) == {"up"} and bool(prometheus.query(f"{total} == 6"))

    eventually(scraped, timeout=30, what="Prometheus to scrape the three targets after the requests")
    chats = f'route="/api/chat",code="200",model="{ALIAS}"'
    for job in ("gateway", "adapter"):
        assert scalar(prometheus, f'sum(llamacontroller_requests_total{{job="{job}",{chats}}})') == 3
        assert scalar(prometheus, f'sum(llamacontroller_generated_tokens_total{{job="{job}"}})') == 15
        assert scalar(prometheus, f'sum(llamacontroller_requests_total{{job="{job}",model="unknown"}})') == 1
        buckets = f'llamacontroller_time_to_first_token_seconds_bucket{{job="{job}"}}'
        ttft = f"histogram_quantile(0.5, sum by (le) ({buckets}))"
        assert 0 < scalar(prometheus, ttft) < 60
    # llama-server's own, through its --metrics: both stacks' tokens passed through it
    assert scalar(prometheus, 'llamacpp:tokens_predicted_total{job="llama-server"}') >= 30
    # the dashboard's queries run (those of the operator's metrics find nothing here)
    answered = {query: prometheus.query(query) for query in dashboard_queries()}
    in_flight = answered["sum by (job) (llamacontroller_requests_in_flight)"]
    assert sorted(series["metric"]["job"] for series in in_flight) == ["adapter", "gateway"]

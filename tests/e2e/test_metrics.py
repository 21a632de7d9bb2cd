"""The operator's /metrics in an end-to-end run: a real Prometheus scrapes the real operator while
it reconciles LlamaModels on the real control plane; PromQL through Prometheus's HTTP API finds the
reconciles, the API calls, the phases, the slots and the waiters, and the time to Ready."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.builders import lm
from tests.support.components import OperatorProcess
from tests.support.kube import Kube
from tests.support.polling import eventually
from tests.support.prometheus import Prometheus, promtool_check_metrics

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def prometheus(tmp_path: Path, operator: OperatorProcess) -> Iterator[Prometheus]:
    prometheus = Prometheus(tmp_path / "prometheus", {"operator": [urlsplit(operator.liveness).netloc]})
    prometheus.start()
    yield prometheus
    prometheus.stop()


def metrics_url(operator: OperatorProcess) -> str:
    parts = urlsplit(operator.liveness)
    return f"{parts.scheme}://{parts.netloc}/metrics"


def test_prometheus_scrapes_the_operator(
    kube: Kube, operator: OperatorProcess, prometheus: Prometheus
) -> None:
    assert httpx.get(operator.liveness, timeout=5).json() == {"leading": True, "synced": True}
    kube.apply(lm("phi"))
    kube.wait_phase("phi", "Ready", "ServerReady")
    kube.apply(lm("waiter"))
    kube.wait_phase("waiter", "Waiting", "SlotTaken")
    promtool_check_metrics(httpx.get(metrics_url(operator), timeout=5).text)

    def found(expr: str) -> bool:
        return bool(prometheus.query(expr))

    # each query returns a series once Prometheus scraped the operator after the waiter waited
    calls = 'llamacontroller_kube_api_calls_total{job="operator",'
    for expr in (
        'llamacontroller_llamamodels_waiting{job="operator",node="node-a"} >= 1',
        'llamacontroller_slots_held{job="operator",node="node-a"} >= 1',
        'llamacontroller_llamamodels{job="operator",phase="Ready"} >= 1',
        'llamacontroller_llamamodels{job="operator",phase="Waiting"} >= 1',
        'llamacontroller_reconciles_total{job="operator",result="ok",decision="ServerReady"} >= 1',
        'llamacontroller_reconciles_total{job="operator",result="ok",decision="SlotTaken"} >= 1',
        'llamacontroller_apply_to_ready_seconds_count{job="operator"} >= 1',
        calls + 'verb="create",resource="pods",code="201"} >= 1',
        calls + 'verb="patch",resource="llamamodels/status"} >= 1',
        calls + 'verb="watch",resource="llamamodels"} >= 1',
        'llamacontroller_kube_api_call_duration_seconds_count{verb="list",resource="nodes"} >= 1',
        "histogram_quantile(0.5, sum by (le) (llamacontroller_reconcile_duration_seconds_bucket)) > 0",
    ):
        eventually(lambda expr=expr: found(expr), timeout=30, what=expr)

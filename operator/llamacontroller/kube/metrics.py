"""The operator's Prometheus metrics: reconciles, calls to the Kubernetes API, and the cluster as its
cache holds it (served on ``/metrics`` beside ``/healthz``: kube/endpoint.py).

Gauges of the cluster (LlamaModels per phase, slots held and LlamaModels waiting per node) are
counted from the cache at each scrape, so they cannot drift from what the operator decides on.
Label values are bounded: phases, the reasons the code writes, Kubernetes verbs, the resources the
operator calls, HTTP statuses, and node names of the cluster.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from llamacontroller.ledger import holds_slot, status_of
from llamacontroller.resource import Phase

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
NO_PHASE = "None"  # a LlamaModel the operator has not reported on yet
NO_DECISION = "none"  # a reconcile that decided nothing (the LlamaModel is gone, or it failed)

# A reconcile reads memory and writes a few objects: milliseconds, seconds when the API is slow.
RECONCILE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# From apply to Ready: scheduling, the image, the model file read into VRAM: seconds to half an hour.
READY_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 180, 300, 600, 900, 1200, 1800, 3600)

WRITE_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
ApiObserver = Callable[[str, str, str, float], None]  # verb, resource, code, seconds


def verb_and_resource(method: str, path: str, params: httpx.QueryParams) -> tuple[str, str]:
    """The Kubernetes verb and resource of an API call (``list``, ``pods``; ``patch``,
    ``llamamodels/status``), from its method and path."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        rest = parts[2:]  # after /api/v1
    elif parts[:1] == ["apis"]:
        rest = parts[3:]  # after /apis/group/version
    else:
        return method.lower(), "/".join(parts[:1]) or "/"  # /version, /healthz
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        rest = rest[2:]  # a namespaced resource
    resource, named = (rest[0] if rest else "", len(rest) > 1)
    if len(rest) > 2:
        resource = f"{resource}/{rest[2]}"  # a subresource: status
    if method == "GET":
        verb = "watch" if params.get("watch") in ("true", "1") else "get" if named else "list"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
            method, method.lower()
        )
    return verb, resource or "/"


STARTED = "llamacontroller.started"  # a request's extension: when it was sent


def metered_hooks(observe: ApiObserver) -> dict[str, list[Callable[..., Any]]]:
    """httpx event hooks that tell ``observe`` each call's verb, resource, status and time to its
    answer's headers (a call that gets no answer raises before the response hook: not counted)."""

    async def sent(request: httpx.Request) -> None:
        request.extensions[STARTED] = time.monotonic()

    async def answered(response: httpx.Response) -> None:
        request = response.request
        verb, resource = verb_and_resource(request.method, request.url.path, request.url.params)
        seconds = time.monotonic() - request.extensions.get(STARTED, time.monotonic())
        observe(verb, resource, str(response.status_code), seconds)

    return {"request": [sent], "response": [answered]}


def cluster_counts(
    llamamodels: Iterable[dict[str, Any]],
) -> tuple[Tally[str], Tally[str], Tally[str]]:
    """LlamaModels per phase, slots held per node and LlamaModels waiting per node, as their
    statuses say."""
    phases: Tally[str] = Tally({phase.value: 0 for phase in Phase})
    held: Tally[str] = Tally()
    waiting: Tally[str] = Tally()
    for body in llamamodels:
        status = status_of(body)
        phases[status.phase.value if status.phase else NO_PHASE] += 1
        if status.node and holds_slot(status):
            held[status.node] += 1
        if status.node and status.phase is Phase.WAITING:
            waiting[status.node] += 1
    return phases, held, waiting


class ClusterCollector(Collector):
    """The cluster gauges, counted at each scrape from ``llamamodels()`` (the operator's cache)."""

    def __init__(self, llamamodels: Callable[[], list[dict[str, Any]]]) -> None:
        self.llamamodels = llamamodels

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phases, held, waiting = cluster_counts(self.llamamodels())
        by_phase = GaugeMetricFamily("llamacontroller_llamamodels", "LlamaModels by phase.", labels=["phase"])
        for phase, count in sorted(phases.items()):
            by_phase.add_metric([phase], count)
        slots = GaugeMetricFamily(
            "llamacontroller_slots_held", "Slots granted to a LlamaModel, by node.", labels=["node"]
        )
        for node, count in sorted(held.items()):
            slots.add_metric([node], count)
        queue = GaugeMetricFamily(
            "llamacontroller_llamamodels_waiting", "LlamaModels waiting for a slot, by node.", labels=["node"]
        )
        for node, count in sorted(waiting.items()):
            queue.add_metric([node], count)
        yield from (by_phase, slots, queue)

    def describe(self) -> list[GaugeMetricFamily]:
        return []  # counted at each scrape: nothing to check at registration


class OperatorMetrics:
    """The operator's metrics in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.reconciles = Counter(
            "llamacontroller_reconciles",
            "Reconciles of a LlamaModel, by result (ok, gone, error) and decision (the reason reported).",
            ["result", "decision"],
            registry=self.registry,
        )
        self.reconcile_duration = Histogram(
            "llamacontroller_reconcile_duration_seconds",
            "Time of one reconcile: observe, decide, act, report.",
            buckets=RECONCILE_BUCKETS,
            registry=self.registry,
        )
        self.api_calls = Counter(
            "llamacontroller_kube_api_calls",
            "Calls to the Kubernetes API, by verb, resource and status code ('error': no answer).",
            ["verb", "resource", "code"],
            registry=self.registry,
        )
        self.api_duration = Histogram(
            "llamacontroller_kube_api_call_duration_seconds",
            "Time from a call to the Kubernetes API to its answer's headers.",
            ["verb", "resource"],
            buckets=API_BUCKETS,
            registry=self.registry,
        )
        self.apply_to_ready = Histogram(
            "llamacontroller_apply_to_ready_seconds",
            "Time from a LlamaModel's creation or spec change to its Ready.",
            buckets=READY_BUCKETS,
            registry=self.registry,
        )
        self._cluster: ClusterCollector | None = None

    def watch_cluster(self, llamamodels: Callable[[], list[dict[str, Any]]]) -> None:
        """Count the cluster gauges from this source from now on."""
        if self._cluster is None:
            self._cluster = ClusterCollector(llamamodels)
            self.registry.register(self._cluster)
        else:
            self._cluster.llamamodels = llamamodels

    def api_call(self, verb: str, resource: str, code: str, seconds: float) -> None:
        self.api_calls.labels(verb, resource, code).inc()
        self.api_duration.labels(verb, resource).observe(seconds)

    def reconciled(self, result: str, decision: str | None, seconds: float) -> None:
        self.reconciles.labels(result, decision or NO_DECISION).inc()
        self.reconcile_duration.observe(seconds)

    def ready(self, applied: datetime, now: datetime) -> None:
        self.apply_to_ready.observe(max(0.0, (now - applied).total_seconds()))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

"""Requests and generated tokens per second per model, from the gateway's own metrics (the counters
of serving/metrics.py that /metrics exposes): what this gateway process answered over the last
``WINDOW`` seconds. With several gateway replicas each sees its share; Prometheus sums them
(docs/metrics.md)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

WINDOW = 30.0  # seconds the rates are averaged over
REQUESTS = "llamacontroller_requests"
GENERATED = "llamacontroller_generated_tokens"

Counts = Mapping[str, tuple[float, float]]  # model -> (requests, generated tokens) so far


@dataclass(frozen=True)
class Traffic:
    requests_per_second: float
    tokens_per_second: float


def counts(registry: CollectorRegistry) -> dict[str, tuple[float, float]]:
    """Each model's requests and generated tokens so far, summed over routes and status codes."""
    found: dict[str, list[float]] = {}
    for family in registry.collect():
        if family.name not in (REQUESTS, GENERATED):
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals = found.setdefault(sample.labels.get("model", ""), [0.0, 0.0])
                totals[0 if family.name == REQUESTS else 1] += sample.value
    return {model: (r, t) for model, (r, t) in found.items()}


def rates(old: Counts, new: Counts, seconds: float) -> dict[str, Traffic]:
    """Per model, what the counters grew by per second between two readings."""
    if seconds <= 0:
        return {}
    result = {}
    for model, (requests, tokens) in new.items():
        before = old.get(model, (0.0, 0.0))
        result[model] = Traffic((requests - before[0]) / seconds, (tokens - before[1]) / seconds)
    return result


class TrafficMeter:
    """Readings of the counters as the pages ask (about every second while one is open); the rates
    span the oldest reading within the window and the newest."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self.readings: deque[tuple[float, dict[str, tuple[float, float]]]] = deque()

    def observe(self, registry: CollectorRegistry, now: float) -> dict[str, Traffic]:
        self.readings.append((now, counts(registry)))
        while len(self.readings) > 2 and now - self.readings[1][0] >= self.window:
            self.readings.popleft()
        (then, old), (_, new) = self.readings[0], self.readings[-1]
        return rates(old, new, now - then) if now - then >= 1.0 else {}

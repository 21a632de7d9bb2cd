"""Prometheus metrics of the API (the adapter, the cluster gateway, the local runtime's gateway):
what the app observes of each request, served on ``/metrics`` in Prometheus's text format.

Each app has a registry of its own (no global state: two apps in one process, as in the tests,
count apart). Label values are bounded: ``model`` is a name from the catalog (LlamaModels, the
adapter's one llama-server), ``unknown`` for a model the catalog does not serve and ``none`` for
a route that names no model; ``route`` is the route's pattern (``/v1/models/{model}``), ``other``
for a path no route has; ``code`` is the HTTP status sent (499: the client went away first).

Time to first token and time per output token are what a streaming client sees: from the request's
arrival to the first byte of its streamed answer, and from there to the last byte over the tokens
generated after the first. Answers that are not streamed to the client observe neither (their
client sees only the whole answer: ``request_duration_seconds``).
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.process_collector import ProcessCollector

from llamacontroller.serving.web.asgi import CLIENT_CLOSED_REQUEST
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import Response
from llamacontroller.serving.web.router import Handler, Router

METRICS_PATH = "/metrics"
METRICS = "metrics"  # the app.state key of the app's ServingMetrics
OTHER_ROUTE = "other"  # a path no route answers (404)

# Whole requests: from a few milliseconds (listings, a one-token answer) to minutes (long answers).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
# The prompt's processing: tens of milliseconds for a short prompt on a GPU, seconds for a long one.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 20, 30, 60)
# Decoding: a few milliseconds per token on a GPU (200 tokens/s) to a second on a starved CPU.
TPOT_BUCKETS = (0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1)

# llama-server's token counts at the end of an OpenAI answer (its last events when streamed): the
# ``timings`` of a completion (streamed or not: prompt_n + cache_n, predicted_n, as the Ollama
# routes count them), else the ``usage`` of embeddings.
TIMED_PROMPT = re.compile(rb'"(?:prompt_n|cache_n)"\s*:\s*(\d+)')
TIMED_GENERATED = re.compile(rb'"predicted_n"\s*:\s*(\d+)')
USAGE_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
TAIL = 4096  # bytes of an answer's end kept to find them


class ServingMetrics:
    """The API's metrics in a registry of their own; ``observe`` records one finished request."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # CPU, memory, open files of this process
        by_route = ["model", "route"]
        self.requests = Counter(
            "llamacontroller_requests",
            "Requests answered, by model, route and HTTP status (499: the client went away first).",
            ["model", "route", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "llamacontroller_request_duration_seconds",
            "Time from a request's arrival to its answer's last byte.",
            by_route,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "llamacontroller_time_to_first_token_seconds",
            "Time from a request's arrival to the first byte of its streamed answer.",
            by_route,
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            "llamacontroller_time_per_output_token_seconds",
            "Time per generated token after the first, in streamed answers.",
            by_route,
            buckets=TPOT_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "llamacontroller_prompt_tokens",
            "Prompt tokens llama-server processed for the answers (its timings and usage).",
            by_route,
            registry=self.registry,
        )
        self.generated_tokens = Counter(
            "llamacontroller_generated_tokens",
            "Tokens llama-server generated for the answers (its timings and usage).",
            by_route,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "llamacontroller_requests_in_flight",
            "Requests being answered now.",
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "llamacontroller_upstream_errors",
            "Requests that llama-server failed: kind 'error' (it answered an error) or 'unavailable' "
            "(unreachable, timed out, or died mid-answer).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.disconnects = Counter(
            "llamacontroller_client_disconnects",
            "Requests whose client went away before their answer was complete.",
            by_route,
            registry=self.registry,
        )

        # prometheus_client's labels() costs more than the update itself: each series is looked
        # up once, then kept (the labels are bounded, and so are these)
        self._children: dict[tuple[str, ...], Any] = {}

    def child(self, metric: Counter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once."""
        key = (metric._name, *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def started(self, request: Request) -> None:
        self.in_flight.inc()

    def finished(self, request: Request, router: Router, seconds: float) -> None:
        self.in_flight.dec()
        child = self.child
        model = request.model
        route = router.pattern(request.path) or OTHER_ROUTE
        code = CLIENT_CLOSED_REQUEST if request.client_gone or not request.status else request.status
        child(self.requests, model, route, str(code)).inc()
        child(self.duration, model, route).observe(seconds)
        if request.client_gone:
            child(self.disconnects, model, route).inc()
        if request.upstream_failure:
            child(self.upstream_errors, model, request.upstream_failure).inc()
        tokens = request.tokens
        if tokens is None and request.tail:
            tokens = tokens_in(request.tail)
        if tokens is not None:
            child(self.prompt_tokens, model, route).inc(tokens[0])
            child(self.generated_tokens, model, route).inc(tokens[1])
        if request.first_write:
            child(self.ttft, model, route).observe(request.first_write - request.arrived)
            if tokens is not None and tokens[1] > 1:
                per_token = (request.last_write - request.first_write) / (tokens[1] - 1)
                child(self.tpot, model, route).observe(per_token)

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def metrics_handler(metrics: ServingMetrics) -> Handler:
    async def handler(request: Request) -> Response:
        return metrics.exposition()

    return handler


def tokens_in(tail: bytes) -> tuple[int, int] | None:
    """Prompt and generated tokens from the end of an OpenAI answer: its last ``timings``, else its
    ``usage``; None if it has neither."""
    generated = TIMED_GENERATED.findall(tail)
    if generated:
        timings = tail[tail.rindex(b'"timings"') :]  # the last event's: cache_n and prompt_n
        return sum(int(n) for n in TIMED_PROMPT.findall(timings)), int(generated[-1])
    prompt = USAGE_PROMPT.findall(tail)
    return (int(prompt[-1]), 0) if prompt else None

"""What the adapter costs: llama-server directly vs through the adapter, in one run.

    .venv/bin/python bench/adapter_overhead.py [--requests 300] [--streams 7] [--tokens 2000]

Starts a llama-server with the tiny demo model (arguments rendered as for a Pod, ``-t 1``) and the
adapter (``llamacontroller adapter``) in front of it, measures, prints a table, and stops
both. Latency: sequential non-stream requests for one token, direct and adapted interleaved so that
noise from other processes hits both alike; p50/p99 and what the adapter adds. Throughput: streams
of ``--tokens`` tokens, tokens per second over the whole request, median of ``--streams`` runs.
Goal: at most 1 ms added at p50, at least 0.97x the tokens per second. The adapter runs on uvloop
when that is importable (e.g. ``PYTHONPATH=<dir with uvloop>``), else on asyncio's loop.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from llamacontroller.config import load_config
from llamacontroller.demo_model import write_demo_model
from llamacontroller.local.binary import find_llama_server
from llamacontroller.local.server import LlamaServerProcess
from llamacontroller.render.args import with_local_endpoint
from llamacontroller.render.children import render_children
from llamacontroller.resource import parse_llamamodel

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MODEL = "phi-4"
PROMPT = "hello"
MESSAGES = [{"role": "user", "content": PROMPT}]
TEMPLATED = "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"  # the demo model's ChatML


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def server_args(model_file: Path, port: int) -> list[str]:
    """The Pod's llama-server arguments (one thread, one slot, endless streams), made local."""
    body = {
        "apiVersion": "llamacontroller.io/v1alpha1",
        "kind": "LlamaModel",
        "metadata": {"name": MODEL, "namespace": "default", "uid": "bench"},
        "spec": {
            "model": {"path": "demo.gguf"},
            "nodeName": "bench",
            "gpu": {"mode": "single", "gpuId": 0},
            "parameters": {"threads": 1, "parallel": 1, "extraArgs": ["--context-shift"]},
        },
    }
    pod = render_children(parse_llamamodel(body), load_config(REPO / "config" / "operator.yaml")).pod
    return with_local_endpoint(pod["spec"]["containers"][0]["args"], HOST, port, str(model_file))


class Adapter:
    def __init__(self, upstream: str, log: Path) -> None:
        self.url = f"http://{HOST}:{free_port()}"
        self.log = log
        command = [sys.executable, "-m", "llamacontroller.cli", "adapter", "--upstream", upstream, "--listen"]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, self.url.removeprefix("http://")],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the adapter exited:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + "/api/tags", timeout=5).json()["models"]:
                    return
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.1)
        raise RuntimeError("the adapter did not become ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@dataclass
class Case:
    name: str
    direct: tuple[str, dict]
    adapted: tuple[str, dict]


def latency_cases(direct: str, adapted: str) -> list[Case]:
    one = {"options": {"num_predict": 1}, "stream": False}
    return [
        Case(
            "generate raw vs /completion",
            (f"{direct}/completion", {"prompt": PROMPT, "n_predict": 1}),
            (f"{adapted}/api/generate", {"model": MODEL, "prompt": PROMPT, "raw": True} | one),
        ),
        Case(
            "generate (templated) vs /completion",
            (f"{direct}/completion", {"prompt": TEMPLATED, "n_predict": 1}),
            (f"{adapted}/api/generate", {"model": MODEL, "prompt": PROMPT} | one),
        ),
        Case(
            "/api/chat vs /v1/chat/completions",
            (f"{direct}/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 1}),
            (f"{adapted}/api/chat", {"model": MODEL, "messages": MESSAGES} | one),
        ),
        Case(
            "/v1/chat/completions passthrough",
            (f"{direct}/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 1}),
            (f"{adapted}/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "max_tokens": 1}),
        ),
    ]


def stream_cases(direct: str, adapted: str, tokens: int) -> list[Case]:
    return [
        Case(
            "generate stream vs /completion stream",
            (f"{direct}/completion", {"prompt": PROMPT, "n_predict": tokens, "stream": True}),
            (
                f"{adapted}/api/generate",
                {"model": MODEL, "prompt": PROMPT, "raw": True, "options": {"num_predict": tokens}},
            ),
        ),
        Case(
            "/api/chat stream vs chat SSE",
            (f"{direct}/v1/chat/completions", {"messages": MESSAGES, "max_tokens": tokens, "stream": True}),
            (
                f"{adapted}/api/chat",
                {"model": MODEL, "messages": MESSAGES, "options": {"num_predict": tokens}},
            ),
        ),
        Case(
            "/v1/chat/completions stream passthrough",
            (f"{direct}/v1/chat/completions", {"messages": MESSAGES, "max_tokens": tokens, "stream": True}),
            (
                f"{adapted}/v1/chat/completions",
                {"model": MODEL, "messages": MESSAGES, "max_tokens": tokens, "stream": True},
            ),
        ),
    ]


def timed(client: httpx.Client, url: str, body: dict) -> float:
    started = time.perf_counter()
    client.post(url, json=body).raise_for_status()
    return time.perf_counter() - started


def streamed(client: httpx.Client, url: str, body: dict) -> tuple[float, int]:
    """Seconds and the number of token events of one stream, read line by line as a client does."""
    started = time.perf_counter()
    events = 0
    with client.stream("POST", url, json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            events += bool(line) and '"done":true' not in line and line != "data: [DONE]"
    return time.perf_counter() - started, events


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def interleave(
    count: int, run: Callable[[tuple[str, dict]], float], case: Case
) -> tuple[list[float], list[float]]:
    direct, adapted = [], []
    for _ in range(count):
        direct.append(run(case.direct))
        adapted.append(run(case.adapted))
    return direct, adapted


def measure(direct_url: str, adapted_url: str, requests: int, streams: int, tokens: int) -> None:
    rows = []
    with httpx.Client(timeout=120) as client:
        for case in latency_cases(direct_url, adapted_url):
            interleave(20, lambda call: timed(client, *call), case)  # warm up caches and connections
            direct, adapted = interleave(requests, lambda call: timed(client, *call), case)
            d50, a50 = percentile(direct, 0.5) * 1e3, percentile(adapted, 0.5) * 1e3
            d99, a99 = percentile(direct, 0.99) * 1e3, percentile(adapted, 0.99) * 1e3
            rows.append(
                (
                    case.name,
                    f"{d50:.2f}",
                    f"{a50:.2f}",
                    f"{a50 - d50:+.2f}",
                    f"{d99:.2f}",
                    f"{a99:.2f}",
                    f"{a99 - d99:+.2f}",
                )
            )
        print_table(
            f"latency, ms, {requests} one-token requests each",
            ("case", "direct p50", "adapter p50", "added p50", "direct p99", "adapter p99", "added p99"),
            rows,
        )
        rows = []
        for case in stream_cases(direct_url, adapted_url, tokens):
            runs = [(streamed(client, *case.direct), streamed(client, *case.adapted)) for _ in range(streams)]
            direct_rate = statistics.median(n / s for (s, n), _ in runs)
            adapted_rate = statistics.median(n / s for _, (s, n) in runs)
            rows.append(
                (case.name, f"{direct_rate:.0f}", f"{adapted_rate:.0f}", f"{adapted_rate / direct_rate:.3f}x")
            )
        print_table(
            f"streaming, tokens/s over {tokens}-token streams, median of {streams}",
            ("case", "direct", "adapter", "ratio"),
            rows,
        )


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    for row in (header, *rows):
        print(
            "  ".join(
                str(cell).rjust(width) if i else str(cell).ljust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="latency samples per case and side")
    parser.add_argument("--streams", type=int, default=7, help="streams per case and side")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per stream")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="adapter-bench-") as tmp:
        workdir = Path(tmp)
        model = write_demo_model(workdir / "demo.gguf")
        port = free_port()
        server = LlamaServerProcess(
            find_llama_server(), server_args(model, port), HOST, port, workdir / "server.log"
        )
        adapter: Adapter | None = None
        try:
            server.start()
            server.wait_healthy()
            adapter = Adapter(server.url, workdir / "adapter.log")
            adapter.wait_ready()
            print(f"llama-server {server.url}, adapter {adapter.url}, {os.cpu_count()} CPUs")
            measure(server.url, adapter.url, args.requests, args.streams, args.tokens)
        finally:
            if adapter is not None:
                adapter.stop()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

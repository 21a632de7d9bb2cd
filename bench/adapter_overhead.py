"""What the adapter costs: llama-server directly vs through the adapter, in one run.

    .venv/bin/python bench/adapter_overhead.py [--model tiny|smollm2] [--requests 300] [--streams 11]
        [--tokens 2000] [--long-tokens 48]

Starts a llama-server with a model (``tiny``: the generated model of the tests, whose tokens cost
almost nothing, so the adapter's share is as large as it gets; ``smollm2``: the real SmolLM2-135M
of the demo, for per-token figures at a real decode speed), its arguments rendered as for a Pod
(``-t 1``), the
adapter (``llamacontroller adapter``) in front of it, and ``bare_relay.py`` (the adapter's HTTP stack
with nothing on top: what any relay on it costs on this machine), measures, prints a table, and
stops them. Latency: sequential non-stream requests for one token, direct, relayed and adapted, the
calls of every case in one round shuffled anew each round, so that noise from other processes and
the host's slower phases hit all alike; p50/p99, what the relay and the adapter add, and the
adapter's p50 over the direct one. Throughput: streams of ``--tokens`` tokens, tokens per second
over the whole request, median of ``--streams`` runs; the ratio is the median of the ratios of each
adapted stream to the direct one run next to it (before it in one pair, after it in the next). Goal:
at most 1 ms added at p50, at least 0.97x the tokens per second.

``/api/chat`` is measured twice: against llama-server's chat endpoint (what its clients get instead)
and against ``/completion`` with the prompt the adapter renders for it (the same upstream work:
what the adapter's hop costs).

A last table, outside the goal: non-stream answers of ``--long-tokens`` tokens. The adapter asks
llama-server for a stream even when its client wants one answer, so that a client that goes away
stops the generation at once (Ollama's server does the same with its runner); llama-server pays for
streaming per token. The "direct streamed" column is that cost without the adapter: the same
request to llama-server, streamed and read to its end.

Between two samples the client spins for ``--pause`` seconds: the adapter works a little after an
answer (it opens the connection the next request will take), and that must not run while the next
sample is timed. Spinning, not sleeping: on a VM a sleeping CPU takes long to wake, and every sample
would then measure how often the processes on its path wake CPUs rather than what they do.
"""

from __future__ import annotations

import argparse
import os
import random
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
from report import print_table  # bench/report.py: a script's own folder comes first on sys.path

from llamacontroller.config import load_config
from llamacontroller.demo_model import write_demo_model
from llamacontroller.local.binary import find_llama_server
from llamacontroller.local.real_model import real_model_path
from llamacontroller.local.server import LlamaServerProcess
from llamacontroller.render.args import on_this_machine, server_args
from llamacontroller.render.children import render_children
from llamacontroller.resource import parse_llamamodel

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
MODEL = "phi-4"
PROMPT = "hello"
MESSAGES = [{"role": "user", "content": PROMPT}]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def bench_server_args(model_file: Path, port: int) -> list[str]:
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
    children = render_children(parse_llamamodel(body), load_config())
    return server_args(on_this_machine(children.server, HOST, port, str(model_file), None))


class Relay:
    """A process in front of llama-server: the adapter, or the bare relay that is its baseline."""

    def __init__(self, name: str, command: list[str], log: Path) -> None:
        self.name = name
        self.url = f"http://{HOST}:{free_port()}"
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, self.url.removeprefix("http://")],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {self.name} exited:\n{self.log.read_text()}")
            try:
                if httpx.get(self.url + path, timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the {self.name} did not become ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start_relays(upstream: str, workdir: Path) -> list[Relay]:
    adapter = [sys.executable, "-m", "llamacontroller.cli", "adapter", "--upstream", upstream, "--listen"]
    bare = [sys.executable, str(Path(__file__).with_name("bare_relay.py")), upstream]
    relays = [
        Relay("adapter", adapter, workdir / "adapter.log"),
        Relay("bare relay", bare, workdir / "relay.log"),
    ]
    relays[0].wait_ready("/api/tags")  # 200 once it knows the model
    relays[1].wait_ready("/health")
    return relays


@dataclass
class Case:
    name: str
    direct: tuple[str, dict]
    adapted: tuple[str, dict]


def latency_cases(direct: str, adapted: str, templated: str) -> list[Case]:
    one = {"options": {"num_predict": 1}, "stream": False}
    return [
        Case(
            "generate raw vs /completion",
            (f"{direct}/completion", {"prompt": PROMPT, "n_predict": 1}),
            (f"{adapted}/api/generate", {"model": MODEL, "prompt": PROMPT, "raw": True} | one),
        ),
        Case(
            "generate (templated) vs /completion",
            (f"{direct}/completion", {"prompt": templated, "n_predict": 1}),
            (f"{adapted}/api/generate", {"model": MODEL, "prompt": PROMPT} | one),
        ),
        Case(
            "/api/chat vs /v1/chat/completions",
            (f"{direct}/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 1}),
            (f"{adapted}/api/chat", {"model": MODEL, "messages": MESSAGES} | one),
        ),
        Case(  # the same upstream work: a plain chat's prompt renders from the adapter's skeleton
            "/api/chat vs /completion",
            (f"{direct}/completion", {"prompt": templated, "n_predict": 1}),
            (f"{adapted}/api/chat", {"model": MODEL, "messages": MESSAGES} | one),
        ),
        Case(
            "/v1/chat/completions passthrough",
            (f"{direct}/v1/chat/completions", {"messages": MESSAGES, "max_tokens": 1}),
            (f"{adapted}/v1/chat/completions", {"model": MODEL, "messages": MESSAGES, "max_tokens": 1}),
        ),
    ]


def stream_cases(direct: str, adapted: str, tokens: int, templated: str) -> list[Case]:
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
            "/api/chat stream vs /completion stream",
            (f"{direct}/completion", {"prompt": templated, "n_predict": tokens, "stream": True}),
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
    """Seconds and the number of token events of one stream, read line by line as a client does.

    On a connection of its own: llama-server closes a streamed answer's connection, and a request
    right after it could otherwise take that connection before its close is seen."""
    started = time.perf_counter()
    events = 0
    with client.stream("POST", url, json=body, headers={"Connection": "close"}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            events += bool(line) and '"done":true' not in line and line != "data: [DONE]"
    return time.perf_counter() - started, events


def run_call(client: httpx.Client, url: str, body: dict) -> float:
    return streamed(client, url, body)[0] if body.get("stream") else timed(client, url, body)


def long_answer_calls(direct: str, adapted: str, tokens: int) -> list[tuple[str, dict]]:
    """Direct, direct streamed, adapted: greedy, so that all three generate the same tokens."""
    greedy = {"prompt": PROMPT, "n_predict": tokens, "temperature": 0}
    ollama = {"model": MODEL, "prompt": PROMPT, "raw": True, "stream": False}
    return [
        (f"{direct}/completion", greedy),
        (f"{direct}/completion", greedy | {"stream": True}),
        (f"{adapted}/api/generate", ollama | {"options": {"num_predict": tokens, "temperature": 0}}),
    ]


def stream_pair(
    client: httpx.Client, case: Case, first_direct: bool
) -> tuple[tuple[float, int], tuple[float, int]]:
    """A direct and an adapted stream, back to back; the order alternates between pairs so that a
    host getting faster or slower over a run favours neither side."""
    if first_direct:
        return streamed(client, *case.direct), streamed(client, *case.adapted)
    adapted = streamed(client, *case.adapted)
    return streamed(client, *case.direct), adapted


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spin(seconds: float) -> None:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass


def interleave(
    count: int, run: Callable[[tuple[str, dict]], float], calls: list[tuple[str, dict]], pause: float
) -> list[list[float]]:
    """Each call once per round, in an order shuffled anew each round (seeded: runs are alike).

    The request that follows a direct one takes a little longer (0.01-0.07 ms, measured with three
    identical relays): in a fixed or merely rotated order some call follows the direct one more
    often than the others; shuffled, none does. And the host's slower phases (seconds long) hit
    every call alike, wherever it stands in the list."""
    order = random.Random(0)
    samples: list[list[float]] = [[] for _ in calls]
    positions = list(range(len(calls)))
    for _ in range(count):
        order.shuffle(positions)
        for at in positions:
            samples[at].append(run(calls[at]))
            spin(pause)
    return samples


GOAL_ADDED_MS = 1.0  # at p50
GOAL_RATIO = 0.97  # of the direct tokens per second


def measure(direct_url: str, relay_url: str, adapted_url: str, args: argparse.Namespace) -> None:
    rows = []
    added: list[float] = []
    ratios: list[float] = []
    with httpx.Client(timeout=120) as client:
        # the prompt llama-server renders for MESSAGES with the model's own template
        templated = client.post(f"{direct_url}/apply-template", json={"messages": MESSAGES}).json()["prompt"]
        # every case's calls in one shuffled round: a slower phase of the host cannot fall on one case
        cases = latency_cases(direct_url, adapted_url, templated)
        calls = [
            call
            for case in cases
            for call in (
                case.direct,
                (case.direct[0].replace(direct_url, relay_url, 1), case.direct[1]),
                case.adapted,
            )
        ]
        interleave(20, lambda call: timed(client, *call), calls, args.pause)  # warm up
        samples = interleave(args.requests, lambda call: timed(client, *call), calls, args.pause)
        for index, case in enumerate(cases):
            direct, relay, adapted = (
                [percentile(side, q) * 1e3 for q in (0.5, 0.99)]
                for side in samples[3 * index : 3 * index + 3]
            )
            added.append(adapted[0] - direct[0])
            rows.append(
                (
                    case.name,
                    f"{direct[0]:.2f}",
                    f"{relay[0] - direct[0]:+.2f}",
                    f"{adapted[0] - direct[0]:+.2f}",
                    f"{adapted[0] / direct[0]:.2f}x",
                    f"{direct[1]:.2f}",
                    f"{relay[1] - direct[1]:+.2f}",
                    f"{adapted[1] - direct[1]:+.2f}",
                )
            )
        print_table(
            f"latency, ms, {args.requests} one-token requests each",
            ("case", "direct p50", "bare relay", "adapter", "ratio", "direct p99", "bare relay", "adapter"),
            rows,
        )
        rows = []
        for case in stream_cases(direct_url, adapted_url, args.tokens, templated):
            runs = [stream_pair(client, case, first_direct=i % 2 == 0) for i in range(args.streams)]
            direct_rate = statistics.median(n / s for (s, n), _ in runs)
            adapted_rate = statistics.median(n / s for _, (s, n) in runs)
            # each adapted stream against the direct one next to it: the host's slower and faster
            # phases (seconds long here) hit both sides of a pair alike
            ratio = statistics.median((na / sa) / (nd / sd) for (sd, nd), (sa, na) in runs)
            ratios.append(ratio)
            rows.append((case.name, f"{direct_rate:.0f}", f"{adapted_rate:.0f}", f"{ratio:.3f}x"))
        print_table(
            f"streaming, tokens/s over {args.tokens}-token streams, median of {args.streams}",
            ("case", "direct", "adapter", "ratio (paired)"),
            rows,
        )
        long_answers(client, direct_url, adapted_url, args)
    latency_met = sum(a <= GOAL_ADDED_MS for a in added)
    streams_met = sum(r >= GOAL_RATIO for r in ratios)
    print(
        f"\ngoal: <= {GOAL_ADDED_MS:g} ms added at p50 in {latency_met}/{len(added)} cases, "
        f">= {GOAL_RATIO:g}x tokens/s in {streams_met}/{len(ratios)}"
    )


def long_answers(client: httpx.Client, direct_url: str, adapted_url: str, args: argparse.Namespace) -> None:
    calls = long_answer_calls(direct_url, adapted_url, args.long_tokens)
    generated = client.post(calls[-1][0], json=calls[-1][1]).json()["eval_count"]
    if generated != client.post(calls[0][0], json=calls[0][1]).json()["tokens_predicted"]:
        raise RuntimeError("the adapter generated another number of tokens than llama-server")
    interleave(20, lambda call: run_call(client, *call), calls, args.pause)  # warm up
    direct, direct_streamed, adapted = (
        percentile(samples, 0.5) * 1e3
        for samples in interleave(args.requests, lambda call: run_call(client, *call), calls, args.pause)
    )
    print_table(
        f"non-stream answers of {generated} tokens (outside the goal), ms at p50",
        ("case", "direct", "direct streamed", "adapter", "adapter vs direct streamed"),
        [
            (
                "generate raw vs /completion",
                f"{direct:.2f}",
                f"{direct_streamed - direct:+.2f}",
                f"{adapted - direct:+.2f}",
                f"{adapted - direct_streamed:+.2f}",
            )
        ],
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "smollm2"), default="tiny", help="the model served")
    parser.add_argument("--requests", type=int, default=300, help="latency samples per case and side")
    parser.add_argument("--streams", type=int, default=11, help="streams per case and side")
    parser.add_argument("--tokens", type=int, default=2000, help="tokens per stream")
    parser.add_argument("--long-tokens", type=int, default=48, help="tokens of the long non-stream answers")
    parser.add_argument("--pause", type=float, default=0.002, help="seconds spun between latency samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="adapter-bench-") as tmp:
        workdir = Path(tmp)
        if args.model == "smollm2":
            model = real_model_path(progress=print)
        else:
            model = write_demo_model(workdir / "demo.gguf")
        port = free_port()
        server = LlamaServerProcess(
            find_llama_server(), bench_server_args(model, port), HOST, port, workdir / "server.log"
        )
        relays: list[Relay] = []
        try:
            server.start()
            server.wait_healthy()
            relays = start_relays(server.url, workdir)
            adapter, bare = relays
            print(f"llama-server {server.url}, adapter {adapter.url}, bare relay {bare.url}")
            print(f"{os.cpu_count()} CPUs")
            print("added latency: what each adds to the direct request (p50 and p99 columns)")
            measure(server.url, bare.url, adapter.url, args)
        finally:
            for relay in relays:
                relay.stop()
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

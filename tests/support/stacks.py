"""A real llama-server (started from a Pod's rendered arguments) with the adapter in front of it:
a stack. The adapter runs as its own process, as in the Pod: ``llamacontroller adapter``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from llamacontroller.local.server import LlamaServerProcess, stop_process
from llamacontroller.serving.web.asgi import App
from llamacontroller.serving.web.server import Limits, Serving, listening_socket, new_event_loop
from tests.ports import free_port
from tests.support.builders import llamamodel
from tests.support.servers import local_args

HOST = "127.0.0.1"
MODEL = "phi-4"  # the LlamaModel's name: llama-server's --alias is phi-4:latest
ALIAS = "phi-4:latest"
# -t 1: with two threads on two cores requests sometimes stall. Context shift lets a stream run as
# long as a test needs (the demo model never stops by itself), so "still generating" is observable.
CHAT_PARAMETERS = {"threads": 1, "parallel": 2, "extraArgs": ["--context-shift"]}
EMBED_PARAMETERS = {"threads": 1, "embeddings": True, "pooling": "mean"}
KEYS_ENV = "LLAMACONTROLLER_API_KEYS"
# A 1x1 PNG, base64 as Ollama clients send images (llama-server scales it to the projector's size).
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGD4DwABBAEAwS2OUAAAAABJRU5ErkJggg=="
# Every final chunk carries all of these, as integers (the contract, restated for the tests).
METRICS = (
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
)


class AdapterProcess:
    """``llamacontroller adapter`` on a free port, stopped by pid."""

    def __init__(
        self, upstream: str, log_path: Path, args: tuple[str, ...] = (), env: dict | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.upstream = upstream
        self.log_path = log_path
        self.args = args
        self.env = {k: v for k, v in os.environ.items() if k != KEYS_ENV} | (env or {})
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "llamacontroller.cli", "adapter", "--upstream", self.upstream]
        command += ["--listen", f"{HOST}:{self.port}", *self.args]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, headers: dict | None = None, timeout: float = 60.0) -> None:
        """Up, and the model known (its metadata read): the listings then never race the warm-up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the adapter exited:\n{self.log_tail()}")
            try:
                tags = httpx.get(f"{self.url}/api/tags", headers=headers, timeout=5)
                if tags.status_code == 200 and tags.json()["models"]:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the adapter is not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        stop_process(self.process, timeout=timeout)


@dataclass
class Stack:
    """A llama-server and an adapter in front of it."""

    server: LlamaServerProcess
    adapter: AdapterProcess
    model_file: Path

    @property
    def url(self) -> str:
        return self.adapter.url

    @property
    def upstream(self) -> str:
        return self.server.url


class Stacks:
    """Starts stacks and stops every process it started (adapters first)."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.processes: list[LlamaServerProcess | AdapterProcess] = []

    def server(
        self, parameters: dict, model_file: Path, port: int | None = None, projector: Path | None = None
    ) -> LlamaServerProcess:
        port = port or free_port()
        model = {"path": model_file.name} | ({"projector": projector.name} if projector else {})
        body = llamamodel(name=MODEL, parameters=parameters, model=model)
        args = local_args(body, port, model_file, projector)
        server = LlamaServerProcess(self.binary, args, HOST, port, self.workdir / f"server-{port}.log")
        self.processes.append(server)
        server.start()
        server.wait_healthy()
        return server

    def adapter(self, upstream: str, args: tuple[str, ...] = (), env: dict | None = None) -> AdapterProcess:
        adapter = AdapterProcess(upstream, self.workdir / f"adapter-{len(self.processes)}.log", args, env)
        self.processes.append(adapter)
        adapter.start()
        return adapter

    def stack(self, parameters: dict, model_file: Path, projector: Path | None = None) -> Stack:
        server = self.server(parameters, model_file, projector=projector)
        adapter = self.adapter(server.url)
        adapter.wait_ready()
        return Stack(server, adapter, model_file)

    def stop(self) -> None:
        for process in sorted(self.processes, key=lambda p: not isinstance(p, AdapterProcess)):
            process.stop()
            assert process.process is not None and process.process.poll() is not None, "a process was left"


def busy_slots(upstream: str) -> int:
    slots = httpx.get(f"{upstream}/slots", timeout=10).json()
    return sum(1 for slot in slots if slot["is_processing"])


Scenario = Callable[[str], Awaitable[None]]


def serve_during(app: App, scenario: Scenario, limits: Limits | None = None) -> None:
    """Serve ``app`` on a free port of 127.0.0.1 (on uvloop, as in production) while ``scenario``
    runs against its URL."""

    async def main() -> None:
        serving = Serving(app, listening_socket("127.0.0.1", 0), limits or Limits())
        await serving.start()
        try:
            await scenario(serving.url)
        finally:
            await serving.stop()

    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        runner.run(main())

"""Fixtures: a real llama-server, started from the arguments rendered for the Pod, with the tiny
model. A pytest plugin (tests/conftest.py loads it), so every suite can start real servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llamacontroller.config import OperatorConfig
from llamacontroller.demo_model import write_demo_model, write_demo_projector
from llamacontroller.local.binary import find_llama_server
from llamacontroller.local.server import LlamaServerProcess
from tests.ports import free_port
from tests.support.servers import HOST, local_args, local_env


@pytest.fixture(scope="session")
def demo_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_model(tmp_path_factory.mktemp("models") / "demo.gguf")


@pytest.fixture(scope="session")
def demo_projector(demo_model: Path) -> Path:
    """The demo model's vision projector, beside it."""
    return write_demo_projector(demo_model.with_name("demo-mmproj.gguf"))


@pytest.fixture(scope="session")
def llama_server_binary() -> Path:
    return find_llama_server()  # a missing binary fails the tests: .ci/setup installs it


StartServer = Callable[..., LlamaServerProcess]


@pytest.fixture
def start_server(
    tmp_path: Path, demo_model: Path, demo_projector: Path, llama_server_binary: Path
) -> Iterator[StartServer]:
    """Start llama-server with the Pod's args (host, port, model files made local: the demo model,
    and its projector where the LlamaModel names one) and the GPU environment the local runtime
    gives it; stop it by pid."""
    started: list[LlamaServerProcess] = []

    def start(body: dict, config: OperatorConfig | None = None, wait: bool = True) -> LlamaServerProcess:
        port = free_port()
        projector = demo_projector if body["spec"]["model"].get("projector") else None
        args = local_args(body, port, demo_model, projector, config)
        log = tmp_path / f"server-{port}.log"
        env = local_env(body, config)
        server = LlamaServerProcess(llama_server_binary, args, HOST, port, log, env=env)
        started.append(server)
        server.start()
        if wait:
            server.wait_healthy()
        return server

    yield start
    for server in started:
        server.stop()
        assert server.process is not None and server.process.poll() is not None, "a server was left running"

"""A real llama-server, started from the arguments rendered for the Pod, with the tiny demo model.

A pytest plugin (tests/conftest.py loads it), so every suite can start real servers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llamacontroller.config import OperatorConfig
from llamacontroller.demo_model import write_demo_model, write_demo_projector
from llamacontroller.local.binary import find_llama_server
from llamacontroller.local.server import LlamaServerProcess
from llamacontroller.render.args import with_local_endpoint
from llamacontroller.render.children import render_children
from llamacontroller.resource import parse_llamamodel
from tests.ports import free_port
from tests.unit.helpers import repo_config

HOST = "127.0.0.1"


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


def pod_args(body: dict, config: OperatorConfig) -> list[str]:
    pod = render_children(parse_llamamodel(body), config).pod
    return pod["spec"]["containers"][0]["args"]


def local_args(
    body: dict,
    port: int,
    model_file: Path,
    projector_file: Path | None = None,
    config: OperatorConfig | None = None,
) -> list[str]:
    """The Pod's llama-server arguments for a process here: host, port and model files made local."""
    rendered = pod_args(body, config or repo_config())
    projector = str(projector_file) if projector_file else None
    return with_local_endpoint(rendered, HOST, port, str(model_file), projector)


StartServer = Callable[..., LlamaServerProcess]


@pytest.fixture
def start_server(
    tmp_path: Path, demo_model: Path, demo_projector: Path, llama_server_binary: Path
) -> Iterator[StartServer]:
    """Start llama-server with the Pod's args (host, port, model files made local: the demo model,
    and its projector where the LlamaModel names one); stop it by pid."""
    started: list[LlamaServerProcess] = []

    def start(body: dict, config: OperatorConfig | None = None, wait: bool = True) -> LlamaServerProcess:
        port = free_port()
        projector = demo_projector if body["spec"]["model"].get("projector") else None
        args = local_args(body, port, demo_model, projector, config)
        server = LlamaServerProcess(llama_server_binary, args, HOST, port, tmp_path / f"server-{port}.log")
        started.append(server)
        server.start()
        if wait:
            server.wait_healthy()
        return server

    yield start
    for server in started:
        server.stop()
        assert server.process is not None and server.process.poll() is not None, "a server was left running"

"""llama-server arguments for test processes: the Pod's own, with host, port and files made local."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.render.args import on_this_machine, server_args
from llamacontroller.render.children import render_children
from llamacontroller.render.gpus import process_env
from llamacontroller.resource import parse_llamamodel
from tests.support.builders import repo_config

HOST = "127.0.0.1"


def pod_args(body: dict[str, Any], config: OperatorConfig) -> list[str]:
    pod = render_children(parse_llamamodel(body), config).pod
    args: list[str] = pod["spec"]["containers"][0]["args"]
    return args


def local_args(
    body: dict[str, Any],
    port: int,
    model_file: Path,
    projector_file: Path | None = None,
    config: OperatorConfig | None = None,
) -> list[str]:
    """The Pod's llama-server arguments for a process here: host, port and model files made local."""
    children = render_children(parse_llamamodel(body), config or repo_config())
    projector = str(projector_file) if projector_file else None
    return server_args(on_this_machine(children.server, HOST, port, str(model_file), projector))


def local_env(body: dict[str, Any], config: OperatorConfig | None = None) -> dict[str, str]:
    """The GPU environment of the same server as a process here (what the local runtime sets)."""
    return process_env(render_children(parse_llamamodel(body), config or repo_config()).server.gpus)

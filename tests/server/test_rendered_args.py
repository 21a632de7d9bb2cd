"""The arguments rendered for a Pod start a real llama-server, which then serves."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from llamacontroller.config import GpuStrategy
from llamacontroller.local.server import LlamaServerProcess, ServerFailed
from tests.ports import free_port
from tests.server.fixtures import StartServer
from tests.support.builders import llamamodel, repo_config
from tests.support.paths import REPO
from tests.support.servers import HOST, local_args

# -t 1: with two threads on a two-core machine, requests sometimes stall.
ONE_THREAD = {"threads": 1}

PLACEMENTS = {
    "gpu0": {"mode": "single", "gpuId": 0},
    "gpu1": {"mode": "single", "gpuId": 1},
    "both": {"mode": "both"},
    "custom-split": {"mode": "both", "tensorSplit": "0.7,0.3"},
}

PARAMETER_SETS = {
    "ctx-and-parallel": {"ctxSize": 1024, "parallel": 2},
    "flash-attn-on": {"flashAttn": "on"},
    "flash-attn-off": {"flashAttn": "off"},
    "flash-attn-auto": {"flashAttn": "auto"},
    "batch": {"batchSize": 64, "nGpuLayers": 0},
    "extra-args": {"extraArgs": ["--jinja", "--ctx-size", "512"]},
}


def chat(url: str) -> dict:
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8},
        timeout=60,
    )
    response.raise_for_status()
    return response.json()


def assert_serves(url: str, alias: str) -> None:
    assert httpx.get(f"{url}/health", timeout=5).json() == {"status": "ok"}
    answer = chat(url)
    assert answer["choices"][0]["message"]["content"]
    assert answer["model"] == alias
    assert answer["usage"]["completion_tokens"] == 8
    # --metrics, rendered for every server: llama.cpp's own metrics on the port the slot's Service has
    metrics = httpx.get(f"{url}/metrics", timeout=5)
    assert metrics.status_code == 200 and "\nllamacpp:tokens_predicted_total " in metrics.text


@pytest.mark.parametrize("strategy", list(GpuStrategy), ids=[s.value for s in GpuStrategy])
@pytest.mark.parametrize("gpu", PLACEMENTS.values(), ids=PLACEMENTS.keys())
def test_each_slot_starts_and_serves(start_server: StartServer, gpu: dict, strategy: GpuStrategy):
    """Every strategy's GPU flags (--split-mode, --main-gpu, --tensor-split) on every slot are
    accepted by the real binary (this CPU build checks their syntax; placing on GPUs needs a GPU)."""
    server = start_server(llamamodel(gpu=gpu, parameters=ONE_THREAD), repo_config(gpu_strategy=strategy))
    assert_serves(server.url, "phi-4:latest")


def test_a_malformed_split_mode_is_refused_by_the_binary(
    tmp_path: Path, demo_model: Path, llama_server_binary: Path
):
    """The control for the test above: the binary does check --split-mode's value. (A LlamaModel
    cannot set it: the rendered args are changed here.)"""
    port = free_port()
    args = local_args(llamamodel(parameters=ONE_THREAD), port, demo_model, None, None)
    args[args.index("--split-mode") + 1] = "rows"
    server = LlamaServerProcess(llama_server_binary, args, HOST, port, tmp_path / "server.log")
    server.start()
    try:
        with pytest.raises(ServerFailed) as failure:
            server.wait_healthy()
    finally:
        server.stop()
    assert "--split-mode" in str(failure.value)


@pytest.mark.parametrize("parameters", PARAMETER_SETS.values(), ids=PARAMETER_SETS.keys())
def test_parameter_sets_start_and_serve(start_server: StartServer, parameters: dict):
    server = start_server(llamamodel(parameters=ONE_THREAD | parameters))
    assert_serves(server.url, "phi-4:latest")


EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_start_and_serve(start_server: StartServer, example: Path):
    body = yaml.safe_load(example.read_text())
    body["metadata"].update(namespace="default", uid="u")
    body["spec"].setdefault("parameters", {}).update(ONE_THREAD)
    server = start_server(body)
    alias = body["spec"]["model"].get("name") or body["metadata"]["name"]
    assert_serves(server.url, alias if ":" in alias else f"{alias}:latest")


def test_the_ctx_size_is_the_total_over_parallel_slots(start_server: StartServer):
    server = start_server(llamamodel(parameters=ONE_THREAD | {"ctxSize": 1024, "parallel": 2}))
    props = httpx.get(f"{server.url}/props", timeout=5).json()
    assert props["total_slots"] == 2
    assert props["default_generation_settings"]["n_ctx"] == 512


def test_a_rejected_argument_fails_with_the_servers_own_error(start_server: StartServer):
    with pytest.raises(ServerFailed) as failure:
        start_server(llamamodel(parameters=ONE_THREAD | {"extraArgs": ["--no-such-flag"]}))
    assert "--no-such-flag" in str(failure.value)


def test_a_projector_makes_the_server_take_images(start_server: StartServer):
    model = {"path": "phi-4.gguf", "projector": "phi-4-mmproj.gguf"}
    server = start_server(llamamodel(model=model, parameters=ONE_THREAD))
    assert httpx.get(f"{server.url}/props", timeout=5).json()["modalities"]["vision"] is True
    assert_serves(server.url, "phi-4:latest")

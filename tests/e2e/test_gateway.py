"""The cluster gateway: it watches LlamaModels on the emulated API and routes by model name to real
llama-servers (standing in for the slots' Services), proven with the official clients."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from llamacontroller.local.server import LlamaServerProcess
from tests.e2e.conftest import LLAMAMODELS, Cluster
from tests.e2e.test_operator import lm
from tests.ports import free_port
from tests.processes import interrupt
from tests.server.fixtures import StartServer
from tests.support.builders import llamamodel
from tests.support.polling import eventually
from tests.support.servers import local_args
from tests.support.stacks import AdapterProcess

pytestmark = pytest.mark.timeout(180)


class GatewayProcess:
    def __init__(self, cluster: Cluster, log_path: Path, keys: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        env.pop("LLAMACONTROLLER_API_KEYS", None)
        if keys is not None:
            env["LLAMACONTROLLER_API_KEYS"] = keys  # as the Deployment sets it from the Secret
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "llamacontroller.cli",
                    "gateway",
                    "--listen",
                    f"127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.log_path = log_path

    def stop(self) -> None:
        interrupt(self.process)


@pytest.fixture
def gateway(cluster: Cluster, tmp_path: Path) -> Iterator[GatewayProcess]:
    process = GatewayProcess(cluster, tmp_path / "gateway.log")
    eventually(lambda: _answers(process.url), what="the gateway to listen")
    yield process
    process.stop()
    assert "Traceback" not in process.log_path.read_text(errors="replace")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).text == "Ollama is running"
    except httpx.HTTPError:
        return False


def serve(
    cluster: Cluster, name: str, model: str, url: str, phase: str = "Ready", api_url: str | None = None
) -> None:
    """What the operator writes once the slot's server is ready (the endpoints local servers)."""
    if cluster.emulator.get(LLAMAMODELS, "default", name) is None:
        cluster.apply(lm(name, model={"name": model, "path": f"{name}.gguf"}))
    status = {"phase": phase, "model": model, "endpoint": url, "apiEndpoint": api_url}
    cluster.emulator.patch_status(LLAMAMODELS, "default", name, {"status": status})


def names(client: ollama.Client) -> set[str]:
    return {m.model for m in client.list().models}


def test_routes_by_model_name_to_each_slot(
    cluster: Cluster, gateway: GatewayProcess, start_server: StartServer
):
    coder = start_server(
        llamamodel(name="coder", model={"name": "coder:7b", "path": "c.gguf"}, parameters={"threads": 1})
    )
    phi = start_server(llamamodel(name="phi-4", gpu={"gpuId": 1}, parameters={"threads": 1}))
    serve(cluster, "coder", "coder:7b", coder.url)
    serve(cluster, "phi-4", "phi-4:latest", phi.url)
    serve(cluster, "loading", "big:70b", "http://127.0.0.1:9", phase="Loading")  # not Ready: not routed

    client = ollama.Client(host=gateway.url)
    eventually(lambda: names(client) == {"coder:7b", "phi-4:latest"}, timeout=30, what="both models listed")
    for model in ("coder:7b", "phi-4", "PHI-4:latest"):
        answer = client.chat(
            model=model, messages=[{"role": "user", "content": "hi"}], options={"num_predict": 3}
        )
        assert answer.model == model and answer.message.content and answer.eval_count == 3
    streamed = list(
        client.generate(model="coder:7b", prompt="hello", stream=True, options={"num_predict": 4})
    )
    assert streamed[-1].done and sum(1 for c in streamed if c.response) >= 1

    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="big:70b", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.status_code == 404

    openai_client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused")
    assert {m.id for m in openai_client.models.list().data} == {"coder:7b", "phi-4:latest"}
    chat = openai_client.chat.completions.create(
        model="phi-4", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


def test_follows_models_that_leave_and_come_back(
    cluster: Cluster, gateway: GatewayProcess, start_server: StartServer
):
    server = start_server(llamamodel(name="phi-4", parameters={"threads": 1}))
    serve(cluster, "phi-4", "phi-4:latest", server.url)
    client = ollama.Client(host=gateway.url)
    eventually(lambda: names(client) == {"phi-4:latest"}, timeout=30)
    serve(cluster, "phi-4", "phi-4:latest", server.url, phase="Loading")
    eventually(lambda: names(client) == set(), what="a model that is not Ready to leave")
    cluster.emulator.delete(LLAMAMODELS, "default", "phi-4")
    serve(cluster, "phi-4", "phi-4:latest", server.url)
    eventually(lambda: names(client) == {"phi-4:latest"}, what="the model to come back")
    calls = [r for r in cluster.emulator.audit_log if r.user_agent.startswith("llamacontroller-gateway")]
    resources = {(r.verb, r.resource) for r in calls if r.resource}  # besides /version at start-up
    assert resources <= {("list", "llamamodels"), ("watch", "llamamodels")}


def test_api_keys_from_the_secret_guard_the_gateway(
    cluster: Cluster, tmp_path: Path, start_server: StartServer
):
    server = start_server(llamamodel(name="phi-4", parameters={"threads": 1}))
    serve(cluster, "phi-4", "phi-4:latest", server.url)
    gateway = GatewayProcess(cluster, tmp_path / "keyed.log", keys="first-key\nsecond-key\n")
    try:
        eventually(lambda: _answers(gateway.url), what="the gateway to listen")
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=gateway.url).list()
        assert refused.value.status_code == 401
        keyed = ollama.Client(host=gateway.url, headers={"Authorization": "Bearer second-key"})
        eventually(lambda: names(keyed) == {"phi-4:latest"})
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="wrong").models.list()
    finally:
        gateway.stop()
    assert "second-key" not in (tmp_path / "keyed.log").read_text()


def test_metadata_of_a_file_the_gateway_cannot_read_comes_from_the_slot_adapter(
    cluster: Cluster, gateway: GatewayProcess, tmp_path: Path, demo_model: Path, llama_server_binary: Path
):
    """The gateway does not mount the models: the slot's adapter reads the file and reports its
    GGUF facts and sha256, so the gateway answers what the adapter answers."""
    model_file = tmp_path / "slot-model.gguf"
    shutil.copyfile(demo_model, model_file)
    sha256 = hashlib.sha256(model_file.read_bytes()).hexdigest()
    port = free_port()
    body = llamamodel(name="phi-4", parameters={"threads": 1})
    args = local_args(body, port, model_file)
    server = LlamaServerProcess(llama_server_binary, args, "127.0.0.1", port, tmp_path / "server.log")
    adapter = AdapterProcess(server.url, tmp_path / "adapter.log")
    try:
        server.start()
        server.wait_healthy()
        adapter.start()
        adapter.wait_ready()
        eventually(lambda: _tags(adapter.url)[0]["digest"] == sha256, what="the adapter's sha256")
        model_file.unlink()  # now only the adapter (which has read it) knows the file: as in a cluster
        serve(cluster, "phi-4", "phi-4:latest", server.url, api_url=adapter.url)
        eventually(lambda: _tags(gateway.url), timeout=30, what="the model listed")
        assert _tags(gateway.url) == _tags(adapter.url)  # digest, size, modified_at, details
        shown = {"model": "phi-4"}
        via_gateway = httpx.post(f"{gateway.url}/api/show", json=shown, timeout=10).json()
        assert via_gateway == httpx.post(f"{adapter.url}/api/show", json=shown, timeout=10).json()
        assert via_gateway["details"]["quantization_level"] == "F32"  # from the GGUF header
    finally:
        adapter.stop()
        server.stop()


def _tags(url: str) -> list[dict]:
    return httpx.get(f"{url}/api/tags", timeout=10).json()["models"]

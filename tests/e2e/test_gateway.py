"""The whole way, on the test cluster: LlamaModels applied with kubectl, served by the Pods the real
operator makes, and the cluster gateway (with its ServiceAccount, where the Services' names resolve)
routing by model name to them, fed by the statuses the operator writes; proven with the official
clients."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import yaml

from llamacontroller.local.binary import find_llama_server
from tests.cluster.cluster import LocalCluster
from tests.support.builders import TINY_MODEL, lm, visible_gpus
from tests.support.components import GATEWAY_ACCOUNT, GATEWAY_USER, GatewayProcess, OperatorProcess
from tests.support.components import service_account_kubeconfig as account_kubeconfig
from tests.support.kube import NEVER_READY_IMAGE, Kube, pod_processes, requests_of
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(180)

READY_SECONDS = 60  # a Pod is Ready once both probes passed (the adapter's is looked at every 10 s)


def names(client: ollama.Client) -> set[str]:
    return {m.model for m in client.list().models if m.model}


def test_the_whole_story(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, gateway: GatewayProcess
) -> None:
    """kubectl apply a LlamaModel; the scheduler binds its Pod to the LlamaModel's node; the node agent
    runs llama-server with the rendered arguments, and the adapter; the probes pass; the status says
    Ready; the gateway routes to it by name and the official ollama client gets an answer. kubectl
    delete: the garbage collector removes the Pod and the Service, and the servers stop."""
    kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(lm("phi-4", node="gpu-node-2", gpu={"gpuId": 1})))

    pod = eventually(
        lambda: kube.one_pod("phi-4")["spec"].get("nodeName") and kube.one_pod("phi-4"), what="bound"
    )
    name = pod["metadata"]["name"]
    assert pod["spec"]["nodeName"] == "gpu-node-2"
    scheduled = eventually(
        lambda: [e for e in kube.events(name) if e["reason"] == "Scheduled"], what="the scheduler's event"
    )
    assert scheduled[0]["message"] == f"Successfully assigned {kube.namespace}/{name} to gpu-node-2"

    server, adapter = pod["spec"]["containers"]
    expected = {
        (str(find_llama_server()), *server["args"]),
        (sys.executable, "-m", "llamacontroller.cli", *adapter["args"]),  # the project's image
    }
    eventually(
        lambda: {tuple(argv) for argv in pod_processes(cluster, pod)} == expected,
        what="both containers running",
    )
    assert server["args"][server["args"].index("--split-mode") + 1] == "none" and visible_gpus(pod) == "1"

    status = kube.wait_phase("phi-4", "Ready", "ServerReady", timeout=READY_SECONDS)
    assert status["endpoint"] == f"http://llama-gpu-node-2-gpu1.{kube.namespace}.svc:8088"

    client = ollama.Client(host=gateway.url)
    eventually(lambda: names(client) == {"phi-4:latest"}, timeout=30, what="the gateway to route phi-4")
    answer = client.chat(
        model="phi-4", messages=[{"role": "user", "content": "hi"}], options={"num_predict": 3}
    )
    assert answer.model == "phi-4" and answer.message.content and answer.eval_count == 3

    kube.kubectl("delete", "lm", "phi-4")
    eventually(lambda: kube.pods() == [] and kube.services() == [], what="the Pod and the Service collected")
    assert pod_processes(cluster, pod) == []
    eventually(lambda: names(client) == set(), what="the gateway to forget phi-4")


def test_routes_by_model_name_to_each_slot(
    kube: Kube, operator: OperatorProcess, gateway: GatewayProcess
) -> None:
    kube.apply(
        lm("coder", model={"name": "coder:7b", "path": TINY_MODEL}, gpu={"gpuId": 0}),
        lm("phi-4", gpu={"gpuId": 1}),
        lm("big", node="gpu-node-1", model={"name": "big:70b", "path": TINY_MODEL}, image=NEVER_READY_IMAGE),
    )
    for name in ("coder", "phi-4"):
        kube.wait_phase(name, "Ready", timeout=READY_SECONDS)
    assert kube.status("big")["phase"] in {"Pending", "Loading", "Failed"}  # never Ready: not routed

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
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, gateway: GatewayProcess
) -> None:
    assert cluster.control_plane is not None
    kube.apply(lm("phi-4"))
    kube.wait_phase("phi-4", "Ready", timeout=READY_SECONDS)
    client = ollama.Client(host=gateway.url)
    eventually(lambda: names(client) == {"phi-4:latest"}, timeout=30)

    kube.kubectl("delete", "pod", kube.one_pod("phi-4")["metadata"]["name"], "--wait=false")
    eventually(lambda: names(client) == set(), what="a model that is not Ready to leave")
    kube.wait_phase("phi-4", "Ready", timeout=READY_SECONDS)  # its Pod made again
    eventually(lambda: names(client) == {"phi-4:latest"}, what="the model to come back")

    kube.kubectl("delete", "lm", "phi-4", "--wait=false")
    eventually(lambda: names(client) == set(), what="a deleted model to leave")
    calls = requests_of(cluster.control_plane.audit_events(gateway.audit_mark), GATEWAY_USER)
    resources = {(e["verb"], e["objectRef"]["resource"]) for e in calls if e.get("objectRef")}
    assert resources == {("list", "llamamodels"), ("watch", "llamamodels")}  # besides /version at start


def test_api_keys_guard_the_gateway(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, tmp_path: Path
) -> None:
    kube.apply(lm("phi-4"))
    kubeconfig = account_kubeconfig(cluster, GATEWAY_ACCOUNT, tmp_path / "gateway.kubeconfig")
    gateway = GatewayProcess(
        cluster, kubeconfig, tmp_path / "keyed.log", port=11435, keys="first-key\nsecond-key\n"
    )
    gateway.start_listening()
    try:
        kube.wait_phase("phi-4", "Ready", timeout=READY_SECONDS)
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=gateway.url).list()
        assert refused.value.status_code == 401
        keyed = ollama.Client(host=gateway.url, headers={"Authorization": "Bearer second-key"})
        eventually(lambda: names(keyed) == {"phi-4:latest"})
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="wrong").models.list()
    finally:
        gateway.stop()
    assert "second-key" not in gateway.log()


def test_metadata_of_a_file_the_gateway_cannot_read_comes_from_the_slot_adapter(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, gateway: GatewayProcess
) -> None:
    """The gateway does not mount the models (here /models is an empty folder): the slot's adapter
    reads the file and reports its GGUF facts and sha256, so the gateway answers what it answers."""
    assert cluster.options.models_dir is not None
    sha256 = hashlib.sha256((cluster.options.models_dir / TINY_MODEL).read_bytes()).hexdigest()
    kube.apply(lm("phi-4"))
    kube.wait_phase("phi-4", "Ready", timeout=READY_SECONDS)
    pod_ip = kube.one_pod("phi-4")["status"]["podIP"]
    adapter = f"http://{pod_ip}:11434"
    assert tags(adapter)[0]["digest"] == sha256
    eventually(lambda: tags(gateway.url), timeout=30, what="the model listed")
    assert tags(gateway.url) == tags(adapter)  # digest, size, modified_at, details
    shown = {"model": "phi-4"}
    via_gateway = httpx.post(f"{gateway.url}/api/show", json=shown, timeout=10).json()
    assert via_gateway == httpx.post(f"{adapter}/api/show", json=shown, timeout=10).json()
    assert via_gateway["details"]["quantization_level"] == "F32"  # from the GGUF header


def tags(url: str) -> list[dict[str, Any]]:
    models: list[dict[str, Any]] = httpx.get(f"{url}/api/tags", timeout=10).json()["models"]
    return models

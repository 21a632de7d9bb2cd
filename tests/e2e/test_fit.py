"""End to end: the fit check before placement, on the real control plane. The tests write each
node's LlamaNode as its node agent would (create, then the status: the GPUs as NVML would read them,
and the header facts of the tiny model the cluster's models folder really holds), and the real
operator, bound by deploy/'s RBAC, reads it through its watch. The LlamaModels go to the passive
node: their Pods are created and bound, and no server runs (what is checked is the decision)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from llamacontroller.fit.model import ModelFacts, model_facts
from llamacontroller.gguf_header import read_header
from llamacontroller.llamanode import Gpu, GpuProcess, LlamaNodeStatus, ModelFile
from tests.cluster.cluster import LocalCluster
from tests.support.builders import TINY_MODEL, lm
from tests.support.components import OperatorProcess
from tests.support.kube import Kube
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(120)

NODE = "passive"
LLAMANODES = "/apis/llamacontroller.io/v1alpha1/llamanodes"
MiB, GiB = 1 << 20, 1 << 30
TRAINING = GpuProcess(pid=4242, name="python", used_memory=20 * GiB)


class Agent:
    """Writes the passive node's LlamaNode as a node agent would; removes it afterwards."""

    def __init__(self, kube: Kube, facts: ModelFacts) -> None:
        self.kube = kube
        self.facts = facts
        self.created = False

    def write(self, total: int = 24 * GiB, foreign: tuple[GpuProcess, ...] = ()) -> None:
        """A reading of two GPUs alike, ``foreign`` processes on each, the tiny model in the volume."""
        used = sum(p.used_memory or 0 for p in foreign)
        gpus = [
            Gpu(
                index=i,
                uuid=f"GPU-{i}",
                name="NVIDIA GeForce RTX 3090",
                memory_total=total,
                memory_used=used,
                foreign_memory=used,
                processes=list(foreign),
                summary=f"occupied: {used / GiB:.1f} GiB by others" if used else "idle",
            )
            for i in (0, 1)
        ]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        reading = LlamaNodeStatus(
            nvml="ok",
            gpus=gpus,
            models=[ModelFile(path=TINY_MODEL, size=1, modified=now, facts=self.facts)],
            observed_at=now,
            heartbeat_at=now,
        )
        if not self.created:
            self.kube.create(
                LLAMANODES,
                {
                    "apiVersion": "llamacontroller.io/v1alpha1",
                    "kind": "LlamaNode",
                    "metadata": {"name": NODE},
                },
            )
            self.created = True
        self.kube.request(
            "PATCH",
            f"{LLAMANODES}/{NODE}/status",
            {"status": reading.model_dump(by_alias=True, mode="json")},
            content_type="application/merge-patch+json",
        )

    def remove(self) -> None:
        if self.created:
            self.kube.delete(f"{LLAMANODES}/{NODE}")


@pytest.fixture
def agent(cluster: LocalCluster, kube: Kube) -> Iterator[Agent]:
    assert cluster.options.models_dir is not None
    facts = model_facts(read_header(cluster.options.models_dir / TINY_MODEL))
    writer = Agent(kube, facts)
    yield writer
    writer.remove()


def fit_condition(kube: Kube, name: str) -> dict[str, Any]:
    return eventually(lambda: kube.condition(name, "FitsOnSlot"), what=f"{name}'s FitsOnSlot")


NUMBERS = re.compile(
    r"needs \d+\.\d MiB on GPU 0: weights \d+\.\d, KV cache \d+\.\d at ctx 4096, compute \d+\.\d, "
    r"overhead 512\.0; GPU 0 has (?P<total>[\d.]+ [MG]iB), (?P<others>.*)"
)


def test_a_model_that_fits_gets_its_pod_and_the_numbers(kube: Kube, operator: OperatorProcess, agent: Agent):
    agent.write()
    kube.apply(lm("fits", node=NODE))
    eventually(lambda: kube.one_pod("fits"), what="its pod")
    fit = fit_condition(kube, "fits")
    assert (fit["status"], fit["reason"]) == ("True", "Fits")
    found = NUMBERS.fullmatch(fit["message"])
    assert found, fit["message"]
    assert (found["total"], found["others"]) == ("24.0 GiB", "none of it used by other processes")


def test_a_gpu_too_small_fails_and_says_so(kube: Kube, operator: OperatorProcess, agent: Agent):
    agent.write(total=256 * MiB)
    kube.apply(lm("large", node=NODE))
    status = kube.wait_phase("large", "Failed", "ModelTooLarge")
    assert status["message"].startswith(f"gpu0 on {NODE}: needs ")
    assert status["message"].endswith(
        "GPU 0 has 256.0 MiB, none of it used by other processes; more than GPU 0 has in all: it never "
        "fits there"
    )
    fit = kube.condition("large", "FitsOnSlot")
    assert (fit["status"], fit["reason"]) == ("False", "ModelTooLarge")
    assert kube.server_pods("large") == [] and kube.services() == []


def test_foreign_use_waits_then_the_pod_comes_once_it_leaves_and_stays_when_it_returns(
    kube: Kube, operator: OperatorProcess, agent: Agent
):
    agent.write(foreign=(TRAINING,))
    kube.apply(lm("patient", node=NODE, gpu={"mode": "single", "gpuId": 1}))
    status = kube.wait_phase("patient", "Waiting", "GpuOccupied")
    assert (
        "GPU 1 has 24.0 GiB, 20.0 GiB used by other processes: python (pid 4242) 20.0 GiB"
        in status["message"]
    )
    assert "fit.foreignMemoryLimitMiB (1024 MiB)" in status["message"]
    fit = kube.condition("patient", "FitsOnSlot")
    assert (fit["status"], fit["reason"]) == ("False", "GpuOccupied")
    assert kube.server_pods("patient") == []

    agent.write()  # the training job ends: the agent's next reading wakes the LlamaModel
    pod = eventually(lambda: kube.one_pod("patient"), what="its pod once the GPU is free")
    eventually(lambda: fit_condition(kube, "patient")["reason"] == "Fits", what="FitsOnSlot=True")
    eventually(lambda: "PodCreated" in kube.reasons("patient"), what="the claim's Event")

    # It comes back, and the server starts loading (a change that makes the LlamaModel decided
    # again, with the crowded reading in the cache): the server created keeps its GPU.
    agent.write(foreign=(TRAINING,))
    eventually(lambda: kube.pod(pod["metadata"]["name"])["spec"].get("nodeName"), what="bound")  # type: ignore[index]
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    server = {"name": "llama-server", "image": "x", "ready": False, "restartCount": 0}
    running = server | {"state": {"running": {"startedAt": started}}}
    kube.cluster.write_pod_status(
        kube.namespace, pod["metadata"]["name"], {"phase": "Running", "containerStatuses": [running]}
    )
    kube.wait_phase("patient", "Loading", "Loading")
    assert [p["metadata"]["uid"] for p in kube.server_pods("patient")] == [pod["metadata"]["uid"]]
    assert kube.condition("patient", "FitsOnSlot")["reason"] == "Fits"


def test_without_a_llamanode_the_pod_comes_as_before_and_the_fit_was_not_checked(
    kube: Kube, operator: OperatorProcess
):
    kube.apply(lm("unknown", node=NODE))
    eventually(lambda: kube.one_pod("unknown"), what="its pod")
    fit = fit_condition(kube, "unknown")
    assert (fit["status"], fit["reason"]) == ("Unknown", "FitNotChecked")
    assert fit["message"] == f"fit not checked: node {NODE} has no LlamaNode (no node agent reports its GPUs)"


def test_a_switch_to_a_server_that_never_fits_keeps_the_running_one(
    kube: Kube, operator: OperatorProcess, agent: Agent
):
    agent.write(total=1 * GiB)
    kube.apply(lm("grows", node=NODE))
    pod = eventually(lambda: kube.one_pod("grows"), what="its pod")
    kube.apply(lm("grows", node=NODE, parameters={"ctxSize": 1 << 20}))  # a KV cache of 0.5 GiB more
    status = kube.wait_phase("grows", "Failed", "ModelTooLarge")
    assert status["message"].endswith(
        f"it never fits there; the previous server keeps running in pod {pod['metadata']['name']}"
    )
    assert [p["metadata"]["uid"] for p in kube.server_pods("grows")] == [pod["metadata"]["uid"]]
    assert not kube.pod(pod["metadata"]["name"])["metadata"].get("deletionTimestamp")  # type: ignore[index]

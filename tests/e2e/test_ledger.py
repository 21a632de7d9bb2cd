"""The slot ledger end to end: waiting order, moves, N GPUs, events, and races under restarts."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import LLAMAMODELS, Cluster, OperatorProcess
from tests.e2e.test_operator import arg, lm, one_pod
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(300)

GPUS = {"gpu0": {0}, "gpu1": {1}, "both": {0, 1}}
PLACEMENT = {"gpu0": {"gpuId": 0}, "gpu1": {"gpuId": 1}, "both": {"mode": "both"}}


def holders(cluster: Cluster) -> set[str]:
    return {p["metadata"]["labels"]["llamacontroller.io/llamamodel"] for p in cluster.pods()}


def test_waiters_are_served_in_creation_order(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("holder"))
    eventually(lambda: one_pod(cluster, "holder"))
    for name in ("w1", "w2", "w3"):
        cluster.apply(lm(name))
        eventually(lambda name=name: cluster.status(name).get("phase") == "Waiting")
    assert (
        cluster.status("w3")["message"]
        == "gpu0 on node-a is held by default/holder; default/w1, default/w2 asked first"
    )
    for previous, following in (("holder", "w1"), ("w1", "w2"), ("w2", "w3")):
        cluster.kubectl("delete", "lm", previous)
        eventually(lambda f=following: holders(cluster) == {f}, what=f"{following} to hold the slot")


def test_a_move_unloads_first_and_waits_like_a_new_object(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("mover", gpu={"gpuId": 0}))
    old = eventually(lambda: one_pod(cluster, "mover"))["metadata"]["name"]
    cluster.apply(lm("other", gpu={"gpuId": 1}))
    eventually(lambda: one_pod(cluster, "other"))
    cluster.apply(lm("mover", gpu={"mode": "both"}))
    eventually(lambda: cluster.status("mover").get("phase") == "Waiting", what="the mover to wait")
    assert cluster.server_pods("mover") == []
    assert cluster.status("mover")["message"] == "both on node-a is held by default/other (gpu1)"
    pod_events = [(e.type, e.name) for e in cluster.emulator.events(resource="pods")]
    assert ("DELETED", old) in pod_events
    cluster.kubectl("delete", "lm", "other")
    pod = eventually(lambda: one_pod(cluster, "mover"), what="the mover's new pod")
    assert arg(pod, "--tensor-split") == "0.5,0.5"
    assert cluster.status("mover")["slot"] == "both"


def test_a_four_gpu_node_offers_gpu2_and_all(cluster: Cluster, operator: OperatorProcess):
    cluster.emulator.add_node("quad", labels={"nvidia.com/gpu.count": "4"})
    cluster.apply(lm("third", node="quad", gpu={"gpuId": 2}))
    pod = eventually(lambda: one_pod(cluster, "third"))
    assert (arg(pod, "--tensor-split"), arg(pod, "--port")) == ("0,0,1,0", "8082")
    cluster.apply(lm("whole", node="quad", gpu={"mode": "both"}))
    eventually(lambda: cluster.status("whole").get("phase") == "Waiting")
    assert cluster.status("whole")["message"] == "all on quad is held by default/third (gpu2)"


def test_claims_and_waits_are_recorded_as_events(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("first"))
    eventually(lambda: one_pod(cluster, "first"))
    cluster.apply(lm("second"))
    eventually(lambda: cluster.status("second").get("phase") == "Waiting")
    described = cluster.kubectl("describe", "lm", "second").stdout
    assert "SlotTaken" in described and "gpu0 on node-a is held by default/first" in described
    reasons = eventually(
        lambda: (
            {e["reason"] for e in cluster.emulator.list(("", "v1", "events"), "default")}
            >= {"PodCreated", "SlotTaken"}
            and {e["reason"] for e in cluster.emulator.list(("", "v1", "events"), "default")}
        )
    )
    assert "PodCreated" in reasons
    per_object = [
        e
        for e in cluster.emulator.list(("", "v1", "events"), "default")
        if e["involvedObject"]["name"] == "second"
    ]
    assert len(per_object) == 1, "one event per transition, not one per reconcile"


def _conflicts_at_any_instant(cluster: Cluster) -> list[str]:
    """Replay every Pod watch event: at no instant may two live Pods on a node share a GPU."""
    live: dict[str, tuple[str, str]] = {}
    problems = []
    for event in cluster.emulator.events(resource="pods"):
        labels = event.snapshot["metadata"].get("labels") or {}
        if event.type == "DELETED":
            live.pop(event.name, None)
            continue
        live[event.name] = (labels["llamacontroller.io/node"], labels["llamacontroller.io/slot"])
        node, slot = live[event.name]
        for other, (other_node, other_slot) in live.items():
            if other != event.name and other_node == node and GPUS[slot] & GPUS[other_slot]:
                problems.append(
                    f"seq {event.seq}: {event.name} ({slot}) with {other} ({other_slot}) on {node}"
                )
    return problems


def settled(cluster: Cluster, remaining: frozenset[str]) -> set[str] | None:
    """Every remaining LlamaModel either holds a Pod or waits, never both: the holders, else None."""
    holding = holders(cluster)
    waiting = {n for n in remaining if cluster.status(n).get("phase") == "Waiting"}
    return holding if holding | waiting == remaining and holding and not holding & waiting else None


def test_fifty_concurrent_llamamodels_never_share_a_gpu_and_all_get_served(
    cluster: Cluster, operator: OperatorProcess
):
    rng = random.Random(7)
    wanted = {f"m{i:02d}": (rng.choice(["node-a", "gpu-node-1"]), rng.choice(list(GPUS))) for i in range(50)}

    def create(name: str) -> None:
        node, slot = wanted[name]
        cluster.emulator.create(LLAMAMODELS, lm(name, node=node, gpu=PLACEMENT[slot]), "default")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, wanted))

    served: set[str] = set()
    remaining = set(wanted)
    rounds = 0
    while remaining:
        holding = eventually(
            lambda r=frozenset(remaining): settled(cluster, r), timeout=60, what=f"round {rounds}"
        )
        assert holding <= remaining
        served |= holding
        rounds += 1
        if rounds == 2:
            operator.restart()  # a restart midway must neither free a slot nor assign one twice
        for name in holding:
            cluster.emulator.delete(LLAMAMODELS, "default", name)
        remaining -= holding
        eventually(
            lambda h=holding: not (holders(cluster) & h), timeout=60, what="the deleted holders' pods to go"
        )

    assert served == set(wanted)
    assert _conflicts_at_any_instant(cluster) == []
    assert cluster.emulator.list(("", "v1", "pods")) == []


def test_a_switch_keeps_its_slot_from_waiters(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("holder", parameters={"ctxSize": 2048}))
    old = eventually(lambda: one_pod(cluster, "holder"))["metadata"]["name"]
    cluster.apply(lm("waiter"))
    eventually(lambda: cluster.status("waiter").get("phase") == "Waiting")
    cluster.apply(lm("holder", parameters={"ctxSize": 4096}))
    new = eventually(
        lambda: [p for p in cluster.server_pods("holder") if p["metadata"]["name"] != old], what="the new pod"
    )
    assert arg(new[0], "--ctx-size") == "4096"
    assert cluster.server_pods("waiter") == [] and cluster.status("waiter")["phase"] == "Waiting"

"""The slot ledger end to end: waiting order, moves, N GPUs, events, and races under restarts, told by
the Pods the API server holds (watched from before each change) on the test cluster's nodes."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.cluster.cluster import LocalCluster
from tests.support.builders import arg, lm, visible_gpus, write_settings
from tests.support.components import OperatorProcess
from tests.support.kube import LABEL_MODEL, LLAMAMODELS, SLOW_STOP_IMAGE, Change, Kube, gpu_conflicts
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(300)

PLACEMENT = {"gpu0": {"gpuId": 0}, "gpu1": {"gpuId": 1}, "both": {"mode": "both"}}


@pytest.fixture
def operator_config(tmp_path: Path) -> Path:
    """The ledger is about Pods on GPUs: its servers run without the adapter sidecar, so that dozens
    of them come and go quickly on a small machine."""
    return write_settings(tmp_path, adapter={"enabled": False})


def holders(kube: Kube) -> set[str]:
    return {p["metadata"]["labels"][LABEL_MODEL] for p in kube.pods()}


def test_waiters_are_served_in_creation_order(kube: Kube, operator: OperatorProcess) -> None:
    ns = kube.namespace
    kube.apply(lm("holder"))
    eventually(lambda: kube.one_pod("holder"))
    for name in ("w1", "w2", "w3"):
        kube.apply(lm(name))
        kube.wait_phase(name, "Waiting", "SlotTaken")
    assert (
        kube.status("w3")["message"] == f"gpu0 on node-a is held by {ns}/holder; {ns}/w1, {ns}/w2 asked first"
    )
    for previous, following in (("holder", "w1"), ("w1", "w2"), ("w2", "w3")):
        kube.kubectl("delete", "lm", previous, "--wait=false")
        eventually(lambda f=following: holders(kube) == {f}, what=f"{following} to hold the slot")


def test_a_move_unloads_first_and_waits_like_a_new_object(kube: Kube, operator: OperatorProcess) -> None:
    ns = kube.namespace
    kube.apply(lm("mover", gpu={"gpuId": 0}))
    old = eventually(lambda: kube.one_pod("mover"))["metadata"]["name"]
    kube.apply(lm("other", gpu={"gpuId": 1}))
    eventually(lambda: kube.one_pod("other"))
    with kube.watch() as pods:
        kube.apply(lm("mover", gpu={"mode": "both"}))
        status = kube.wait_phase("mover", "Waiting", "SlotTaken")
        assert kube.server_pods("mover") == []
        assert status["message"] == f"both on node-a is held by {ns}/other (gpu1)"
        assert ("DELETED", old) in [(c.type, c.name) for c in pods.changes]
        kube.kubectl("delete", "lm", "other", "--wait=false")
        pod = eventually(lambda: kube.one_pod("mover"), what="the mover's new pod")
        changes = pods.changes
    assert arg(pod, "--tensor-split") == "0.5,0.5"
    assert kube.status("mover")["slot"] == "both"
    assert gpu_conflicts(changes) == []


def test_a_four_gpu_node_offers_gpu2_and_all(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(lm("third", node="quad", gpu={"gpuId": 2}))
    pod = eventually(lambda: kube.one_pod("third"))
    assert (visible_gpus(pod), arg(pod, "--port")) == ("2", "8082")
    kube.apply(lm("whole", node="quad", gpu={"mode": "both"}))
    status = kube.wait_phase("whole", "Waiting", "SlotTaken")
    assert status["message"] == f"all on quad is held by {kube.namespace}/third (gpu2)"
    eventually(lambda: kube.one_pod("third")["spec"].get("nodeName") == "quad", what="bound to quad")


def test_claims_and_waits_are_recorded_as_events(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(lm("first"))
    eventually(lambda: kube.one_pod("first"))
    kube.apply(lm("second"))
    kube.wait_phase("second", "Waiting")
    described = kube.kubectl("describe", "lm", "second").stdout
    held = f"gpu0 on node-a is held by {kube.namespace}/first"
    assert "SlotTaken" in described and held in described
    eventually(lambda: "PodCreated" in kube.reasons("first"), what="the claim's event")
    assert [(e["type"], e["reason"], e["message"]) for e in kube.events("second")] == [
        ("Normal", "SlotTaken", held)
    ], "one event per transition, not one per reconcile"


def settled(kube: Kube, remaining: frozenset[str]) -> set[str] | None:
    """Every remaining LlamaModel either holds a Pod or waits, never both: the holders, else None."""
    holding = holders(kube)
    waiting = {
        lm["metadata"]["name"]
        for lm in kube.llamamodels()
        if (lm.get("status") or {}).get("phase") == "Waiting"
    }
    waiting &= remaining
    return holding if holding | waiting == remaining and holding and not holding & waiting else None


def test_fifty_concurrent_llamamodels_never_share_a_gpu_and_all_get_served(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess
) -> None:
    assert cluster.control_plane is not None
    control = cluster.control_plane
    rng = random.Random(7)
    wanted = {
        f"m{i:02d}": (rng.choice(["node-a", "gpu-node-1"]), rng.choice(list(PLACEMENT))) for i in range(50)
    }
    path = kube.ns_path("llamamodels", group=LLAMAMODELS)

    def create(name: str) -> None:
        node, slot = wanted[name]
        control.request("POST", path, lm(name, node=node, gpu=PLACEMENT[slot]))

    with kube.watch() as pods:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(create, wanted))
        served: set[str] = set()
        remaining = set(wanted)
        rounds = 0
        while remaining:
            holding = eventually(
                lambda r=frozenset(remaining): settled(kube, r), timeout=60, what=f"round {rounds}"
            )
            assert holding <= remaining
            served |= holding
            rounds += 1
            if rounds == 2:
                operator.restart()  # a restart midway must neither free a slot nor assign one twice
            for name in holding:
                kube.delete(f"{path}/{name}")
            remaining -= holding
            eventually(
                lambda h=holding: not (holders(kube) & h), timeout=60, what="the deleted holders' pods to go"
            )
        changes = pods.changes

    assert served == set(wanted)
    assert gpu_conflicts(changes) == []
    assert len({c.uid for c in changes}) >= 50  # every LlamaModel had its server
    assert kube.pods() == []


def test_a_switch_keeps_its_slot_from_waiters(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(lm("holder", parameters={"ctxSize": 2048}))
    old = eventually(lambda: kube.one_pod("holder"))["metadata"]["name"]
    kube.apply(lm("waiter"))
    kube.wait_phase("waiter", "Waiting")
    kube.apply(lm("holder", parameters={"ctxSize": 4096}))
    new = eventually(
        lambda: [p for p in kube.server_pods("holder") if p["metadata"]["name"] != old], what="the new pod"
    )
    assert arg(new[0], "--ctx-size") == "4096"
    assert kube.server_pods("waiter") == [] and kube.status("waiter")["phase"] == "Waiting"


def test_a_llamamodel_deleted_and_applied_again_at_once_waits_for_its_old_pod(
    kube: Kube, operator: OperatorProcess
) -> None:
    """A LlamaModel deleted and applied again at once under the same name, now on both GPUs, while its
    old Pod still stops (its server takes seconds to stop): the new object is another owner, so it
    waits for the old Pod to be gone; at no moment do two server Pods hold overlapping GPUs. (Before
    slots were held by owner UID, the new object took the old Pod for its own.)"""
    kube.apply(lm("phi", image=SLOW_STOP_IMAGE))
    kube.wait_phase("phi", "Ready")  # the server runs: stopping it takes seconds
    old = kube.one_pod("phi")
    old_uid = old["metadata"]["uid"]
    with kube.watch() as pods:
        kube.kubectl("delete", "lm", "phi", "--wait=false")
        kube.apply(lm("phi", gpu={"mode": "both"}))
        new_lm = kube.llamamodel("phi")
        assert (
            new_lm is not None and new_lm["metadata"]["uid"] != old["metadata"]["ownerReferences"][0]["uid"]
        )
        status = kube.wait_phase("phi", "Waiting", "SlotTaken")
        assert status["message"] == f"both on node-a is held by {kube.namespace}/phi (gpu0)"

        def replaced(changes: list[Change]) -> bool:
            return any(c.type == "ADDED" and c.uid != old_uid for c in changes)

        changes = pods.wait_for("the new server's Pod", replaced)
    assert gpu_conflicts(changes) == []
    seen = [(c.type, c.uid == old_uid, bool(c.object["metadata"].get("deletionTimestamp"))) for c in changes]
    stopping = seen.index(("MODIFIED", True, True))
    gone = seen.index(("DELETED", True, True))
    born = next(i for i, (kind, is_old, _) in enumerate(seen) if kind == "ADDED" and not is_old)
    assert stopping < gone < born, seen
    new = kube.one_pod("phi")
    assert new["metadata"]["ownerReferences"][0]["uid"] == new_lm["metadata"]["uid"]
    assert arg(new, "--tensor-split") == "0.5,0.5"

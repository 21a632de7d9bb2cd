"""The fit check in the reconcile decision: it gates the creation of a server's Pod (Failed when the
model can never fit, Waiting while other processes hold the memory, FitsOnSlot=Unknown when nothing
can be checked) and never stops a server that runs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from llamacontroller.demo_model import write_demo_model
from llamacontroller.fit.model import ModelFacts, model_facts
from llamacontroller.gguf_header import read_header
from llamacontroller.ledger import status_claim_of, waiter_of
from llamacontroller.llamanode import Gpu, GpuProcess, LlamaNode, LlamaNodeStatus, ModelFile, NodeMeta
from llamacontroller.reconcile import Decision, Observed, decide, left_queue, status_patch
from llamacontroller.render.children import render_children
from llamacontroller.resource import Phase, parse_llamamodel
from tests.support.builders import llamamodel, repo_config

MiB, GiB = 1 << 20, 1 << 30
CONFIG = repo_config()
NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
PYTHON = GpuProcess(pid=4242, name="python", used_memory=20 * GiB)


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    return model_facts(read_header(write_demo_model(tmp_path_factory.mktemp("fit") / "phi-4.gguf")))


def node(facts: ModelFacts, total: int = 24 * GiB, foreign: int = 0) -> LlamaNode:
    processes = [PYTHON.model_copy(update={"used_memory": foreign})] if foreign else []
    gpus = [
        Gpu(index=i, memory_total=total, memory_used=foreign, foreign_memory=foreign, processes=processes)
        for i in (0, 1)
    ]
    status = LlamaNodeStatus(
        nvml="ok",
        heartbeat_at="2026-01-01T11:59:50Z",
        gpus=gpus,
        models=[ModelFile(path="phi-4.gguf", size=1, modified="2026-01-01T00:00:00Z", facts=facts)],
    )
    return LlamaNode(metadata=NodeMeta(name="node-a"), status=status)


def observed(llamanode: LlamaNode | None, pods: list[dict[str, Any]] | None = None, **more: Any) -> Observed:
    return Observed(pods=pods or [], services=[], node_pods=pods or [], llamanode=llamanode, **more)


def condition(body: dict[str, Any], decision: Decision, kind: str) -> dict[str, Any] | None:
    conditions = status_patch(body, decision, NOW)["conditions"]
    return next((c for c in conditions if c["type"] == kind), None)


def test_a_model_that_fits_gets_its_pod_and_says_the_numbers(facts: ModelFacts):
    body = llamamodel()
    decision = decide(body, CONFIG, observed(node(facts)), NOW)
    assert decision.create_pod is not None and decision.report.reason == "PodCreated"
    fit = condition(body, decision, "FitsOnSlot")
    assert fit is not None and (fit["status"], fit["reason"]) == ("True", "Fits")
    assert fit["message"].startswith("needs 519.5 MiB on GPU 0: weights 0.4, KV cache 2.0 at ctx 4096")


def test_a_model_larger_than_its_gpu_fails_without_a_claim_or_a_service(facts: ModelFacts):
    body = llamamodel()
    service = render_children(parse_llamamodel(body), CONFIG).service
    decision = decide(body, CONFIG, Observed([], [service], [], llamanode=node(facts, total=256 * MiB)), NOW)
    assert decision.create_pod is None and decision.apply_service is None
    assert decision.delete_services == [service["metadata"]["name"]]
    assert (decision.report.phase, decision.report.reason) == (Phase.FAILED, "ModelTooLarge")
    assert decision.report.message.startswith("gpu0 on node-a: needs 519.5 MiB on GPU 0: ")
    assert decision.report.message.endswith("more than GPU 0 has in all: it never fits there")
    assert condition(body, decision, "SlotAvailable") is None  # no claim: others may take the slot
    fit = condition(body, decision, "FitsOnSlot")
    assert fit is not None and (fit["status"], fit["reason"]) == ("False", "ModelTooLarge")
    status = status_patch(body, decision, NOW)
    assert status["podName"] is None and status["serviceName"] is None


def test_a_model_that_fits_once_others_leave_waits_holding_its_slot(facts: ModelFacts):
    body = llamamodel()
    decision = decide(body, CONFIG, observed(node(facts, total=20 * GiB + 100 * MiB, foreign=20 * GiB)), NOW)
    assert decision.create_pod is None
    assert (decision.report.phase, decision.report.reason) == (Phase.WAITING, "GpuOccupied")
    assert "20.0 GiB used by other processes: python (pid 4242) 20.0 GiB" in decision.report.message
    unlimited = repo_config(fit={"foreignMemoryLimitMiB": None})
    decision = decide(
        body, unlimited, observed(node(facts, total=20 * GiB + 100 * MiB, foreign=20 * GiB)), NOW
    )
    assert (decision.report.phase, decision.report.reason) == (Phase.WAITING, "GpuMemoryInUse")
    assert decision.report.message.endswith("it fits once they free 419.5 MiB")
    waiting = body | {"status": status_patch(body, decision, NOW)}
    slot = condition(body, decision, "SlotAvailable")
    assert slot is not None and slot["status"] == "True"  # nobody else takes the slot meanwhile
    assert status_claim_of(waiting, 2, CONFIG) is not None and waiter_of(waiting, 2, CONFIG) is not None
    assert waiting["status"]["waitingSince"] == "2026-01-01T12:00:00.000000Z"

    # The other processes leave: the same LlamaModel, decided again, gets its Pod.
    later = decide(waiting, unlimited, observed(node(facts, total=20 * GiB + 100 * MiB)), NOW)
    assert later.create_pod is not None and later.report.reason == "PodCreated"
    assert left_queue(waiting, later) == "node-a"  # its node's queue moves on


def test_a_running_server_is_not_stopped_by_a_later_foreign_process(facts: ModelFacts):
    body = llamamodel()
    created = decide(body, CONFIG, observed(node(facts)), NOW)
    assert created.create_pod is not None
    body["status"] = status_patch(body, created, NOW)
    pod = created.create_pod | {
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    }
    crowded = node(facts, total=24 * GiB, foreign=23 * GiB)
    decision = decide(body, CONFIG, observed(crowded, pods=[pod]), NOW)
    assert decision.delete_pods == [] and decision.create_pod is None
    assert decision.report.phase is Phase.READY
    fit = condition(body, decision, "FitsOnSlot")  # the check made when the Pod was created
    assert fit is not None and (fit["status"], fit["reason"]) == ("True", "Fits")


def test_without_a_llamanode_the_pod_is_created_and_the_status_says_the_fit_was_not_checked():
    body = llamamodel()
    decision = decide(body, CONFIG, observed(None), NOW)
    assert decision.create_pod is not None
    fit = condition(body, decision, "FitsOnSlot")
    assert fit is not None and (fit["status"], fit["reason"]) == ("Unknown", "FitNotChecked")
    assert fit["message"] == "fit not checked: node node-a has no LlamaNode (no node agent reports its GPUs)"


def holding(body: dict[str, Any]) -> dict[str, Any]:
    """A LlamaModel whose status says it holds gpu0 of node-a, its server Ready."""
    body["status"] = {
        "phase": "Ready",
        "node": "node-a",
        "slot": "gpu0",
        "conditions": [
            {"type": "SlotAvailable", "status": "True", "reason": "SlotClaimed", "lastTransitionTime": "t"}
        ],
    }
    return body


def test_a_switch_checks_the_new_server_once_the_old_one_is_gone(facts: ModelFacts):
    old = render_children(parse_llamamodel(llamamodel(parameters={"ctxSize": 1024})), CONFIG).pod
    new = holding(llamamodel(parameters={"ctxSize": 8192}))
    crowded = node(facts, total=20 * GiB + 100 * MiB, foreign=20 * GiB)
    unlimited = repo_config(fit={"foreignMemoryLimitMiB": None})
    unloading = decide(new, unlimited, observed(crowded, pods=[old]), NOW)
    assert unloading.delete_pods == [old["metadata"]["name"]] and unloading.report.reason == "Switching"
    decision = decide(new, unlimited, observed(crowded), NOW)  # the old Pod is gone
    assert decision.create_pod is None
    assert (decision.report.phase, decision.report.reason) == (Phase.WAITING, "GpuMemoryInUse")
    assert decision.report.slot is not None and decision.report.slot.available  # still its slot


def test_a_switch_to_a_server_that_never_fits_keeps_the_running_one(facts: ModelFacts):
    old = render_children(parse_llamamodel(llamamodel(parameters={"ctxSize": 1024})), CONFIG).pod
    big = holding(llamamodel(parameters={"ctxSize": 1 << 20}))  # its KV cache 0.5 GiB, compute 1 GiB
    tight = node(facts, total=1 * GiB)
    decision = decide(big, CONFIG, observed(tight, pods=[old]), NOW)
    assert decision.delete_pods == [] and decision.create_pod is None
    assert (decision.report.phase, decision.report.reason) == (Phase.FAILED, "ModelTooLarge")
    assert decision.report.message.startswith(
        "gpu0 on node-a: needs 2.0 GiB on GPU 0: weights 0.0, KV cache 0.5 at ctx 1048576"
    )
    assert decision.report.message.endswith(
        f"it never fits there; the previous server keeps running in pod {old['metadata']['name']}"
    )


def test_a_model_waiting_for_a_taken_slot_says_its_fit_too(facts: ModelFacts):
    holder = render_children(
        parse_llamamodel(llamamodel(name="big", uid="u-big", gpu={"mode": "both"})), CONFIG
    )
    body = llamamodel()
    decision = decide(body, CONFIG, Observed([], [], [holder.pod], llamanode=node(facts)), NOW)
    assert (decision.report.phase, decision.report.reason) == (Phase.WAITING, "SlotTaken")
    fit = condition(body, decision, "FitsOnSlot")
    assert fit is not None and fit["reason"] == "Fits"

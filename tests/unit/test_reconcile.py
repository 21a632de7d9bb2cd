"""The pure reconcile decision, on hand-built observations of the cluster."""

from datetime import UTC, datetime

from llamacontroller.ledger import status_claim_of
from llamacontroller.reconcile import Observed, left_queue, retrying
from llamacontroller.reconcile import decide as decide_at
from llamacontroller.reconcile import status_patch as status_at
from llamacontroller.render.children import render_children
from llamacontroller.resource import Phase, parse_llamamodel
from tests.support.builders import llamamodel, repo_config

CONFIG = repo_config()
NOW = datetime(2026, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)


def decide(body, config, observed):
    return decide_at(body, config, observed, NOW)


def status_patch(body, decision, _now):
    return status_at(body, decision, NOW)


NOTHING = Observed(pods=[], services=[], node_pods=[])


def _children(body):
    return render_children(parse_llamamodel(body), CONFIG)


def test_free_slot_creates_pod_and_service():
    body = llamamodel()
    decision = decide(body, CONFIG, NOTHING)
    children = _children(body)
    assert decision.create_pod == children.pod
    assert decision.apply_service == children.service
    assert decision.delete_pods == []
    assert decision.report.phase is Phase.PENDING
    status = status_patch(body, decision, "now")
    assert status["slot"] == "gpu0" and status["port"] == 8081 and status["node"] == "node-a"
    assert status["podName"] == children.pod["metadata"]["name"]
    assert status["endpoint"] == "http://llama-node-a-gpu0.default.svc:8081"
    assert status["apiEndpoint"] == "http://llama-node-a-gpu0.default.svc:11434"  # the adapter
    assert status["observedGeneration"] == 1
    assert status["model"] == "phi-4:latest"


def test_without_the_adapter_there_is_no_api_endpoint():
    config = CONFIG.model_copy(update={"adapter": CONFIG.adapter.model_copy(update={"enabled": False})})
    body = llamamodel()
    status = status_patch(body, decide(body, config, NOTHING), "now")
    assert status["endpoint"] == "http://llama-node-a-gpu0.default.svc:8081"
    assert status["apiEndpoint"] is None


def test_taken_slot_waits_and_names_the_holder():
    holder = _children(llamamodel(name="big", uid="u-big", gpu={"mode": "both"})).pod
    decision = decide(
        llamamodel(gpu={"gpuId": 1}), CONFIG, Observed(pods=[], services=[], node_pods=[holder])
    )
    assert decision.create_pod is None and decision.apply_service is None
    assert decision.report.phase is Phase.WAITING
    assert decision.report.message == "gpu1 on node-a is held by default/big (both)"
    status = status_patch(llamamodel(), decision, "now")
    slot = next(c for c in status["conditions"] if c["type"] == "SlotAvailable")
    assert (slot["status"], slot["reason"]) == ("False", "SlotTaken")


def test_a_llamamodel_created_again_waits_for_its_predecessors_pod():
    """Deleted and applied again at once under the same name (a GitOps re-create): the old Pod,
    still terminating, holds its GPU; the new LlamaModel (another UID) waits for it to go."""
    old = _children(llamamodel(uid="uid-old", gpu={"gpuId": 0})).pod
    old["metadata"]["deletionTimestamp"] = "2026-01-01T11:59:59Z"
    again = llamamodel(uid="uid-new", gpu={"mode": "both"})
    decision = decide(again, CONFIG, Observed(pods=[], services=[], node_pods=[old]))
    assert decision.create_pod is None and decision.report.phase is Phase.WAITING
    assert decision.report.message == "both on node-a is held by default/phi-4 (gpu0)"


def test_side_by_side_slots_do_not_wait():
    gpu0 = _children(llamamodel(name="a", uid="ua", gpu={"gpuId": 0})).pod
    decision = decide(llamamodel(gpu={"gpuId": 1}), CONFIG, Observed(pods=[], services=[], node_pods=[gpu0]))
    assert decision.create_pod is not None


def test_existing_pod_is_observed_not_recreated():
    body = llamamodel()
    pod = _children(body).pod
    pod["status"] = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    decision = decide(body, CONFIG, Observed(pods=[pod], services=[], node_pods=[pod]))
    assert decision.create_pod is None
    assert decision.report.phase is Phase.READY


def test_changed_server_deletes_old_pod_first_and_creates_nothing():
    old = _children(llamamodel(parameters={"ctxSize": 1024})).pod
    decision = decide(llamamodel(parameters={"ctxSize": 2048}), CONFIG, Observed([old], [], [old]))
    assert decision.delete_pods == [old["metadata"]["name"]]
    assert decision.create_pod is None
    assert decision.report.reason == "Switching"


def test_terminating_old_pod_is_not_deleted_twice():
    old = _children(llamamodel(parameters={"ctxSize": 1024})).pod
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    decision = decide(llamamodel(parameters={"ctxSize": 2048}), CONFIG, Observed([old], [], [old]))
    assert decision.delete_pods == [] and decision.create_pod is None


def test_slot_move_drops_the_old_service():
    old = _children(llamamodel(gpu={"gpuId": 0})).service
    decision = decide(llamamodel(gpu={"gpuId": 1}), CONFIG, Observed([], [old], []))
    assert decision.delete_services == ["llama-node-a-gpu0"]
    assert decision.apply_service["metadata"]["name"] == "llama-node-a-gpu1"


def test_invalid_spec_fails_and_keeps_the_running_server():
    pod = _children(llamamodel()).pod
    decision = decide(llamamodel(gpu={"mode": "triple"}), CONFIG, Observed([pod], [], [pod]))
    assert decision.report.phase is Phase.FAILED and decision.report.reason == "InvalidSpec"
    assert "spec.gpu.mode" in decision.report.message and pod["metadata"]["name"] in decision.report.message
    assert decision.delete_pods == [] and decision.create_pod is None


def test_unplaceable_spec_fails_with_reason():
    decision = decide(llamamodel(gpu={"gpuId": 7}), CONFIG, NOTHING)
    assert (decision.report.phase, decision.report.reason) == (Phase.FAILED, "InvalidPlacement")
    status = status_patch(llamamodel(gpu={"gpuId": 7}), decision, "now")
    assert status["slot"] is None and status["podName"] is None


def test_a_node_the_cluster_has_not_gets_no_pod_and_the_status_names_the_field():
    """A Pod bound to a node that does not exist would wait unschedulable for ever, holding nothing
    a person can see; the status says which field is wrong instead, and keeps the node it names so
    that the node joining makes the LlamaModel reconciled again."""
    body = llamamodel()
    service = _children(body).service
    decision = decide(body, CONFIG, Observed(pods=[], services=[service], node_pods=[], node_exists=False))
    assert decision.create_pod is None and decision.apply_service is None
    assert decision.delete_services == [service["metadata"]["name"]]
    assert (decision.report.phase, decision.report.reason) == (Phase.FAILED, "NodeNotFound")
    assert decision.report.message == (
        "spec.nodeName: node node-a is not in the cluster; the server is created once it joins"
    )
    status = status_patch(body, decision, "now")
    assert status["node"] == "node-a" and status["podName"] is None
    assert [c["type"] for c in status["conditions"]] == ["Ready"]  # no slot judged, none held


def test_a_running_server_is_followed_even_when_its_node_is_gone():
    pod = _children(llamamodel()).pod
    decision = decide(
        llamamodel(), CONFIG, Observed(pods=[pod], services=[], node_pods=[pod], node_exists=False)
    )
    assert decision.report.reason != "NodeNotFound" and decision.delete_pods == []


def _waiting(name: str, created: str, since: str, slot: str = "gpu0") -> dict:
    body = llamamodel(name=name, uid=f"u-{name}")
    body["metadata"]["creationTimestamp"] = created
    body["status"] = {"phase": "Waiting", "node": "node-a", "slot": slot, "waitingSince": since}
    return body


def test_waiting_since_is_kept_while_waiting_and_set_when_starting():
    holder = _children(llamamodel(name="h", uid="u-h")).pod
    observed = Observed(pods=[], services=[], node_pods=[holder])
    fresh = decide(llamamodel(), CONFIG, observed)
    assert fresh.report.fields["waitingSince"] == "2026-01-01T12:00:00.250000Z"
    again = decide(_waiting("phi-4", "2026-01-01T11:00:00Z", "2026-01-01T11:00:00.5Z"), CONFIG, observed)
    assert again.report.fields["waitingSince"] == "2026-01-01T11:00:00.5Z"


def test_a_newcomer_queues_behind_an_older_waiter_for_overlapping_gpus():
    holder = _children(llamamodel(name="h", uid="u-h", gpu={"gpuId": 1})).pod
    older = _waiting("big", "2026-01-01T11:00:00Z", "2026-01-01T11:00:00.1Z", slot="both")
    body = llamamodel(name="new", uid="u-new")
    body["metadata"]["creationTimestamp"] = "2026-01-01T11:59:00Z"
    decision = decide(body, CONFIG, Observed(pods=[], services=[], node_pods=[holder], llamamodels=[older]))
    assert decision.report.phase is Phase.WAITING
    assert decision.report.message == "gpu0 on node-a is free, but default/big (both) asked first"


def test_the_first_waiter_takes_a_freed_slot():
    first = _waiting("first", "2026-01-01T11:00:00Z", "2026-01-01T11:00:00.1Z")
    second = _waiting("second", "2026-01-01T11:00:00Z", "2026-01-01T11:00:00.2Z")
    observed = Observed(pods=[], services=[], node_pods=[], llamamodels=[first, second])
    assert decide(first, CONFIG, observed).create_pod is not None
    assert decide(second, CONFIG, observed).report.phase is Phase.WAITING


def test_a_switch_on_the_same_slot_keeps_the_slot_claimed():
    old = _children(llamamodel(parameters={"ctxSize": 1024})).pod
    body = llamamodel(parameters={"ctxSize": 2048})
    body["status"] = {
        "phase": "Ready",
        "node": "node-a",
        "slot": "gpu0",
        "conditions": [
            {"type": "SlotAvailable", "status": "True", "reason": "SlotClaimed", "lastTransitionTime": "t"}
        ],
    }
    decision = decide(body, CONFIG, Observed([old], [], [old]))
    assert (
        decision.report.reason == "Switching"
        and decision.report.slot is not None
        and decision.report.slot.available
    )
    slot = next(c for c in status_patch(body, decision, NOW)["conditions"] if c["type"] == "SlotAvailable")
    assert slot["status"] == "True"


def test_leaving_the_queue_names_the_node_whose_waiters_may_move():
    waiting = llamamodel() | {"status": {"phase": "Waiting", "node": "node-a", "slot": "gpu0"}}
    granted = decide(llamamodel(), CONFIG, NOTHING)
    assert left_queue(waiting, granted) == "node-a"
    still = decide(llamamodel(name="x", uid="ux"), CONFIG, Observed([], [], [_children(llamamodel()).pod]))
    assert left_queue(waiting, still) is None
    assert left_queue(llamamodel() | {"status": {"phase": "Ready", "node": "node-a"}}, granted) is None


def test_a_write_that_may_pass_is_reported_and_the_slot_stays_claimed():
    """The Pod create failed (a 500, or no answer: the Pod may exist): the status says which call
    failed and that it is tried again, and still claims the slot, so that nobody else is granted
    its GPUs meanwhile, across a restart of the operator too."""
    body = llamamodel()
    decision = retrying(decide(body, CONFIG, NOTHING), "could not create pod x (500 InternalError: boom)")
    status = status_patch(body, decision, "now")
    assert status["phase"] == "Pending"
    assert status["message"] == "could not create pod x (500 InternalError: boom); trying again"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    slot = next(c for c in status["conditions"] if c["type"] == "SlotAvailable")
    assert (ready["reason"], slot["status"]) == ("Retrying", "True")
    assert status_claim_of(body | {"status": status}, 2, CONFIG) is not None

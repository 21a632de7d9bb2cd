"""The reconcile decision: from a LlamaModel and what the cluster holds, what to do and what to say.

Pure: the reconciler observes the cluster, calls `decide`, carries out its actions and writes the
status from `status_patch`. Level-triggered: the same observation always yields the same decision, so
running it twice, after a crash or on a stale event converges to the same state.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.render import names
from llamacontroller.render.children import Children, render_children
from llamacontroller.render.pod import startup_budget
from llamacontroller.render.service import api_endpoint, service_endpoint
from llamacontroller.resource import InvalidSpec, LlamaModelStatus, Phase, parse_llamamodel
from llamacontroller.slots import (
    Claim,
    PlacementError,
    QueueKey,
    Waiter,
    describe_verdict,
    judge,
    slot_table,
)
from llamacontroller.status import (
    CONDITION_SLOT,
    Report,
    conditions,
    micro_from_rfc3339,
    observe_pod,
    rfc3339,
    rfc3339_micro,
)


@dataclass(frozen=True)
class Observed:
    """What the cluster holds for one LlamaModel."""

    pods: list[dict[str, Any]]  # the LlamaModel's own server Pods
    services: list[dict[str, Any]]  # the LlamaModel's own Services
    node_pods: list[dict[str, Any]]  # every server Pod on the wanted node, whoever owns it
    llamamodels: list[dict[str, Any]] = field(default_factory=list)  # the others, for the waiting queue
    gpu_count: int | None = None  # the node's, from its label; None: the config's gpusPerNode


@dataclass
class Decision:
    """Actions in the order to carry them out, and the status to write afterwards."""

    report: Report
    delete_pods: list[str] = field(default_factory=list)
    create_pod: dict[str, Any] | None = None
    apply_service: dict[str, Any] | None = None
    delete_services: list[str] = field(default_factory=list)


def pod_hash(pod: dict[str, Any]) -> str | None:
    return pod["metadata"].get("annotations", {}).get(names.ANNOTATION_POD_HASH)


def _gpus_of(slot: str, gpu_count: int, config: OperatorConfig) -> frozenset[int]:
    """A slot unknown to the node's table is taken to span every GPU: only that is safe to assume."""
    known = slot_table(gpu_count, config.ports).get(slot)
    return known.gpus if known else frozenset(range(gpu_count))


def claim_of(pod: dict[str, Any], gpu_count: int, config: OperatorConfig) -> Claim:
    """A server Pod holds its slot until it is gone from the API, even while it terminates."""
    meta = pod["metadata"]
    annotations, slot = meta.get("annotations", {}), meta.get("labels", {}).get(names.LABEL_SLOT, "")
    return Claim(
        node=annotations.get(names.ANNOTATION_NODE, ""),
        slot=slot,
        gpus=_gpus_of(slot, gpu_count, config),
        holder=annotations.get(names.ANNOTATION_HOLDER, f"{meta['namespace']}/?"),
    )


def holds_slot(status: dict[str, Any]) -> bool:
    """The status says the slot was granted (and not given up since)."""
    granted = [c for c in status.get("conditions") or [] if c.get("type") == CONDITION_SLOT]
    return bool(granted) and granted[0].get("status") == "True" and bool(status.get("slot"))


def status_claim_of(body: dict[str, Any], gpu_count: int, config: OperatorConfig) -> Claim | None:
    """A LlamaModel granted a slot keeps it while its Pod is briefly gone (deleted from outside,
    evicted, being recreated): the slot is released by deleting or moving the LlamaModel, not by
    losing a Pod."""
    status = body.get("status") or {}
    if not holds_slot(status):
        return None
    meta = body["metadata"]
    slot = status["slot"]
    gpus = _gpus_of(slot, gpu_count, config)
    return Claim(
        node=status.get("node", ""), slot=slot, gpus=gpus, holder=f"{meta['namespace']}/{meta['name']}"
    )


def queue_key(body: dict[str, Any], waiting_since: str) -> QueueKey:
    meta = body["metadata"]
    created = micro_from_rfc3339(meta.get("creationTimestamp", ""))
    return QueueKey(created=created, waiting_since=waiting_since, who=f"{meta['namespace']}/{meta['name']}")


def waiter_of(body: dict[str, Any], gpu_count: int, config: OperatorConfig) -> Waiter | None:
    """A LlamaModel in the queue, as its last status says."""
    status = body.get("status") or {}
    if status.get("phase") != Phase.WAITING.value or not status.get("node") or not status.get("slot"):
        return None
    key = queue_key(body, status.get("waitingSince") or "")
    gpus = _gpus_of(status["slot"], gpu_count, config)
    return Waiter(node=status["node"], slot=status["slot"], gpus=gpus, who=key.who, key=key)


def _is_terminal(pod: dict[str, Any]) -> bool:
    """With restartPolicy Always only eviction or node loss ends a Pod; it never runs again."""
    terminal = pod.get("status", {}).get("phase") in {"Failed", "Succeeded"}
    return terminal and not pod["metadata"].get("deletionTimestamp")


def _invalid(reason: str, message: str, observed: Observed) -> Decision:
    running = [p["metadata"]["name"] for p in observed.pods]
    if running:
        message += f"; the previous server keeps running in pod {', '.join(running)}"
    return Decision(report=Report(Phase.FAILED, reason, message))


def decide(body: dict[str, Any], config: OperatorConfig, observed: Observed, now: datetime) -> Decision:
    try:
        children = render_children(parse_llamamodel(body), config, observed.gpu_count)
    except InvalidSpec as exc:
        return _invalid("InvalidSpec", str(exc), observed)
    except PlacementError as exc:
        return _invalid("InvalidPlacement", str(exc), observed)
    return _decide_children(body, children, config, observed, now)


def _decide_children(
    body: dict[str, Any], children: Children, config: OperatorConfig, observed: Observed, now: datetime
) -> Decision:
    placement = children.placement
    fields: dict[str, Any] = {"node": placement.node, "slot": placement.slot, "port": placement.port}
    wanted_hash = pod_hash(children.pod)
    stale = [p for p in observed.pods if pod_hash(p) != wanted_hash]
    current = [p for p in observed.pods if pod_hash(p) == wanted_hash]
    if stale:
        return _unload_first(stale, fields, _keeps_slot(body, children))
    own_services = [s["metadata"]["name"] for s in observed.services]
    if current:
        decision = _follow(current[0], children, config, now, fields)
    else:
        decision = _claim_or_wait(body, children, config, observed, now, fields)
        if decision.report.phase is Phase.WAITING:
            decision.delete_services = own_services  # a waiter fronts no slot
            return decision
    service_name = children.service["metadata"]["name"]
    decision.apply_service = children.service
    decision.delete_services = [name for name in own_services if name != service_name]
    decision.report.fields.update(
        podName=(current[0] if current else children.pod)["metadata"]["name"],
        serviceName=service_name,
        endpoint=service_endpoint(children.service),
        apiEndpoint=api_endpoint(children.service),
    )
    return decision


def _keeps_slot(body: dict[str, Any], children: Children) -> str | None:
    """While a switch on the same slot unloads, the slot stays its own: no waiter slips in."""
    previous, placement = body.get("status") or {}, children.placement
    same_slot = previous.get("node") == placement.node and previous.get("slot") == placement.slot
    return _holder_message(children) if holds_slot(previous) and same_slot else None


def _unload_first(stale: list[dict[str, Any]], fields: dict[str, Any], held: str | None) -> Decision:
    """A switch: the new server starts only once the old Pod is gone from the API."""
    doomed = [p["metadata"]["name"] for p in stale]
    to_delete = [p["metadata"]["name"] for p in stale if not p["metadata"].get("deletionTimestamp")]
    message = f"unloading the previous server (pod {', '.join(doomed)}) before loading the new one"
    slot = (True, "SlotClaimed", held) if held else (None, "", "")
    report = Report(Phase.PENDING, "Switching", message, *slot, fields=fields)
    return Decision(report=report, delete_pods=to_delete)


def _holder_message(children: Children) -> str:
    meta = children.lm.metadata
    return f"{children.placement.slot} on {children.placement.node} is held by {meta.namespace}/{meta.name}"


def _follow(
    pod: dict[str, Any], children: Children, config: OperatorConfig, now: datetime, fields: dict[str, Any]
) -> Decision:
    """The server runs: its Pod tells the phase. An evicted Pod (or one lost with its node) never
    runs again: a bare Pod is the operator's to heal, so it is replaced."""
    seen = observe_pod(pod, now, startup_budget(children.lm, config))
    doomed = [pod["metadata"]["name"]] if _is_terminal(pod) else []
    message = seen.message + ("; replacing the pod" if doomed else "")
    held = _holder_message(children)
    report = Report(seen.phase, seen.reason, message, True, "SlotClaimed", held, fields=fields | seen.fields)
    return Decision(report=report, delete_pods=doomed)


def _claim_or_wait(
    body: dict[str, Any],
    children: Children,
    config: OperatorConfig,
    observed: Observed,
    now: datetime,
    fields: dict[str, Any],
) -> Decision:
    """No server yet: take the slot if the ledger grants it, else wait in line."""
    placement, me = children.placement, f"{children.lm.metadata.namespace}/{children.lm.metadata.name}"
    previous = body.get("status") or {}
    same_slot = previous.get("node") == placement.node and previous.get("slot") == placement.slot
    still_waiting = previous.get("phase") == Phase.WAITING.value and same_slot
    key = queue_key(body, (previous.get("waitingSince") if still_waiting else None) or rfc3339_micro(now))
    count = observed.gpu_count or config.gpus_per_node
    claims = [claim_of(p, count, config) for p in observed.node_pods]
    claims += [c for c in (status_claim_of(lm, count, config) for lm in observed.llamamodels) if c]
    waiters = [w for w in (waiter_of(lm, count, config) for lm in observed.llamamodels) if w is not None]
    if holds_slot(previous) and same_slot:
        waiters = []  # a holder re-creating its Pod is no newcomer: nobody queues ahead of it
    verdict = judge(placement, me, key, claims, waiters)
    if not verdict.granted:
        message = describe_verdict(placement, verdict)
        fields = fields | {"waitingSince": key.waiting_since}
        return Decision(
            report=Report(Phase.WAITING, "SlotTaken", message, False, "SlotTaken", message, fields=fields)
        )
    pod_name = children.pod["metadata"]["name"]
    message = f"created pod {pod_name} for {placement.slot} on {placement.node}"
    report = Report(
        Phase.PENDING, "PodCreated", message, True, "SlotClaimed", _holder_message(children), fields=fields
    )
    return Decision(report=report, create_pod=children.pod)


def status_patch(body: dict[str, Any], decision: Decision, now: datetime) -> dict[str, Any]:
    """The whole status to write; fields that no longer apply are cleared (set to None)."""
    previous = LlamaModelStatus.model_validate(body.get("status") or {})
    generation = body.get("metadata", {}).get("generation")
    report = decision.report
    model_name = None
    with contextlib.suppress(InvalidSpec):
        model_name = parse_llamamodel(body).model_name
    status: dict[str, Any] = {
        "phase": report.phase.value,
        "message": report.message,
        "model": model_name,
        "node": None,
        "slot": None,
        "port": None,
        "podName": None,
        "serviceName": None,
        "endpoint": None,
        "apiEndpoint": None,
        "waitingSince": None,
        "loadedAt": None,
        "restarts": None,
        "lastTermination": None,
        "observedGeneration": generation,
    }
    status.update(report.fields)
    status["conditions"] = [
        c.model_dump(by_alias=True, exclude_none=True)
        for c in conditions(report, generation, previous.conditions, rfc3339(now))
    ]
    return status


def left_queue(before: dict[str, Any], decision: Decision) -> str | None:
    """The node whose queue moved because this LlamaModel stopped waiting there (or moved on)."""
    was_waiting = before.get("phase") == Phase.WAITING.value
    after = decision.report
    stays = after.phase is Phase.WAITING and after.fields.get("slot") == before.get("slot")
    return before.get("node") if was_waiting and not stays else None

"""The reconcile decision: from a LlamaModel and what the cluster holds, what to do and what to say.

Pure: the reconciler observes the cluster, calls `decide`, carries out its actions and writes the
status from `status_patch`. Level-triggered: the same observation always yields the same decision, so
running it twice, after a crash or on a stale event converges to the same state.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.fit.check import TOO_LARGE, FitVerdict, check_fit
from llamacontroller.ledger import (
    claim_of,
    holds_slot,
    queue_key,
    server_hash,
    status_claim_of,
    status_of,
    waiter_of,
)
from llamacontroller.llamanode import LlamaNode
from llamacontroller.render.children import Children, render_children
from llamacontroller.render.pod import startup_budget
from llamacontroller.render.service import api_endpoint, service_endpoint
from llamacontroller.resource import InvalidSpec, LlamaModelStatus, Phase, parse_llamamodel
from llamacontroller.slots import PlacementError, describe_verdict, judge
from llamacontroller.status import (
    CONDITION_FIT,
    NodeHealth,
    Report,
    SlotCondition,
    conditions,
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
    node: NodeHealth | None = None  # whether the wanted node's kubelet reports; None: not known
    node_exists: bool = True  # False: the wanted node is not in the cluster (the cache holds every Node)
    llamanode: LlamaNode | None = None  # what the node's agent reads of its GPUs and models; None: none
    fetch_progress: dict[str, str] = field(default_factory=dict)  # pod name -> its fetch's last log line


@dataclass(frozen=True)
class Decision:
    """Actions in the order to carry them out, and the status to write afterwards."""

    report: Report
    delete_pods: list[str] = field(default_factory=list)
    create_pod: dict[str, Any] | None = None
    apply_service: dict[str, Any] | None = None
    delete_services: list[str] = field(default_factory=list)


# The status fields that never carry over: each decision says them anew, or they are cleared.
STATUS_KEYS = tuple(info.alias or name for name, info in LlamaModelStatus.model_fields.items())


def _is_terminal(pod: dict[str, Any]) -> bool:
    """With restartPolicy Always only eviction or node loss ends a Pod; it never runs again."""
    terminal = pod.get("status", {}).get("phase") in {"Failed", "Succeeded"}
    return terminal and not pod["metadata"].get("deletionTimestamp")


def _invalid(reason: str, message: str, observed: Observed, fit: FitVerdict | None = None) -> Decision:
    running = [p["metadata"]["name"] for p in observed.pods]
    if running:
        message += f"; the previous server keeps running in pod {', '.join(running)}"
    return Decision(report=Report(phase=Phase.FAILED, reason=reason, message=message, fit=fit))


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
    placement, previous = children.placement, status_of(body)
    fields: dict[str, Any] = {"node": placement.node, "slot": placement.slot, "port": placement.port}
    wanted_hash = server_hash(children.pod)
    stale = [p for p in observed.pods if server_hash(p) != wanted_hash]
    current = [p for p in observed.pods if server_hash(p) == wanted_hash]
    if stale and not current:
        # A new server that can never fit does not unload the one that runs (as an invalid spec).
        # Whether other processes leave it room is known once the old one is gone: then it is checked.
        fit = check_fit(children.lm, placement, config, observed.llamanode, _gpu_count(observed, config), now)
        if fit.reason == TOO_LARGE:
            return _invalid(fit.reason, f"{placement.slot} on {placement.node}: {fit.message}", observed, fit)
    if stale:
        return _unload_first(stale, fields, _keeps_slot(previous, children), observed.node)
    own_services = [s["metadata"]["name"] for s in observed.services]
    if current:
        progress = observed.fetch_progress.get(current[0]["metadata"]["name"])
        decision = _follow(
            current[0], children, config, now, fields, observed.node, _checked(previous), progress
        )
    elif not observed.node_exists:
        return Decision(report=_no_such_node(children, fields), delete_services=own_services)
    else:
        decision = _claim_or_wait(body, previous, children, config, observed, now, fields)
        if decision.create_pod is None:
            return replace(decision, delete_services=own_services)  # a waiter fronts no slot
    service_name = children.service["metadata"]["name"]
    report = decision.report.with_fields(
        podName=(current[0] if current else children.pod)["metadata"]["name"],
        serviceName=service_name,
        endpoint=service_endpoint(children.service),
        apiEndpoint=api_endpoint(children.service),
    )
    return replace(
        decision,
        report=report,
        apply_service=children.service,
        delete_services=[name for name in own_services if name != service_name],
    )


def _gpu_count(observed: Observed, config: OperatorConfig) -> int:
    return observed.gpu_count or config.gpus_per_node


def _no_such_node(children: Children, fields: dict[str, Any]) -> Report:
    """No server for a node the cluster does not have: its Pod could never be scheduled. The node
    joining makes the LlamaModel reconciled again (the status names it)."""
    node = children.placement.node
    where = "spec.nodeName" if children.lm.spec.node_name else "defaultNode (the operator's config)"
    message = f"{where}: node {node} is not in the cluster; the server is created once it joins"
    return Report(phase=Phase.FAILED, reason="NodeNotFound", message=message, fields=fields)


def _same_slot(previous: LlamaModelStatus, children: Children) -> bool:
    return previous.node == children.placement.node and previous.slot == children.placement.slot


def _keeps_slot(previous: LlamaModelStatus, children: Children) -> SlotCondition | None:
    """While a switch on the same slot unloads, the slot stays its own: no waiter slips in."""
    return _claimed(children) if holds_slot(previous) and _same_slot(previous, children) else None


def _unload_first(
    stale: list[dict[str, Any]], fields: dict[str, Any], held: SlotCondition | None, node: NodeHealth | None
) -> Decision:
    """A switch: the new server starts only once the old Pod is gone from the API."""
    doomed = [p["metadata"]["name"] for p in stale]
    to_delete = [p["metadata"]["name"] for p in stale if not p["metadata"].get("deletionTimestamp")]
    message = f"unloading the previous server (pod {', '.join(doomed)}) before loading the new one"
    lost = [
        p["metadata"]["name"]
        for p in stale
        if node and not node.responding and p["spec"].get("nodeName") == node.name
    ]
    if node is not None and lost:
        message += (
            f"; node {node.name} does not respond, so the pod cannot be known to stop: if the node is "
            f"lost for good, `kubectl delete pod {lost[0]} --force --grace-period=0` frees the slot"
        )
    report = Report(phase=Phase.PENDING, reason="Switching", message=message, slot=held, fields=fields)
    return Decision(report=report, delete_pods=to_delete)


def _claimed(children: Children) -> SlotCondition:
    meta, placement = children.lm.metadata, children.placement
    message = f"{placement.slot} on {placement.node} is held by {meta.namespace}/{meta.name}"
    return SlotCondition(available=True, reason="SlotClaimed", message=message)


def _checked(previous: LlamaModelStatus) -> FitVerdict | None:
    """The fit check made before the running server's Pod was created: it stays what it was, as the
    check gates a creation and never stops a server that runs."""
    found = next((c for c in previous.conditions if c.type == CONDITION_FIT), None)
    return FitVerdict(found.reason, found.message) if found else None


def _follow(
    pod: dict[str, Any],
    children: Children,
    config: OperatorConfig,
    now: datetime,
    fields: dict[str, Any],
    node: NodeHealth | None,
    fit: FitVerdict | None,
    progress: str | None = None,
) -> Decision:
    """The server runs: its Pod tells the phase. An evicted Pod (or one lost with its node) never
    runs again: a bare Pod is the operator's to heal, so it is replaced."""
    seen = observe_pod(pod, now, startup_budget(children.lm, config), node, progress)
    doomed = [pod["metadata"]["name"]] if _is_terminal(pod) else []
    report = Report(
        phase=seen.phase,
        reason=seen.reason,
        message=seen.message + ("; replacing the pod" if doomed else ""),
        slot=_claimed(children),
        fields={**fields, **seen.fields},
        fit=fit,
    )
    return Decision(report=report, delete_pods=doomed)


def _claim_or_wait(
    body: dict[str, Any],
    previous: LlamaModelStatus,
    children: Children,
    config: OperatorConfig,
    observed: Observed,
    now: datetime,
    fields: dict[str, Any],
) -> Decision:
    """No server yet: take the slot if the ledger grants it and the model fits on its GPUs (or the
    fit cannot be checked), else wait in line; a model larger than its GPUs fails."""
    placement, me = children.placement, children.lm.metadata.uid
    same_slot = _same_slot(previous, children)
    still_waiting = previous.phase is Phase.WAITING and same_slot
    key = queue_key(body, (previous.waiting_since if still_waiting else None) or rfc3339_micro(now))
    count = _gpu_count(observed, config)
    fit = check_fit(children.lm, placement, config, observed.llamanode, count, now)
    where = f"{placement.slot} on {placement.node}"
    if fit.reason == TOO_LARGE:  # no claim and no place in the queue: waiting would not help
        report = Report(
            phase=Phase.FAILED, reason=fit.reason, message=f"{where}: {fit.message}", fields=fields, fit=fit
        )
        return Decision(report=report)
    claims = [claim_of(p, count, config) for p in observed.node_pods]
    claims += [c for c in (status_claim_of(lm, count, config) for lm in observed.llamamodels) if c]
    waiters = [w for w in (waiter_of(lm, count, config) for lm in observed.llamamodels) if w is not None]
    if holds_slot(previous) and same_slot:
        waiters = []  # a holder re-creating its Pod is no newcomer: nobody queues ahead of it
    verdict = judge(placement, me, key, claims, waiters)
    if not verdict.granted:
        message = describe_verdict(placement, verdict)
        report = Report(
            phase=Phase.WAITING,
            reason="SlotTaken",
            message=message,
            slot=SlotCondition(available=False, reason="SlotTaken", message=message),
            fields={**fields, "waitingSince": key.waiting_since},
            fit=fit,
        )
        return Decision(report=report)
    if not fit.places:
        # The slot is its own (no other LlamaModel gets it meanwhile) while other processes hold
        # the GPU's memory; a change of the node's LlamaNode makes it decided again.
        report = Report(
            phase=Phase.WAITING,
            reason=fit.reason,
            message=f"{where}: {fit.message}",
            slot=_claimed(children),
            fields={**fields, "waitingSince": key.waiting_since},
            fit=fit,
        )
        return Decision(report=report)
    pod_name = children.pod["metadata"]["name"]
    message = f"created pod {pod_name} for {where}"
    report = Report(
        phase=Phase.PENDING,
        reason="PodCreated",
        message=message,
        slot=_claimed(children),
        fields=fields,
        fit=fit,
    )
    return Decision(report=report, create_pod=children.pod)


def refused(decision: Decision, message: str) -> Decision:
    """The API server refused the decision's create (a bad quantity, a missing RuntimeClass, a quota):
    the status says so, with the server's own words; the next reconcile tries again."""
    before = decision.report
    report = Report(
        phase=Phase.FAILED, reason="Refused", message=message, slot=before.slot, fields=before.fields
    )
    return replace(decision, report=report)


def retrying(decision: Decision, failure: str) -> Decision:
    """An action failed in a way that may pass (an error of the API server, a throttle, a conflict,
    a lost answer): the status says which, and that it is tried again. The rest of the decision
    stands: a slot granted stays claimed (a Pod whose answer was lost may exist)."""
    report = replace(decision.report, reason="Retrying", message=f"{failure}; trying again")
    return replace(decision, report=report)


def status_patch(body: dict[str, Any], decision: Decision, now: datetime) -> dict[str, Any]:
    """The whole status to write: every field of the status model, those the decision does not
    give cleared (None), so nothing of an earlier state lingers."""
    previous = status_of(body)
    generation = body.get("metadata", {}).get("generation")
    report = decision.report
    unknown = set(report.fields) - set(STATUS_KEYS)
    if unknown:
        raise ValueError(f"not fields of LlamaModelStatus: {sorted(unknown)}")
    model_name = None
    with contextlib.suppress(InvalidSpec):
        model_name = parse_llamamodel(body).model_name
    status: dict[str, Any] = dict.fromkeys(STATUS_KEYS)
    status |= {"phase": report.phase.value, "message": report.message, "model": model_name}
    status |= {"observedGeneration": generation, **report.fields}
    status["conditions"] = [
        c.model_dump(by_alias=True, exclude_none=True)
        for c in conditions(report, generation, previous.conditions, rfc3339(now))
    ]
    return status


def left_queue(body: dict[str, Any], decision: Decision) -> str | None:
    """The node whose queue moved because this LlamaModel stopped waiting there (or moved on)."""
    before, after = status_of(body), decision.report
    stays = after.phase is Phase.WAITING and after.fields.get("slot") == before.slot
    return before.node if before.phase is Phase.WAITING and not stays else None

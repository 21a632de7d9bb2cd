"""The reconcile decision: from a LlamaModel and what the cluster holds, what to do and what to say.

Pure: the kopf handlers observe the cluster, call `decide`, carry out its actions and write the status
it returns. Level-triggered: the same observation always yields the same decision, so running it twice,
after a crash or on a stale event converges to the same state.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.render import names
from llamacontroller.render.children import Children, render_children
from llamacontroller.render.service import service_endpoint
from llamacontroller.resource import InvalidSpec, LlamaModel, LlamaModelStatus, Phase, parse_llamamodel
from llamacontroller.slots import Claim, PlacementError, conflicting, describe_holders
from llamacontroller.status import Report, conditions, observe_pod


@dataclass(frozen=True)
class Observed:
    """What the cluster holds for one LlamaModel."""

    pods: list[dict[str, Any]]  # the LlamaModel's own server Pods
    services: list[dict[str, Any]]  # the LlamaModel's own Services
    node_pods: list[dict[str, Any]]  # every server Pod on the wanted node, whoever owns it


@dataclass
class Decision:
    """Actions in the order to carry them out, and the status to write afterwards."""

    report: Report
    delete_pods: list[str] = field(default_factory=list)
    create_pod: dict[str, Any] | None = None
    apply_service: dict[str, Any] | None = None
    delete_services: list[str] = field(default_factory=list)
    node: str | None = None


def pod_hash(pod: dict[str, Any]) -> str | None:
    return pod["metadata"].get("annotations", {}).get(names.ANNOTATION_POD_HASH)


def claim_of(pod: dict[str, Any], config: OperatorConfig) -> Claim:
    """A server Pod holds its slot until it is gone, even while it terminates.

    A Pod whose slot is no longer in the slot table is taken to hold every GPU of its node: only a
    held GPU can be safely assumed busy.
    """
    meta = pod["metadata"]
    slot = meta.get("labels", {}).get(names.LABEL_SLOT, "")
    known = config.slots.get(slot)
    all_gpus = {gpu for s in config.slots.values() for gpu in s.gpus}
    return Claim(
        node=meta.get("annotations", {}).get(names.ANNOTATION_NODE, ""),
        slot=slot,
        gpus=frozenset(known.gpus if known else all_gpus),
        holder=meta.get("annotations", {}).get(names.ANNOTATION_HOLDER, f"{meta['namespace']}/?"),
    )


def _invalid(reason: str, message: str, observed: Observed) -> Decision:
    running = [p["metadata"]["name"] for p in observed.pods]
    if running:
        message += f"; the previous server keeps running in pod {', '.join(running)}"
    return Decision(report=Report(Phase.FAILED, reason, message))


def decide(body: dict[str, Any], config: OperatorConfig, observed: Observed) -> Decision:
    try:
        lm = parse_llamamodel(body)
        children = render_children(lm, config)
    except InvalidSpec as exc:
        return _invalid("InvalidSpec", str(exc), observed)
    except PlacementError as exc:
        return _invalid("InvalidPlacement", str(exc), observed)
    decision = _decide_children(lm, children, config, observed)
    decision.node = children.placement.node
    return decision


def _decide_children(
    lm: LlamaModel, children: Children, config: OperatorConfig, observed: Observed
) -> Decision:
    wanted_hash = pod_hash(children.pod)
    stale = [p for p in observed.pods if pod_hash(p) != wanted_hash]
    current = [p for p in observed.pods if pod_hash(p) == wanted_hash]
    fields = {
        "node": children.placement.node,
        "slot": children.placement.slot,
        "port": children.placement.port,
    }
    if stale:
        # Unload before load: the new server starts only once the old Pod is gone from the API.
        doomed = [p["metadata"]["name"] for p in stale]
        to_delete = [p["metadata"]["name"] for p in stale if not p["metadata"].get("deletionTimestamp")]
        message = f"unloading the previous server (pod {', '.join(doomed)}) before loading the new one"
        return Decision(
            report=Report(Phase.PENDING, "Switching", message, fields=fields), delete_pods=to_delete
        )

    own_services = [s["metadata"]["name"] for s in observed.services]
    service_name = children.service["metadata"]["name"]
    if not current:
        me = f"{lm.metadata.namespace}/{lm.metadata.name}"
        claims = [claim_of(p, config) for p in observed.node_pods]
        holders = conflicting(children.placement, claims, me)
        if holders:
            message = describe_holders(children.placement, holders)
            report = Report(Phase.WAITING, "SlotTaken", message, False, "SlotTaken", message, fields=fields)
            return Decision(report=report, delete_services=own_services)
        pod_name = children.pod["metadata"]["name"]
        report = Report(
            Phase.PENDING,
            "PodCreated",
            f"created pod {pod_name} for {children.placement.slot} on {children.placement.node}",
            True,
            "SlotClaimed",
            f"{children.placement.slot} on {children.placement.node} is held by {me}",
            fields=fields,
        )
        current_pod = children.pod
        decision = Decision(report=report, create_pod=children.pod)
    else:
        current_pod = current[0]
        observation = observe_pod(current_pod)
        me = f"{lm.metadata.namespace}/{lm.metadata.name}"
        slot_message = f"{children.placement.slot} on {children.placement.node} is held by {me}"
        report = Report(
            observation.phase,
            observation.reason,
            observation.message,
            True,
            "SlotClaimed",
            slot_message,
            fields=fields,
        )
        decision = Decision(report=report)

    decision.apply_service = children.service
    decision.delete_services = [name for name in own_services if name != service_name]
    decision.report.fields.update(
        podName=current_pod["metadata"]["name"],
        serviceName=service_name,
        endpoint=service_endpoint(children.service),
    )
    return decision


def status_patch(body: dict[str, Any], decision: Decision, now: str) -> dict[str, Any]:
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
        "observedGeneration": generation,
    }
    status.update(report.fields)
    status["conditions"] = [
        c.model_dump(by_alias=True, exclude_none=True)
        for c in conditions(report, generation, previous.conditions, now)
    ]
    return status

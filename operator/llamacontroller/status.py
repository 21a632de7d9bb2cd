"""What the status says: phases, reasons and conditions, derived from observations. Pure functions.

Conditions follow the Kubernetes API convention; lastTransitionTime moves only when a condition's
status changes, so `kubectl describe` tells when things really happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from llamacontroller.resource import Condition, Phase

CONDITION_READY = "Ready"
CONDITION_SLOT = "SlotAvailable"

# A container stuck in one of these states needs a person, not patience.
FAILING_WAIT_REASONS = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
}


@dataclass(frozen=True)
class Report:
    """The operator's verdict on one LlamaModel: a phase, why, and for people a message."""

    phase: Phase
    reason: str
    message: str
    slot_available: bool | None = None
    slot_reason: str = ""
    slot_message: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod_condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in pod.get("status", {}).get("conditions", []) if c.get("type") == kind), {})


def _container_state(pod: dict[str, Any]) -> dict[str, Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return statuses[0].get("state") or {}


def observe_pod(pod: dict[str, Any]) -> Report:
    """Read a server Pod the way a person would: is it scheduled, loading, serving or broken?"""
    name = pod["metadata"]["name"]
    if pod["metadata"].get("deletionTimestamp"):
        return Report(Phase.PENDING, "Terminating", f"pod {name} is stopping")
    state = _container_state(pod)
    waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
    if pod.get("status", {}).get("phase") == "Failed" or waiting.get("reason") in FAILING_WAIT_REASONS:
        reason = waiting.get("reason") or terminated.get("reason") or "PodFailed"
        detail = waiting.get("message") or terminated.get("message") or pod.get("status", {}).get("message")
        return Report(Phase.FAILED, reason, f"pod {name}: {reason}" + (f": {detail}" if detail else ""))
    scheduled = _pod_condition(pod, "PodScheduled")
    if scheduled.get("status") == "False":
        reason = scheduled.get("reason") or "Unschedulable"
        return Report(
            Phase.PENDING, reason, f"pod {name} cannot be scheduled: {scheduled.get('message', '')}"
        )
    if _pod_condition(pod, "Ready").get("status") == "True":
        return Report(Phase.READY, "ServerReady", f"llama-server in pod {name} is ready")
    if "running" in state:
        return Report(Phase.LOADING, "Loading", f"llama-server in pod {name} is loading the model")
    reason = waiting.get("reason") or "PodPending"
    return Report(Phase.PENDING, reason, f"pod {name} is starting ({reason})")


def _condition(
    kind: str,
    status: bool,
    reason: str,
    message: str,
    generation: int | None,
    previous: list[Condition],
    now: str,
) -> Condition:
    value = "True" if status else "False"
    before = next((c for c in previous if c.type == kind), None)
    moved = before is None or before.status != value
    return Condition(
        type=kind,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=now if moved else before.last_transition_time,
        observed_generation=generation,
    )


def conditions(
    report: Report, generation: int | None, previous: list[Condition], now: str
) -> list[Condition]:
    """The Ready condition always; SlotAvailable once the operator has judged the slot."""
    result = []
    if report.slot_available is not None:
        result.append(
            _condition(
                CONDITION_SLOT,
                report.slot_available,
                report.slot_reason,
                report.slot_message,
                generation,
                previous,
                now,
            )
        )
    ready = report.phase is Phase.READY
    result.append(
        _condition(CONDITION_READY, ready, report.reason, report.message, generation, previous, now)
    )
    return result

"""A Pod's status as the kubelet reports it, computed from what the kubelet knows (pure).

Container statuses (state, lastState, ready, started, restartCount, ids), the phase (the kubelet's
rules, including the terminal phase of a deleted Pod) and the conditions the kubelet owns:
PodReadyToStartContainers, Initialized, ContainersReady and Ready, and PodScheduled (True: the Pod
is on this node) for Pods that were bound by their nodeName without the scheduler.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_id(image: str) -> str:
    """A stable digest reference for an image: ``<repository>@sha256:<hex>``."""
    repository = image.rsplit("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    return f"{repository}@sha256:{hashlib.sha256(image.encode()).hexdigest()}"


@dataclass
class ContainerRecord:
    """What the agent knows of one container of a Pod; ``status()`` renders it for the API."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    container_id: str = ""
    started_at: str = ""
    finished_at: str = ""
    exit_code: int = 0
    signal: int | None = None
    terminated_reason: str = ""
    terminated_message: str = ""
    last_terminated: dict[str, Any] | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    ever_ran: bool = False

    def terminated_status(self) -> dict[str, Any]:
        terminated: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.terminated_reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "containerID": self.container_id,
        }
        if self.signal is not None:
            terminated["signal"] = self.signal
        if self.terminated_message:
            terminated["message"] = self.terminated_message
        return terminated

    def state_status(self) -> dict[str, Any]:
        if self.state == "running":
            return {"running": {"startedAt": self.started_at}}
        if self.state == "terminated":
            return {"terminated": self.terminated_status()}
        waiting: dict[str, Any] = {"reason": self.waiting_reason}
        if self.waiting_message:
            waiting["message"] = self.waiting_message
        return {"waiting": waiting}

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": image_id(self.image) if self.ever_ran else "",
            "state": self.state_status(),
            "lastState": {"terminated": self.last_terminated} if self.last_terminated else {},
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def pod_phase(restart_policy: str, records: Sequence[ContainerRecord], terminal: bool) -> str:
    """The kubelet's phase rules; ``terminal``: the Pod is deleted and all its containers stopped,
    which ends it Succeeded (all exited 0) or Failed."""
    if terminal:
        ok = all(r.state == "terminated" and r.exit_code == 0 for r in records)
        return "Succeeded" if ok else "Failed"
    waiting = running = stopped = succeeded = 0
    for record in records:
        if record.state == "running":
            running += 1
        elif record.state == "terminated":
            stopped += 1
            succeeded += record.exit_code == 0
        elif record.last_terminated is not None:
            stopped += 1  # restarting after a run: counts as stopped, as in the kubelet
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


@dataclass
class PodFacts:
    """Everything besides the containers that the Pod's status reports."""

    sandbox_ready: bool
    terminal: bool
    pod_ip: str = ""
    host_ip: str = ""
    start_time: str = ""
    previous_conditions: Sequence[Mapping[str, Any]] = field(default_factory=list)


def _condition(
    kind: str, ok: bool, previous: Mapping[str, Mapping[str, Any]], reason: str = "", message: str = ""
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind)
    changed = before is None or before.get("status") != status
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": now_rfc3339() if changed else before.get("lastTransitionTime"),  # type: ignore[union-attr]
    }
    if not ok and reason:
        condition["reason"] = reason
    if not ok and message:
        condition["message"] = message
    return condition


def pod_conditions(
    records: Sequence[ContainerRecord], facts: PodFacts, init: Sequence[ContainerRecord] = ()
) -> list[dict[str, Any]]:
    previous = {c["type"]: c for c in facts.previous_conditions if "type" in c}
    incomplete = [r.name for r in init if not (r.state == "terminated" and r.exit_code == 0)]
    init_message = f"containers with incomplete status: [{' '.join(incomplete)}]"
    unready = [r.name for r in records if not r.ready]
    if facts.terminal:
        reason, message = "PodCompleted", ""
    else:
        reason, message = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"
    ready = not unready and not facts.terminal
    return [
        _condition("PodScheduled", True, previous),  # the kubelet adds it to Pods bound by nodeName
        _condition("PodReadyToStartContainers", facts.sandbox_ready, previous),
        _condition("Initialized", not incomplete, previous, "ContainersNotInitialized", init_message),
        _condition("ContainersReady", ready, previous, reason, message),
        _condition("Ready", ready, previous, reason, message),
    ]


def pod_status(
    restart_policy: str,
    records: Sequence[ContainerRecord],
    facts: PodFacts,
    init: Sequence[ContainerRecord] = (),
) -> dict[str, Any]:
    """The status the kubelet writes through pods/status. While an init container has not
    succeeded the Pod is Pending (Failed when one failed for good: restartPolicy Never)."""
    phase = pod_phase(restart_policy, records, facts.terminal)
    pending_init = [r for r in init if not (r.state == "terminated" and r.exit_code == 0)]
    if pending_init and not facts.terminal:
        failed = any(r.state == "terminated" for r in pending_init) and restart_policy == "Never"
        phase = "Failed" if failed else "Pending"
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": pod_conditions(records, facts, init),
        "containerStatuses": [record.status() for record in records],
    }
    if init:
        status["initContainerStatuses"] = [record.status() for record in init]
    if facts.host_ip:
        status["hostIP"] = facts.host_ip
        status["hostIPs"] = [{"ip": facts.host_ip}]
    if facts.pod_ip:
        status["podIP"] = facts.pod_ip
        status["podIPs"] = [{"ip": facts.pod_ip}]
    if facts.start_time:
        status["startTime"] = facts.start_time
    return status


def status_patch(uid: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """A strategic merge patch of pods/status: the UID as a precondition (as the kubelet sends),
    conditions merged by type (so the controllers' own conditions stay) with the reason and message
    of a condition that has none removed, container statuses replaced (an atomic list)."""
    patch_status = dict(status)
    patch_status["conditions"] = [
        {"reason": None, "message": None, **condition} for condition in status.get("conditions", [])
    ]
    return {"metadata": {"uid": uid}, "status": patch_status}

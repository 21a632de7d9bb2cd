"""What the status says: phases, reasons and conditions, derived from observations. Pure functions.

Conditions follow the Kubernetes API convention; lastTransitionTime moves only when a condition's
status changes, so `kubectl describe` tells when things really happened.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from llamacontroller.resource import Condition, Phase

if TYPE_CHECKING:  # the adapters import this module for its time formats: not the estimate with it
    from llamacontroller.fit.check import FitVerdict

SERVER_CONTAINER = "llama-server"
FETCH_CONTAINER = "fetch"  # the init container that fetches spec.model.source (render/pod.py)
CONDITION_READY = "Ready"
CONDITION_SLOT = "SlotAvailable"
CONDITION_FIT = "FitsOnSlot"

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
class SlotCondition:
    """The judgement of the slot (the SlotAvailable condition): granted or not, why, for people."""

    available: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Report:
    """The operator's verdict on one LlamaModel: a phase, why, and for people a message.

    ``slot``: None until the slot is judged (an invalid spec never is). ``fit``: the fit check made
    before the server's Pod was created (FitsOnSlot), None before it is made. ``fields``: the other
    status fields it knows, by their API names (``podName``, ``restarts``, ...)."""

    phase: Phase
    reason: str
    message: str
    slot: SlotCondition | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)
    fit: FitVerdict | None = None

    def with_fields(self, **fields: Any) -> Report:
        return replace(self, fields={**self.fields, **fields})


def rfc3339(moment: datetime) -> str:
    """Seconds, as Kubernetes writes its own times (conditions, events)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_micro(moment: datetime) -> str:
    """Microseconds, for orderings finer than a second (the waiting queue)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def micro_from_rfc3339(text: str) -> str:
    """`2026-01-01T00:00:00Z` as `2026-01-01T00:00:00.000000Z`, so both forms sort together."""
    return text if "." in text else text.replace("Z", ".000000Z")


def _pod_condition(pod: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in pod.get("status", {}).get("conditions", []) if c.get("type") == kind), {})


def _container(pod: dict[str, Any], name: str = SERVER_CONTAINER) -> dict[str, Any]:
    """A container's status, llama-server's by default (the Pod's first when none is named so)."""
    statuses = pod.get("status", {}).get("containerStatuses") or [{}]
    return next(
        (c for c in statuses if c.get("name") == name), statuses[0] if name == SERVER_CONTAINER else {}
    )


def _sidecars(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """The statuses of the Pod's other containers (the Ollama/OpenAI adapter)."""
    statuses = pod.get("status", {}).get("containerStatuses") or []
    return [c for c in statuses if c.get("name") != SERVER_CONTAINER]


def _parse_time(stamp: str | None) -> datetime:
    """A Kubernetes timestamp (RFC 3339, ``Z`` for UTC); ValueError when there is none."""
    return datetime.fromisoformat((stamp or "").replace("Z", "+00:00"))


def _seconds_since(stamp: str | None, now: datetime) -> float | None:
    try:
        return (now - _parse_time(stamp)).total_seconds()
    except ValueError:
        return None  # no (readable) time: judge by state alone


def tail(text: str, lines: int = 8, chars: int = 800) -> str:
    """The end of llama-server's last words: where the reason of a crash usually is."""
    kept = "\n".join(text.strip().splitlines()[-lines:])
    return kept[-chars:]


def _ended(container: dict[str, Any]) -> dict[str, Any] | None:
    """A container's latest exit: code, reason (OOMKilled, Error) and the tail of its message."""
    ended = (container.get("state") or {}).get("terminated") or (container.get("lastState") or {}).get(
        "terminated"
    )
    if not ended:
        return None
    result = {
        "exitCode": ended.get("exitCode"),
        "reason": ended.get("reason") or "Error",
        "message": tail(ended.get("message") or ""),
        "finishedAt": ended.get("finishedAt"),
    }
    return {k: v for k, v in result.items() if v not in (None, "")}


def last_termination(pod: dict[str, Any]) -> dict[str, Any] | None:
    """llama-server's latest exit (the status's lastTermination)."""
    return _ended(_container(pod))


def _outlived_startup(container: dict[str, Any], startup_budget: int) -> str | None:
    """What the kubelet's startup probe did, if the container's last run ended after its whole budget
    without ever becoming ready: the probe's failures (``failureThreshold`` is the budget over the
    period) end it then, so a slow load is seen as this restart, not as a long run."""
    last = (container.get("lastState") or {}).get("terminated") or {}
    began, ended = last.get("startedAt"), last.get("finishedAt")
    try:
        ran = (_parse_time(ended) - _parse_time(began)).total_seconds()
    except (TypeError, ValueError):
        return None
    if ran < startup_budget:
        return None
    return (
        f"its start at {began} was not ready by {ended}, past its startup budget of {startup_budget} s "
        f"(spec.startupTimeoutSeconds)"
    )


def _crash_story(container: dict[str, Any]) -> str:
    ended = _ended(container)
    if not ended:
        return ""
    story = f"; last exit {ended.get('exitCode', '?')} ({ended['reason']})"
    return story + (f": {ended['message']}" if ended.get("message") else "")


@dataclass(frozen=True)
class NodeHealth:
    """What the operator knows of the node the Pod runs on: whether its kubelet reports."""

    name: str
    responding: bool
    since: str = ""  # when it stopped responding (the Ready condition's lastTransitionTime)


def node_health(node: dict[str, Any] | None) -> NodeHealth | None:
    """None when the node is unknown (not read, or gone)."""
    if node is None:
        return None
    conditions = node.get("status", {}).get("conditions") or []
    ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    return NodeHealth(
        name=node["metadata"]["name"],
        responding=ready.get("status", "Unknown") == "True",
        since=ready.get("lastTransitionTime", ""),
    )


def _last_line(message: str) -> str:
    """The fetch's one-line verdict: the last line of its termination message."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines[-1].removeprefix("error: ") if lines else ""


def _fetching(pod: dict[str, Any], name: str, progress: str | None) -> Report | None:
    """The init container that fetches the model: running (Downloading, with how far it is when
    known), failed at its last run (Failed, with its own words: a checksum mismatch names both
    hashes), or done or not started (None: the Pod's other states tell)."""
    statuses = pod.get("status", {}).get("initContainerStatuses") or []
    fetch = next((c for c in statuses if c.get("name") == FETCH_CONTAINER), None)
    if fetch is None:
        return None
    state = fetch.get("state") or {}
    terminated, waiting = state.get("terminated") or {}, state.get("waiting") or {}
    if terminated.get("exitCode") == 0:
        return None
    failed = terminated or ((fetch.get("lastState") or {}).get("terminated") or {})
    if failed and failed.get("exitCode") != 0:
        why = _last_line(failed.get("message") or "") or f"exit code {failed.get('exitCode')}"
        again = "" if terminated else "; the kubelet tries again"
        message = f"fetching the model in pod {name} failed: {why}{again}"
        return Report(phase=Phase.FAILED, reason="FetchFailed", message=message)
    if waiting.get("reason") in FAILING_WAIT_REASONS:
        reason = waiting["reason"]
        detail = f": {waiting['message']}" if waiting.get("message") else ""
        return Report(
            phase=Phase.FAILED, reason=reason, message=f"the fetch container of pod {name}: {reason}{detail}"
        )
    if "running" in state:
        how_far = f": {progress}" if progress else ""
        message = f"pod {name} is fetching the model into the models volume{how_far}"
        return Report(phase=Phase.DOWNLOADING, reason="Downloading", message=message)
    return None


# A progress line of `llamacontroller fetch` (fetch/progress.py): "43 % of 4.9 GiB".
PROGRESS_LINE = re.compile(r"^\d{1,3} % of \d+(\.\d)? [KMGT]?i?B$")


def fetch_progress_line(log_tail: str) -> str | None:
    """The progress a fetch's last log line tells, if it is a progress line (not any text a log
    may hold: the status says only what the fetch itself printed)."""
    lines = log_tail.strip().splitlines()
    last = lines[-1].strip() if lines else ""
    return last if PROGRESS_LINE.fullmatch(last) else None


def fetch_running(pod: dict[str, Any]) -> bool:
    """Whether the Pod's fetch init container runs now (its progress is worth reading)."""
    statuses = pod.get("status", {}).get("initContainerStatuses") or []
    return any(c.get("name") == FETCH_CONTAINER and "running" in (c.get("state") or {}) for c in statuses)


def observe_pod(
    pod: dict[str, Any],
    now: datetime,
    startup_budget: int,
    node: NodeHealth | None = None,
    fetch_progress: str | None = None,
) -> Report:
    """Read a server Pod the way a person would: is it scheduled, fetching its model, loading,
    serving or broken? ``fetch_progress``: the last line of the fetch's log, when it was read."""
    report = _observe(pod, now, startup_budget, node, fetch_progress)
    ready = _pod_condition(pod, "Ready")
    return report.with_fields(
        restarts=_container(pod).get("restartCount", 0),
        lastTermination=last_termination(pod),
        loadedAt=ready.get("lastTransitionTime") if report.phase is Phase.READY else None,
    )


def _lost(name: str, node: NodeHealth, stopping: bool) -> Report:
    """A node that does not respond: its Pod can neither run for sure nor be known to have stopped."""
    since = f" since {node.since}" if node.since else ""
    if stopping:
        message = (
            f"pod {name} is stopping, but node {node.name} does not respond{since}: the slot stays held "
            f"until the Pod is gone; if the node is lost for good, `kubectl delete pod {name} --force "
            "--grace-period=0` frees it"
        )
        return Report(phase=Phase.PENDING, reason="Terminating", message=message)
    message = (
        f"node {node.name} does not respond{since}: the server in pod {name} cannot be reached; the "
        "cluster evicts the node's Pods after their tolerations (5 minutes by default), then the server "
        "is created again"
    )
    return Report(phase=Phase.FAILED, reason="NodeNotResponding", message=message)


def _failing_sidecar(pod: dict[str, Any], name: str) -> Report | None:
    """The adapter crash-looping beside a healthy llama-server: the Pod never becomes Ready, and the
    status names the container that fails (not a slow model)."""
    for sidecar in _sidecars(pod):
        state = sidecar.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
        if waiting.get("reason") in FAILING_WAIT_REASONS:
            reason = waiting["reason"]
            detail = f": {waiting['message']}" if waiting.get("message") else ""
        elif terminated:
            reason, detail = terminated.get("reason") or "Error", ""
        else:
            continue
        message = (
            f"the {sidecar.get('name')} container of pod {name}: {reason}{detail}{_crash_story(sidecar)}"
        )
        return Report(phase=Phase.FAILED, reason=reason, message=message)
    return None


def _observe(
    pod: dict[str, Any], now: datetime, startup_budget: int, node: NodeHealth | None, progress: str | None
) -> Report:
    name = pod["metadata"]["name"]
    stopping = bool(pod["metadata"].get("deletionTimestamp"))
    if node is not None and not node.responding and pod.get("spec", {}).get("nodeName") == node.name:
        return _lost(name, node, stopping)
    if stopping:
        return Report(phase=Phase.PENDING, reason="Terminating", message=f"pod {name} is stopping")
    server = _container(pod)
    state = server.get("state") or {}
    waiting, terminated = state.get("waiting") or {}, state.get("terminated") or {}
    if pod.get("status", {}).get("phase") == "Failed":
        reason = pod["status"].get("reason") or terminated.get("reason") or "PodFailed"
        detail = pod["status"].get("message") or terminated.get("message") or ""
        message = f"pod {name} failed: {reason}" + (f": {tail(detail)}" if detail else "")
        return Report(phase=Phase.FAILED, reason=reason, message=message)
    fetching = _fetching(pod, name, progress)
    if fetching is not None:
        return fetching
    outlived = None if server.get("ready") else _outlived_startup(server, startup_budget)
    if outlived is not None:
        return Report(
            phase=Phase.FAILED,
            reason="StartupTimeout",
            message=f"llama-server in pod {name} was restarted by the kubelet: {outlived}",
        )
    if waiting.get("reason") in FAILING_WAIT_REASONS:
        reason = waiting["reason"]
        detail = f": {waiting['message']}" if waiting.get("message") else ""
        message = f"llama-server in pod {name}: {reason}{detail}{_crash_story(server)}"
        return Report(phase=Phase.FAILED, reason=reason, message=message)
    if terminated:
        reason = terminated.get("reason") or "Error"
        message = f"llama-server in pod {name} exited{_crash_story(server)}"
        return Report(phase=Phase.FAILED, reason=reason, message=message)
    sidecar = _failing_sidecar(pod, name)
    if sidecar is not None:
        return sidecar
    scheduled = _pod_condition(pod, "PodScheduled")
    if scheduled.get("status") == "False":
        reason = scheduled.get("reason") or "Unschedulable"
        message = f"pod {name} cannot be scheduled: {scheduled.get('message', '')}"
        return Report(phase=Phase.PENDING, reason=reason, message=message)
    if _pod_condition(pod, "Ready").get("status") == "True":
        return Report(phase=Phase.READY, reason="ServerReady", message=f"llama-server in pod {name} is ready")
    if "running" in state:
        started = state["running"].get("startedAt")
        loading = _seconds_since(started, now)
        if loading is not None and loading > startup_budget:
            # no elapsed seconds in the message: it would change, and be written, at every resync
            message = (
                f"llama-server in pod {name} has been loading since {started}, longer than its startup "
                f"budget of {startup_budget} s (spec.startupTimeoutSeconds): the kubelet restarts it"
            )
            return Report(phase=Phase.FAILED, reason="StartupTimeout", message=message)
        message = f"llama-server in pod {name} is loading the model"
        return Report(phase=Phase.LOADING, reason="Loading", message=message)
    if scheduled.get("status") != "True":
        return Report(phase=Phase.PENDING, reason="Scheduling", message=f"pod {name} waits for the scheduler")
    reason = waiting.get("reason") or "ContainerCreating"
    message = f"pod {name} is starting ({reason}: pulling the image, mounting the models)"
    return Report(phase=Phase.PENDING, reason=reason, message=message)


def _condition(
    kind: str,
    status: bool | Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    generation: int | None,
    previous: list[Condition],
    now: str,
) -> Condition:
    value = status if isinstance(status, str) else "True" if status else "False"
    before = next((c for c in previous if c.type == kind), None)
    since = now if before is None or before.status != value else before.last_transition_time
    return Condition(
        type=kind,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=since,
        observed_generation=generation,
    )


def conditions(
    report: Report, generation: int | None, previous: list[Condition], now: str
) -> list[Condition]:
    """The Ready condition always; SlotAvailable once the operator has judged the slot; FitsOnSlot
    once it has checked the fit."""
    result = []
    if report.slot is not None:
        slot = report.slot
        result.append(
            _condition(CONDITION_SLOT, slot.available, slot.reason, slot.message, generation, previous, now)
        )
    if report.fit is not None:
        fit = report.fit
        result.append(
            _condition(CONDITION_FIT, fit.status, fit.reason, fit.message, generation, previous, now)
        )
    ready = report.phase is Phase.READY
    result.append(
        _condition(CONDITION_READY, ready, report.reason, report.message, generation, previous, now)
    )
    return result


def transition_event(previous: dict[str, Any], report: Report) -> tuple[str, str, str] | None:
    """One Event per real transition (phase or reason changed), never one per reconcile."""
    if previous.get("phase") == report.phase.value and previous.get("message") == report.message:
        return None
    if report.phase is Phase.DOWNLOADING and previous.get("phase") == report.phase.value:
        return None  # the download's progress moved: the status says it, no Event for each step
    kind = "Warning" if report.phase is Phase.FAILED else "Normal"
    return kind, report.reason, report.message

"""What the console shows, built from the objects alone: per node its GPUs and slots, per slot its
holder and the queue of its waiters in the ledger's order, per LlamaModel its phase, for how long,
its conditions and who owns its file (a person, or a GitOps tool). Pure functions.

The holders and the waiters are read the way the operator reads them (ledger.py): a LlamaModel
granted its slot (``SlotAvailable=True``) holds it, one whose status says ``Waiting`` stands in the
queue of its node, ordered by creation time, then by when it started waiting.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.ledger import holds_slot, queue_key, status_of, who
from llamacontroller.llamanode import Gpu, LlamaNode
from llamacontroller.resource import Phase
from llamacontroller.slot_table import slot_gpus, slot_table
from llamacontroller.slots import gpu_count_of

# What tells that a GitOps tool applies a LlamaModel: Argo CD's tracking annotation (or, with its
# label tracking, the instance label it sets), and Flux's kustomize-controller labels.
ARGO_ANNOTATION = "argocd.argoproj.io/tracking-id"
ARGO_INSTANCE_LABEL = "app.kubernetes.io/instance"
HELM_LABEL = "app.kubernetes.io/managed-by"
FLUX_LABELS = ("kustomize.toolkit.fluxcd.io/name", "helm.toolkit.fluxcd.io/name")
# Kept of a LlamaModel's annotations in the console's cache: only those it reads.
KEPT_ANNOTATIONS = (ARGO_ANNOTATION,)


def gitops_owner(labels: Mapping[str, str], annotations: Mapping[str, str]) -> str | None:
    """``Argo CD (app)`` or ``Flux (name)`` when a GitOps tool applies the object, else None.

    Argo CD marks what it applies with its tracking annotation (the default since Argo CD 3) or, with
    label tracking, the ``app.kubernetes.io/instance`` label; Helm sets that label too, with
    ``app.kubernetes.io/managed-by: Helm``, which is not counted. A label set by hand makes the
    console take the object for Argo CD's: it refuses to write, which is the safe mistake."""
    if ARGO_ANNOTATION in annotations:
        app = annotations[ARGO_ANNOTATION].split(":", 1)[0]
        return f"Argo CD ({app})"
    for label in ("argocd.argoproj.io/instance", ARGO_INSTANCE_LABEL):
        if label in labels and labels.get(HELM_LABEL) != "Helm":
            return f"Argo CD ({labels[label]})"
    for label in FLUX_LABELS:
        if label in labels:
            namespace = labels.get(label.replace("/name", "/namespace"))
            return f"Flux ({namespace + '/' if namespace else ''}{labels[label]})"
    return None


def strip_for_console(obj: dict[str, Any]) -> dict[str, Any]:
    """A LlamaModel as the console keeps it: what the gateway keeps, with the labels and the GitOps
    annotation (the marks of who owns it)."""
    meta = obj.get("metadata", {})
    kept = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp")
    metadata = {key: meta[key] for key in (*kept, "deletionTimestamp", "labels") if key in meta}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k in KEPT_ANNOTATIONS}
    if annotations:
        metadata["annotations"] = annotations
    return {key: obj[key] for key in ("apiVersion", "kind", "spec", "status") if key in obj} | {
        "metadata": metadata
    }


@dataclass(frozen=True)
class ConditionView:
    type: str
    status: str
    reason: str
    message: str
    since: str


@dataclass(frozen=True)
class ModelView:
    """One LlamaModel, as a row or a card."""

    namespace: str
    name: str
    model: str  # the name clients ask for, when known; else the file
    path: str
    node: str | None
    slot: str | None  # the slot its status names; what its spec asks while it has none
    phase: str  # a Phase, or "New" before the operator has judged it
    reason: str
    message: str
    since: str | None  # RFC 3339: when it entered its phase, as far as the status tells
    gitops: str | None
    deleting: bool
    ctx_size: int | None
    gpu_mode: str
    gpu_id: int | None
    conditions: tuple[ConditionView, ...] = ()
    restarts: int | None = None
    pod: str | None = None
    generation: str = ""  # of its spec: a switch applies only to the spec the page showed

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class SlotView:
    name: str
    gpus: tuple[int, ...]
    port: int
    holder: ModelView | None
    queue: tuple[ModelView, ...]  # in the order they will be served
    blocked_by: str | None  # the slot whose holder takes some of this slot's GPUs


@dataclass(frozen=True)
class GpuView:
    index: int
    held_by: str | None  # the slot whose holder occupies it
    model: str | None
    facts: Gpu | None  # what the node agent read of it


@dataclass(frozen=True)
class NodeView:
    name: str
    gpu_count: int
    gpus: tuple[GpuView, ...]
    slots: tuple[SlotView, ...]
    agent: bool  # a node agent publishes its GPUs' facts
    agent_note: str = ""  # why there are none: no agent, or what its agent says (no NVML: ...)


@dataclass(frozen=True)
class ConsoleView:
    nodes: tuple[NodeView, ...]
    unplaced: tuple[ModelView, ...]  # not on any node's slot: new, invalid, failed before placement
    models: tuple[ModelView, ...] = field(default=())


def _since(status: Any, phase: str) -> str | None:
    if phase == Phase.READY.value and status.loaded_at:
        return str(status.loaded_at)
    if phase == Phase.WAITING.value and status.waiting_since:
        return str(status.waiting_since)
    times = [c.last_transition_time for c in status.conditions if c.last_transition_time]
    return max(times) if times else None


def model_view(body: dict[str, Any]) -> ModelView:
    meta, spec = body.get("metadata", {}), body.get("spec") or {}
    status = status_of(body)
    phase = status.phase.value if status.phase else "New"
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    gpu = spec.get("gpu") or {}
    mode = str(gpu.get("mode") or "single")
    gpu_id = gpu.get("gpuId", 0) if mode == "single" else None
    asked = (
        ("both" if mode == "both" else f"gpu{gpu_id}") if isinstance(gpu_id, int) or mode == "both" else None
    )
    path = str((spec.get("model") or {}).get("path") or "")
    return ModelView(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        model=status.model or str((spec.get("model") or {}).get("name") or meta.get("name", "")),
        path=path,
        node=status.node or spec.get("nodeName"),
        slot=status.slot or asked,
        phase=phase,
        reason=ready.reason if ready else "",
        message=status.message or "",
        since=_since(status, phase),
        gitops=gitops_owner(meta.get("labels") or {}, meta.get("annotations") or {}),
        deleting=bool(meta.get("deletionTimestamp")),
        ctx_size=(spec.get("parameters") or {}).get("ctxSize"),
        gpu_mode=mode,
        gpu_id=gpu_id if isinstance(gpu_id, int) else None,
        conditions=tuple(
            ConditionView(c.type, c.status, c.reason, c.message, c.last_transition_time)
            for c in status.conditions
        ),
        restarts=status.restarts,
        pod=status.pod_name,
        generation=str(meta.get("generation") or ""),
    )


def _node_gpu_count(node: dict[str, Any] | None, config: OperatorConfig) -> int:
    return gpu_count_of(node, config.gpu_count_label) or config.gpus_per_node


def build_view(
    llamamodels: Iterable[dict[str, Any]],
    nodes: Iterable[dict[str, Any]],
    config: OperatorConfig,
    agents: Mapping[str, LlamaNode] | None = None,
) -> ConsoleView:
    """The whole board. ``nodes``: the Node objects known; those with a GPU count label are shown, and
    so are a node named by a LlamaModel and the settings' default node. ``agents``:
    each node's LlamaNode, written by its node agent, where there is one."""
    agents = agents or {}
    bodies = sorted(llamamodels, key=who)
    known = {n["metadata"]["name"]: n for n in nodes}
    # GPU nodes (by their GPU count label) and the nodes LlamaModels name: not every node of a cluster.
    names = {name for name, node in known.items() if gpu_count_of(node, config.gpu_count_label)}
    if config.default_node:
        names.add(config.default_node)
    views = {who(b): model_view(b) for b in bodies}
    for view in views.values():
        if view.node:
            names.add(view.node)

    holders: dict[tuple[str, str], ModelView] = {}
    waiting: dict[tuple[str, str], list[tuple[Any, ModelView]]] = {}
    placed: set[str] = set()
    for body in bodies:
        status, view = status_of(body), views[who(body)]
        if holds_slot(status) and status.node and status.slot:
            holders.setdefault((status.node, status.slot), view)
            placed.add(view.ref)
        elif status.phase is Phase.WAITING and status.node and status.slot:
            key = queue_key(body, status.waiting_since or "")
            waiting.setdefault((status.node, status.slot), []).append((key, view))
            placed.add(view.ref)

    node_views = []
    for name in sorted(names):
        count = _node_gpu_count(known.get(name), config)
        table = slot_table(count, config.ports)
        agent = agents.get(name)
        held_gpus: dict[int, tuple[str, ModelView]] = {}
        for slot in table:
            holder = holders.get((name, slot))
            if holder is not None:
                for gpu in slot_gpus(slot, count, config.ports):
                    held_gpus[gpu] = (slot, holder)
        slots = []
        for slot, entry in table.items():
            holder = holders.get((name, slot))
            blocker = None
            if holder is None:
                blocker = next((s for g, (s, _) in sorted(held_gpus.items()) if g in entry.gpus), None)
            queue = tuple(v for _, v in sorted(waiting.get((name, slot), []), key=lambda kv: kv[0]))
            slots.append(SlotView(slot, tuple(sorted(entry.gpus)), entry.port, holder, queue, blocker))
        by_index = {gpu.index: gpu for gpu in agent.status.gpus} if agent is not None else {}
        gpus = tuple(
            GpuView(
                i,
                held_gpus[i][0] if i in held_gpus else None,
                held_gpus[i][1].model if i in held_gpus else None,
                by_index.get(i),
            )
            for i in range(count)
        )
        if by_index:
            note = ""
        elif agent is None:
            note = "no node agent: memory and occupancy unknown"
        else:
            note = f"node agent: {agent.status.nvml or 'no GPU read'}"
        node_views.append(NodeView(name, count, gpus, tuple(slots), bool(by_index), note))
    unplaced = tuple(v for v in views.values() if v.ref not in placed)
    return ConsoleView(tuple(node_views), unplaced, tuple(views.values()))


def age(since: str | None, now: datetime) -> str:
    """How long ago, for people: ``42s``, ``5m``, ``3h12m``, ``2d4h``; empty when unknown."""
    if not since:
        return ""
    try:
        then = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if minutes < 60:
        return f"{minutes}m"
    if hours < 24:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    return f"{days}d{hours % 24}h" if hours % 24 else f"{days}d"

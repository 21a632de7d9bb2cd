"""Whether a LlamaModel's server fits on its slot's GPUs, before its Pod is created. Pure.

The estimate (``estimate.slot_estimate``, from the model file's header facts that the node's
LlamaNode publishes) is compared, per GPU of the slot, with what the node agent read of that GPU:
its memory in all, less what other processes use there (``foreignMemory``: anything but this
project's servers). The verdicts, from the worst GPU of the slot:

- ``ModelTooLarge``: it needs more than the GPU has in all; it never fits there.
- ``GpuOccupied``: other processes use more of the GPU than ``fit.foreignMemoryLimitMiB``; the GPU
  is not given to a new model while they do, even where the model would fit beside them.
- ``GpuMemoryInUse``: it fits once other processes free their memory.
- ``Fits``.
- ``FitNotChecked``: nothing to check against (no LlamaNode, one whose agent stopped writing or
  reads no GPU, a model file it does not list or could not read); the caller places the model as it
  would without a node agent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from llamacontroller.config import OperatorConfig
from llamacontroller.fetch.layout import model_path
from llamacontroller.fit.estimate import MiB, Need, slot_estimate
from llamacontroller.fit.model import EstimateError
from llamacontroller.fit.report import GiB
from llamacontroller.llamanode import Gpu, LlamaNode
from llamacontroller.resource import LlamaModel
from llamacontroller.slots import Placement

FITS = "Fits"
NOT_CHECKED = "FitNotChecked"
TOO_LARGE = "ModelTooLarge"
OCCUPIED = "GpuOccupied"
IN_USE = "GpuMemoryInUse"
# From the best verdict to the worst: a slot's verdict is its worst GPU's.
SEVERITY = (FITS, IN_USE, OCCUPIED, TOO_LARGE)
NAMED_PROCESSES = 3  # foreign processes a message names, the largest first


@dataclass(frozen=True)
class FitVerdict:
    """The FitsOnSlot condition: ``reason`` one of the verdicts above, ``message`` for people."""

    reason: str
    message: str

    @property
    def status(self) -> Literal["True", "False", "Unknown"]:
        if self.reason == FITS:
            return "True"
        return "Unknown" if self.reason == NOT_CHECKED else "False"

    @property
    def places(self) -> bool:
        """Whether the server may be created: it fits, or nothing says it does not."""
        return self.reason in (FITS, NOT_CHECKED)


def _parse_time(stamp: str) -> datetime | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None


def fresh(heartbeat_at: str | None, stale_seconds: float, now: datetime) -> bool:
    """Whether a node agent whose last heartbeat was ``heartbeat_at`` is to be trusted at ``now``."""
    beat = _parse_time(heartbeat_at or "")
    return beat is not None and (now - beat).total_seconds() <= stale_seconds


def _not_checked(
    lm: LlamaModel, placement: Placement, config: OperatorConfig, node: LlamaNode | None, now: datetime
) -> str | None:
    """Why the fit cannot be checked, if it cannot."""
    name = placement.node
    if node is None:
        return f"node {name} has no LlamaNode (no node agent reports its GPUs)"
    status = node.status
    if not fresh(status.heartbeat_at, config.fit.node_stale_seconds, now):
        when = f"last wrote at {status.heartbeat_at}" if status.heartbeat_at else "never wrote a heartbeat"
        return (
            f"the node agent of {name} {when}, longer ago than fit.nodeStaleSeconds "
            f"({config.fit.node_stale_seconds:g} s)"
        )
    if status.nvml != "ok":
        return f"the node agent of {name} reads no GPU: {status.nvml or 'it does not say why'}"
    missing = [i for i in sorted(placement.gpus) if status.gpu(i) is None]
    if missing:
        return f"LlamaNode {name} lists no GPU {', '.join(map(str, missing))}"
    path = model_path(lm.spec.model)
    file = status.model_file(path)
    if file is None:
        return f"LlamaNode {name} lists no model file {path} in its models volume"
    if file.facts is None:
        return (
            f"the node agent of {name} could not read the header of {path}: {file.error or 'no reason given'}"
        )
    return None


def _unit(total: int) -> tuple[int, str]:
    return (GiB, "GiB") if total >= GiB else (MiB, "MiB")


def _amount(value: int) -> str:
    """One decimal, in GiB from one GiB up, else in MiB: 21.3 GiB, 515.2 MiB."""
    unit, name = _unit(value)
    return f"{value / unit:.1f} {name}"


def _foreign_use(gpu: Gpu) -> str:
    if gpu.foreign_memory == 0:
        return "none of it used by other processes"
    named = sorted(
        (p for p in gpu.processes if p.foreign and p.used_memory), key=lambda p: -(p.used_memory or 0)
    )
    listed = ", ".join(
        f"{p.name or '?'} (pid {p.pid}) {_amount(p.used_memory or 0)}" for p in named[:NAMED_PROCESSES]
    )
    more = len(named) - NAMED_PROCESSES
    if more > 0:
        listed += f" and {more} more"
    return f"{_amount(gpu.foreign_memory)} used by other processes" + (f": {listed}" if listed else "")


def _needs(index: int, need: Need, n_ctx: int) -> str:
    unit, name = _unit(need.total)
    parts = (
        f"weights {need.weights / unit:.1f}",
        f"KV cache {need.kv_cache / unit:.1f} at ctx {n_ctx}",
        f"compute {need.compute / unit:.1f}",
        f"overhead {need.overhead / unit:.1f}",
    )
    return f"needs {need.total / unit:.1f} {name} on GPU {index}: {', '.join(parts)}"


def _judge(need: Need, gpu: Gpu, config: OperatorConfig) -> tuple[str, str]:
    """One GPU's verdict, and what to add to its figures."""
    limit = config.fit.foreign_memory_limit_mib
    if need.total > gpu.memory_total:
        return TOO_LARGE, f"more than GPU {gpu.index} has in all: it never fits there"
    if limit is not None and gpu.foreign_memory > limit * MiB:
        return OCCUPIED, (
            f"more than fit.foreignMemoryLimitMiB ({limit} MiB): GPU {gpu.index} is not given to a new "
            "model while they use it"
        )
    short = need.total - (gpu.memory_total - gpu.foreign_memory)
    if short > 0:
        return IN_USE, f"it fits once they free {_amount(short)}"
    return FITS, ""


def check_fit(
    lm: LlamaModel,
    placement: Placement,
    config: OperatorConfig,
    node: LlamaNode | None,
    gpu_count: int,
    now: datetime,
) -> FitVerdict:
    """The verdict on ``lm``'s server on ``placement``, from the node's LlamaNode (None: none)."""
    why = _not_checked(lm, placement, config, node, now)
    if why is not None or node is None:
        return FitVerdict(NOT_CHECKED, f"fit not checked: {why}")
    facts = node.status.model_file(model_path(lm.spec.model))
    assert facts is not None and facts.facts is not None  # _not_checked said so
    try:
        slot = slot_estimate(lm, placement, config, facts.facts, gpu_count)
    except EstimateError as exc:
        return FitVerdict(NOT_CHECKED, f"fit not checked: the estimate failed: {exc}")
    judged: list[tuple[str, str]] = []
    for index, need in zip(slot.gpu_indices, slot.estimate.gpus, strict=True):
        gpu = node.status.gpu(index)
        if index not in placement.gpus or gpu is None:
            continue  # allVisible: a GPU outside the slot holds only the overhead (README's caveat)
        verdict, why_not = _judge(need, gpu, config)
        figures = (
            f"{_needs(index, need, slot.estimate.n_ctx)}; GPU {index} has {_amount(gpu.memory_total)}, "
            f"{_foreign_use(gpu)}"
        )
        judged.append((verdict, f"{figures}; {why_not}" if why_not else figures))
    if not judged:
        return FitVerdict(NOT_CHECKED, "fit not checked: the server uses no GPU of its slot")
    worst = max((verdict for verdict, _ in judged), key=SEVERITY.index)
    shown = judged if worst == FITS else [j for j in judged if j[0] == worst]
    return FitVerdict(worst, " | ".join(text for _, text in shown))

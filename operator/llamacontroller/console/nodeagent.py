"""What a node agent publishes about a node's GPUs, read from its ``LlamaNode`` resource.

The agent (issue 22) is not part of this build yet: every caller passes None and the console says
"no node agent". This is the one function to point at the LlamaNode once it exists; it reads its
``status.gpus`` leniently, so a field the agent does not write shows as unknown instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class GpuFacts:
    """One GPU as its node's agent saw it; None where the agent does not say."""

    index: int
    name: str | None = None
    memory_total: int | None = None  # bytes
    memory_used: int | None = None  # bytes, by every process
    memory_foreign: int | None = None  # bytes used by processes other than the slot Pods'
    utilization: int | None = None  # percent


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def gpu_facts(llamanode: dict[str, Any] | None) -> tuple[GpuFacts, ...] | None:
    """The GPUs of a node by its agent's resource; None when there is no agent (or it says nothing)."""
    if not llamanode:
        return None
    gpus = (llamanode.get("status") or {}).get("gpus")
    if not isinstance(gpus, list):
        return None
    facts = []
    for position, gpu in enumerate(g for g in gpus if isinstance(g, dict)):
        index = _int(gpu.get("index"))
        facts.append(
            GpuFacts(
                index=position if index is None else index,
                name=gpu.get("name") if isinstance(gpu.get("name"), str) else None,
                memory_total=_int(gpu.get("memoryTotalBytes")),
                memory_used=_int(gpu.get("memoryUsedBytes")),
                memory_foreign=_int(gpu.get("memoryForeignBytes")),
                utilization=_int(gpu.get("utilizationPercent")),
            )
        )
    return tuple(sorted(facts, key=lambda g: g.index))

"""What a node agent publishes about a node's GPUs, read from its ``LlamaNode`` (cluster-scoped,
named after the node; issue 22, ``llamanode.py`` on main: ``status.gpus[]`` with ``index``,
``name``, ``memoryTotal``, ``memoryUsed``, ``foreignMemory``, ``utilization`` and ``summary``, in
bytes and percent; ``status.nvml`` says why there are none; ``status.models[].path`` the files of
the models volume).

Read from the object as a mapping and leniently: a field an agent does not write shows as unknown,
and a node without a LlamaNode shows "no node agent".
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
    memory_foreign: int | None = None  # bytes used by processes other than the slot Pods' servers
    utilization: int | None = None  # percent
    summary: str | None = None  # the agent's own word: "idle", "held by ns/name", ...


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def gpu_facts(llamanode: dict[str, Any] | None) -> tuple[GpuFacts, ...] | None:
    """The GPUs of a node by its agent's LlamaNode; None when there is no agent (or it lists none)."""
    if not llamanode:
        return None
    gpus = (llamanode.get("status") or {}).get("gpus")
    if not isinstance(gpus, list) or not gpus:
        return None
    facts = []
    for position, gpu in enumerate(g for g in gpus if isinstance(g, dict)):
        index = _int(gpu.get("index"))
        facts.append(
            GpuFacts(
                index=position if index is None else index,
                name=_str(gpu.get("name")),
                memory_total=_int(gpu.get("memoryTotal")),
                memory_used=_int(gpu.get("memoryUsed")),
                memory_foreign=_int(gpu.get("foreignMemory")),
                utilization=_int(gpu.get("utilization")),
                summary=_str(gpu.get("summary")),
            )
        )
    return tuple(sorted(facts, key=lambda g: g.index))


def model_paths(llamanode: dict[str, Any] | None) -> list[str]:
    """The GGUF files of the node's models volume, as its agent lists them (the load form's catalog)."""
    models = ((llamanode or {}).get("status") or {}).get("models")
    if not isinstance(models, list):
        return []
    return [m["path"] for m in models if isinstance(m, dict) and isinstance(m.get("path"), str)]

"""What each GPU holds, from a reading of NVML and the slot Pods of the node: pure functions.

A process NVML lists is a slot server when it runs in a slot Pod of this node (its Pod UID, read
from its cgroup) or, for the local runtime, when its PID is one of the servers it started; anything
else is foreign. The summary says a GPU in a few words: ``idle``, ``held by ns/name``, ``occupied:
3.2 GiB by others``, or both (``held by ns/name; occupied: 3.2 GiB by others``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from llamacontroller.llamanode import MAX_GPU_PROCESSES, MAX_GPUS, Gpu, GpuProcess, LlamaNodeStatus, ModelFile
from llamacontroller.nodeagent.nvml import GpuReading, NvmlReading
from llamacontroller.render.names import LABEL_MODEL
from llamacontroller.resource import KIND

GIB = 1 << 30


@dataclass(frozen=True)
class Owner:
    """Whose a server process is: its slot Pod (namespace/name; None for a local server) and its
    LlamaModel (namespace/name)."""

    llama_model: str
    pod: str | None = None


OwnerOf = Callable[[int], Owner | None]


def slot_pod_owner(pod: dict[str, Any]) -> tuple[str, Owner] | None:
    """A slot Pod's UID and whose it is: the LlamaModel of its controller reference (the label is
    a label value, cut to 63 characters), None for a Pod without one."""
    meta = pod.get("metadata") or {}
    uid, namespace, name = meta.get("uid"), meta.get("namespace"), meta.get("name")
    if not uid or not namespace or not name:
        return None
    owner = next(
        (
            ref.get("name")
            for ref in meta.get("ownerReferences") or []
            if ref.get("kind") == KIND and ref.get("controller")
        ),
        None,
    ) or (meta.get("labels") or {}).get(LABEL_MODEL)
    if not owner:
        return None
    return uid, Owner(llama_model=f"{namespace}/{owner}", pod=f"{namespace}/{name}")


def owners_by_pod(pods: Iterable[dict[str, Any]], pod_uid_of_pid: Callable[[int], str | None]) -> OwnerOf:
    """The owner of a PID on a node: the slot Pod whose UID its cgroup names."""
    by_uid = dict(filter(None, (slot_pod_owner(pod) for pod in pods)))

    def owner_of(pid: int) -> Owner | None:
        uid = pod_uid_of_pid(pid)
        return by_uid.get(uid) if uid is not None else None

    return owner_of


def format_gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def summary(holders: list[str], foreign: list[GpuProcess]) -> str:
    parts = []
    if holders:
        parts.append(f"held by {', '.join(holders)}")
    if foreign:
        memory = sum(process.used_memory or 0 for process in foreign)
        parts.append(f"occupied: {format_gib(memory)} by others" if memory else "occupied by others")
    return "; ".join(parts) or "idle"


def gpu_status(reading: GpuReading, owner_of: OwnerOf) -> Gpu:
    processes = []
    for process in reading.processes:
        owner = owner_of(process.pid)
        processes.append(
            GpuProcess(
                pid=process.pid,
                name=process.name,
                used_memory=process.used_memory,
                pod=owner.pod if owner else None,
                llama_model=owner.llama_model if owner else None,
            )
        )
    holders = sorted({process.llama_model for process in processes if process.llama_model})
    foreign = [process for process in processes if process.foreign]
    return Gpu(
        index=reading.index,
        uuid=reading.uuid,
        name=reading.name,
        memory_total=reading.memory_total,
        memory_used=reading.memory_used,
        foreign_memory=sum(process.used_memory or 0 for process in foreign),
        utilization=reading.utilization,
        processes=processes[:MAX_GPU_PROCESSES],  # the memory above counts them all
        holders=holders,
        summary=summary(holders, foreign),
    )


def node_status(
    reading: NvmlReading,
    owner_of: OwnerOf,
    *,
    models_dir: str | None = None,
    models: list[ModelFile] | None = None,
    agent_version: str | None = None,
) -> LlamaNodeStatus:
    """The LlamaNode's status from one reading (without its times: the agent stamps those)."""
    return LlamaNodeStatus(
        nvml=reading.state,
        driver_version=reading.driver_version,
        gpus=[gpu_status(gpu, owner_of) for gpu in reading.gpus[:MAX_GPUS]],
        models_dir=models_dir,
        models=models or [],
        agent_version=agent_version,
    )


def local_owners(state: dict[str, Any]) -> OwnerOf:
    """The local runtime's servers, known by their PIDs (its state file's ``servers``)."""
    by_pid = {
        int(server["pid"]): Owner(llama_model=str(server.get("llamamodel") or server.get("model")))
        for server in state.get("servers", [])
        if server.get("pid")
    }
    return by_pid.get


def gpu_lines(status: LlamaNodeStatus) -> list[str]:
    """The GPUs in a few words each, as `llamacontroller status` prints them under its slots."""
    if status.nvml != "ok":
        return [f"gpus     {status.nvml}"]
    lines = []
    for gpu in status.gpus:
        memory = f"{gpu.memory_used / GIB:.1f}/{format_gib(gpu.memory_total)}"
        lines.append(f"gpu {gpu.index}    {gpu.name}  {memory}  {gpu.summary}")
    return lines

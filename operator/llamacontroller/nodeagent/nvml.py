"""One reading of the GPUs through NVML (`nvidia-ml-py`'s ``pynvml``).

Per GPU: its index, UUID, name, total and used memory, utilization, and the compute and graphics
processes with their memory; and the driver's version. No library, no driver or no GPU is a reading
that says which (``state``), never an exception: the agent publishes it as the LlamaNode's ``nvml``.
The library is a parameter, so that tests can hand in a fake of NVML (tests/support/fake_nvml.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

OK = "ok"


@dataclass(frozen=True)
class ProcessReading:
    pid: int
    name: str
    used_memory: int | None  # bytes; None when NVML cannot say (a WDDM driver, a MIG instance)


@dataclass(frozen=True)
class GpuReading:
    index: int
    uuid: str
    name: str
    memory_total: int
    memory_used: int
    utilization: int | None  # percent of time busy; None when the GPU does not report it
    processes: tuple[ProcessReading, ...]


@dataclass(frozen=True)
class NvmlReading:
    """``state`` is ``ok`` or why there is no GPU to read (``no NVML: ...``, ``no driver: ...``,
    ``no GPU: ...``)."""

    state: str
    driver_version: str | None = None
    gpus: tuple[GpuReading, ...] = ()

    @property
    def ok(self) -> bool:
        return self.state == OK


def _library() -> ModuleType | None:
    try:
        import pynvml  # type: ignore[import-untyped]
    except ImportError:
        return None
    module: ModuleType = pynvml
    return module


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _why_not(nvml: Any, exc: Exception) -> str:
    """The reading's state when nvmlInit fails, in words."""
    if isinstance(exc, getattr(nvml, "NVMLError_LibraryNotFound", ())):
        return "no NVML: libnvidia-ml.so.1 not found (no NVIDIA driver here, or not given to the container)"
    if isinstance(exc, getattr(nvml, "NVMLError_DriverNotLoaded", ())):
        return "no driver: the NVIDIA kernel driver is not loaded"
    if isinstance(exc, getattr(nvml, "NVMLError_NoPermission", ())):
        return f"no NVML: no permission to read the GPUs ({exc})"
    return f"no NVML: {exc}"


def _optional(call: Any, *args: Any) -> Any:
    """A query a GPU may not support (utilization of some models, process names of other
    namespaces): None instead of the NVMLError."""
    try:
        return call(*args)
    except Exception:  # NVMLError has many subclasses; each means "cannot say"
        return None


def _processes(nvml: Any, handle: Any) -> tuple[ProcessReading, ...]:
    """Compute and graphics processes, once each (a process can be both: its larger figure)."""
    seen: dict[int, ProcessReading] = {}
    for query in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
        for info in _optional(getattr(nvml, query), handle) or ():
            pid = int(info.pid)
            used = info.usedGpuMemory
            memory = int(used) if used is not None else None
            before = seen.get(pid)
            if before is not None and (
                memory is None or (before.used_memory is not None and before.used_memory >= memory)
            ):
                continue
            name = _optional(nvml.nvmlSystemGetProcessName, pid)
            seen[pid] = ProcessReading(
                pid=pid, name=_text(name) if name is not None else "", used_memory=memory
            )
    return tuple(sorted(seen.values(), key=lambda process: process.pid))


def _gpu(nvml: Any, index: int) -> GpuReading:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    memory = nvml.nvmlDeviceGetMemoryInfo(handle)
    rates = _optional(nvml.nvmlDeviceGetUtilizationRates, handle)
    return GpuReading(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        name=_text(nvml.nvmlDeviceGetName(handle)),
        memory_total=int(memory.total),
        memory_used=int(memory.used),
        utilization=int(rates.gpu) if rates is not None else None,
        processes=_processes(nvml, handle),
    )


def _read_gpus(nvml: Any) -> NvmlReading:
    """Every GPU NVML lists, NVML being initialized."""
    driver = _optional(nvml.nvmlSystemGetDriverVersion)
    driver_version = _text(driver) if driver is not None else None
    try:
        count = int(nvml.nvmlDeviceGetCount())
    except Exception as exc:
        return NvmlReading(state=f"no GPU: NVML cannot count the GPUs ({exc})", driver_version=driver_version)
    if count == 0:
        return NvmlReading(state="no GPU: NVML lists none", driver_version=driver_version)
    gpus = []
    for index in range(count):
        try:
            gpus.append(_gpu(nvml, index))
        except Exception as exc:  # a GPU fallen off the bus: the others still count
            log.warning("GPU %d cannot be read: %s", index, exc)
    return NvmlReading(state=OK, driver_version=driver_version, gpus=tuple(gpus))


class NvmlReader:
    """Readings of one process's life: NVML stays initialized between them (without persistence
    mode, each first initialization makes the driver set the GPUs up, which can take a second).
    A failure to initialize is tried again at the next reading. ``library``: the ``pynvml`` module
    (default) or a fake of it."""

    def __init__(self, library: Any = None) -> None:
        self.nvml = library if library is not None else _library()
        self.initialized = False

    def read(self) -> NvmlReading:
        if self.nvml is None:
            return NvmlReading(state="no NVML: the nvidia-ml-py package is not installed")
        if not self.initialized:
            try:
                self.nvml.nvmlInit()
            except Exception as exc:
                return NvmlReading(state=_why_not(self.nvml, exc))
            self.initialized = True
        return _read_gpus(self.nvml)

    def close(self) -> None:
        if self.initialized and self.nvml is not None:
            _optional(self.nvml.nvmlShutdown)
            self.initialized = False


def read_nvml(library: Any = None) -> NvmlReading:
    """One reading, NVML initialized for it alone (``llamacontroller status``)."""
    reader = NvmlReader(library)
    try:
        return reader.read()
    finally:
        reader.close()

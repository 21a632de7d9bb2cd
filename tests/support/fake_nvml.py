"""A fake of NVML (an external system: the NVIDIA driver's management library), for machines
without an NVIDIA GPU.

It answers the calls of ``pynvml`` (nvidia-ml-py) that llamacontroller.nodeagent.nvml makes, from
a recorded ``nvidia-smi -q -x`` document (the XML of nvidia-smi's query, DTD nvsmi_device_v12):
``<driver_version>``, one ``<gpu id=...>`` per GPU in NVML's index order, with ``<minor_number>``,
``<uuid>``, ``<product_name>``, ``<fb_memory_usage>`` (``<total>24576 MiB</total>``, ``<used>``),
``<utilization><gpu_util>12 %</gpu_util>`` and ``<processes><process_info>`` (``<pid>``,
``<type>`` C/G/C+G, ``<process_name>``, ``<used_memory>``). The recordings are in
tests/support/nvml/. Anything else NVML could say (MIG, ECC, clocks) it does not know.

``FakeNvml(init_error=...)`` fails ``nvmlInit`` as NVML does without its library or driver.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.paths import REPO

RECORDINGS = Path(__file__).parent / "nvml"
FAKE_PYNVML = Path(__file__).parent / "fake_pynvml"  # its pynvml.py is this fake, for processes
MIB = 1 << 20


def _mib(text: str | None) -> int | None:
    """'24576 MiB' -> bytes; 'N/A' -> None."""
    if text is None or not text.strip().endswith("MiB"):
        return None
    return int(text.split()[0]) * MIB


def _percent(text: str | None) -> int | None:
    if text is None or not text.strip().endswith("%"):
        return None
    return int(text.split()[0])


# NVML's return codes (nvml.h) of the errors the fake raises.
ERROR_UNINITIALIZED = 1
ERROR_INVALID_ARGUMENT = 2
ERROR_NOT_SUPPORTED = 3
ERROR_NO_PERMISSION = 4
ERROR_NOT_FOUND = 6
ERROR_DRIVER_NOT_LOADED = 9
ERROR_LIBRARY_NOT_FOUND = 12


class NVMLError(Exception):
    """pynvml's exception: ``value`` is NVML's return code."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class NVMLError_LibraryNotFound(NVMLError):
    def __init__(self) -> None:
        super().__init__(ERROR_LIBRARY_NOT_FOUND)

    def __str__(self) -> str:
        return "NVML Shared Library Not Found"


class NVMLError_DriverNotLoaded(NVMLError):
    def __init__(self) -> None:
        super().__init__(ERROR_DRIVER_NOT_LOADED)

    def __str__(self) -> str:
        return "Driver Not Loaded"


class NVMLError_NoPermission(NVMLError):
    def __init__(self) -> None:
        super().__init__(ERROR_NO_PERMISSION)

    def __str__(self) -> str:
        return "Insufficient Permissions"


@dataclass(frozen=True)
class _Process:
    pid: int
    usedGpuMemory: int | None
    kind: str
    name: str


@dataclass(frozen=True)
class _Memory:
    total: int
    used: int
    free: int


@dataclass(frozen=True)
class _Rates:
    gpu: int
    memory: int


@dataclass(frozen=True)
class _Gpu:
    minor: int
    uuid: str
    name: str
    memory: _Memory
    rates: _Rates | None
    processes: tuple[_Process, ...]


def parse_recording(xml: str) -> tuple[str, list[_Gpu]]:
    """The driver version and the GPUs of an ``nvidia-smi -q -x`` document."""
    root = ET.fromstring(xml)
    if root.tag != "nvidia_smi_log":
        raise ValueError(f"not an nvidia-smi log: <{root.tag}>")
    gpus = []
    for gpu in root.findall("gpu"):
        fb = gpu.find("fb_memory_usage")
        assert fb is not None, "a <gpu> without <fb_memory_usage>"
        total = _mib(fb.findtext("total")) or 0
        used = _mib(fb.findtext("used")) or 0
        util = _percent(gpu.findtext("utilization/gpu_util"))
        mem_util = _percent(gpu.findtext("utilization/memory_util"))
        processes = tuple(
            _Process(
                pid=int(info.findtext("pid") or "0"),
                usedGpuMemory=_mib(info.findtext("used_memory")),
                kind=(info.findtext("type") or "C").strip(),
                name=(info.findtext("process_name") or "").strip(),
            )
            for info in gpu.findall("processes/process_info")
        )
        gpus.append(
            _Gpu(
                minor=int(gpu.findtext("minor_number") or "0"),
                uuid=(gpu.findtext("uuid") or "").strip(),
                name=(gpu.findtext("product_name") or "").strip(),
                memory=_Memory(total=total, used=used, free=total - used),
                rates=_Rates(util, mem_util or 0) if util is not None else None,
                processes=processes,
            )
        )
    return (root.findtext("driver_version") or "").strip(), gpus


class FakeNvml:
    """The ``pynvml`` calls of the node agent, answered from a recording (a fake of NVML).

    ``source``: the XML itself, or a path read again at each ``nvmlDeviceGetCount`` (where a
    reading starts: a test changes what the next reading sees by rewriting the file).
    ``init_error``: the NVMLError subclass ``nvmlInit`` raises, as NVML does on a machine without
    its library or driver."""

    NVMLError = NVMLError
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_NoPermission = NVMLError_NoPermission

    def __init__(self, source: str | Path | None = None, init_error: type[NVMLError] | None = None) -> None:
        self.source = source
        self.init_error = init_error
        self._driver = ""
        self._gpus: list[_Gpu] = []
        self.initialized = 0  # nvmlInit's reference count, as NVML keeps it
        self.inits = 0  # every nvmlInit that succeeded

    def _load(self) -> None:
        if self.source is None:
            self._driver, self._gpus = "", []
            return
        xml = self.source.read_text() if isinstance(self.source, Path) else self.source
        self._driver, self._gpus = parse_recording(xml)

    def _check(self) -> None:
        if self.initialized <= 0:
            raise NVMLError(ERROR_UNINITIALIZED)

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error()
        self._load()
        self.initialized += 1
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self._check()
        self.initialized -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check()
        return self._driver

    def nvmlDeviceGetCount(self) -> int:
        self._check()
        if isinstance(self.source, Path):
            self._load()
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Gpu:
        self._check()
        if not 0 <= index < len(self._gpus):
            raise NVMLError(ERROR_INVALID_ARGUMENT)
        return self._gpus[index]

    def nvmlDeviceGetUUID(self, handle: _Gpu) -> str:
        return handle.uuid

    def nvmlDeviceGetName(self, handle: _Gpu) -> str:
        return handle.name

    def nvmlDeviceGetMinorNumber(self, handle: _Gpu) -> int:
        return handle.minor

    def nvmlDeviceGetMemoryInfo(self, handle: _Gpu) -> _Memory:
        return handle.memory

    def nvmlDeviceGetUtilizationRates(self, handle: _Gpu) -> _Rates:
        if handle.rates is None:
            raise NVMLError(ERROR_NOT_SUPPORTED)
        return handle.rates

    def nvmlDeviceGetComputeRunningProcesses(self, handle: _Gpu) -> list[_Process]:
        return [process for process in handle.processes if "C" in process.kind]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: _Gpu) -> list[_Process]:
        return [process for process in handle.processes if "G" in process.kind]

    def nvmlSystemGetProcessName(self, pid: int) -> str:
        self._check()
        for gpu in self._gpus:
            for process in gpu.processes:
                if process.pid == pid:
                    return process.name
        raise NVMLError(ERROR_NOT_FOUND)


def module_from_environment() -> Any:
    """The fake the node agent's process imports as ``pynvml`` (tests/support/fake_pynvml): the
    recording at $LLAMACONTROLLER_FAKE_NVML, read again at every reading."""
    return FakeNvml(Path(os.environ["LLAMACONTROLLER_FAKE_NVML"]))


def recording_with(processes: dict[int, list[tuple[int, str, int]]], base: str = "rtx3090x2-idle") -> str:
    """A recording of the idle 2 x RTX 3090 node with these compute processes on it, by GPU index:
    (pid, process name, used MiB); each GPU's used memory grows by theirs. For tests whose
    processes are real ones of this machine, so their PIDs are known only when they run."""
    root = ET.fromstring((RECORDINGS / f"{base}.xml").read_text())
    for index, gpu in enumerate(root.findall("gpu")):
        listed = gpu.find("processes")
        used = gpu.find("fb_memory_usage/used")
        assert listed is not None and used is not None and used.text
        total_used = int(used.text.split()[0])
        for pid, name, mib in processes.get(index, []):
            info = ET.SubElement(listed, "process_info")
            for tag, text in (
                ("gpu_instance_id", "N/A"),
                ("compute_instance_id", "N/A"),
                ("pid", str(pid)),
                ("type", "C"),
                ("process_name", name),
                ("used_memory", f"{mib} MiB"),
            ):
                ET.SubElement(info, tag).text = text
            total_used += mib
        used.text = f"{total_used} MiB"
    return ET.tostring(root, encoding="unicode")


def process_environment(recording: Path) -> dict[str, str]:
    """The variables under which a llamacontroller process imports this fake as ``pynvml``, reading
    ``recording`` at each reading."""
    paths = [str(FAKE_PYNVML), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths), "LLAMACONTROLLER_FAKE_NVML": str(recording)}

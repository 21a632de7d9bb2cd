"""Which of a node's GPUs a server sees, and how it spreads the model over them. Pure functions.

- pinned: the server sees only its slot's GPUs (the visibility variable names their node indices),
  so it cannot allocate on another slot's GPU. It splits over what it sees: one GPU is
  `--split-mode none --main-gpu 0`; several are `--split-mode layer` with the slot's ratios of those
  GPUs (`0.5,0.5`, or `spec.gpu.tensorSplit`).
- allVisible: the server sees every GPU of the node and a node-wide `--tensor-split` (`1,0`, `0,1`)
  keeps the layers on the slot's GPUs. llama.cpp still creates a context and buffers on a GPU whose
  ratio is 0: for nodes where a container's visible GPUs cannot be set.
- devicePlugin: the device plugin hands the container its GPUs; a single GPU needs no split, the
  whole node keeps its node-wide one.
"""

from __future__ import annotations

from dataclasses import dataclass

from llamacontroller.config import GpuStrategy
from llamacontroller.slots import Placement

# The variable the NVIDIA container runtime reads to choose the GPUs a container sees.
CONTAINER_VISIBILITY = "NVIDIA_VISIBLE_DEVICES"
# What CUDA itself reads in a plain process (the local runtime), and the order that makes its
# indices those of nvidia-smi and of the container runtime (CUDA's own default is fastest first).
PROCESS_VISIBILITY = "CUDA_VISIBLE_DEVICES"
PROCESS_DEVICE_ORDER = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}

SPLIT_NONE = "none"
SPLIT_LAYER = "layer"


@dataclass(frozen=True)
class GpuView:
    """The GPUs a server sees and its split over them, as llama-server's flags say it."""

    visible: tuple[int, ...] | None  # node indices of the GPUs it sees; None: not ours to choose
    tensor_split: str | None  # over the GPUs it sees; None: one GPU, or the strategy needs none
    split_mode: str | None = None
    main_gpu: int | None = None

    @property
    def ratios(self) -> tuple[float, ...]:
        """The share of the model each GPU it sees gets, in their order (one GPU: all of it)."""
        return tuple(float(r) for r in self.tensor_split.split(",")) if self.tensor_split else (1.0,)


def gpu_view(placement: Placement, strategy: GpuStrategy) -> GpuView:
    """What a server on this placement sees and how it splits, under the strategy."""
    gpus = tuple(sorted(placement.gpus))
    if strategy is GpuStrategy.ALL_VISIBLE:
        return GpuView(visible=None, tensor_split=placement.tensor_split)
    if strategy is GpuStrategy.DEVICE_PLUGIN:
        return GpuView(visible=None, tensor_split=None if len(gpus) == 1 else placement.tensor_split)
    if len(gpus) == 1:
        return GpuView(visible=gpus, tensor_split=None, split_mode=SPLIT_NONE, main_gpu=0)
    node_split = placement.tensor_split.split(",")
    return GpuView(
        visible=gpus, tensor_split=",".join(node_split[gpu] for gpu in gpus), split_mode=SPLIT_LAYER
    )


def visible_devices(view: GpuView) -> str | None:
    """The value of a visibility variable: the seen GPUs' node indices (`1`, `0,1`)."""
    return None if view.visible is None else ",".join(str(gpu) for gpu in view.visible)


def container_env(view: GpuView, gpu_env: dict[str, str]) -> dict[str, str]:
    """A server container's GPU environment: the configured one, its visibility set to the view's."""
    devices = visible_devices(view)
    return gpu_env if devices is None else gpu_env | {CONTAINER_VISIBILITY: devices}


def process_env(view: GpuView) -> dict[str, str]:
    """A local server process's GPU environment: CUDA's visibility and device order, when the
    strategy chooses the GPUs; nothing otherwise (the process sees what this machine has)."""
    devices = visible_devices(view)
    return {} if devices is None else {PROCESS_VISIBILITY: devices, **PROCESS_DEVICE_ORDER}

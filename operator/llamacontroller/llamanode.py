"""The LlamaNode resource: what a node agent reads of one node's GPUs and models volume.

Cluster-scoped, one per node and named after it. Only the node agent of that node writes it (its
status, on change and at least every heartbeat); the operator reads it to check that a model fits
on its slot's GPUs before it creates the server's Pod, and `kubectl get llamanodes` shows each GPU
in a word. Memory is in bytes throughout.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from llamacontroller.fit.model import ModelFacts
from llamacontroller.resource import GROUP, VERSION, CamelModel, InvalidSpec, describe_validation_error

NODE_KIND = "LlamaNode"
NODE_PLURAL = "llamanodes"
NODE_API_VERSION = f"{GROUP}/{VERSION}"
# A models volume holds a few dozen files; the cap keeps the object far under etcd's object size
# limit (a file's facts take about 1 KiB for a 7B model).
MAX_MODEL_FILES = 256
MAX_GPUS = 16
MAX_GPU_PROCESSES = 64


class StatusModel(CamelModel):
    """A status written by our agent, read back by other versions of the project: fields it does
    not know yet are ignored, not refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class GpuProcess(StatusModel):
    """A process with memory on a GPU, as NVML lists it, and whose it is."""

    pid: int = Field(description="The process ID in the node's PID namespace.")
    name: str = Field(default="", description="The process's command name.")
    used_memory: int | None = Field(
        default=None, ge=0, description="Its GPU memory; None when NVML cannot say."
    )
    pod: str | None = Field(default=None, description="namespace/name of the slot Pod it runs in, if any.")
    llama_model: str | None = Field(
        default=None, description="namespace/name of the LlamaModel whose server it is, if any."
    )

    @property
    def foreign(self) -> bool:
        """Not a server of one of this project's slot Pods."""
        return self.llama_model is None


class Gpu(StatusModel):
    """One GPU of the node, at the agent's last reading."""

    index: int = Field(ge=0, description="NVML's index, the one NVIDIA_VISIBLE_DEVICES and the slots use.")
    uuid: str = ""
    name: str = ""
    memory_total: int = Field(ge=0)
    memory_used: int = Field(ge=0, description="All memory in use on the GPU, the driver's own included.")
    foreign_memory: int = Field(
        default=0,
        ge=0,
        description="Memory used by anything but the slot Pods' servers: the memory of the other processes.",
    )
    utilization: int | None = Field(default=None, ge=0, le=100, description="Percent of time busy.")
    processes: list[GpuProcess] = Field(default_factory=list, max_length=MAX_GPU_PROCESSES)
    holders: list[str] = Field(
        default_factory=list, description="namespace/name of each LlamaModel whose server runs on it."
    )
    summary: str = Field(
        default="",
        description="The GPU in a few words: 'idle', 'held by ns/name', 'occupied: 3.2 GiB by others'.",
    )

    @property
    def memory_free(self) -> int:
        return max(self.memory_total - self.memory_used, 0)


class ModelFile(StatusModel):
    """A GGUF file of the models volume, and what its header says about memory."""

    path: str = Field(description="Relative to the models volume, as spec.model.path names it.")
    size: int = Field(ge=0)
    modified: str = Field(description="The file's modification time (RFC 3339).")
    facts: ModelFacts | None = Field(
        default=None, description="The header's facts; None when it cannot be read."
    )
    error: str | None = Field(default=None, description="Why the header could not be read.")


class LlamaNodeStatus(StatusModel):
    """The agent's reading of its node."""

    nvml: str = Field(
        default="",
        description="'ok', or why the agent reads no GPU: no NVML library, no driver, no GPU.",
    )
    driver_version: str | None = None
    gpus: list[Gpu] = Field(default_factory=list, max_length=MAX_GPUS)
    models_dir: str | None = Field(default=None, description="Where the agent reads the models volume.")
    models: list[ModelFile] = Field(default_factory=list, max_length=MAX_MODEL_FILES)
    observed_at: str | None = Field(default=None, description="When the GPUs were read (RFC 3339).")
    heartbeat_at: str | None = Field(
        default=None, description="The agent's latest write; an agent that stops writing is not trusted."
    )
    agent_version: str | None = None

    def gpu(self, index: int) -> Gpu | None:
        return next((gpu for gpu in self.gpus if gpu.index == index), None)

    def model_file(self, path: str) -> ModelFile | None:
        return next((file for file in self.models if file.path == path), None)


class NodeMeta(StatusModel):
    name: str
    uid: str = ""


class LlamaNode(StatusModel):
    """A whole LlamaNode object as read from the API."""

    api_version: str = Field(default=NODE_API_VERSION, alias="apiVersion")
    kind: str = NODE_KIND
    metadata: NodeMeta
    status: LlamaNodeStatus = Field(default_factory=LlamaNodeStatus)


def parse_llamanode(body: dict[str, Any]) -> LlamaNode:
    """Validate an object from the API; raises InvalidSpec with a message for people."""
    try:
        return LlamaNode.model_validate(body)
    except ValidationError as exc:
        raise InvalidSpec(describe_validation_error(exc)) from exc

"""Operator settings (config/operator.yaml): the slot table, the image, the models volume, defaults.

The slot table is data, not code: each slot names the GPUs it occupies, the port its server listens on
and the tensor split that pins the model to those GPUs. Two slots conflict when their GPUs overlap.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from llamacontroller.resource import CamelModel, ServerParameters
from llamacontroller.slots import slot_names

DEFAULT_CONFIG_PATH = Path("config/operator.yaml")


class GpuStrategy(StrEnum):
    """How a server gets its GPUs.

    pinned: every GPU of the node is visible to the container and --tensor-split pins the layers to
    the slot's GPUs (the operator's slot ledger is the only GPU accounting; the default).
    devicePlugin: the Pod requests nvidia.com/gpu (1 for a single slot, the node's count for the
    whole node) and the NVIDIA device plugin hands it its own devices (no split for a single GPU).
    """

    PINNED = "pinned"
    DEVICE_PLUGIN = "devicePlugin"


class ModelsVolume(CamelModel):
    """Where the GGUF files live: a PersistentVolumeClaim or a host path, mounted read-only."""

    mount_path: str = "/models"
    persistent_volume_claim: dict[str, Any] | None = None
    host_path: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelsVolume:
        if (self.persistent_volume_claim is None) == (self.host_path is None):
            raise ValueError("modelsVolume needs exactly one of persistentVolumeClaim or hostPath")
        return self

    def volume_source(self) -> dict[str, Any]:
        if self.persistent_volume_claim is not None:
            return {"persistentVolumeClaim": {**self.persistent_volume_claim, "readOnly": True}}
        return {"hostPath": dict(self.host_path or {})}


class AdapterSettings(CamelModel):
    """The per-slot sidecar that speaks the Ollama and OpenAI APIs in front of llama-server."""

    enabled: bool = True
    image: str = "ghcr.io/llamacontroller/llamacontroller:0.1.0"
    port: int = Field(default=11434, ge=1, le=65535)
    resources: dict[str, Any] | None = None


class ApiKeys(CamelModel):
    """Optional API keys: a Secret whose key holds one key per line (none: the APIs are open)."""

    secret_name: str | None = None
    secret_key: str = "keys"


class LocalSettings(CamelModel):
    """The local runtime's own settings (`llamacontroller up`): the seed's crash policy."""

    restart_on_crash: bool = True
    max_restart_attempts: int = Field(default=5, ge=0)


class OperatorConfig(CamelModel):
    """Everything the operator needs besides the LlamaModels themselves."""

    image: str = "ghcr.io/ggml-org/llama.cpp:server-cuda"
    image_pull_policy: str = "IfNotPresent"
    runtime_class_name: str | None = "nvidia"
    default_node: str | None = None
    gpus_per_node: int = Field(default=2, ge=1, le=16)
    gpu_count_label: str = "nvidia.com/gpu.count"
    gpu_strategy: GpuStrategy = GpuStrategy.PINNED
    ports: dict[str, int]
    models_volume: ModelsVolume
    defaults: ServerParameters = Field(default_factory=ServerParameters)
    gpu_env: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, Any] | None = None
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    readiness_period_seconds: int = Field(default=5, ge=1)
    startup_timeout_seconds: int = Field(default=300, ge=1)
    resync_seconds: float = Field(default=30.0, gt=0)
    local: LocalSettings = Field(default_factory=LocalSettings)
    adapter: AdapterSettings = Field(default_factory=AdapterSettings)
    api_keys: ApiKeys = Field(default_factory=ApiKeys)

    @model_validator(mode="after")
    def _ports_cover_the_default_node(self) -> OperatorConfig:
        missing = [name for name in slot_names(self.gpus_per_node) if name not in self.ports]
        if missing:
            raise ValueError(
                f"ports: no port for slot {', '.join(missing)} (gpusPerNode {self.gpus_per_node})"
            )
        return self


def load_config(path: Path | str = DEFAULT_CONFIG_PATH) -> OperatorConfig:
    """Read the settings file; a missing or invalid file is an error the user must see at start-up."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return OperatorConfig.model_validate(data)

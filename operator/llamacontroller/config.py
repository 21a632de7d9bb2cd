"""Operator settings (config/operator.yaml): the slot table, the image, the models volume, defaults.

The slot table is data, not code: each slot names the GPUs it occupies, the port its server listens on
and the tensor split that pins the model to those GPUs. Two slots conflict when their GPUs overlap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator

from llamacontroller.resource import TENSOR_SPLIT_PATTERN, CamelModel, ServerParameters

DEFAULT_CONFIG_PATH = Path("config/operator.yaml")


class SlotConfig(CamelModel):
    """One way to place a server on a node's GPUs."""

    gpus: list[int] = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    tensor_split: str = Field(pattern=TENSOR_SPLIT_PATTERN)


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


class OperatorConfig(CamelModel):
    """Everything the operator needs besides the LlamaModels themselves."""

    image: str = "ghcr.io/ggml-org/llama.cpp:server-cuda"
    image_pull_policy: str = "IfNotPresent"
    runtime_class_name: str | None = "nvidia"
    default_node: str | None = None
    slots: dict[str, SlotConfig]
    models_volume: ModelsVolume
    defaults: ServerParameters = Field(default_factory=ServerParameters)
    gpu_env: dict[str, str] = Field(default_factory=dict)
    resources: dict[str, Any] | None = None
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    readiness_period_seconds: int = Field(default=5, ge=1)

    @model_validator(mode="after")
    def _slots_fit_their_gpus(self) -> OperatorConfig:
        for name, slot in self.slots.items():
            ratios = slot.tensor_split.split(",")
            gpu_count = max(max(s.gpus) for s in self.slots.values()) + 1
            if len(ratios) != gpu_count:
                raise ValueError(f"slot {name}: tensorSplit {slot.tensor_split!r} needs {gpu_count} ratios")
        return self


def load_config(path: Path | str = DEFAULT_CONFIG_PATH) -> OperatorConfig:
    """Read the settings file; a missing or invalid file is an error the user must see at start-up."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    return OperatorConfig.model_validate(data)

"""Operator settings: the slot table, the image, the models volume, defaults.

Every setting has its default here, in the models: a command runs without any file, from any folder.
A settings file (``--config``; config/operator.yaml documents every setting with these same values)
overrides what it names.

The slot table is data, not code: each slot names the GPUs it occupies, the port its server listens on
and the tensor split that pins the model to those GPUs. Two slots conflict when their GPUs overlap.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from llamacontroller.errors import UserError
from llamacontroller.resource import CamelModel, ServerParameters, describe_validation_error
from llamacontroller.slot_table import slot_names

DEFAULT_MODELS_CLAIM = "llama-models"
# The port of each slot's server: GPU 0 and the whole node share 8081, GPU 1 has 8088.
DEFAULT_PORTS = {"gpu0": 8081, "gpu1": 8088, "both": 8081, "gpu2": 8082, "gpu3": 8083, "all": 8081}


class GpuStrategy(StrEnum):
    """How a server gets its GPUs.

    pinned: the container sees only the slot's GPUs (NVIDIA_VISIBLE_DEVICES names their indices) and
    the arguments split the model over those (one GPU: --split-mode none); the operator's slot ledger
    is the only GPU accounting (the default).
    allVisible: every GPU of the node is visible and a one-hot --tensor-split (1,0 / 0,1) keeps the
    layers on the slot's GPUs, for nodes where a container's visible GPUs cannot be set. llama.cpp
    still creates a context and buffers on a GPU whose ratio is 0.
    devicePlugin: the Pod requests nvidia.com/gpu (1 for a single slot, the node's count for the
    whole node) and the NVIDIA device plugin hands it its own devices (no split for a single GPU).
    """

    PINNED = "pinned"
    ALL_VISIBLE = "allVisible"
    DEVICE_PLUGIN = "devicePlugin"


class ModelsVolume(CamelModel):
    """Where the GGUF files live: a PersistentVolumeClaim or a host path, mounted read-only.

    Neither given: the claim ``llama-models``."""

    mount_path: str = "/models"
    persistent_volume_claim: dict[str, Any] | None = None
    host_path: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _exactly_one_source(self) -> ModelsVolume:
        if self.persistent_volume_claim is not None and self.host_path is not None:
            raise ValueError("modelsVolume takes one of persistentVolumeClaim or hostPath, not both")
        if self.persistent_volume_claim is None and self.host_path is None:
            self.persistent_volume_claim = {"claimName": DEFAULT_MODELS_CLAIM}
        return self

    def volume_source(self, writable: bool = False) -> dict[str, Any]:
        """Read-only, unless a Pod's fetch writes to it (then only its mount is read-write)."""
        if self.persistent_volume_claim is not None:
            return {"persistentVolumeClaim": {**self.persistent_volume_claim, "readOnly": not writable}}
        return {"hostPath": dict(self.host_path or {})}


class AdapterSettings(CamelModel):
    """The per-slot sidecar that speaks the Ollama and OpenAI APIs in front of llama-server."""

    enabled: bool = True
    image: str = "ghcr.io/llamacontroller/llamacontroller:0.1.0"
    port: int = Field(default=11434, ge=1, le=65535)
    resources: dict[str, Any] | None = Field(
        default_factory=lambda: {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        }
    )


class ApiKeys(CamelModel):
    """Optional API keys: a Secret whose key holds one key per line (none: the APIs are open)."""

    secret_name: str | None = None
    secret_key: str = "keys"

    @field_validator("secret_name")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class SourceSettings(CamelModel):
    """The init container that fetches a LlamaModel's spec.model.source into the models volume (the
    project's image, ``adapter.image``)."""

    hub_endpoint: str | None = Field(
        default=None, description="HF_ENDPOINT of the fetch: a mirror of the hub (the hub itself when unset)"
    )
    security_context: dict[str, Any] = Field(
        default_factory=lambda: {
            "runAsNonRoot": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
    )
    resources: dict[str, Any] | None = Field(
        default_factory=lambda: {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        }
    )

    @field_validator("hub_endpoint")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None


class LocalSettings(CamelModel):
    """The local runtime's own settings (`llamacontroller up`): what it does when a server crashes."""

    restart_on_crash: bool = True
    max_restart_attempts: int = Field(default=5, ge=0)


class FitSettings(CamelModel):
    """The fit check before a server's Pod is created: the model's estimate (``fit/``) against the
    memory of the slot's GPUs as the node's LlamaNode reports it (written by its node agent)."""

    # What a CUDA process holds on a GPU beyond llama.cpp's buffers (its context, cuBLAS's
    # workspace): a planning figure, not a measurement; `llamacontroller estimate` uses it too.
    gpu_overhead_mib: int = Field(default=512, ge=0, alias="gpuOverheadMiB")
    # A GPU on which other processes (not this project's servers) use more than this is not given to
    # a new model, even if the model would fit beside them. None: no limit.
    foreign_memory_limit_mib: int | None = Field(default=1024, ge=0, alias="foreignMemoryLimitMiB")
    # A LlamaNode whose heartbeat is older than this is not trusted: the fit is not checked.
    node_stale_seconds: float = Field(default=90.0, gt=0)


class LeaderElection(CamelModel):
    """One operator acts at a time, the holder of a Lease; others stand by and take over when it
    stops renewing (at most ``leaseDurationSeconds`` after its last renewal)."""

    enabled: bool = True
    lease_name: str = "llamacontroller-operator"
    namespace: str | None = None  # the operator's own (its ServiceAccount's), else `default`
    lease_duration_seconds: float = Field(default=15.0, gt=0)
    renew_seconds: float = Field(default=5.0, gt=0)

    @model_validator(mode="after")
    def _renew_within_the_lease(self) -> LeaderElection:
        if self.renew_seconds >= self.lease_duration_seconds:
            raise ValueError("leaderElection: renewSeconds must be shorter than leaseDurationSeconds")
        return self


class OperatorConfig(CamelModel):
    """Everything the operator needs besides the LlamaModels themselves."""

    image: str = "ghcr.io/ggml-org/llama.cpp:server-cuda"
    image_pull_policy: str = "IfNotPresent"
    runtime_class_name: str | None = "nvidia"
    default_node: str | None = None
    gpus_per_node: int = Field(default=2, ge=1, le=16)
    gpu_count_label: str = "nvidia.com/gpu.count"
    gpu_strategy: GpuStrategy = GpuStrategy.PINNED
    ports: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_PORTS))
    models_volume: ModelsVolume = Field(default_factory=ModelsVolume)
    defaults: ServerParameters = Field(
        default_factory=lambda: ServerParameters(ctx_size=4096, n_gpu_layers=999, parallel=1)
    )
    gpu_env: dict[str, str] = Field(
        default_factory=lambda: {
            "NVIDIA_VISIBLE_DEVICES": "all",
            "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
        }
    )
    resources: dict[str, Any] | None = Field(
        default_factory=lambda: {"requests": {"cpu": "1", "memory": "2Gi"}}
    )
    tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    )
    readiness_period_seconds: int = Field(default=5, ge=1)
    startup_timeout_seconds: int = Field(default=300, ge=1)
    resync_seconds: float = Field(default=30.0, gt=0)
    api_timeout_seconds: float = Field(default=30.0, gt=0)
    local: LocalSettings = Field(default_factory=LocalSettings)
    adapter: AdapterSettings = Field(default_factory=AdapterSettings)
    sources: SourceSettings = Field(default_factory=SourceSettings)
    api_keys: ApiKeys = Field(default_factory=ApiKeys)
    leader_election: LeaderElection = Field(default_factory=LeaderElection)
    fit: FitSettings = Field(default_factory=FitSettings)

    @field_validator("default_node")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None  # the file's "" says "no default node" too

    @model_validator(mode="after")
    def _ports_cover_the_default_node(self) -> OperatorConfig:
        missing = [name for name in slot_names(self.gpus_per_node) if name not in self.ports]
        if missing:
            raise ValueError(
                f"ports: no port for slot {', '.join(missing)} (gpusPerNode {self.gpus_per_node})"
            )
        return self


# Groups of settings whose fields a file overrides one by one; any other setting it names replaces
# the default whole (a file's `ports` is the whole slot table, its `modelsVolume` the whole source).
MERGED_GROUPS = ("defaults", "local", "adapter", "sources", "apiKeys", "leaderElection", "fit")


def with_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """A settings file's mapping completed by the built-in defaults of the groups it names."""
    builtin = OperatorConfig().model_dump(by_alias=True, exclude_none=True)
    merged = dict(data)
    for group in MERGED_GROUPS:
        if isinstance(data.get(group), dict):
            merged[group] = builtin[group] | data[group]
    return merged


class ConfigError(UserError):
    """The settings file cannot be used; the message names the file and what is wrong in it."""


def load_config(path: Path | str | None = None) -> OperatorConfig:
    """The built-in settings, overridden by those of the file when one is given.

    A missing, unreadable or invalid file raises ConfigError: the user must see it at start-up."""
    if path is None:
        return OperatorConfig()
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"--config {path}: not YAML: {_first_line(exc)}") from exc
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return OperatorConfig.model_validate(with_defaults(data or {}))
    except ValidationError as exc:
        raise ConfigError(f"--config {path}: {describe_validation_error(exc)}") from exc


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())

"""The LlamaModel resource: spec and status as pydantic models.

These models are the single source of truth: the CRD's OpenAPI schema in crds/ is generated from them
(see crd.py), the operator validates every object with them, and the local runtime reads the same files.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "llamacontroller.io"
VERSION = "v1alpha1"
KIND = "LlamaModel"
PLURAL = "llamamodels"
API_VERSION = f"{GROUP}/{VERSION}"

# Ollama model names: [host/][namespace/]model[:tag]. RE2-compatible (no look-arounds), since the
# API server evaluates CRD patterns with Go's regexp.
MODEL_NAME_PATTERN = (
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*){0,2}(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?$"
)
GGUF_PATH_PATTERN = r"^[^/].*\.gguf$"
TENSOR_SPLIT_PATTERN = r"^[0-9]+(\.[0-9]+)?(,[0-9]+(\.[0-9]+)?)+$"
NODE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DEFAULT_TAG = "latest"


class CamelModel(BaseModel):
    """Kubernetes spells fields in camelCase; Python code reads them in snake_case."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def cel_rules(*rules: dict[str, JsonValue]) -> ConfigDict:
    """A resource model's rules across its fields, for the API server to check at apply time
    (the CRD's ``x-kubernetes-validations``, in CEL); the model's own validators say the same."""
    return ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra={"x-kubernetes-validations": list(rules)},
    )


# A path component "..": a path that leaves the models volume.
PARENT_COMPONENT = "(^|/)[.][.](/|$)"


class ModelRef(CamelModel):
    """Which GGUF file to serve and the name clients ask for."""

    model_config = cel_rules(
        {
            "rule": f"!self.path.matches('{PARENT_COMPONENT}')",
            "message": "must stay inside the models volume: '..' is not allowed",
            "fieldPath": ".path",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": f"!has(self.projector) || !self.projector.matches('{PARENT_COMPONENT}')",
            "message": "must stay inside the models volume: '..' is not allowed",
            "fieldPath": ".projector",
            "reason": "FieldValueInvalid",
        },
    )

    name: str | None = Field(
        default=None,
        max_length=256,
        pattern=MODEL_NAME_PATTERN,
        description="The name clients use (Ollama style name:tag, ':latest' implied). "
        "Defaults to the object's name.",
    )
    path: str = Field(
        min_length=6,
        max_length=1024,
        pattern=GGUF_PATH_PATTERN,
        description="The GGUF file, relative to the models volume (e.g. qwen2.5/qwen2.5-7b-q4_k_m.gguf).",
    )
    projector: str | None = Field(
        default=None,
        min_length=6,
        max_length=1024,
        pattern=GGUF_PATH_PATTERN,
        description="A multimodal model's projector (mmproj) GGUF, relative to the models volume: "
        "passed as --mmproj, so clients can send images.",
    )

    @field_validator("path", "projector")
    @classmethod
    def _stay_inside_volume(cls, path: str | None) -> str | None:
        if path is not None and ".." in path.split("/"):
            raise ValueError("must stay inside the models volume: '..' is not allowed")
        return path


class GpuMode(StrEnum):
    SINGLE = "single"
    BOTH = "both"


class GpuPlacement(CamelModel):
    """Which GPUs of the node the server uses: one of them, or both."""

    model_config = cel_rules(
        {
            "rule": "self.mode == 'both' || !has(self.tensorSplit)",
            "message": "tensorSplit applies to mode 'both' only; a single GPU gets the slot's split",
            "fieldPath": ".tensorSplit",
            "reason": "FieldValueForbidden",
        },
        {
            "rule": "self.mode != 'both' || !has(self.gpuId) || self.gpuId == 0",
            "message": "gpuId applies to mode 'single' only",
            "fieldPath": ".gpuId",
            "reason": "FieldValueForbidden",
        },
        {
            "rule": "!has(self.tensorSplit) || self.tensorSplit.matches('[1-9]')",
            "message": "tensorSplit needs at least one non-zero ratio",
            "fieldPath": ".tensorSplit",
            "reason": "FieldValueInvalid",
        },
    )

    mode: GpuMode = Field(default=GpuMode.SINGLE, description="single: one GPU (gpuId); both: every GPU.")
    gpu_id: int = Field(default=0, ge=0, le=15, description="The GPU of a single-GPU placement.")
    tensor_split: str | None = Field(
        default=None,
        pattern=TENSOR_SPLIT_PATTERN,
        description="Explicit ratios for mode both (e.g. '0.7,0.3'); the slot's split by default.",
    )

    @model_validator(mode="after")
    def _fields_fit_mode(self) -> GpuPlacement:
        if self.mode is GpuMode.SINGLE and self.tensor_split is not None:
            raise ValueError("tensorSplit applies to mode 'both' only; a single GPU gets the slot's split")
        if self.mode is GpuMode.BOTH and "gpu_id" in self.model_fields_set and self.gpu_id != 0:
            raise ValueError("gpuId applies to mode 'single' only")
        if self.tensor_split is not None and sum(float(r) for r in self.tensor_split.split(",")) <= 0:
            raise ValueError("tensorSplit needs at least one non-zero ratio")
        return self


# The KV cache types llama-server takes (--cache-type-k/-v).
CacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]


class ServerParameters(CamelModel):
    """llama-server parameters; unset ones take the operator's defaults (config/operator.yaml)."""

    model_config = cel_rules(
        {
            "rule": "!has(self.pooling) || (has(self.embeddings) && self.embeddings)",
            "message": "pooling applies to embeddings: set embeddings: true as well",
            "fieldPath": ".pooling",
            "reason": "FieldValueForbidden",
        },
    )

    ctx_size: int | None = Field(default=None, ge=0, description="--ctx-size: total over parallel slots.")
    n_gpu_layers: int | None = Field(default=None, ge=0, description="--n-gpu-layers (999: all).")
    threads: int | None = Field(default=None, ge=1, description="--threads.")
    batch_size: int | None = Field(default=None, ge=1, description="--batch-size.")
    parallel: int | None = Field(default=None, ge=1, description="--parallel: concurrent request slots.")
    flash_attn: Literal["on", "off", "auto"] | None = Field(default=None, description="--flash-attn.")
    cache_type_k: CacheType | None = Field(
        default=None, description="--cache-type-k: the KV cache's type for keys (f16 by default)."
    )
    cache_type_v: CacheType | None = Field(
        default=None,
        description="--cache-type-v: the KV cache's type for values; a quantized one needs flash attention.",
    )
    embeddings: bool | None = Field(
        default=None,
        description="--embeddings: serve /v1/embeddings (and Ollama's /api/embed); for embedding models.",
    )
    pooling: Literal["none", "mean", "cls", "last", "rank"] | None = Field(
        default=None, description="--pooling: how token embeddings become one (the model's own by default)."
    )
    extra_args: list[str] | None = Field(
        default=None,
        description="Passed verbatim after the typed flags; llama-server takes the last value of a flag.",
    )

    @model_validator(mode="after")
    def _pooling_needs_embeddings(self) -> ServerParameters:
        if self.pooling is not None and not self.embeddings:
            raise ValueError("pooling applies to embeddings: set embeddings: true as well")
        return self


class EnvVar(CamelModel):
    """A container environment variable, as in a Pod."""

    name: str = Field(min_length=1)
    value: str | None = None
    value_from: dict[str, Any] | None = None


class Resources(CamelModel):
    """Container resources, as in a Pod (requests and limits)."""

    limits: dict[str, int | str] | None = None
    requests: dict[str, int | str] | None = None


class LlamaModelSpec(CamelModel):
    """What to serve and where."""

    model: ModelRef
    gpu: GpuPlacement = Field(default_factory=GpuPlacement)
    node_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=NODE_NAME_PATTERN,
        description="The node whose GPUs serve the model; the operator's defaultNode when unset.",
    )
    parameters: ServerParameters = Field(default_factory=ServerParameters)
    image: str | None = Field(default=None, min_length=1, description="Overrides the operator's image.")
    startup_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=86400,
        description="How long loading may take before the kubelet restarts the server "
        "(the operator's startupTimeoutSeconds when unset).",
    )
    resources: Resources | None = None
    env: list[EnvVar] | None = None


class Phase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    LOADING = "Loading"
    READY = "Ready"
    FAILED = "Failed"


class Condition(CamelModel):
    """A condition in the Kubernetes API convention."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class Termination(CamelModel):
    """The server container's latest exit, with the tail of its last log lines."""

    exit_code: int | None = None
    reason: str | None = None
    message: str | None = None
    finished_at: str | None = None


class LlamaModelStatus(CamelModel):
    """What the operator observed, for people and for `kubectl get`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    phase: Phase | None = None
    message: str | None = None
    model: str | None = Field(default=None, description="The resolved name clients use (name:tag).")
    node: str | None = None
    slot: str | None = None
    port: int | None = None
    pod_name: str | None = None
    service_name: str | None = None
    endpoint: str | None = Field(default=None, description="llama-server behind the slot's Service.")
    api_endpoint: str | None = Field(
        default=None, description="The slot's Ollama/OpenAI adapter, when the operator runs it."
    )
    waiting_since: str | None = Field(default=None, description="When it started waiting for its slot.")
    loaded_at: str | None = Field(default=None, description="When the server became ready.")
    restarts: int | None = Field(default=None, description="Restarts of the server container.")
    last_termination: Termination | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class ObjectMeta(BaseModel):
    """The part of an object's metadata that the operator reads."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int | None = None


class LlamaModel(BaseModel):
    """A whole LlamaModel object, as read from the API or from a YAML file."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    api_version: Literal["llamacontroller.io/v1alpha1"] = Field(
        default="llamacontroller.io/v1alpha1", alias="apiVersion"
    )
    kind: Literal["LlamaModel"] = "LlamaModel"
    metadata: ObjectMeta
    spec: LlamaModelSpec

    @property
    def model_name(self) -> str:
        """The name clients use, always with a tag."""
        return normalize_model_name(self.spec.model.name or self.metadata.name)


def normalize_model_name(name: str) -> str:
    """`phi4` and `phi4:latest` are one model to Ollama clients; keep the tagged form."""
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:{DEFAULT_TAG}"


def parse_llamamodel(body: dict[str, Any]) -> LlamaModel:
    """Validate an object from the API or a file; raises InvalidSpec with a message for people."""
    try:
        lm = LlamaModel.model_validate(body)
    except ValidationError as exc:
        raise InvalidSpec(describe_validation_error(exc)) from exc
    if not re.fullmatch(MODEL_NAME_PATTERN, lm.model_name):
        raise InvalidSpec(
            f"spec.model.name: the object's name {lm.metadata.name!r} is no valid model name;"
            " set spec.model.name"
        )
    return lm


class InvalidSpec(ValueError):
    """The object cannot be served as written; the message says why, field by field."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, in the resource's own field names (spec.gpu.gpuId, not gpu_id)."""
    lines = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)

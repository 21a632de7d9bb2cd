"""The LlamaModel resource: spec and status as pydantic models.

These models are the single source of truth: the CRD's OpenAPI schema in crds/ is generated from them
(see crd.py), the operator validates every object with them, and the local runtime reads the same files.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainValidator,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from llamacontroller.quantity import (
    EXTENDED_DOMAIN_MAX,
    EXTENDED_NAME_MAX,
    EXTENDED_RESOURCE_PATTERN,
    INT64_MAX,
    QUANTITY_MAX_CHARS,
    QUANTITY_PATTERN,
    STANDARD_RESOURCES,
    is_extended,
    parse_quantity,
    resource_name_problem,
)

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
# A file in the models volume: relative, no control characters (a NUL cannot be passed to a process).
GGUF_PATH_PATTERN = r"^[^/\x00-\x1f\x7f][^\x00-\x1f\x7f]*\.gguf$"
TENSOR_SPLIT_PATTERN = r"^[0-9]+(\.[0-9]+)?(,[0-9]+(\.[0-9]+)?)+$"
NODE_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_PATTERN = NODE_NAME_PATTERN
# A container image reference: no whitespace at either end (the API server refuses such a Pod), no
# characters that no registry, name, tag or digest uses.
IMAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._/:@-]*$"
# An environment variable name as Pods take it: printable ASCII other than '='.
ENV_NAME_PATTERN = r"^[ -<>-~]+$"
# A configMap or Secret key: [-._a-zA-Z0-9], and neither '.', '..' nor anything starting with '..'.
CONFIG_KEY_PATTERN = r"^([-_a-zA-Z0-9]|[.][-_a-zA-Z0-9])[-._a-zA-Z0-9]*$"
NO_NUL_PATTERN = r"^[^\x00]*$"  # a NUL cannot reach a process: its argument or variable would end there
INT32_MAX = 2**31 - 1  # llama-server reads its integer flags as C ints
DEFAULT_TAG = "latest"
# What a LlamaModel may pass in extraArgs and env: generous for any real server, and together far
# under what `kubectl apply` can store (its last-applied annotation holds at most 256 KiB).
MAX_EXTRA_ARGS = 256
MAX_EXTRA_ARGS_CHARS = 16384
MAX_ENV = 64
MAX_ENV_VALUE_CHARS = 16384
MAX_RESOURCES = 16
# llama-server flags that the operator sets from the slot and spec.model, which extraArgs may not
# change (llama-server takes a flag's last value): where it listens (the Pod's port and probes),
# which GPUs it uses (the slot's: another split, main GPU, device or split mode could put it on a
# GPU the ledger gave to another server), the model file and the name clients ask for.
OWNED_FLAGS = (
    "--host",
    "--port",
    "-ts",
    "--tensor-split",
    "-mg",
    "--main-gpu",
    "-dev",
    "--device",
    "-sm",
    "--split-mode",
    "-m",
    "--model",
    "-mm",
    "--mmproj",
    "-a",
    "--alias",
)
_OWNED = "[" + ", ".join(f"'{flag}'" for flag in OWNED_FLAGS) + "]"
OWNED_FLAGS_MESSAGE = (
    "extraArgs may not set what the operator sets from the slot and spec.model: " + ", ".join(OWNED_FLAGS)
)
# Variables that choose which GPUs a process sees: the operator sets them from the slot, and a
# LlamaModel's own value would win over the operator's, so spec.env may not name them.
OWNED_VARIABLES = (
    "NVIDIA_VISIBLE_DEVICES",
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
    "GGML_VK_VISIBLE_DEVICES",
)
OWNED_VARIABLES_MESSAGE = "env may not set what the operator sets from the slot: " + ", ".join(
    OWNED_VARIABLES
)


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


SHA256_PATTERN = r"^[0-9a-f]{64}$"
# A download address: http(s) (the sha256 guards the content whichever it is), no whitespace or control
# characters.
URL_PATTERN = r"^https?://[^\s\x00-\x1f\x7f]+$"
# A Hugging Face repository: owner/name, as the hub spells them.
HF_REPO_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$"
# A git revision: a branch, a tag or a commit (refs/pr/1 too); no control characters or spaces.
HF_REVISION_PATTERN = r"^[A-Za-z0-9._][A-Za-z0-9._/-]*$"


class SecretKey(CamelModel):
    """A key of a Secret in the LlamaModel's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    key: str = Field(max_length=253, pattern=CONFIG_KEY_PATTERN)


class HuggingFaceSource(CamelModel):
    """A file of a Hugging Face repository, verified against the LFS sha256 the hub publishes."""

    model_config = cel_rules(
        {
            "rule": f"!self.file.matches('{PARENT_COMPONENT}')",
            "message": "must be a file of the repository: '..' is not allowed",
            "fieldPath": ".file",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": f"!self.revision.matches('{PARENT_COMPONENT}')",
            "message": "'..' is not allowed in a revision",
            "fieldPath": ".revision",
            "reason": "FieldValueInvalid",
        },
    )

    repo: str = Field(max_length=200, pattern=HF_REPO_PATTERN, description="owner/name on the hub.")
    file: str = Field(
        min_length=6,
        max_length=1024,
        pattern=GGUF_PATH_PATTERN,
        description="The GGUF file in the repository (e.g. qwen2.5-7b-instruct-q4_k_m.gguf).",
    )
    revision: str = Field(
        default="main",
        max_length=255,
        pattern=HF_REVISION_PATTERN,
        description="A branch, tag or commit; a branch is looked up again each time the Pod starts.",
    )
    token_secret: SecretKey | None = Field(
        default=None, description="A Secret key holding a hub token, for gated or private repositories."
    )

    @field_validator("file", "revision")
    @classmethod
    def _no_parent(cls, value: str) -> str:
        if ".." in value.split("/"):
            raise ValueError("'..' is not allowed")
        return value


class ModelSource(CamelModel):
    """Where the operator fetches the GGUF file from: a URL with its sha256, or the hub."""

    model_config = cel_rules(
        {
            "rule": "has(self.url) != has(self.huggingFace)",
            "message": "needs exactly one of url or huggingFace",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": "has(self.url) == has(self.sha256)",
            "message": "a url needs its sha256 (the hub publishes its own)",
            "fieldPath": ".sha256",
            "reason": "FieldValueInvalid",
        },
    )

    url: str | None = Field(
        default=None, max_length=4096, pattern=URL_PATTERN, description="An http(s) address of the GGUF file."
    )
    sha256: str | None = Field(
        default=None, pattern=SHA256_PATTERN, description="The file's sha256 (64 lowercase hex digits)."
    )
    hugging_face: HuggingFaceSource | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        if (self.url is None) == (self.hugging_face is None):
            raise ValueError("needs exactly one of url or huggingFace")
        if (self.url is None) != (self.sha256 is None):
            raise ValueError("a url needs its sha256 (the hub publishes its own)")
        return self


class ModelRef(CamelModel):
    """Which GGUF file to serve and the name clients ask for."""

    model_config = cel_rules(
        {
            "rule": "has(self.path) != has(self.source)",
            "message": "needs exactly one of path (a file in the models volume) or source (fetched into it)",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": f"!has(self.path) || !self.path.matches('{PARENT_COMPONENT}')",
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
    path: str | None = Field(
        default=None,
        min_length=6,
        max_length=1024,
        pattern=GGUF_PATH_PATTERN,
        description="The GGUF file, relative to the models volume (e.g. qwen2.5/qwen2.5-7b-q4_k_m.gguf), "
        "put there by hand. Nothing is fetched for it.",
    )
    source: ModelSource | None = Field(
        default=None,
        description="Where to fetch the GGUF file from, into the models volume (verified, kept, "
        "fetched once per node volume); instead of path.",
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

    @model_validator(mode="after")
    def _path_or_source(self) -> ModelRef:
        if (self.path is None) == (self.source is None):
            raise ValueError(
                "needs exactly one of path (a file in the models volume) or source (fetched into it)"
            )
        return self


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
        {
            "rule": f"!has(self.extraArgs) || self.extraArgs.map(a, size(a)).sum() <= {MAX_EXTRA_ARGS_CHARS}",
            "message": f"extraArgs may hold {MAX_EXTRA_ARGS_CHARS} characters in all",
            "fieldPath": ".extraArgs",
            "reason": "FieldValueInvalid",
        },
        {
            "rule": f"!has(self.extraArgs) || self.extraArgs.all(a, !(a in {_OWNED}) && "
            f"!{_OWNED}.exists(f, a.startsWith(f + '=')))",
            "message": OWNED_FLAGS_MESSAGE,
            "fieldPath": ".extraArgs",
            "reason": "FieldValueForbidden",
        },
    )

    ctx_size: int | None = Field(
        default=None, ge=0, le=INT32_MAX, description="--ctx-size: total over parallel slots."
    )
    n_gpu_layers: int | None = Field(
        default=None, ge=0, le=INT32_MAX, description="--n-gpu-layers (999: all)."
    )
    threads: int | None = Field(default=None, ge=1, le=INT32_MAX, description="--threads.")
    batch_size: int | None = Field(default=None, ge=1, le=INT32_MAX, description="--batch-size.")
    parallel: int | None = Field(
        default=None, ge=1, le=INT32_MAX, description="--parallel: concurrent request slots."
    )
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
    extra_args: (
        list[Annotated[str, Field(max_length=MAX_EXTRA_ARGS_CHARS, pattern=NO_NUL_PATTERN)]] | None
    ) = Field(
        default=None,
        max_length=MAX_EXTRA_ARGS,
        description="Passed verbatim after the typed flags; llama-server takes the last value of a flag.",
    )

    @model_validator(mode="after")
    def _pooling_needs_embeddings(self) -> ServerParameters:
        if self.pooling is not None and not self.embeddings:
            raise ValueError("pooling applies to embeddings: set embeddings: true as well")
        return self

    @field_validator("extra_args")
    @classmethod
    def _extra_args_fit(cls, args: list[str] | None) -> list[str] | None:
        if args is not None and sum(len(a) for a in args) > MAX_EXTRA_ARGS_CHARS:
            raise ValueError(f"extraArgs may hold {MAX_EXTRA_ARGS_CHARS} characters in all")
        if any(arg.split("=", 1)[0] in OWNED_FLAGS for arg in args or []):
            raise ValueError(OWNED_FLAGS_MESSAGE)
        return args


class KeyRef(CamelModel):
    """A key of a Secret or ConfigMap in the LlamaModel's namespace."""

    name: str = Field(max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)
    key: str = Field(max_length=253, pattern=CONFIG_KEY_PATTERN)
    optional: bool | None = None


class FieldRef(CamelModel):
    """A field of the server's Pod (the downward API)."""

    field_path: Literal[
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "spec.nodeName",
        "spec.serviceAccountName",
        "status.hostIP",
        "status.hostIPs",
        "status.podIP",
        "status.podIPs",
    ]
    api_version: Literal["v1"] | None = None


class ResourceFieldRef(CamelModel):
    """A resource of the server's container (the downward API), in its plain unit."""

    resource: Literal[
        "limits.cpu",
        "limits.memory",
        "limits.ephemeral-storage",
        "requests.cpu",
        "requests.memory",
        "requests.ephemeral-storage",
    ]


ONE_SOURCE = "exactly one of secretKeyRef, configMapKeyRef, fieldRef or resourceFieldRef"


class EnvVarSource(CamelModel):
    """Where a variable's value comes from, as in a Pod: one source."""

    model_config = cel_rules(
        {
            "rule": "[has(self.secretKeyRef), has(self.configMapKeyRef), has(self.fieldRef),"
            " has(self.resourceFieldRef)].exists_one(x, x)",
            "message": f"needs {ONE_SOURCE}",
            "reason": "FieldValueInvalid",
        },
    )

    secret_key_ref: KeyRef | None = None
    config_map_key_ref: KeyRef | None = None
    field_ref: FieldRef | None = None
    resource_field_ref: ResourceFieldRef | None = None

    @model_validator(mode="after")
    def _one_source(self) -> EnvVarSource:
        sources = (self.secret_key_ref, self.config_map_key_ref, self.field_ref, self.resource_field_ref)
        if sum(source is not None for source in sources) != 1:
            raise ValueError(f"needs {ONE_SOURCE}")
        return self


class EnvVar(CamelModel):
    """A container environment variable, as in a Pod: a value, or where to take it from."""

    model_config = cel_rules(
        {
            "rule": "!has(self.valueFrom) || !has(self.value) || self.value == ''",
            "message": "value and valueFrom exclude each other",
            "fieldPath": ".valueFrom",
            "reason": "FieldValueForbidden",
        },
        {
            "rule": "!(self.name in [" + ", ".join(f"'{name}'" for name in OWNED_VARIABLES) + "])",
            "message": OWNED_VARIABLES_MESSAGE,
            "fieldPath": ".name",
            "reason": "FieldValueForbidden",
        },
    )

    name: str = Field(max_length=256, pattern=ENV_NAME_PATTERN)
    value: str | None = Field(default=None, max_length=MAX_ENV_VALUE_CHARS, pattern=NO_NUL_PATTERN)
    value_from: EnvVarSource | None = None

    @field_validator("name")
    @classmethod
    def _not_owned(cls, name: str) -> str:
        if name in OWNED_VARIABLES:
            raise ValueError(OWNED_VARIABLES_MESSAGE)
        return name

    @model_validator(mode="after")
    def _value_or_source(self) -> EnvVar:
        if self.value_from is not None and self.value:
            raise ValueError("value and valueFrom exclude each other")
        return self


def _quantity(value: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("must be a quantity: a whole number, or a string such as 500m or 8Gi")
    parse_quantity(value)
    return value


# A quantity as Pods take it: a non-negative integer or a string such as 500m or 8Gi (one message
# for both kinds; the CRD declares both, with the bounds of each).
Quantity = Annotated[
    int | str,
    PlainValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "maxLength": QUANTITY_MAX_CHARS, "pattern": QUANTITY_PATTERN},
            ]
        }
    ),
]

_QUANTITY = "quantity(string({}))"
_CONTAINER_RESOURCE = (
    f"k in {list(STANDARD_RESOURCES)} || (k.matches('{EXTENDED_RESOURCE_PATTERN}') && "
    f"!k.contains('kubernetes.io/') && k.indexOf('/') <= {EXTENDED_DOMAIN_MAX} && "
    f"size(k) - k.indexOf('/') <= {EXTENDED_NAME_MAX + 1})"
)
RESOURCE_NAMES_MESSAGE = (
    "a container can ask for cpu, memory, ephemeral-storage, or an extended resource such as nvidia.com/gpu"
)
EXTENDED_INTEGER_MESSAGE = "an extended resource (such as nvidia.com/gpu) comes in whole units"


def _quantities(what: str) -> Any:
    """A map of resource quantities (limits or requests), with the API server's own rules for them."""
    return Field(
        default=None,
        max_length=MAX_RESOURCES,
        description=what,
        json_schema_extra={
            "x-kubernetes-validations": [
                {
                    "rule": f"self.all(k, {_CONTAINER_RESOURCE})",
                    "message": RESOURCE_NAMES_MESSAGE,
                    "reason": "FieldValueInvalid",
                },
                {
                    "rule": f"self.all(k, !k.contains('/') || {_QUANTITY.format('self[k]')}.isInteger())",
                    "message": EXTENDED_INTEGER_MESSAGE,
                    "reason": "FieldValueInvalid",
                },
            ]
        },
    )


_REQUEST, _LIMIT = _QUANTITY.format("self.requests[k]"), _QUANTITY.format("self.limits[k]")
REQUESTS_MESSAGE = (
    "a request may not exceed its limit; an extended resource (such as nvidia.com/gpu) requested needs "
    "a limit, equal to the request"
)


class Resources(CamelModel):
    """Container resources, as in a Pod (requests and limits)."""

    model_config = cel_rules(
        {
            "rule": "!has(self.requests) || self.requests.all(k, k.contains('/') ? "
            f"(has(self.limits) && k in self.limits && {_REQUEST}.compareTo({_LIMIT}) == 0) : "
            f"(!has(self.limits) || !(k in self.limits) || {_REQUEST}.compareTo({_LIMIT}) <= 0))",
            "message": REQUESTS_MESSAGE,
            "fieldPath": ".requests",
            "reason": "FieldValueInvalid",
        },
    )

    limits: dict[str, Quantity] | None = _quantities("The most the server may use, as in a Pod.")
    requests: dict[str, Quantity] | None = _quantities("What the scheduler reserves, as in a Pod.")

    @field_validator("limits", "requests")
    @classmethod
    def _container_quantities(cls, quantities: dict[str, int | str] | None) -> dict[str, int | str] | None:
        for name, value in (quantities or {}).items():
            problem = resource_name_problem(name)
            if problem:
                raise ValueError(problem)
            amount = parse_quantity(value)
            if is_extended(name) and (amount.denominator != 1 or amount > INT64_MAX):
                raise ValueError(f"{name}: {EXTENDED_INTEGER_MESSAGE}")
        return quantities

    @model_validator(mode="after")
    def _requests_fit_limits(self) -> Resources:
        limits = self.limits or {}
        for name, value in (self.requests or {}).items():
            request, limit = parse_quantity(value), limits.get(name)
            if is_extended(name):
                fits = limit is not None and request == parse_quantity(limit)
            else:
                fits = limit is None or request <= parse_quantity(limit)
            if not fits:
                raise ValueError(f"requests.{name}: {REQUESTS_MESSAGE}")
        return self


class LlamaModelSpec(CamelModel):
    """What to serve and where."""

    model_config = cel_rules(
        {
            "rule": "!has(self.env) || "
            f"self.env.map(e, has(e.value) ? size(e.value) : 0).sum() <= {MAX_ENV_VALUE_CHARS}",
            "message": f"env values may hold {MAX_ENV_VALUE_CHARS} characters in all",
            "fieldPath": ".env",
            "reason": "FieldValueInvalid",
        },
    )

    model: ModelRef
    gpu: GpuPlacement = Field(default_factory=GpuPlacement)
    node_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=NODE_NAME_PATTERN,
        description="The node whose GPUs serve the model; the operator's defaultNode when unset.",
    )
    parameters: ServerParameters = Field(default_factory=ServerParameters)
    image: str | None = Field(
        default=None, max_length=512, pattern=IMAGE_PATTERN, description="Overrides the operator's image."
    )
    startup_timeout_seconds: int | None = Field(
        default=None,
        ge=1,
        le=86400,
        description="How long loading may take before the kubelet restarts the server "
        "(the operator's startupTimeoutSeconds when unset).",
    )
    resources: Resources | None = None
    env: list[EnvVar] | None = Field(default=None, max_length=MAX_ENV)

    @field_validator("env")
    @classmethod
    def _env_fits(cls, env: list[EnvVar] | None) -> list[EnvVar] | None:
        if env is not None and sum(len(var.value or "") for var in env) > MAX_ENV_VALUE_CHARS:
            raise ValueError(f"env values may hold {MAX_ENV_VALUE_CHARS} characters in all")
        return env


class Phase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    DOWNLOADING = "Downloading"
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
    """One line per problem, in the resource's own field names as the API server writes them
    (spec.gpu.gpuId, not gpu_id; spec.env[0].name)."""
    lines = []
    for error in exc.errors():
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
        where = where.removeprefix(".")
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return "; ".join(lines)

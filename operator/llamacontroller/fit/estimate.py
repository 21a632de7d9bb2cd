"""What a model needs on each GPU it is given: weights, KV cache, compute buffer, overhead. Pure.

``estimate(facts, settings, split)`` takes what the GGUF header says (``model.py``), what in the
server's arguments decides memory (``ServerSettings``) and the split over the GPUs the server sees,
and returns the bytes per GPU and on the host, as the pinned llama.cpp release sizes them:

- Weights: llama.cpp offloads the last ``nGpuLayers`` layers counting the output layer
  (src/llama-model.cpp, ``load_tensors``: the first layer on a GPU is ``n_layer + 1 - ngl``) and
  gives each offloaded layer to the GPU whose share of the cumulative split it falls in. A layer's
  weights are its ``blk.N.*`` tensors; the output layer's are ``output.weight`` (or the token
  embeddings loaded again, for a model without one) and the tensors outside the layers. The token
  embeddings stay on the host.
- KV cache: llama-context.cpp pads ``n_ctx`` to a multiple of 256; with a unified cache every
  sequence shares all of it, otherwise each of ``parallel`` sequences gets ``n_ctx / parallel``
  padded to 256 again. Each layer holds, per cell, its keys and values in the cache types
  (``n_head_kv x head size`` each, in ggml blocks: q8_0 is 34 bytes per 32), on its layer's device
  (llama-kv-cache.cpp).
- Compute buffer: the graph of one worst-case ubatch (``graph.py``) laid out as ggml's allocator
  would (``allocator.py``), per device.
- Overhead: what a process takes on a GPU beyond llama.cpp's buffers (the CUDA context, cuBLAS's
  workspace); it cannot be read from a header, so it is a figure given by the caller (the config's
  ``fit.gpuOverheadMiB`` for a slot's estimate: not measured here, there is no GPU; llama.cpp's own
  --fit keeps 1024 MiB free per GPU).
- The host also holds the output buffer (the logits of ``n_outputs_max`` rows) and the layers that
  are not offloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import get_args

from llamacontroller.config import GpuStrategy, OperatorConfig
from llamacontroller.fit.allocator import CPU_ALIGNMENT, GPU_ALIGNMENT, buffer_size
from llamacontroller.fit.graph import HOST, Ubatch, ubatch_graph
from llamacontroller.fit.model import EstimateError, ModelFacts
from llamacontroller.gguf_header import GGML_TYPE_NUMBERS, GGML_TYPES, row_bytes
from llamacontroller.render.args import plan_server
from llamacontroller.resource import CacheType, LlamaModel, ServerParameters
from llamacontroller.slots import Placement

MiB = 1 << 20
CTX_PAD = 256  # llama-context.cpp pads n_ctx (and each sequence's share) to this
# llama-server's defaults in the pinned release (llama-server --help)
DEFAULT_BATCH, DEFAULT_UBATCH, AUTO_PARALLEL = 2048, 512, 4


@dataclass(frozen=True)
class ServerSettings:
    """What in llama-server's arguments decides its memory. None: llama-server's own default."""

    ctx_size: int | None = None  # 0 or None: the model's training context
    n_gpu_layers: int | None = None  # None or negative: all
    parallel: int | None = None  # None: auto (4 slots sharing a unified KV cache)
    kv_unified: bool | None = None  # None: unified when parallel is auto
    batch_size: int = DEFAULT_BATCH
    ubatch_size: int = DEFAULT_UBATCH
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    flash_attn: str = "auto"
    embeddings: bool = False


# llama-server's spellings of the flags that change memory (common/arg.cpp)
_FLAGS = {
    "ctx_size": ("-c", "--ctx-size"),
    "n_gpu_layers": ("-ngl", "--gpu-layers", "--n-gpu-layers"),
    "parallel": ("-np", "--parallel"),
    "batch_size": ("-b", "--batch-size"),
    "ubatch_size": ("-ub", "--ubatch-size"),
    "cache_type_k": ("-ctk", "--cache-type-k"),
    "cache_type_v": ("-ctv", "--cache-type-v"),
    "flash_attn": ("-fa", "--flash-attn"),
}
_NUMBERS = {"ctx_size", "n_gpu_layers", "parallel", "batch_size", "ubatch_size"}
_SWITCHES = {
    "-kvu": ("kv_unified", True),
    "--kv-unified": ("kv_unified", True),
    "-no-kvu": ("kv_unified", False),
    "--no-kv-unified": ("kv_unified", False),
    "--embeddings": ("embeddings", True),
    "--embedding": ("embeddings", True),
}


def server_settings(parameters: ServerParameters) -> ServerSettings:
    """The settings of a LlamaModel's merged parameters: the typed fields, then its extraArgs,
    which llama-server reads last (so they win). Raises EstimateError for a value it cannot read."""
    values: dict[str, object] = {
        "ctx_size": parameters.ctx_size or None,
        "n_gpu_layers": parameters.n_gpu_layers,
        "parallel": parameters.parallel,
        "batch_size": parameters.batch_size or DEFAULT_BATCH,
        "cache_type_k": parameters.cache_type_k or "f16",
        "cache_type_v": parameters.cache_type_v or "f16",
        "flash_attn": parameters.flash_attn or "auto",
        "embeddings": bool(parameters.embeddings),
    }
    by_flag = {flag: name for name, flags in _FLAGS.items() for flag in flags}
    args = list(parameters.extra_args or [])
    for index, arg in enumerate(args):
        flag, _, inline = arg.partition("=")
        if flag in _SWITCHES:
            name, value = _SWITCHES[flag]
            values[name] = value
        elif flag in by_flag:
            raw = inline or (args[index + 1] if index + 1 < len(args) else "")
            name = by_flag[flag]
            values[name] = _number(flag, raw) if name in _NUMBERS else raw.lower()
    if values.get("ctx_size") == 0:
        values["ctx_size"] = None
    if values.get("parallel") == -1:
        values["parallel"] = None
    return ServerSettings(**values)  # type: ignore[arg-type]


def _number(flag: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise EstimateError(f"extraArgs: {flag} {raw!r} is not a number") from None


@dataclass(frozen=True)
class Need:
    """Bytes one device needs."""

    weights: int = 0
    kv_cache: int = 0
    compute: int = 0
    overhead: int = 0
    output: int = 0  # the logits buffer: host memory

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.overhead + self.output


@dataclass(frozen=True)
class Estimate:
    """Per GPU the server sees (in its order) and on the host, with what the figures assume."""

    gpus: tuple[Need, ...]
    host: Need
    n_ctx: int  # KV cells in all
    n_ctx_seq: int  # cells one sequence may use
    n_seq: int
    kv_unified: bool
    flash_attn: bool
    layers_on_gpus: int  # of n_layer + 1 (the output layer counts)
    ubatch: int
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> int:
        return sum(need.total for need in self.gpus) + self.host.total


def _padded(value: int, to: int) -> int:
    return -(-value // to) * to


def _cache_row(kind: str, width: int, head: int, which: str) -> int:
    """Bytes of one cell of one layer's keys (or values) in the cache type; llama.cpp refuses a
    type whose blocks do not divide a head (llama.cpp: llama_init_from_model)."""
    number = GGML_TYPE_NUMBERS.get(kind.upper()) if kind in get_args(CacheType) else None
    size = None if number is None else row_bytes(number, width)
    if number is None or size is None:
        raise EstimateError(f"--cache-type-{which} {kind}: not a KV cache type llama-server takes")
    block = GGML_TYPES[number].block_size
    if head % block:
        raise EstimateError(
            f"--cache-type-{which} {kind}: its blocks of {block} do not divide the model's heads of {head}"
        )
    return size


def layer_devices(n_layer: int, n_gpu_layers: int, split: Sequence[float]) -> list[int]:
    """The device of each layer and, last, of the output layer: HOST, or the index of a GPU in
    ``split`` (llama-model.cpp: the last ``n_gpu_layers`` of the ``n_layer + 1``, each to the GPU
    whose cumulative share of the split its position falls under)."""
    if not split or n_gpu_layers == 0:
        return [HOST] * (n_layer + 1)
    offloaded = min(n_gpu_layers, n_layer + 1)
    first = n_layer + 1 - offloaded
    total = sum(split)
    shares = [1.0 / len(split)] * len(split) if total <= 0 else [r / total for r in split]
    bounds = [sum(shares[: i + 1]) for i in range(len(shares))]
    devices: list[int] = []
    for layer in range(n_layer + 1):
        if layer < first:
            devices.append(HOST)
            continue
        position = (layer - first) / offloaded
        devices.append(next((i for i, bound in enumerate(bounds) if bound > position), len(bounds) - 1))
    return devices


def estimate(
    facts: ModelFacts, settings: ServerSettings, split: Sequence[float], overhead: int = 0
) -> Estimate:
    """The memory of a llama-server that runs ``facts``'s model with ``settings`` on GPUs whose
    shares of the model are ``split`` (one ratio per GPU it sees; empty: no GPU, all on the host).
    Raises EstimateError for settings llama-server would refuse."""
    notes: list[str] = []
    flash_attn = settings.flash_attn != "off"
    if not flash_attn and settings.cache_type_v.lower() not in ("f32", "f16", "bf16"):
        raise EstimateError(f"--cache-type-v {settings.cache_type_v} needs flash attention (flashAttn off)")
    n_seq = settings.parallel or AUTO_PARALLEL
    unified = settings.kv_unified if settings.kv_unified is not None else settings.parallel is None
    n_ctx = _padded(settings.ctx_size or facts.n_ctx_train, CTX_PAD)
    n_ctx_seq = n_ctx if unified else _padded(n_ctx // n_seq, CTX_PAD)
    if not unified:
        n_ctx = n_ctx_seq * n_seq
    batch = min(n_ctx, settings.batch_size)
    ubatch = min(batch, settings.ubatch_size)
    n_outputs = ubatch if settings.embeddings else min(n_seq, ubatch)

    ngl = settings.n_gpu_layers
    devices = layer_devices(facts.n_layer, facts.n_layer + 1 if ngl is None or ngl < 0 else ngl, split)
    gpus = [Need(overhead=overhead) for _ in split]
    host = Need(weights=facts.input_bytes, output=facts.n_vocab * n_seq * 4)

    def add(device: int, **more: int) -> None:
        nonlocal host
        need = host if device == HOST else gpus[device]
        grown = replace(need, **{key: getattr(need, key) + value for key, value in more.items()})
        if device == HOST:
            host = grown
        else:
            gpus[device] = grown

    for layer in range(facts.n_layer):
        k_row = _cache_row(settings.cache_type_k, facts.n_embd_k_gqa(layer), facts.head_k, "k")
        v_row = _cache_row(settings.cache_type_v, facts.n_embd_v_gqa(layer), facts.head_v, "v")
        add(devices[layer], weights=facts.layer_bytes[layer], kv_cache=n_ctx * (k_row + v_row))
    output_device = devices[facts.n_layer]
    shared = facts.tied_output and output_device == HOST  # the embeddings already held there
    add(output_device, weights=facts.other_bytes + (0 if shared else facts.output_bytes))

    graph = ubatch_graph(facts, Ubatch(ubatch, n_outputs, n_ctx_seq, flash_attn), devices, output_device)
    for device, nodes in graph.items():
        alignment = CPU_ALIGNMENT if device == HOST else GPU_ALIGNMENT
        add(device, compute=buffer_size(nodes, alignment))
    if len({d for d in devices if d != HOST}) > 1 and HOST not in devices:
        notes.append(
            "over several GPUs with every layer offloaded llama.cpp pipelines ubatches and keeps up to "
            "4 copies of each GPU's inputs: its compute buffers grow beyond this estimate"
        )
    if not facts.llama_like:
        notes.append(f"the compute buffer of a {facts.architecture} model is estimated with llama's graph")
    return Estimate(
        gpus=tuple(gpus),
        host=host,
        n_ctx=n_ctx,
        n_ctx_seq=n_ctx_seq,
        n_seq=n_seq,
        kv_unified=unified,
        flash_attn=flash_attn,
        layers_on_gpus=sum(1 for device in devices if device != HOST),
        ubatch=ubatch,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class SlotEstimate:
    """A LlamaModel's estimate on its slot: the node's index of each GPU its server sees."""

    placement: Placement
    gpu_indices: tuple[int, ...]
    estimate: Estimate


def slot_estimate(
    lm: LlamaModel,
    placement: Placement,
    config: OperatorConfig,
    facts: ModelFacts,
    gpu_count: int,
) -> SlotEstimate:
    """The estimate of the server rendered for ``lm`` on ``placement``: its settings, and the GPUs
    it sees with its split over them (the whole node with allVisible, whose ratio-0 GPUs get the
    overhead: llama.cpp initialises every GPU it sees), each with the config's overhead."""
    overhead = config.fit.gpu_overhead_mib * MiB
    plan = plan_server(lm, placement, config)
    view = plan.gpus
    if view.visible is not None:
        indices = view.visible
    elif config.gpu_strategy is GpuStrategy.ALL_VISIBLE:
        indices = tuple(range(gpu_count))
    else:  # the device plugin's GPUs: the slot's count of them
        indices = tuple(sorted(placement.gpus))
    ratios = view.ratios if len(view.ratios) == len(indices) else (1.0,) * len(indices)
    return SlotEstimate(
        placement, indices, estimate(facts, server_settings(plan.parameters), ratios, overhead)
    )

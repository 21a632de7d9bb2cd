"""What a GGUF header says about a model's memory: its dimensions and its tensors' bytes. Pure.

The names are llama.cpp's (src/llama-model.cpp reads the same keys): ``{arch}.block_count``
layers, each with its tensors ``blk.N.*``; ``token_embd.weight`` (the input embeddings, always kept
on the CPU), ``output.weight`` (the output head; a model without one reuses the token embeddings,
which llama.cpp then loads a second time where the output layer runs) and the other tensors outside
the layers (``output_norm.weight``, ``rope_freqs.weight``, ...), which go with the output layer.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from llamacontroller.errors import UserError
from llamacontroller.gguf_header import GGUFHeader, Value

LAYER_TENSOR = re.compile(r"blk\.(\d+)\.")
INPUT_TENSOR = "token_embd.weight"
OUTPUT_TENSOR = "output.weight"
# Architectures whose graph is llama's: a dense decoder with grouped-query attention and a gated
# FFN. The compute buffer of others is estimated as if their graph were llama's too.
LLAMA_LIKE = frozenset({"llama", "mistral", "qwen2", "qwen3", "granite", "internlm2", "smollm3"})


class EstimateError(UserError):
    """The model file cannot be estimated: not a model header, or a key or tensor it lacks."""


class ModelFacts(BaseModel):
    """A decoder-only model as far as its memory goes (lists hold one value per layer). A node
    agent publishes them on its LlamaNode, in camelCase, for the operator's estimates."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="ignore")

    path: str
    architecture: str
    n_layer: int
    n_embd: int
    n_vocab: int
    n_ctx_train: int
    n_head: tuple[int, ...]
    n_head_kv: tuple[int, ...]
    head_k: int  # dimension of a key head
    head_v: int
    n_ff: tuple[int, ...]
    layer_bytes: tuple[int, ...]  # the weights of each layer (blk.N.*)
    input_bytes: int  # token_embd.weight
    output_bytes: int  # output.weight, or the token embeddings it reuses
    other_bytes: int  # every other tensor outside the layers: it goes with the output layer
    tied_output: bool  # no output.weight: the output layer reuses the token embeddings

    @property
    def llama_like(self) -> bool:
        return self.architecture in LLAMA_LIKE

    def n_embd_k_gqa(self, layer: int) -> int:
        """A layer's key width in the KV cache: key heads x their dimension."""
        return self.head_k * self.n_head_kv[layer]

    def n_embd_v_gqa(self, layer: int) -> int:
        return self.head_v * self.n_head_kv[layer]

    @property
    def file_bytes(self) -> int:
        """Every tensor's bytes, as the file holds them (the output head once)."""
        shared = 0 if self.tied_output else self.output_bytes
        return sum(self.layer_bytes) + self.input_bytes + shared + self.other_bytes


def model_facts(header: GGUFHeader) -> ModelFacts:
    """Raises EstimateError for a header that does not describe a model we can estimate."""
    kv = header.kv
    arch = kv.get("general.architecture")
    if not isinstance(arch, str):
        raise EstimateError(f"{header.path}: no general.architecture: not a model file")

    def number(key: str, default: int | None = None) -> int:
        value = kv.get(f"{arch}.{key}", default)
        if isinstance(value, list):
            value = max((v for v in value if isinstance(v, int)), default=None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise EstimateError(f"{header.path}: {arch}.{key} is missing or not a count ({value!r})")
        return value

    n_layer = number("block_count")
    n_embd = number("embedding_length")
    if n_layer == 0 or n_embd == 0:
        raise EstimateError(f"{header.path}: a model of {n_layer} layers of width {n_embd}")

    def per_layer(key: str, default: int | None = None) -> tuple[int, ...]:
        value: Value = kv.get(f"{arch}.{key}")
        if isinstance(value, list) and len(value) == n_layer and all(isinstance(v, int) for v in value):
            return tuple(int(v) for v in value if isinstance(v, int))
        return (number(key, default),) * n_layer

    n_head = per_layer("attention.head_count")
    n_head_kv = per_layer("attention.head_count_kv", max(n_head))
    head_k = number("attention.key_length", n_embd // max(max(n_head), 1))
    head_v = number("attention.value_length", head_k)
    n_ff = per_layer("feed_forward_length", 0)

    layer_bytes = [0] * n_layer
    input_bytes = output_bytes = other_bytes = 0
    for tensor in header.tensors:
        size = tensor.nbytes
        if size is None:
            raise EstimateError(f"{header.path}: tensor {tensor.name} has {tensor.type_name}, unknown here")
        layer = LAYER_TENSOR.match(tensor.name)
        if layer and int(layer.group(1)) < n_layer:
            layer_bytes[int(layer.group(1))] += size
        elif tensor.name == INPUT_TENSOR:
            input_bytes = size
        elif tensor.name == OUTPUT_TENSOR:
            output_bytes = size
        else:
            other_bytes += size
    tied = not any(t.name == OUTPUT_TENSOR for t in header.tensors)
    if input_bytes == 0:
        raise EstimateError(f"{header.path}: no {INPUT_TENSOR}: not a model we can estimate")
    n_vocab = header.vocab_size or number("vocab_size")
    return ModelFacts(
        path=header.path,
        architecture=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_vocab=n_vocab,
        n_ctx_train=number("context_length"),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_k=head_k,
        head_v=head_v,
        n_ff=n_ff,
        layer_bytes=tuple(layer_bytes),
        input_bytes=input_bytes,
        output_bytes=input_bytes if tied else output_bytes,
        other_bytes=other_bytes,
        tied_output=tied,
    )

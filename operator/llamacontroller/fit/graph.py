"""The tensors llama.cpp computes for one worst-case ubatch, on each device. Pure.

llama-server reserves its compute buffers once, for the largest batch it will run (llama-context.cpp,
``sched_reserve``: ``n_ubatch`` tokens of ``n_seq_max`` sequences, ``n_outputs_max`` outputs, a
KV cache read whole). This module writes that graph as llama's builder does (src/models/llama.cpp
with src/llama-graph.cpp's ``build_inp_embd``, ``build_attn`` and ``build_ffn``), in the pinned
release's order, with each tensor's size; ``allocator.py`` then lays them out as ggml would.

Per layer: RMS norm, Q/K/V projections, RoPE on Q and K (in place), K and V written into the
cache, attention (flash attention: one fused op; without it, the KQ matrix, its soft-max in place
and KQV), the output projection, the residual add, then RMS norm and the gated FFN (gate, up,
SwiGLU, down) and the residual add. The last layer keeps only the rows that are output. Activations
are f32; the KQ mask is f16 with flash attention, f32 without.

Each node runs on its layer's device; the token embeddings are looked up on the CPU; the output
norm and head run on the output layer's device. A node that reads a tensor made on another device
reads a copy made there, set before the graph runs like an input (ggml-backend.c's scheduler).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llamacontroller.fit.allocator import Tensor
from llamacontroller.fit.model import ModelFacts

HOST = -1  # the device of the CPU
F32, F16, I32, I64 = 4, 2, 4, 8


@dataclass(frozen=True)
class Ubatch:
    """The batch the compute buffers are reserved for."""

    n_tokens: int
    n_outputs: int
    n_kv: int  # cells one sequence's attention reads: the row length of the KQ mask
    flash_attn: bool


@dataclass
class _Node:
    tensor: Tensor
    device: int


class _Graph:
    def __init__(self) -> None:
        self.nodes: list[_Node] = []

    def add(self, device: int, name: str, size: int, *sources: Tensor, inplace: bool = False) -> Tensor:
        tensor = Tensor(name, size, sources, inplace=inplace)
        self.nodes.append(_Node(tensor, device))
        return tensor

    def view(self, device: int, name: str, of: Tensor) -> Tensor:
        root = of.view_of or of
        tensor = Tensor(name, of.size, (of,), view_of=root)
        self.nodes.append(_Node(tensor, device))
        return tensor


def external(name: str) -> Tensor:
    """Weights and KV cache cells: memory of their own, not the compute buffer's."""
    return Tensor(name, 0, external=True)


def ubatch_graph(
    facts: ModelFacts, ubatch: Ubatch, layer_devices: Sequence[int], output_device: int
) -> dict[int, list[Tensor]]:
    """The nodes each device computes, in order, their sources made local to it."""
    n, out = ubatch.n_tokens, ubatch.n_outputs
    width = facts.n_embd * n * F32
    graph = _Graph()

    def put(name: str, size: int) -> Tensor:
        return Tensor(name, size, input=True)

    tokens, mixed_tokens = put("inp_tokens", n * I32), put("inp_mixed_tokens", n * I32)
    mixed_embd, mixed_slots = put("inp_mixed_embd", width), put("inp_mixed_slots", n * I64)
    positions = put("inp_pos", n * I32)
    k_idxs = put("attn_inp_k_idxs", n * I64)
    v_width = max(facts.n_embd_v_gqa(layer) for layer in range(facts.n_layer))
    # without flash attention V is stored transposed: one index per value written
    v_idxs = put("attn_inp_v_idxs", n * I64 * (1 if ubatch.flash_attn else v_width))
    mask = put("attn_inp_kq_mask", ubatch.n_kv * n * (F16 if ubatch.flash_attn else F32))
    out_ids = put("inp_out_ids", out * I32)
    token_embd = external("token_embd.weight")

    x = graph.add(HOST, "embd", width, token_embd, tokens)
    # The pinned release also plans a mixed token/embedding input it does not compute here: the
    # rows looked up, written into a copy of the embeddings input, which that write keeps alive.
    looked_up = graph.add(HOST, "mixed_rows", width, token_embd, mixed_tokens)
    copied = graph.add(HOST, "mixed_copy", width, mixed_embd)
    mixed = Tensor("mixed_set", width, (looked_up, mixed_slots, copied), view_of=copied)
    graph.nodes.append(_Node(mixed, HOST))

    for layer in range(facts.n_layer):
        dev = layer_devices[layer]
        q_width = facts.n_head[layer] * facts.head_k * n * F32
        kv_width = facts.n_embd_k_gqa(layer) * n * F32
        v_out = facts.n_embd_v_gqa(layer) * n * F32
        attn_width = facts.n_head[layer] * facts.head_v * n * F32

        norm = graph.add(dev, f"norm-{layer}", width, x, inplace=True)
        attn_norm = graph.add(dev, f"attn_norm-{layer}", width, norm, inplace=True)
        q = graph.add(dev, f"Qcur-{layer}", q_width, attn_norm)
        q = graph.add(dev, f"Qrope-{layer}", q_width, graph.view(dev, "q3d", q), positions, inplace=True)
        v = graph.add(dev, f"Vcur-{layer}", v_out, attn_norm)
        v3 = graph.view(dev, "v3d", v)
        k = graph.add(dev, f"Kcur-{layer}", kv_width, attn_norm)
        k = graph.add(dev, f"Krope-{layer}", kv_width, graph.view(dev, "k3d", k), positions, inplace=True)
        cache_k, cache_v = external(f"cache_k_l{layer}"), external(f"cache_v_l{layer}")
        graph.add(dev, f"set_k-{layer}", 0, graph.view(dev, "kview", k), k_idxs, cache_k).external = True
        graph.add(dev, f"set_v-{layer}", 0, graph.view(dev, "vview", v3), v_idxs, cache_v).external = True
        q_heads = graph.view(dev, "q_permuted", q)
        if ubatch.flash_attn:
            attn = graph.add(dev, f"fattn-{layer}", attn_width, q_heads, cache_k, cache_v, mask)
        else:
            heads = facts.n_head[layer]
            kq = graph.add(dev, f"kq-{layer}", ubatch.n_kv * n * heads * F32, cache_k, q_heads)
            kq = graph.add(dev, f"kq_soft_max-{layer}", kq.size, kq, mask, inplace=True)
            kqv = graph.add(dev, f"kqv-{layer}", attn_width, cache_v, kq)
            attn = graph.add(dev, f"kqv_out-{layer}", attn_width, graph.view(dev, "kqv_permuted", kqv))
        attn_out = graph.add(dev, f"attn_out-{layer}", width, graph.view(dev, "kqv_2d", attn))
        residual = x
        if layer == facts.n_layer - 1:  # only the rows that are output go on
            n, width = out, facts.n_embd * out * F32
            attn_out = graph.add(dev, "attn_out_rows", width, attn_out, out_ids)
            residual = graph.add(dev, "residual_rows", width, x, out_ids)
        ffn_inp = graph.add(dev, f"ffn_inp-{layer}", width, attn_out, residual, inplace=True)
        norm = graph.add(dev, f"ffn_rms-{layer}", width, ffn_inp, inplace=True)
        ffn_norm = graph.add(dev, f"ffn_norm-{layer}", width, norm, inplace=True)
        ff = facts.n_ff[layer] * n * F32
        gate = graph.add(dev, f"ffn_gate-{layer}", ff, ffn_norm)
        up = graph.add(dev, f"ffn_up-{layer}", ff, ffn_norm)
        swiglu = graph.add(dev, f"ffn_swiglu-{layer}", ff, gate, up)
        down = graph.add(dev, f"ffn_out-{layer}", width, swiglu)
        x = graph.add(dev, f"l_out-{layer}", width, down, ffn_inp, inplace=True)

    norm = graph.add(output_device, "norm", width, x, inplace=True)
    result_norm = graph.add(output_device, "result_norm", width, norm, inplace=True)
    graph.add(output_device, "result_output", facts.n_vocab * out * F32, result_norm)
    return _per_device(graph.nodes)


def _per_device(nodes: list[_Node]) -> dict[int, list[Tensor]]:
    """Each device's nodes; a source made elsewhere (or an input) becomes this device's copy."""
    made_on = {id(node.tensor): node.device for node in nodes}
    local: dict[int, list[Tensor]] = {}
    copies: dict[tuple[int, int], Tensor] = {}

    def here(source: Tensor, device: int) -> Tensor:
        if source.external or (not source.input and made_on.get(id(source)) == device):
            return source
        if source.input and all(node.device == device for node in nodes):
            return source
        key = (id(source), device)
        if key not in copies:
            copies[key] = Tensor(f"{source.name}#copy", source.size, input=True)
        return copies[key]

    for node in nodes:
        tensor = node.tensor
        tensor.sources = tuple(here(source, node.device) for source in tensor.sources)
        local.setdefault(node.device, []).append(tensor)
    return local

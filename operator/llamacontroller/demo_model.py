"""A deterministic generator of a tiny but real GGUF model for tests and the demo.

No package ships a small GGUF model, so we write one: a 2-layer llama with random weights and a
SentencePiece-style vocabulary. llama-server loads it in a fraction of a second and serves
completions, chat, tokenization and embeddings with it. The text it writes is meaningless, but it
is always printable and runs to ``n_predict`` tokens (unless a grammar forces a stop), which keeps
tests predictable. ``write_demo_projector`` adds a vision projector (mmproj) for it, so that images
can be tested too.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import gguf
import numpy as np

MODEL_NAME = "llamacontroller-demo"
ARCHITECTURE = "llama"
CONTEXT_LENGTH = 2048
EMBEDDING_LENGTH = 64
BLOCK_COUNT = 2
HEAD_COUNT = 4
HEAD_COUNT_KV = 4
FEED_FORWARD_LENGTH = 128
RMS_NORM_EPS = 1e-5


@dataclass(frozen=True)
class DemoShape:
    """The dimensions of the demo model. The default is the tiny model of the fast tests; larger
    ones (wider, deeper, grouped-query attention) are real llama models of any size, for what
    depends on the shape: memory estimates checked against llama-server, quantization."""

    embedding_length: int = EMBEDDING_LENGTH
    block_count: int = BLOCK_COUNT
    head_count: int = HEAD_COUNT
    head_count_kv: int = HEAD_COUNT_KV
    feed_forward_length: int = FEED_FORWARD_LENGTH
    context_length: int = CONTEXT_LENGTH
    # ggml type of the matrices (the norms stay F32): F32, F16, Q8_0, Q4_0, ... (gguf's quantizers)
    weight_type: str = "F32"

    @property
    def quantization(self) -> gguf.GGMLQuantizationType:
        return gguf.GGMLQuantizationType[self.weight_type]

    @property
    def file_type(self) -> gguf.LlamaFileType:
        """What `general.file_type` says of such a file: the type of most of its weights."""
        return gguf.LlamaFileType[f"MOSTLY_{self.weight_type}" if self.weight_type != "F32" else "ALL_F32"]


UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPACE = "\u2581"  # SentencePiece's marker for a space ("▁")
WORDS = ("hello", "world", "llama", "model", "demo", "kubernetes", "pod", "the", "and", "is")

# The first embedding dimension is a constant that no layer writes to. After the final norm it is
# always positive, so its output-head weight lifts every readable token far above the control and
# byte tokens (whose rows are zero): no sampler setting makes the model emit EOS or raw bytes.
BIAS_FEATURE = 8.0
READABLE_LOGIT_WEIGHT = 5.0

# ChatML, like Qwen2.5: a system turn (which also lists the tools), tool calls as <tool_call> JSON
# in the assistant turn, tool results as a "tool" turn. Every tag trims whitespace around itself,
# so the indentation below never reaches the prompt.
CHAT_TEMPLATE = r"""
{%- set has_system = messages and messages[0]['role'] == 'system' -%}
{%- if has_system or tools -%}
    {{- '<|im_start|>system\n' -}}
    {%- if has_system -%}{{- messages[0]['content'] -}}{%- endif -%}
    {%- if tools -%}
        {%- if has_system -%}{{- '\n\n' -}}{%- endif -%}
        {{- 'You can call these tools:\n' -}}
        {%- for tool in tools -%}{{- tool | tojson + '\n' -}}{%- endfor -%}
        {{- 'To call one, reply with <tool_call>\n{"name": <name>, "arguments": <args>}\n</tool_call>' -}}
    {%- endif -%}
    {{- '<|im_end|>\n' -}}
{%- endif -%}
{%- for message in messages -%}
    {%- if not (loop.first and has_system) -%}
        {{- '<|im_start|>' + message['role'] + '\n' -}}
        {%- if message['content'] is string -%}{{- message['content'] -}}{%- endif -%}
        {%- for call in message['tool_calls'] or [] -%}
            {%- set function = call['function'] if call['function'] is defined else call -%}
            {{- '\n<tool_call>\n{"name": "' + function['name'] + '", "arguments": ' -}}
            {%- if function['arguments'] is string -%}{{- function['arguments'] -}}
            {%- else -%}{{- function['arguments'] | tojson -}}{%- endif -%}
            {{- '}\n</tool_call>' -}}
        {%- endfor -%}
        {{- '<|im_end|>\n' -}}
    {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}
""".strip()

Vocabulary = list[tuple[str, float, gguf.TokenType]]
Fill = Callable[[gguf.GGUFWriter], None]  # writes a file's metadata and tensors


def build_vocabulary() -> Vocabulary:
    """SentencePiece-style tokens as (text, score, type).

    Every prefix of a word piece is a token too, because SentencePiece only reaches a piece by
    merging pairs of existing tokens. Longer pieces score higher so whole words win those merges.
    """
    vocab: Vocabulary = [
        ("<unk>", 0.0, gguf.TokenType.UNKNOWN),
        ("<s>", 0.0, gguf.TokenType.CONTROL),
        ("</s>", 0.0, gguf.TokenType.CONTROL),
    ]
    vocab += [(f"<0x{byte:02X}>", 0.0, gguf.TokenType.BYTE) for byte in range(256)]
    pieces = [SPACE] + [chr(code) for code in range(0x21, 0x7F)]
    for word in WORDS:
        marked = SPACE + word
        pieces += [marked[:end] for end in range(2, len(marked) + 1) if marked[:end] not in pieces]
    vocab += [(piece, float(len(piece)), gguf.TokenType.NORMAL) for piece in pieces]
    vocab += [(IM_START, 0.0, gguf.TokenType.CONTROL), (IM_END, 0.0, gguf.TokenType.CONTROL)]
    return vocab


def build_tensors(vocab: Vocabulary, seed: int, shape: DemoShape = DemoShape()) -> dict[str, np.ndarray]:
    """Seeded random float32 weights, in llama's tensor names and numpy (rows, columns) layout.

    Only readable (normal) tokens get non-zero output-head rows, see ``BIAS_FEATURE``.
    """
    rng = np.random.default_rng(seed)
    n_embd, n_ff = shape.embedding_length, shape.feed_forward_length
    n_embd_kv = n_embd // shape.head_count * shape.head_count_kv

    def normal(rows: int, cols: int, std: float) -> np.ndarray:
        return (rng.standard_normal((rows, cols)) * std).astype(np.float32)

    def ones() -> np.ndarray:
        return np.ones(n_embd, dtype=np.float32)

    embd = normal(len(vocab), n_embd, 1.0)
    embd[:, 0] = BIAS_FEATURE
    tensors = {"token_embd.weight": embd}
    for block in range(shape.block_count):
        attn_out, ffn_down = normal(n_embd, n_embd, n_embd**-0.5), normal(n_embd, n_ff, n_ff**-0.5)
        attn_out[0] = ffn_down[0] = 0.0  # keep the bias feature constant through the residual stream
        tensors |= {
            f"blk.{block}.attn_norm.weight": ones(),
            f"blk.{block}.attn_q.weight": normal(n_embd, n_embd, n_embd**-0.5),
            f"blk.{block}.attn_k.weight": normal(n_embd_kv, n_embd, n_embd**-0.5),
            f"blk.{block}.attn_v.weight": normal(n_embd_kv, n_embd, n_embd**-0.5),
            f"blk.{block}.attn_output.weight": attn_out,
            f"blk.{block}.ffn_norm.weight": ones(),
            f"blk.{block}.ffn_gate.weight": normal(n_ff, n_embd, n_embd**-0.5),
            f"blk.{block}.ffn_up.weight": normal(n_ff, n_embd, n_embd**-0.5),
            f"blk.{block}.ffn_down.weight": ffn_down,
        }
    output = normal(len(vocab), n_embd, 0.5)
    output[:, 0] = READABLE_LOGIT_WEIGHT
    output[[kind != gguf.TokenType.NORMAL for _, _, kind in vocab]] = 0.0
    tensors |= {"output_norm.weight": ones(), "output.weight": output}
    return tensors


def add_metadata(
    writer: gguf.GGUFWriter, vocab: Vocabulary, chat_template: str, shape: DemoShape = DemoShape()
) -> None:
    """The keys llama.cpp reads from a converted llama model (the architecture key comes from the writer)."""
    writer.add_name(MODEL_NAME)
    writer.add_file_type(shape.file_type)
    writer.add_vocab_size(len(vocab))
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.embedding_length)
    writer.add_block_count(shape.block_count)
    writer.add_feed_forward_length(shape.feed_forward_length)
    writer.add_head_count(shape.head_count)
    writer.add_head_count_kv(shape.head_count_kv)
    writer.add_rope_dimension_count(shape.embedding_length // shape.head_count)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)
    writer.add_tokenizer_model("llama")
    writer.add_token_list([text for text, _, _ in vocab])
    writer.add_token_scores([score for _, score, _ in vocab])
    writer.add_token_types([kind for _, _, kind in vocab])
    writer.add_unk_token_id(UNK_ID)
    writer.add_bos_token_id(BOS_ID)
    writer.add_eos_token_id(EOS_ID)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    # llama.cpp would otherwise put a space after every control token ("<|im_start|> user"), which
    # breaks the grammar for tool_choice=required: it expects the prompt's "<|im_start|>assistant\n".
    writer.add_add_space_prefix(False)
    writer.add_chat_template(chat_template)


def write_demo_model(
    path: pathlib.Path,
    *,
    seed: int = 0,
    chat_template: str = CHAT_TEMPLATE,
    shape: DemoShape = DemoShape(),
) -> pathlib.Path:
    """Write the demo model to ``path`` and return it; the same seed always gives the same bytes.

    ``chat_template``: the Jinja template embedded in the file (tests try other families' ways);
    ``shape``: its dimensions (the tiny model's by default)."""
    vocab = build_vocabulary()

    def fill(writer: gguf.GGUFWriter) -> None:
        add_metadata(writer, vocab, chat_template, shape)
        for name, tensor in build_tensors(vocab, seed, shape).items():
            if tensor.ndim == 1 or shape.quantization is gguf.GGMLQuantizationType.F32:
                writer.add_tensor(name, tensor)
            else:
                quantized = gguf.quants.quantize(tensor, shape.quantization)
                writer.add_tensor(name, quantized, raw_dtype=shape.quantization)

    return _write_gguf(path, ARCHITECTURE, fill)


# The vision projector (mmproj) that makes the demo model multimodal: a one-block CLIP encoder of
# 32x32 images in 16x16 patches and LLaVA's two-layer MLP into the model's embeddings. llama-server
# then reports the vision modality, takes images and spends IMAGE_TOKENS prompt tokens on each.
PROJECTOR_NAME = "llamacontroller-demo-vision"
IMAGE_SIZE = 32
PATCH_SIZE = 16
VISION_EMBEDDING_LENGTH = 32
VISION_FEED_FORWARD_LENGTH = 64
VISION_HEAD_COUNT = 4
VISION_BLOCK_COUNT = 1
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2


def build_projector_tensors(seed: int) -> dict[str, np.ndarray]:
    """Seeded random float32 weights in llama.cpp's CLIP tensor names, numpy layout."""
    rng = np.random.default_rng(seed)
    n, ff = VISION_EMBEDDING_LENGTH, VISION_FEED_FORWARD_LENGTH

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    def norm(prefix: str, size: int = n) -> dict[str, np.ndarray]:
        return {f"{prefix}.weight": np.ones(size, np.float32), f"{prefix}.bias": np.zeros(size, np.float32)}

    def linear(prefix: str, rows: int, cols: int) -> dict[str, np.ndarray]:
        return {f"{prefix}.weight": normal(rows, cols), f"{prefix}.bias": np.zeros(rows, np.float32)}

    positions = IMAGE_TOKENS + 1  # the patches and the class embedding
    tensors = {
        "v.patch_embd.weight": normal(n, 3, PATCH_SIZE, PATCH_SIZE),
        "v.class_embd": normal(n),
        "v.position_embd.weight": normal(positions, n),
        **norm("v.pre_ln"),
    }
    for block in range(VISION_BLOCK_COUNT):
        prefix = f"v.blk.{block}"
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            tensors |= linear(f"{prefix}.{name}", n, n)
        tensors |= norm(f"{prefix}.ln1") | norm(f"{prefix}.ln2")
        tensors |= linear(f"{prefix}.ffn_up", ff, n) | linear(f"{prefix}.ffn_down", n, ff)
    return tensors | linear("mm.0", EMBEDDING_LENGTH, n) | linear("mm.2", EMBEDDING_LENGTH, EMBEDDING_LENGTH)


def add_projector_metadata(writer: gguf.GGUFWriter) -> None:
    """The keys llama.cpp's CLIP loader reads for a LLaVA-style ("mlp") projector."""
    writer.add_name(PROJECTOR_NAME)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type(gguf.VISION_PROJECTOR_TYPE_NAMES[gguf.VISION_PROJECTOR_TYPE.MLP])
    writer.add_vision_image_size(IMAGE_SIZE)
    writer.add_vision_patch_size(PATCH_SIZE)
    writer.add_vision_embedding_length(VISION_EMBEDDING_LENGTH)
    writer.add_vision_feed_forward_length(VISION_FEED_FORWARD_LENGTH)
    writer.add_vision_projection_dim(EMBEDDING_LENGTH)
    writer.add_vision_block_count(VISION_BLOCK_COUNT)
    writer.add_vision_head_count(VISION_HEAD_COUNT)
    writer.add_vision_attention_layernorm_eps(1e-5)
    writer.add_vision_image_mean([0.5, 0.5, 0.5])
    writer.add_vision_image_std([0.5, 0.5, 0.5])
    writer.add_vision_use_gelu(True)


def write_demo_projector(path: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Write the demo model's vision projector (``--mmproj``) to ``path`` and return it."""

    def fill(writer: gguf.GGUFWriter) -> None:
        add_projector_metadata(writer)
        for name, tensor in build_projector_tensors(seed).items():
            writer.add_tensor(name, tensor)

    return _write_gguf(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MMPROJ], fill)


def _write_gguf(path: pathlib.Path, architecture: str, fill: Fill) -> pathlib.Path:
    """The file appears atomically (temp file + rename), so a server never sees a half-written one."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = pathlib.Path(tmp_name)
    writer = gguf.GGUFWriter(tmp, architecture)
    try:
        fill(writer)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        tmp.chmod(0o644)  # mkstemp makes it private; llama-server may run as another user
        tmp.replace(path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return path

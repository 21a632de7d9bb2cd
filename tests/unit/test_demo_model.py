"""The demo model is a valid, deterministic llama GGUF whose output head only favours readable tokens."""

from __future__ import annotations

import pathlib
from typing import Any

import gguf
import numpy as np
import pytest

from llamacontroller import demo_model


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return demo_model.write_demo_model(tmp_path_factory.mktemp("model") / "demo.gguf")


@pytest.fixture(scope="module")
def reader(model_path: pathlib.Path) -> gguf.GGUFReader:
    return gguf.GGUFReader(model_path)


def field(reader: gguf.GGUFReader, key: str) -> Any:
    value = reader.get_field(key)
    assert value is not None, f"missing {key}"
    return value.contents()


def test_writes_into_new_directories_and_leaves_no_temp_files(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "a" / "b" / "demo.gguf"
    assert demo_model.write_demo_model(target) == target
    assert [p.name for p in target.parent.iterdir()] == ["demo.gguf"]
    assert 300_000 < target.stat().st_size < 1_000_000
    assert target.read_bytes()[:4] == b"GGUF"


def test_overwrites_an_existing_file(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "demo.gguf"
    target.write_bytes(b"stale")
    demo_model.write_demo_model(target)
    assert target.read_bytes()[:4] == b"GGUF"


def test_same_seed_gives_identical_bytes_and_another_seed_differs(
    tmp_path: pathlib.Path, model_path: pathlib.Path
) -> None:
    again = demo_model.write_demo_model(tmp_path / "again.gguf")
    other = demo_model.write_demo_model(tmp_path / "other.gguf", seed=1)
    assert again.read_bytes() == model_path.read_bytes()
    assert other.read_bytes() != model_path.read_bytes()
    assert other.stat().st_size == model_path.stat().st_size


def test_hyperparameters(reader: gguf.GGUFReader) -> None:
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "general.name") == demo_model.MODEL_NAME == "llamacontroller-demo"
    assert field(reader, "general.file_type") == 0
    assert field(reader, "llama.context_length") == demo_model.CONTEXT_LENGTH == 2048
    assert field(reader, "llama.embedding_length") == 64
    assert field(reader, "llama.block_count") == 2
    assert field(reader, "llama.feed_forward_length") == demo_model.FEED_FORWARD_LENGTH
    assert field(reader, "llama.attention.head_count") == 4
    assert field(reader, "llama.attention.head_count_kv") == 4
    assert field(reader, "llama.rope.dimension_count") == 16
    assert field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)


def test_tensors_are_float32_llama_weights(reader: gguf.GGUFReader) -> None:
    tensors = {t.name: t for t in reader.tensors}
    n_vocab = len(field(reader, "tokenizer.ggml.tokens"))
    assert len(tensors) == 3 + 9 * demo_model.BLOCK_COUNT
    assert {t.tensor_type for t in tensors.values()} == {gguf.GGMLQuantizationType.F32}
    # GGUF lists dimensions innermost first: (columns, rows).
    assert list(tensors["token_embd.weight"].shape) == [64, n_vocab]
    assert list(tensors["output.weight"].shape) == [64, n_vocab]
    assert list(tensors["blk.1.ffn_down.weight"].shape) == [demo_model.FEED_FORWARD_LENGTH, 64]
    assert list(tensors["blk.1.attn_q.weight"].shape) == [64, 64]


def test_vocabulary(reader: gguf.GGUFReader) -> None:
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    assert field(reader, "tokenizer.ggml.model") == "llama"
    assert len(field(reader, "tokenizer.ggml.scores")) == len(types) == len(tokens) == len(set(tokens))
    assert tokens[:3] == ["<unk>", "<s>", "</s>"]
    assert field(reader, "tokenizer.ggml.unknown_token_id") == tokens.index("<unk>")
    assert field(reader, "tokenizer.ggml.bos_token_id") == tokens.index("<s>")
    assert field(reader, "tokenizer.ggml.eos_token_id") == tokens.index("</s>")
    assert field(reader, "tokenizer.ggml.add_bos_token") is True
    assert field(reader, "tokenizer.ggml.add_space_prefix") is False  # keeps "<|im_start|>assistant" exact
    assert [tokens[i] for i, kind in enumerate(types) if kind == gguf.TokenType.BYTE] == [
        f"<0x{b:02X}>" for b in range(256)
    ]
    controls = {tokens[i] for i, kind in enumerate(types) if kind == gguf.TokenType.CONTROL}
    assert controls == {"<s>", "</s>", "<|im_start|>", "<|im_end|>"}
    normal = {tokens[i] for i, kind in enumerate(types) if kind == gguf.TokenType.NORMAL}
    assert {chr(c) for c in range(0x21, 0x7F)} | {"\u2581"} <= normal
    for word in demo_model.WORDS:  # SentencePiece needs every prefix to merge up to the word
        piece = "\u2581" + word
        assert {piece[:end] for end in range(1, len(piece) + 1)} <= normal


def test_chat_template_is_chatml(reader: gguf.GGUFReader) -> None:
    template = field(reader, "tokenizer.chat_template")
    assert template == demo_model.CHAT_TEMPLATE
    for needle in ("<|im_start|>", "<|im_end|>", "add_generation_prompt", "'system'", "tools", "<tool_call>"):
        assert needle in template


def test_only_readable_tokens_have_output_head_rows(reader: gguf.GGUFReader) -> None:
    types = np.array(field(reader, "tokenizer.ggml.token_type"))
    output = next(t for t in reader.tensors if t.name == "output.weight").data
    readable = types == gguf.TokenType.NORMAL
    assert output.shape == (len(types), 64)
    assert not output[~readable].any()
    assert np.abs(output[readable]).sum(axis=1).min() > 0


def test_other_shapes_and_weight_types(tmp_path: pathlib.Path) -> None:
    shape = demo_model.DemoShape(
        embedding_length=128, block_count=3, head_count=4, head_count_kv=2, feed_forward_length=256,
        weight_type="Q8_0",
    )  # fmt: skip
    reader = gguf.GGUFReader(demo_model.write_demo_model(tmp_path / "q.gguf", shape=shape))
    assert field(reader, "llama.block_count") == 3
    assert field(reader, "llama.attention.head_count_kv") == 2
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 3 + 9 * 3
    assert list(tensors["blk.2.attn_k.weight"].shape) == [128, 64]  # 2 KV heads of 32
    assert tensors["blk.0.ffn_up.weight"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32

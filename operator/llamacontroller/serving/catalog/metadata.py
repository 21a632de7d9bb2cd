"""What clients learn about a model (/api/tags, /api/show, /api/ps, /v1/models), composed from the
GGUF file's facts and llama-server's: pure functions.

The GGUF file comes first (header and key-values; its sha256 and mtime), then llama-server's
``/props`` (model path, context, chat template, modalities) and ``/v1/models`` (parameter count,
size): without the file, the answers come from what llama-server says.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llamacontroller.serving.catalog.gguf_facts import FileFacts
from llamacontroller.serving.catalog.server_facts import ServerFacts
from llamacontroller.status import rfc3339_micro


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    digest: str
    size: int
    modified_at: str
    created: int
    details: dict[str, Any]
    model_info: dict[str, Any]
    capabilities: list[str]
    context_length: int
    template: str
    parameters: str
    modelfile: str
    license: str


SIZE_WORDS = {"small": "S", "medium": "M", "large": "L", "extra small": "XS", "extra extra small": "XXS"}


# GGUF's general.file_type: llama.cpp's `enum llama_ftype` (include/llama.h), LLAMA_FTYPE_ALL_ and
# LLAMA_FTYPE_MOSTLY_ left out, as Ollama names them; the values llama.h comments out (removed
# types) are absent, and so is LLAMA_FTYPE_GUESSED (1024): llama-server's /props says more then.
LLAMA_FTYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
    41: "Q2_0",
}


def quantization_level(file_type: Any, ftype: str) -> str:
    """GGUF ``general.file_type`` (e.g. 15) as Ollama spells it ("Q4_K_M"), else /props' ftype."""
    try:
        name = LLAMA_FTYPES.get(int(file_type))
    except (TypeError, ValueError):
        name = None
    if name is not None:
        return name
    text = ftype.strip()
    for prefix in ("all ", "mostly "):
        text = text.removeprefix(prefix)
    base, _, size = text.partition(" - ")  # llama.cpp's "Q4_K - Medium"
    suffix = SIZE_WORDS.get(size.strip().lower())
    return f"{base}_{suffix}" if suffix else base


def parameter_size(count: int | None) -> str:
    """A parameter count as Ollama shows it: "7.6B", "1.2M"."""
    if not count:
        return ""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}".removesuffix(".0") + unit
    return str(count)


THINKING_MARKERS = ("enable_thinking", "<think>", "reasoning_content", "<|channel|>")
FIM_KEYS = (
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
)


# llama-server's chat endpoint parses some models' answers even without tools: reasoning, answer
# channels and tags, prefixes (it picks a parser from the template). Broad on purpose: a template
# with any of these keeps that endpoint for every chat (see ``ollama.generate.plain_chat_plan``).
ANSWER_PARSING_MARKERS = ("think", "reason", "channel", "start_response", ">>>all", "functools")


def parses_answers(server: ServerFacts) -> bool:
    """The chat endpoint may change this model's answers (case-insensitive markers): a plain chat
    through ``/completion`` would not answer the same."""
    template = server.chat_template.lower()
    return any(marker in template for marker in ANSWER_PARSING_MARKERS)


Predicate = Callable[[ServerFacts, dict[str, Any]], bool]
CAPABILITIES: tuple[tuple[str, Predicate], ...] = (
    # llama-server completes even with --embeddings; a pure embedding model has no chat template.
    ("completion", lambda s, kv: bool(s.chat_template) or not s.embeddings),
    (
        "tools",
        lambda s, kv: bool(
            s.template_caps.get("supports_tools") or s.template_caps.get("supports_tool_calls")
        ),
    ),
    ("insert", lambda s, kv: all(kv.get(key) is not None for key in FIM_KEYS)),
    ("embedding", lambda s, kv: s.embeddings),
    ("vision", lambda s, kv: bool(s.modalities.get("vision"))),
    ("thinking", lambda s, kv: any(marker in s.chat_template for marker in THINKING_MARKERS)),
)


def capabilities(server: ServerFacts, kv: dict[str, Any]) -> list[str]:
    return [name for name, applies in CAPABILITIES if applies(server, kv)]


def model_info(server: ServerFacts, kv: dict[str, Any]) -> dict[str, Any]:
    """The GGUF key-values (without the chat template, which is ``template``), completed by the server."""
    info = {key: value for key, value in kv.items() if not key.startswith("tokenizer.chat_template")}
    if server.n_params:
        info.setdefault("general.parameter_count", server.n_params)
    arch = info.get("general.architecture")
    if arch and server.n_ctx_train:
        info.setdefault(f"{arch}.context_length", server.n_ctx_train)
    return info


def compose(server: ServerFacts, file: FileFacts | None, digest: str) -> ModelMetadata:
    kv = file.kv if file else {}
    arch = kv.get("general.architecture") or ""
    mtime = file.mtime_ns / 1e9 if file else float(server.created or time.time())
    modelfile_lines = [
        "# Modelfile of a model served by LlamaController (llama-server)",
        f"FROM {server.model_path}",
        f"PARAMETER num_ctx {server.n_ctx}",
    ]
    return ModelMetadata(
        name=server.alias,
        digest=digest,
        size=file.size if file else int(server.size or 0),
        modified_at=rfc3339_micro(datetime.fromtimestamp(mtime, UTC)),
        created=int(mtime),
        details={
            "parent_model": "",
            "format": "gguf",
            "family": arch,
            "families": [arch] if arch else [],
            "parameter_size": parameter_size(server.n_params or kv.get("general.parameter_count")),
            "quantization_level": quantization_level(kv.get("general.file_type"), server.ftype),
        },
        model_info=model_info(server, kv),
        capabilities=capabilities(server, kv),
        context_length=server.n_ctx,
        template=server.chat_template,
        parameters=f"num_ctx {server.n_ctx}",
        modelfile="\n".join(modelfile_lines) + "\n",
        license=license_ if isinstance(license_ := kv.get("general.license"), str) else "",
    )

"""Typed Ollama requests as llama-server requests: pure functions, no I/O.

``/api/generate`` goes to ``/completion`` (``/infill`` with a suffix; the chat endpoint when the
answer needs the server's chat parsing: images or thinking). ``/api/chat`` goes there too when it
is plain text and its prompt renders from a skeleton (see ``catalog.prompts``), else to
``/v1/chat/completions``. Upstream requests always stream, also for a client that asked for one
answer: llama-server stops a streamed generation as soon as the adapter closes the connection (it
does not always notice that for a non-streamed one), so a client that goes away stops it too.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from llamacontroller.serving.catalog.prompts import Text
from llamacontroller.serving.errors import HttpError
from llamacontroller.serving.ollama.requests import (
    ChatRequest,
    Format,
    GenerateRequest,
    Generation,
    Message,
    Think,
)
from llamacontroller.serving.ollama.tool_calls import openai_tool_calls

# Ollama option -> llama-server request field. Both llama-server endpoints read these fields.
OPTION_FIELDS = {
    "num_predict": "n_predict",
    "num_keep": "n_keep",
    **{
        name: name
        for name in (
            "temperature",
            "top_k",
            "top_p",
            "min_p",
            "typical_p",
            "repeat_penalty",
            "repeat_last_n",
            "presence_penalty",
            "frequency_penalty",
            "seed",
            "stop",
            "mirostat",
            "mirostat_tau",
            "mirostat_eta",
        )
    },
}
# Fixed by the server's command line (the LlamaModel's parameters), not by a request; ignored.
LOAD_TIME_OPTIONS = frozenset(
    {"num_ctx", "num_gpu", "num_thread", "num_batch", "main_gpu", "numa", "low_vram", "f16_kv"}
    | {"logits_all", "vocab_only", "use_mmap", "use_mlock", "embedding_only"}
)

GenerateRoute = Literal["infill", "chat", "completion"]


def sampling_fields(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` through the OPTION_FIELDS table; load-time and unknown options are dropped."""
    return {OPTION_FIELDS[name]: value for name, value in options.items() if name in OPTION_FIELDS}


def load_reason(keep_alive: float | None) -> str:
    """An empty prompt loads the model; with ``keep_alive: 0`` it unloads it (done_reason)."""
    return "unload" if keep_alive == 0 else "load"


# ---------------------------------------------------------------------------------------------
# format and think


def completion_format(fmt: Format) -> dict[str, Any]:
    """``format`` for ``/completion``: a JSON schema for the grammar."""
    if fmt is None:
        return {}
    return {"json_schema": {"type": "object"} if fmt == "json" else fmt}


def chat_format(fmt: Format) -> dict[str, Any]:
    """``format`` for the chat endpoint: OpenAI's ``response_format``."""
    if fmt is None:
        return {}
    if fmt == "json":
        return {"response_format": {"type": "json_object"}}
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}}


def think_fields(think: Think) -> dict[str, Any]:
    """``think`` as the chat template's kwargs."""
    if think is None:
        return {}
    if isinstance(think, bool):
        return {"chat_template_kwargs": {"enable_thinking": think}}
    return {"chat_template_kwargs": {"enable_thinking": True, "reasoning_effort": think}}


def wants_thinking(think: Think) -> bool:
    return think is True or (isinstance(think, str) and think != "")


# ---------------------------------------------------------------------------------------------
# log probabilities


def completion_logprobs(top: int | None) -> dict[str, Any]:
    """``/completion`` lists the chosen token among ``n_probs`` alternatives: ask for at least one."""
    return {} if top is None else {"n_probs": max(top, 1)}


def chat_logprobs(top: int | None) -> dict[str, Any]:
    return {} if top is None else {"logprobs": True, "top_logprobs": max(top, 1)}


# ---------------------------------------------------------------------------------------------
# messages


def image_part(image: str) -> dict[str, Any]:
    """An Ollama image (base64, no header) as an OpenAI content part with a data URL."""
    url = image if image.startswith("data:") else f"data:image/jpeg;base64,{image}"
    return {"type": "image_url", "image_url": {"url": url}}


def with_images(content: Any, images: list[str]) -> Any:
    return [{"type": "text", "text": content}, *map(image_part, images)] if images else content


def openai_message(message: Message) -> dict[str, Any]:
    """One Ollama message in OpenAI's shape (images as parts, tool calls with JSON-text arguments)."""
    out: dict[str, Any] = {"role": message.role, "content": with_images(message.content, message.images)}
    if message.tool_calls:
        out["tool_calls"] = openai_tool_calls(message.tool_calls)
    if message.thinking:
        out["reasoning_content"] = message.thinking
    if message.tool_name:
        out["name"] = message.tool_name
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def generate_texts(ask: GenerateRequest) -> list[Text]:
    """A non-raw generate's ``system`` and ``prompt`` as the (role, text) pairs its prompt renders."""
    return ([("system", ask.system)] if ask.system else []) + [("user", ask.prompt)]


def generate_messages(ask: GenerateRequest) -> list[dict[str, Any]]:
    """``/api/generate``'s ``system`` and ``prompt`` (and ``images``) as the chat it stands for."""
    messages: list[dict[str, Any]] = [{"role": role, "content": text} for role, text in generate_texts(ask)]
    messages[-1]["content"] = with_images(messages[-1]["content"], ask.images)
    return messages


PLAIN_ROLES = frozenset({"system", "user", "assistant"})


def plain_chat_texts(ask: ChatRequest) -> list[Text] | None:
    """A chat whose answer needs no parsing by llama-server's chat endpoint, as (role, text) pairs:
    text messages that end with the user's, no tools, images or thinking. Else None."""
    if ask.tools or wants_thinking(ask.think):
        return None
    texts = []
    for message in ask.messages:
        parsed = message.images or message.tool_calls or message.thinking
        if parsed or message.tool_name or message.tool_call_id:
            return None
        if message.role not in PLAIN_ROLES or not isinstance(message.content, str):
            return None
        texts.append((message.role, message.content))
    return texts if texts and texts[-1][0] == "user" else None


# ---------------------------------------------------------------------------------------------
# upstream bodies


def generate_route(ask: GenerateRequest) -> GenerateRoute:
    """How this generate is served: "infill" (a suffix), "chat" (images, thinking) or "completion"."""
    if ask.template:
        raise HttpError(
            400,
            "a per-request 'template' is not supported: llama-server applies the model's own chat "
            'template; format the prompt yourself and send it with "raw": true',
        )
    if ask.suffix:
        return "infill"
    if not ask.raw and (ask.images or wants_thinking(ask.think)):
        return "chat"
    if ask.raw and ask.images:
        raise HttpError(400, "images need the model's template: send them without 'raw'")
    return "completion"


def chat_body(ask: Generation, messages: list[dict[str, Any]], tools: list[Any]) -> dict[str, Any]:
    """The ``/v1/chat/completions`` request for an Ollama chat (or a generate that needs the chat path)."""
    out: dict[str, Any] = {
        "messages": messages,
        "stream": True,
        **sampling_fields(ask.options),
        **chat_format(ask.format),
        **think_fields(ask.think),
        **chat_logprobs(ask.top_logprobs),
    }
    if tools:
        out["tools"] = tools
    return out


def chat_request_body(ask: ChatRequest) -> dict[str, Any]:
    return chat_body(ask, [openai_message(message) for message in ask.messages], ask.tools)


def completion_prompt(prompt: str, context: list[int]) -> str | list[int | str]:
    """The prompt after ``context`` (the tokens of the conversation so far), as llama-server mixes them."""
    return [*context, prompt] if context else prompt


def completion_body(ask: Generation, prompt: str | list[int | str]) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "stream": True,
        "cache_prompt": True,
        **sampling_fields(ask.options),
        **completion_format(ask.format),
        **completion_logprobs(ask.top_logprobs),
    }


def infill_body(ask: GenerateRequest) -> dict[str, Any]:
    return {
        "input_prefix": ask.prompt,
        "input_suffix": ask.suffix,
        "stream": True,
        "cache_prompt": True,
        **sampling_fields(ask.options),
        **completion_logprobs(ask.top_logprobs),
    }


def tokenize_body(prompt: str, context: list[int]) -> dict[str, Any]:
    """``/tokenize`` as ``/completion`` tokenizes: BOS only at the very start, special tokens parsed."""
    return {"content": prompt, "add_special": not context, "parse_special": True}


# ---------------------------------------------------------------------------------------------
# embeddings


def fit_dimensions(vector: list[float], dimensions: int | None) -> list[float]:
    """Ollama's ``dimensions``: keep the first n values, scaled back to unit length."""
    if not dimensions or dimensions >= len(vector):
        return vector
    head = vector[:dimensions]
    norm = math.sqrt(sum(x * x for x in head))
    return [x / norm for x in head] if norm else head


def embeddings_of(answer: dict[str, Any]) -> list[list[float]]:
    """The vectors of an OpenAI embeddings answer, in input order."""
    data = sorted(answer.get("data") or [], key=lambda item: item.get("index", 0))
    return [item["embedding"] for item in data]

"""Ollama requests as llama-server requests: pure functions, no I/O.

``/api/generate`` goes to ``/completion`` (``/infill`` with a suffix; the chat endpoint when the
answer needs the server's chat parsing: images or thinking). ``/api/chat`` goes there too when it
is plain text and its prompt renders from a skeleton (see ``prompts``), else to
``/v1/chat/completions``. Upstream requests always stream, also for a client that asked for one
answer: llama-server stops a streamed generation as soon as the adapter closes the connection (it
does not always notice that for a non-streamed one), so a client that goes away stops it too.
"""

from __future__ import annotations

import math
import re
from typing import Any

from llamacontroller.serving.errors import ApiError
from llamacontroller.serving.toolcalls import openai_tool_calls

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


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """A request field, checked: clients send ``""``/``[]``/``null`` for unset, so falsy is unset."""
    value = body.get(name)
    if value is None or value == "" or value == []:
        return default
    if not isinstance(value, kind):
        raise ApiError(400, f"invalid value for '{name}': {value!r}")
    return value


def sampling_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``options`` through the OPTION_FIELDS table; load-time and unknown options are dropped."""
    options = field(body, "options", dict, {})
    return {OPTION_FIELDS[name]: value for name, value in options.items() if name in OPTION_FIELDS}


def is_streaming(body: dict[str, Any]) -> bool:
    """A missing ``stream`` means streaming."""
    return body.get("stream") is not False


DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_PART = re.compile(r"(-?[0-9.]+)(ns|us|µs|ms|s|m|h)")


def keep_alive_seconds(value: Any) -> float | None:
    """``keep_alive`` as seconds: a number is seconds, a string a Go duration ("5m", "1h30m", "0")."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ApiError(400, f"invalid keep_alive: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"-?[0-9.]+", text):
        return float(text)
    parts = DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ApiError(400, f"invalid keep_alive duration: {value!r}")
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def load_reason(body: dict[str, Any]) -> str:
    """An empty prompt loads the model; with ``keep_alive: 0`` it unloads it (done_reason)."""
    return "unload" if keep_alive_seconds(body.get("keep_alive")) == 0 else "load"


# ---------------------------------------------------------------------------------------------
# format and think


def requested_format(body: dict[str, Any]) -> str | dict[str, Any] | None:
    """``format``: None, "json" (any JSON object) or a JSON schema."""
    fmt = field(body, "format", (str, dict))
    if fmt is None or fmt == "json" or isinstance(fmt, dict):
        return fmt
    raise ApiError(400, f'invalid format: {fmt!r} (use "json" or a JSON schema)')


def completion_format(body: dict[str, Any]) -> dict[str, Any]:
    """``format`` for ``/completion``: a JSON schema for the grammar."""
    fmt = requested_format(body)
    if fmt is None:
        return {}
    return {"json_schema": {"type": "object"} if fmt == "json" else fmt}


def chat_format(body: dict[str, Any]) -> dict[str, Any]:
    """``format`` for the chat endpoint: OpenAI's ``response_format``."""
    fmt = requested_format(body)
    if fmt is None:
        return {}
    if fmt == "json":
        return {"response_format": {"type": "json_object"}}
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}}


def think_fields(body: dict[str, Any]) -> dict[str, Any]:
    """``think`` (a bool, or a level such as "high") as the chat template's kwargs."""
    think = body.get("think")
    if think is None or think == "":
        return {}
    if isinstance(think, bool):
        return {"chat_template_kwargs": {"enable_thinking": think}}
    if isinstance(think, str):
        return {"chat_template_kwargs": {"enable_thinking": True, "reasoning_effort": think}}
    raise ApiError(400, f"invalid value for 'think': {think!r}")


def wants_thinking(body: dict[str, Any]) -> bool:
    think = body.get("think")
    return think is True or (isinstance(think, str) and think != "")


# ---------------------------------------------------------------------------------------------
# log probabilities

MAX_TOP_LOGPROBS = 20  # Ollama's limit


def top_logprobs(body: dict[str, Any]) -> int | None:
    """``logprobs``/``top_logprobs``: None when no log probabilities are wanted, else how many
    alternatives each token lists (0 to 20)."""
    if field(body, "logprobs", bool) is not True:
        return None
    top = body.get("top_logprobs") or 0
    if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP_LOGPROBS:
        raise ApiError(400, f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    return top


def completion_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    """``/completion`` lists the chosen token among ``n_probs`` alternatives: ask for at least one."""
    top = top_logprobs(body)
    return {} if top is None else {"n_probs": max(top, 1)}


def chat_logprobs(body: dict[str, Any]) -> dict[str, Any]:
    top = top_logprobs(body)
    return {} if top is None else {"logprobs": True, "top_logprobs": max(top, 1)}


# ---------------------------------------------------------------------------------------------
# messages


def image_part(image: str) -> dict[str, Any]:
    """An Ollama image (base64, no header) as an OpenAI content part with a data URL."""
    url = image if image.startswith("data:") else f"data:image/jpeg;base64,{image}"
    return {"type": "image_url", "image_url": {"url": url}}


def openai_message(message: dict[str, Any]) -> dict[str, Any]:
    """One Ollama message in OpenAI's shape (images as parts, tool calls with JSON-text arguments)."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise ApiError(400, "each message needs a 'role'")
    out: dict[str, Any] = {"role": message["role"]}
    content = message.get("content") or ""
    images = message.get("images") or []
    out["content"] = [{"type": "text", "text": content}, *map(image_part, images)] if images else content
    if message.get("tool_calls"):
        out["tool_calls"] = openai_tool_calls(message["tool_calls"])
    if message.get("thinking"):
        out["reasoning_content"] = message["thinking"]
    if message.get("tool_name"):
        out["name"] = message["tool_name"]
    if message.get("tool_call_id"):
        out["tool_call_id"] = message["tool_call_id"]
    return out


def openai_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = field(body, "messages", list, [])
    return [openai_message(message) for message in messages]


def has_images(body: dict[str, Any]) -> bool:
    return any(isinstance(m, dict) and m.get("images") for m in field(body, "messages", list, []))


def generate_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """``/api/generate``'s ``system`` and ``prompt`` (and ``images``) as the chat it stands for."""
    messages: list[dict[str, Any]] = [{"role": role, "content": text} for role, text in generate_texts(body)]
    if field(body, "images", list):
        messages[-1]["images"] = body["images"]
    return [openai_message(message) for message in messages]


# ---------------------------------------------------------------------------------------------
# upstream bodies


def chat_body(body: dict[str, Any], messages: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The ``/v1/chat/completions`` request for an Ollama chat (or a generate that needs the chat path)."""
    out: dict[str, Any] = {
        "messages": openai_messages(body) if messages is None else messages,
        "stream": True,
        **sampling_fields(body),
        **chat_format(body),
        **think_fields(body),
        **chat_logprobs(body),
    }
    tools = field(body, "tools", list)
    if tools:
        out["tools"] = tools
    return out


def generate_route(body: dict[str, Any]) -> str:
    """How this generate is served: "infill" (a suffix), "chat" (images, thinking) or "completion"."""
    if field(body, "template", str):
        raise ApiError(
            400,
            "a per-request 'template' is not supported: llama-server applies the model's own chat "
            'template; format the prompt yourself and send it with "raw": true',
        )
    raw = body.get("raw") is True
    if field(body, "suffix", str):
        return "infill"
    if not raw and (field(body, "images", list) or wants_thinking(body)):
        return "chat"
    if raw and field(body, "images", list):
        raise ApiError(400, "images need the model's template: send them without 'raw'")
    return "completion"


def generate_texts(body: dict[str, Any]) -> list[tuple[str, str]]:
    """A non-raw generate's ``system`` and ``prompt`` as the (role, text) pair its prompt renders."""
    system = field(body, "system", str)
    return ([("system", system)] if system else []) + [("user", field(body, "prompt", str, ""))]


PLAIN_ROLES = frozenset({"system", "user", "assistant"})
CHAT_PARSED = ("images", "tool_calls", "thinking", "tool_name", "tool_call_id")


def plain_chat_texts(body: dict[str, Any]) -> list[tuple[str, str]] | None:
    """A chat whose answer needs no parsing by llama-server's chat endpoint, as (role, text) pairs:
    text messages that end with the user's, no tools, images or thinking. Else None."""
    if field(body, "tools", list) or wants_thinking(body):
        return None
    texts = []
    for message in field(body, "messages", list, []):
        if not isinstance(message, dict) or any(message.get(key) for key in CHAT_PARSED):
            return None
        role, content = message.get("role"), message.get("content") or ""
        if role not in PLAIN_ROLES or not isinstance(content, str):
            return None
        texts.append((role, content))
    return texts if texts and texts[-1][0] == "user" else None


def completion_prompt(prompt: str, context: list[int]) -> str | list[int | str]:
    """The prompt after ``context`` (the tokens of the conversation so far), as llama-server mixes them."""
    return [*context, prompt] if context else prompt


def generate_context(body: dict[str, Any]) -> list[int]:
    context = field(body, "context", list, [])
    if not all(isinstance(token, int) and not isinstance(token, bool) for token in context):
        raise ApiError(400, "'context' must be a list of token ids")
    return context


def completion_body(body: dict[str, Any], prompt: str | list[int | str]) -> dict[str, Any]:
    return {
        "prompt": prompt,
        "stream": True,
        "cache_prompt": True,
        **sampling_fields(body),
        **completion_format(body),
        **completion_logprobs(body),
    }


def infill_body(body: dict[str, Any]) -> dict[str, Any]:
    return {
        "input_prefix": field(body, "prompt", str, ""),
        "input_suffix": body["suffix"],
        "stream": True,
        "cache_prompt": True,
        **sampling_fields(body),
        **completion_logprobs(body),
    }


def tokenize_body(prompt: str, context: list[int]) -> dict[str, Any]:
    """``/tokenize`` as ``/completion`` tokenizes: BOS only at the very start, special tokens parsed."""
    return {"content": prompt, "add_special": not context, "parse_special": True}


# ---------------------------------------------------------------------------------------------
# embeddings


def embed_inputs(body: dict[str, Any]) -> list[str]:
    value = body.get("input")
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise ApiError(400, "'input' must be a string or a list of strings")


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

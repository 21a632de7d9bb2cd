"""Ollama requests, parsed once from the decoded JSON body into typed requests.

Every field is checked here, before anything is planned: a wrong type is a 400 in Ollama's words.
Clients send ``""``, ``[]`` or ``null`` for a field they leave unset, so those mean unset. Plain
``__slots__`` dataclasses: this runs for every request, on the path whose added latency the adapter
keeps under a millisecond.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llamacontroller.serving.errors import HttpError

MAX_TOP_LOGPROBS = 20  # Ollama's limit

Format = str | dict[str, Any] | None  # None, "json" (any JSON object) or a JSON schema
Think = bool | str | None  # a bool, or a level such as "high"


@dataclass(slots=True)
class Message:
    """A chat message. ``content`` is Ollama's text; OpenAI's content parts pass through as sent."""

    role: str
    content: Any
    images: list[str]  # base64, no header
    tool_calls: list[Any]
    thinking: str
    tool_name: str
    tool_call_id: str


@dataclass(slots=True)
class Generation:
    """What ``/api/generate`` and ``/api/chat`` share."""

    model: str
    stream: bool
    keep_alive: float | None  # seconds
    options: dict[str, Any]
    format: Format
    think: Think
    top_logprobs: int | None  # None: no log probabilities; else the alternatives per token (0 to 20)


@dataclass(slots=True)
class GenerateRequest(Generation):
    prompt: str
    suffix: str
    system: str
    template: str
    images: list[str]
    context: list[int]  # the tokens of the conversation so far
    raw: bool

    @classmethod
    def parse(cls, body: dict[str, Any]) -> GenerateRequest:
        context = field(body, "context", list, [])
        if not all(isinstance(token, int) and not isinstance(token, bool) for token in context):
            raise HttpError(400, "'context' must be a list of token ids")
        return cls(
            *generation(body),
            prompt=field(body, "prompt", str, ""),
            suffix=field(body, "suffix", str, ""),
            system=field(body, "system", str, ""),
            template=field(body, "template", str, ""),
            images=images(body),
            context=context,
            raw=body.get("raw") is True,
        )

    @property
    def loads_only(self) -> bool:
        """No prompt, suffix or images: the request loads (or unloads) the model."""
        return not (self.prompt or self.suffix or self.images)

    @property
    def has_images(self) -> bool:
        return bool(self.images)


@dataclass(slots=True)
class ChatRequest(Generation):
    messages: list[Message]
    tools: list[Any]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ChatRequest:
        return cls(
            *generation(body),
            messages=[message(item) for item in field(body, "messages", list, [])],
            tools=field(body, "tools", list, []),
        )

    @property
    def loads_only(self) -> bool:
        """No messages: the request loads (or unloads) the model."""
        return not self.messages

    @property
    def has_images(self) -> bool:
        return any(message.images for message in self.messages)


@dataclass(slots=True)
class EmbedRequest:
    model: str
    inputs: list[str]
    truncate: bool  # cut inputs that are too long (Ollama's default), else refuse them
    dimensions: int | None

    @classmethod
    def parse(cls, body: dict[str, Any]) -> EmbedRequest:
        return cls(
            model=model_of(body),
            inputs=embed_inputs(body.get("input")),
            truncate=body.get("truncate") is not False,
            dimensions=field(body, "dimensions", int),
        )


@dataclass(slots=True)
class EmbeddingsRequest:
    """The legacy ``/api/embeddings``: one prompt."""

    model: str
    prompt: str

    @classmethod
    def parse(cls, body: dict[str, Any]) -> EmbeddingsRequest:
        return cls(model=model_of(body), prompt=field(body, "prompt", str, ""))


@dataclass(slots=True)
class ModelRequest:
    """A request about a model (``show``, ``pull``)."""

    model: str
    stream: bool

    @classmethod
    def parse(cls, body: dict[str, Any]) -> ModelRequest:
        return cls(model=model_of(body), stream=body.get("stream") is not False)


# ---------------------------------------------------------------------------------------------
# fields


def field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """A field of ``kind``, or ``default`` when unset (falsy: ``""``, ``[]``, ``null``)."""
    value = body.get(name)
    if value is None or value == "" or value == []:
        return default
    if not isinstance(value, kind):
        raise HttpError(400, f"invalid value for '{name}': {value!r}")
    return value


def model_of(body: dict[str, Any]) -> str:
    """The request's model (``name`` for old Ollama clients), echoed as sent in every answer."""
    model = body.get("model") or body.get("name")
    if not isinstance(model, str) or not model.strip():
        raise HttpError(400, "model is required")
    return model


GenerationFields = tuple[str, bool, float | None, dict[str, Any], Format, Think, int | None]


def generation(body: dict[str, Any]) -> GenerationFields:
    """The fields of a ``Generation``, in order; a missing ``stream`` means streaming."""
    return (
        model_of(body),
        body.get("stream") is not False,
        keep_alive_seconds(body.get("keep_alive")),
        field(body, "options", dict, {}),
        requested_format(body),
        think_of(body),
        top_logprobs(body),
    )


def images(body: dict[str, Any]) -> list[str]:
    found: list[Any] = field(body, "images", list, [])
    if not all(isinstance(image, str) for image in found):
        raise HttpError(400, f"invalid value for 'images': {found!r:.200}")
    return found


def message(value: Any) -> Message:
    if not isinstance(value, dict) or not isinstance(value.get("role"), str):
        raise HttpError(400, "each message needs a 'role'")
    return Message(
        role=value["role"],
        content=value.get("content") or "",
        images=images(value),
        tool_calls=field(value, "tool_calls", list, []),
        thinking=field(value, "thinking", str, ""),
        tool_name=field(value, "tool_name", str, ""),
        tool_call_id=field(value, "tool_call_id", str, ""),
    )


DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
DURATION_PART = re.compile(r"(-?[0-9.]+)(ns|us|µs|ms|s|m|h)")


def keep_alive_seconds(value: Any) -> float | None:
    """``keep_alive`` as seconds: a number is seconds, a string a Go duration ("5m", "1h30m", "0")."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise HttpError(400, f"invalid keep_alive: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"-?[0-9.]+", text):
        return float(text)
    parts = DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise HttpError(400, f"invalid keep_alive duration: {value!r}")
    return sum(float(number) * DURATION_UNITS[unit] for number, unit in parts)


def requested_format(body: dict[str, Any]) -> Format:
    fmt = field(body, "format", (str, dict))
    if fmt is None or fmt == "json" or isinstance(fmt, dict):
        checked: Format = fmt
        return checked
    raise HttpError(400, f'invalid format: {fmt!r} (use "json" or a JSON schema)')


def think_of(body: dict[str, Any]) -> Think:
    think = body.get("think")
    if think is None or think == "":
        return None
    if isinstance(think, bool | str):
        return think
    raise HttpError(400, f"invalid value for 'think': {think!r}")


def top_logprobs(body: dict[str, Any]) -> int | None:
    """``logprobs``/``top_logprobs``: None when no log probabilities are wanted, else how many
    alternatives each token lists."""
    if field(body, "logprobs", bool) is not True:
        return None
    top = body.get("top_logprobs") or 0
    if not isinstance(top, int) or isinstance(top, bool) or not 0 <= top <= MAX_TOP_LOGPROBS:
        raise HttpError(400, f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    return top


def embed_inputs(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise HttpError(400, "'input' must be a string or a list of strings")

"""llama-server stream events as Ollama chunks: pure, stateful translators, no I/O.

A translator is fed the JSON events of one upstream stream and returns the Ollama chunks to send
(``done: false``); ``final`` builds the last chunk with the metrics. A non-streaming answer is the
fold of the same chunks, so both kinds of client see the same text.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from llamacontroller.serving.errors import HttpError, UpstreamUnavailable, from_upstream
from llamacontroller.serving.ollama.tool_calls import ToolCallAccumulator

# /completion's stop_type and the chat endpoint's finish_reason, as Ollama's done_reason.
COMPLETION_DONE_REASONS = {"eos": "stop", "word": "stop", "limit": "length"}
CHAT_DONE_REASONS = {"stop": "stop", "length": "length", "tool_calls": "stop", "function_call": "stop"}

Chunk = dict[str, Any]  # one line of an Ollama stream (the last one: the answer's end and metrics)


def created_at() -> str:
    """Now in RFC 3339 (UTC, microseconds), as Ollama stamps every chunk (isoformat: faster than
    strftime, and this runs for every chunk)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _ns(milliseconds: Any) -> int:
    return max(0, round(float(milliseconds or 0) * 1_000_000))


def _count(value: Any) -> int:
    return max(0, int(value or 0))


def metrics(timings: dict[str, Any] | None, started_ns: int) -> dict[str, int]:
    """Ollama's final-chunk metrics (integers, every key, even 0) from llama-server's ``timings``.

    ``total_duration`` is our own wall clock since the request arrived; the model is always loaded,
    so ``load_duration`` is 0.
    """
    t = timings or {}
    return {
        "total_duration": max(0, time.monotonic_ns() - started_ns),
        "load_duration": 0,
        "prompt_eval_count": _count(t.get("prompt_n")) + _count(t.get("cache_n")),
        "prompt_eval_duration": _ns(t.get("prompt_ms")),
        "eval_count": _count(t.get("predicted_n")),
        "eval_duration": _ns(t.get("predicted_ms")),
    }


def token_logprob(entry: dict[str, Any]) -> dict[str, Any]:
    out = {"token": entry.get("token", ""), "logprob": entry.get("logprob", 0.0)}
    if entry.get("bytes") is not None:
        out["bytes"] = entry["bytes"]
    return out


def logprobs_of(entries: Any, top: int) -> list[dict[str, Any]]:
    """llama-server's per-token probabilities (``completion_probabilities`` or OpenAI's
    ``logprobs.content``, the same entries) as Ollama's ``logprobs``, ``top`` alternatives each."""
    out = []
    for entry in entries or ():
        item = token_logprob(entry)
        if top:
            item["top_logprobs"] = [token_logprob(alt) for alt in (entry.get("top_logprobs") or ())[:top]]
        out.append(item)
    return out


def check_event(event: Any) -> dict[str, Any]:
    """An event that is an error (llama-server sends some mid-stream) raises it."""
    if not isinstance(event, dict):
        raise UpstreamUnavailable(f"llama-server sent an unexpected event: {str(event)[:200]}")
    if "error" in event:
        raise from_upstream(500, event, "llama-server failed while answering")
    return event


def early_end() -> HttpError:
    return UpstreamUnavailable("llama-server ended the stream before the answer was complete")


class GenerateFromCompletion:
    """``/completion`` (or ``/infill``) events as ``/api/generate`` chunks, collecting ``context``.

    ``top_logprobs``: None, or the alternatives each chunk's ``logprobs`` lists."""

    def __init__(self, model: str, started_ns: int, top_logprobs: int | None = None) -> None:
        self.model = model
        self.started_ns = started_ns
        self.top_logprobs = top_logprobs
        self.tokens: list[int] = []
        self.timings: dict[str, Any] | None = None
        self.done_reason: str | None = None

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        check_event(event)
        self.tokens += event.get("tokens") or ()
        if event.get("stop"):
            self.timings = event.get("timings")
            self.done_reason = COMPLETION_DONE_REASONS.get(event.get("stop_type", ""), "stop")
        content = event.get("content")
        probs = event.get("completion_probabilities") if self.top_logprobs is not None else None
        if not content and not probs:
            return []
        chunk = {"model": self.model, "created_at": created_at(), "response": content or "", "done": False}
        if probs:
            chunk["logprobs"] = logprobs_of(probs, self.top_logprobs or 0)
        return [chunk]

    def final(self, prompt_tokens: list[int] | None) -> Chunk:
        """The last chunk; ``context`` is the prompt's tokens then the answer's. Without prompt
        tokens (a raw prompt) there is no ``context``, as Ollama gives none for raw prompts."""
        if self.done_reason is None:
            raise early_end()
        chunk: Chunk = {
            "model": self.model,
            "created_at": created_at(),
            "response": "",
            "done": True,
            "done_reason": self.done_reason,
        }
        if prompt_tokens is not None:
            chunk["context"] = [*prompt_tokens, *self.tokens]
        return chunk | metrics(self.timings, self.started_ns)


class ChatFromChat:
    """``/v1/chat/completions`` events as ``/api/chat`` chunks (text, thinking, whole tool calls)."""

    def __init__(self, model: str, started_ns: int, top_logprobs: int | None = None) -> None:
        self.model = model
        self.started_ns = started_ns
        self.top_logprobs = top_logprobs
        self.tool_calls = ToolCallAccumulator()
        self.timings: dict[str, Any] | None = None
        self.done_reason: str | None = None

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        check_event(event)
        if event.get("timings"):
            self.timings = event["timings"]
        chunks = []
        for choice in event.get("choices") or ():
            if choice.get("index", 0) == 0:
                chunks += self._choice(choice)
        return chunks

    def _choice(self, choice: dict[str, Any]) -> list[Chunk]:
        delta = choice.get("delta") or {}
        message: dict[str, Any] = {"role": "assistant", "content": delta.get("content") or ""}
        if delta.get("reasoning_content"):
            message["thinking"] = delta["reasoning_content"]
        if delta.get("tool_calls"):
            self.tool_calls.add(delta["tool_calls"])
        if choice.get("finish_reason"):
            self.done_reason = CHAT_DONE_REASONS.get(choice["finish_reason"], "stop")
            if self.tool_calls:
                message["tool_calls"] = self.tool_calls.take()
        probs = (choice.get("logprobs") or {}).get("content") if self.top_logprobs is not None else None
        if len(message) == 2 and not message["content"] and not probs:
            return []
        chunk = {"model": self.model, "created_at": created_at(), "message": message, "done": False}
        if probs:
            chunk["logprobs"] = logprobs_of(probs, self.top_logprobs or 0)
        return [chunk]

    def final(self) -> Chunk:
        if self.done_reason is None:
            raise early_end()
        return {
            "model": self.model,
            "created_at": created_at(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": self.done_reason,
            **metrics(self.timings, self.started_ns),
        }


class ChatFromCompletion:
    """``/completion`` events as ``/api/chat`` chunks: a plain chat whose prompt the adapter rendered."""

    def __init__(self, model: str, started_ns: int, top_logprobs: int | None = None) -> None:
        self.generate = GenerateFromCompletion(model, started_ns, top_logprobs)

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        return [chat_chunk(chunk) for chunk in self.generate.feed(event)]

    def final(self) -> Chunk:
        return chat_chunk(self.generate.final(None))


def chat_chunk(generate: Chunk) -> Chunk:
    """A generate chunk as the chat chunk with the same text, keys in Ollama's order."""
    chunk: Chunk = {"model": generate.pop("model"), "created_at": generate.pop("created_at")}
    chunk["message"] = {"role": "assistant", "content": generate.pop("response")}
    return chunk | generate


class GenerateFromChat:
    """Chat events as ``/api/generate`` chunks: a generate with images or thinking takes this path."""

    def __init__(self, model: str, started_ns: int, top_logprobs: int | None = None) -> None:
        self.chat = ChatFromChat(model, started_ns, top_logprobs)

    def feed(self, event: dict[str, Any]) -> list[Chunk]:
        return [generate_chunk(chunk) for chunk in self.chat.feed(event)]

    def final(self, prompt_tokens: list[int]) -> Chunk:
        """No ``context`` on this path: the chat endpoint does not return tokens."""
        return {**generate_chunk(self.chat.final()), "context": prompt_tokens}


def generate_chunk(chat: Chunk) -> Chunk:
    message = chat.pop("message")
    chat["response"] = message.get("content", "")
    if message.get("thinking"):
        chat["thinking"] = message["thinking"]
    return chat


def fold_logprobs(chunks: list[Chunk], out: Chunk) -> Chunk:
    logprobs = [entry for chunk in chunks for entry in chunk.get("logprobs", ())]
    return out | {"logprobs": logprobs} if logprobs else out


def fold_generate(chunks: list[Chunk], final: Chunk) -> Chunk:
    """The non-streaming answer: the final chunk with the whole response (and thinking, logprobs)."""
    out = {**final, "response": "".join(chunk["response"] for chunk in chunks)}
    thinking = "".join(chunk.get("thinking", "") for chunk in chunks)
    if thinking:
        out["thinking"] = thinking
    return fold_logprobs(chunks, out)


def fold_chat(chunks: list[Chunk], final: Chunk) -> Chunk:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(c["message"]["content"] for c in chunks),
    }
    thinking = "".join(c["message"].get("thinking", "") for c in chunks)
    if thinking:
        message["thinking"] = thinking
    tool_calls = [call for c in chunks for call in c["message"].get("tool_calls", ())]
    if tool_calls:
        message["tool_calls"] = tool_calls
    return fold_logprobs(chunks, {**final, "message": message})


def load_answer(model: str, reason: str, *, chat: bool) -> Chunk:
    """The answer to an empty prompt/messages: the model is (still) loaded, or "unloaded"."""
    body: Chunk = {"model": model, "created_at": created_at()}
    body |= {"message": {"role": "assistant", "content": ""}} if chat else {"response": "", "context": []}
    return {**body, "done": True, "done_reason": reason, **metrics(None, time.monotonic_ns())}

"""``/api/generate`` and ``/api/chat``: plan the upstream call, relay its stream, translate.

A ``Plan`` says which llama-server endpoint answers, which translator turns its events into Ollama
chunks, and how the final chunk is made; ``relay`` runs it for a streaming or a waiting client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from llamacontroller.serving import metadata, ollama, streams
from llamacontroller.serving.asgi import Request, Response, Stream
from llamacontroller.serving.catalog import Target
from llamacontroller.serving.errors import ApiError, UpstreamUnavailable
from llamacontroller.serving.http import NdjsonStream, json_response, read_json, resolve
from llamacontroller.serving.upstream import Upstream

log = logging.getLogger(__name__)

LOAD_WAIT = 300.0  # a load request waits this long for a llama-server that is still loading

Chunk = dict[str, Any]
Fold = Callable[[list[Chunk], Chunk], Chunk]


class Translator(Protocol):
    def feed(self, event: dict[str, Any]) -> list[Chunk]: ...


@dataclass
class Plan:
    """How one generate is served: the upstream call, its translator, and how the answer ends."""

    call: tuple[str, dict[str, Any]]
    translator: Translator
    finish: Callable[[], Awaitable[Chunk]]
    tokens: PromptTokens | None = None


async def relay(
    request: Request,
    upstream: Upstream,
    plan: Plan,
    fold: Fold,
    stream: bool,
) -> Response | Stream:
    """One upstream call through a translator, to an NDJSON stream or to one folded answer.

    llama-server's error statuses arrive before the first event, so they become the answer's status;
    a failure after the first line ends the stream with an ``{"error"}`` line. A client that goes
    away cancels this task, which closes the upstream connection: llama-server stops generating.
    """
    path, body = plan.call
    feed = plan.translator.feed
    async with upstream.events(path, body) as batches:
        if not stream:
            chunks = [chunk async for batch in batches for event in batch for chunk in feed(event)]
            return json_response(fold(chunks, await plan.finish()))
        out = NdjsonStream(request)
        await out.start()
        try:
            async for batch in batches:
                lines: list[Chunk] = []
                try:
                    for event in batch:
                        lines += feed(event)
                finally:  # an error event: what came before it still goes out, then the error
                    await out.write_all(lines)
            await out.write(await plan.finish())
        except ApiError as exc:
            await out.error(exc)
        return await out.finish()


class PromptTokens:
    """The prompt's tokens for ``context``, fetched from ``/tokenize`` while the answer streams."""

    def __init__(self, upstream: Upstream, prompt: str, context: list[int]) -> None:
        self.context = context
        self.task = asyncio.ensure_future(self._tokenize(upstream, ollama.tokenize_body(prompt, context)))

    @staticmethod
    async def _tokenize(upstream: Upstream, body: dict[str, Any]) -> Any:
        await asyncio.sleep(0)  # the answer waits for the completion, not for this: let that go out first
        return await upstream.post_json("/tokenize", body)

    async def get(self) -> list[int]:
        try:
            answer = await self.task
        except ApiError as exc:
            log.warning("no context for this answer: /tokenize failed: %s", exc.message)
            return self.context
        return [*self.context, *answer.get("tokens", ())]

    def cancel(self) -> None:
        """Not needed any more: stop it, or collect its failure so that asyncio does not log it."""
        if not self.task.done():
            self.task.cancel()
        elif not self.task.cancelled():
            self.task.exception()


async def wait_ready(upstream: Upstream, timeout: float = LOAD_WAIT) -> None:
    """What "load" means here: llama-server has its model loaded (it may still be loading)."""
    deadline = time.monotonic() + timeout
    while (status := await upstream.health()) != 200:
        if status is None:
            raise UpstreamUnavailable(f"llama-server at {upstream.base_url} is unreachable")
        if time.monotonic() > deadline:
            raise ApiError(503, "the model is still loading")
        await asyncio.sleep(0.5)


async def load_or_unload(model: str, target: Target, body: dict[str, Any], chat: bool) -> Response:
    """An empty prompt: "load" waits for the model; "unload" is answered, but the model stays loaded
    as long as its LlamaModel exists (deleting that frees the GPU)."""
    reason = ollama.load_reason(body)
    if reason == "load":
        await wait_ready(target.upstream)
    else:
        log.info("%s: keep_alive 0 asks to unload it; it stays loaded while its LlamaModel exists", model)
    return json_response(streams.load_answer(model, reason, chat=chat))


# ---------------------------------------------------------------------------------------------
# the plans


async def chat_plan(model: str, started: int, target: Target, body: dict[str, Any]) -> Plan:
    """Images or thinking: the chat endpoint parses them; no ``context`` on this path."""
    translator = streams.GenerateFromChat(model, started, ollama.top_logprobs(body))
    call = ("/v1/chat/completions", ollama.chat_body(body, ollama.generate_messages(body)))
    return Plan(call, translator, _ready(partial(translator.final, [])))


async def infill_plan(model: str, started: int, target: Target, body: dict[str, Any]) -> Plan:
    translator = streams.GenerateFromCompletion(model, started, ollama.top_logprobs(body))
    return Plan(("/infill", ollama.infill_body(body)), translator, _ready(partial(translator.final, [])))


async def completion_plan(model: str, started: int, target: Target, body: dict[str, Any]) -> Plan:
    """The prompt (templated unless ``raw``) after ``context``; its tokens are fetched meanwhile.

    A raw prompt gets no ``context`` (as from Ollama): its tokens are not fetched."""
    context = ollama.generate_context(body)
    raw = body.get("raw") is True
    think = ollama.think_fields(body)
    prompt = body["prompt"] if raw else await target.prompts.render(ollama.generate_texts(body), think)
    translator = streams.GenerateFromCompletion(model, started, ollama.top_logprobs(body))
    call = ("/completion", ollama.completion_body(body, ollama.completion_prompt(prompt, context)))
    if raw:
        return Plan(call, translator, _ready(partial(translator.final, None)))
    tokens = PromptTokens(target.upstream, prompt, context)

    async def finish() -> Chunk:
        return translator.final(await tokens.get())

    return Plan(call, translator, finish, tokens)


PLANNERS = {"chat": chat_plan, "infill": infill_plan, "completion": completion_plan}


def _ready(final: Callable[[], Chunk]) -> Callable[[], Awaitable[Chunk]]:
    """A final chunk that waits for nothing but the end of the stream."""

    async def finish() -> Chunk:
        return final()

    return finish


async def require_vision(model: str, target: Target) -> None:
    """Images for a model without a projector: a clear 400 (llama-server would answer 500)."""
    if not (await target.metadata.server_facts()).modalities.get("vision"):
        raise ApiError(400, f"model '{model}' does not support images")


async def generate(request: Request) -> Response | Stream:
    started = time.monotonic_ns()
    body = read_json(request)
    model, target = await resolve(request, body)
    if not any(ollama.field(body, name, (str, list)) for name in ("prompt", "suffix", "images")):
        return await load_or_unload(model, target, body, chat=False)
    if ollama.field(body, "images", list):
        await require_vision(model, target)
    plan = await PLANNERS[ollama.generate_route(body)](model, started, target, body)
    try:
        return await relay(request, target.upstream, plan, streams.fold_generate, ollama.is_streaming(body))
    finally:
        if plan.tokens:
            plan.tokens.cancel()


async def chat(request: Request) -> Response | Stream:
    started = time.monotonic_ns()
    body = read_json(request)
    model, target = await resolve(request, body)
    if not ollama.field(body, "messages", list):
        return await load_or_unload(model, target, body, chat=True)
    if ollama.has_images(body):
        await require_vision(model, target)
    plan = await plain_chat_plan(model, started, target, body) or chat_endpoint_plan(model, started, body)
    return await relay(request, target.upstream, plan, streams.fold_chat, ollama.is_streaming(body))


async def plain_chat_plan(model: str, started: int, target: Target, body: dict[str, Any]) -> Plan | None:
    """A plain text chat whose prompt is ready goes to ``/completion``: llama-server's chat endpoint
    renders the template on every request, which costs it milliseconds, and re-parses the whole
    answer at every token. Not for a model whose answers that endpoint parses (thinking, tags)."""
    texts = ollama.plain_chat_texts(body)
    if texts is None or metadata.parses_answers(await target.metadata.server_facts()):
        return None
    prompt = target.prompts.cached(texts, ollama.think_fields(body))
    if prompt is None:
        return None
    translator = streams.ChatFromCompletion(model, started, ollama.top_logprobs(body))
    call = ("/completion", ollama.completion_body(body, prompt))
    return Plan(call, translator, _ready(translator.final))


def chat_endpoint_plan(model: str, started: int, body: dict[str, Any]) -> Plan:
    translator = streams.ChatFromChat(model, started, ollama.top_logprobs(body))
    return Plan(("/v1/chat/completions", ollama.chat_body(body)), translator, _ready(translator.final))

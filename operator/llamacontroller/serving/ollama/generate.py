"""``/api/generate`` and ``/api/chat``: parse the request, plan the upstream call, relay its stream.

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
from typing import Any, Protocol, TypeVar

from llamacontroller.serving.catalog.metadata import parses_answers
from llamacontroller.serving.catalog.target import Target, resolve
from llamacontroller.serving.errors import HttpError, UpstreamUnavailable
from llamacontroller.serving.ollama import chunks, translate
from llamacontroller.serving.ollama.chunks import Chunk
from llamacontroller.serving.ollama.ndjson import NdjsonWriter
from llamacontroller.serving.ollama.requests import ChatRequest, GenerateRequest
from llamacontroller.serving.upstream.llama_server import Upstream
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import Answer, Response, json_response

log = logging.getLogger(__name__)

LOAD_WAIT = 300.0  # a load request waits this long for a llama-server that is still loading

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


async def relay(request: Request, upstream: Upstream, plan: Plan, fold: Fold, stream: bool) -> Answer:
    """One upstream call through a translator, to an NDJSON stream or to one folded answer.

    llama-server's error statuses arrive before the first event, so they become the answer's status;
    a failure after the first line ends the stream with an ``{"error"}`` line. A client that goes
    away cancels this task, which closes the upstream connection: llama-server stops generating.
    """
    path, body = plan.call
    feed = plan.translator.feed
    async with upstream.events(path, body) as batches:
        if not stream:
            found = [chunk async for batch in batches for event in batch for chunk in feed(event)]
            return json_response(fold(found, note_tokens(request, await plan.finish())))
        out = NdjsonWriter(request)
        await out.start()
        try:
            async for batch in batches:
                lines: list[Chunk] = []
                try:
                    for event in batch:
                        lines += feed(event)
                finally:  # an error event: what came before it still goes out, then the error
                    await out.write_all(lines)
            await out.write(note_tokens(request, await plan.finish()))
        except HttpError as exc:
            await out.error(exc)
        return await out.finish()


def note_tokens(request: Request, final: Chunk) -> Chunk:
    """The final chunk, its token counts (from llama-server's timings) noted for the metrics."""
    request.tokens = (final.get("prompt_eval_count", 0), final.get("eval_count", 0))
    return final


class PromptTokens:
    """The prompt's tokens for ``context``, fetched from ``/tokenize`` while the answer streams."""

    def __init__(self, upstream: Upstream, prompt: str, context: list[int]) -> None:
        self.context = context
        self.task = asyncio.ensure_future(self._tokenize(upstream, translate.tokenize_body(prompt, context)))

    @staticmethod
    async def _tokenize(upstream: Upstream, body: dict[str, Any]) -> Any:
        await asyncio.sleep(0)  # the answer waits for the completion, not for this: let that go out first
        return await upstream.post_json("/tokenize", body)

    async def get(self) -> list[int]:
        try:
            answer = await self.task
        except HttpError as exc:
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
            raise HttpError(503, "the model is still loading")
        await asyncio.sleep(0.5)


async def load_or_unload(model: str, target: Target, keep_alive: float | None, chat: bool) -> Response:
    """An empty prompt: "load" waits for the model; "unload" is answered, but the model stays loaded
    as long as its LlamaModel exists (deleting that frees the GPU)."""
    reason = translate.load_reason(keep_alive)
    if reason == "load":
        await wait_ready(target.upstream)
    else:
        log.info("%s: keep_alive 0 asks to unload it; it stays loaded while its LlamaModel exists", model)
    return json_response(chunks.load_answer(model, reason, chat=chat))


async def require_vision(model: str, target: Target) -> None:
    """Images for a model without a projector: a clear 400 (llama-server would answer 500)."""
    if not (await target.metadata.server_facts()).modalities.get("vision"):
        raise HttpError(400, f"model '{model}' does not support images")


def _ready(final: Callable[[], Chunk]) -> Callable[[], Awaitable[Chunk]]:
    """A final chunk that waits for nothing but the end of the stream."""

    async def finish() -> Chunk:
        return final()

    return finish


# ---------------------------------------------------------------------------------------------
# the handlers

Ask = TypeVar("Ask", GenerateRequest, ChatRequest)
Planner = Callable[[Ask, int, Target], Awaitable[Plan]]


async def generate(request: Request) -> Answer:
    started = time.monotonic_ns()
    ask = GenerateRequest.parse(request.json_object())
    return await answer(request, ask, started, generate_plan, chunks.fold_generate)


async def chat(request: Request) -> Answer:
    started = time.monotonic_ns()
    ask = ChatRequest.parse(request.json_object())
    return await answer(request, ask, started, chat_plan, chunks.fold_chat)


async def answer(request: Request, ask: Ask, started: int, plan_for: Planner[Ask], fold: Fold) -> Answer:
    """Load the model for a request with nothing to answer, else plan the upstream call and relay it."""
    target = await resolve(request, ask.model)
    if ask.loads_only:
        return await load_or_unload(ask.model, target, ask.keep_alive, chat=isinstance(ask, ChatRequest))
    if ask.has_images:
        await require_vision(ask.model, target)
    plan = await plan_for(ask, started, target)
    try:
        return await relay(request, target.upstream, plan, fold, ask.stream)
    finally:
        if plan.tokens:
            plan.tokens.cancel()


# ---------------------------------------------------------------------------------------------
# /api/generate's plans


async def generate_plan(ask: GenerateRequest, started: int, target: Target) -> Plan:
    planners = {"chat": generate_chat_plan, "infill": infill_plan, "completion": completion_plan}
    return await planners[translate.generate_route(ask)](ask, started, target)


async def generate_chat_plan(ask: GenerateRequest, started: int, target: Target) -> Plan:
    """Images or thinking: the chat endpoint parses them; no ``context`` on this path."""
    translator = chunks.GenerateFromChat(ask.model, started, ask.top_logprobs)
    call = ("/v1/chat/completions", translate.chat_body(ask, translate.generate_messages(ask), []))
    return Plan(call, translator, _ready(partial(translator.final, [])))


async def infill_plan(ask: GenerateRequest, started: int, target: Target) -> Plan:
    translator = chunks.GenerateFromCompletion(ask.model, started, ask.top_logprobs)
    return Plan(("/infill", translate.infill_body(ask)), translator, _ready(partial(translator.final, [])))


async def completion_plan(ask: GenerateRequest, started: int, target: Target) -> Plan:
    """The prompt (templated unless ``raw``) after ``context``; its tokens are fetched meanwhile.

    A raw prompt gets no ``context`` (as from Ollama): its tokens are not fetched."""
    if ask.raw:
        prompt = ask.prompt
    else:
        prompt = await target.prompts.render(translate.generate_texts(ask), translate.think_fields(ask.think))
    translator = chunks.GenerateFromCompletion(ask.model, started, ask.top_logprobs)
    call = ("/completion", translate.completion_body(ask, translate.completion_prompt(prompt, ask.context)))
    if ask.raw:
        return Plan(call, translator, _ready(partial(translator.final, None)))
    tokens = PromptTokens(target.upstream, prompt, ask.context)

    async def finish() -> Chunk:
        return translator.final(await tokens.get())

    return Plan(call, translator, finish, tokens)


# ---------------------------------------------------------------------------------------------
# /api/chat's plans


async def chat_plan(ask: ChatRequest, started: int, target: Target) -> Plan:
    return await plain_chat_plan(ask, started, target) or chat_endpoint_plan(ask, started)


async def plain_chat_plan(ask: ChatRequest, started: int, target: Target) -> Plan | None:
    """A plain text chat whose prompt is ready goes to ``/completion``: llama-server's chat endpoint
    renders the template on every request, which costs it milliseconds, and re-parses the whole
    answer at every token. Not for a model whose answers that endpoint parses (thinking, tags)."""
    texts = translate.plain_chat_texts(ask)
    if texts is None or parses_answers(await target.metadata.server_facts()):
        return None
    prompt = target.prompts.cached(texts, translate.think_fields(ask.think))
    if prompt is None:
        return None
    translator = chunks.ChatFromCompletion(ask.model, started, ask.top_logprobs)
    call = ("/completion", translate.completion_body(ask, prompt))
    return Plan(call, translator, _ready(translator.final))


def chat_endpoint_plan(ask: ChatRequest, started: int) -> Plan:
    translator = chunks.ChatFromChat(ask.model, started, ask.top_logprobs)
    call = ("/v1/chat/completions", translate.chat_request_body(ask))
    return Plan(call, translator, _ready(translator.final))

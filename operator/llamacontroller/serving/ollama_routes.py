"""The Ollama API (``/api/*``, ``/``): handlers that resolve the model, translate, and relay.

The handlers know nothing of how many llama-servers there are: they ask the app's ``Catalog``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from aiohttp import web

from llamacontroller.serving import ollama, streams
from llamacontroller.serving.catalog import Target, available
from llamacontroller.serving.errors import ApiError, UpstreamError, UpstreamUnavailable
from llamacontroller.serving.http import CATALOG, NDJSON, NdjsonStream, json_response, read_json
from llamacontroller.serving.metadata import ModelMetadata
from llamacontroller.serving.upstream import Upstream, dumps

log = logging.getLogger(__name__)

# Copilot wants a version of at least 0.6.4; Open WebUI checks the connection with it.
OLLAMA_VERSION = "0.12.3"
LOAD_WAIT = 300.0  # a load request waits this long for a llama-server that is still loading
# The model stays loaded as long as its LlamaModel exists: /api/ps shows an expiry far away.
NEVER_EXPIRES = timedelta(days=365 * 100)
NOT_HERE = "models are LlamaModel resources managed by LlamaController (kubectl), not through this API"

Chunk = dict[str, Any]


class Translator(Protocol):
    def feed(self, event: dict[str, Any]) -> list[Chunk]: ...


def model_of(body: dict[str, Any]) -> str:
    """The request's model (``name`` for old clients), echoed as sent in every answer."""
    model = body.get("model") or body.get("name")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "model is required")
    return model


async def resolve(request: web.Request, body: dict[str, Any]) -> tuple[str, Target]:
    model = model_of(body)
    return model, await request.app[CATALOG].resolve(model)


# ---------------------------------------------------------------------------------------------
# relaying a stream


@dataclass
class Plan:
    """How one generate is served: the upstream call, its translator, and how the answer ends."""

    call: tuple[str, dict[str, Any]]
    translator: Translator
    finish: Callable[[], Awaitable[Chunk]]
    tokens: PromptTokens | None = None


async def relay(
    request: web.Request,
    upstream: Upstream,
    plan: Plan,
    fold: Callable[[list[Chunk], Chunk], Chunk],
    stream: bool,
) -> web.StreamResponse:
    """One upstream call through a translator, to an NDJSON stream or to one folded answer.

    llama-server's error statuses arrive before the first event, so they become the answer's status;
    a failure after the first line ends the stream with an ``{"error"}`` line. A client that goes
    away cancels this task, which closes the upstream connection: llama-server stops generating.
    """
    path, body = plan.call
    async with upstream.events(path, body) as events:
        if not stream:
            chunks = [chunk async for event in events for chunk in plan.translator.feed(event)]
            return json_response(fold(chunks, await plan.finish()))
        out = NdjsonStream(request)
        await out.start()
        try:
            async for event in events:
                for chunk in plan.translator.feed(event):
                    await out.write(chunk)
            await out.write(await plan.finish())
        except ApiError as exc:
            await out.error(exc)
        return await out.finish()


class PromptTokens:
    """The prompt's tokens for ``context``, fetched from ``/tokenize`` while the answer streams."""

    def __init__(self, upstream: Upstream, prompt: str, context: list[int]) -> None:
        self.context = context
        body = ollama.tokenize_body(prompt, context)
        self.task = asyncio.ensure_future(upstream.post_json("/tokenize", body))

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


async def load_or_unload(model: str, target: Target, body: dict[str, Any], chat: bool) -> web.Response:
    reason = ollama.load_reason(body)
    if reason == "load":
        await wait_ready(target.upstream)
    return json_response(streams.load_answer(model, reason, chat=chat))


# ---------------------------------------------------------------------------------------------
# generate and chat


async def chat_plan(model: str, started: int, target: Target, body: dict[str, Any]) -> Plan:
    """Images or thinking: the chat endpoint parses them; no ``context`` on this path."""
    translator = streams.GenerateFromChat(model, started)
    call = ("/v1/chat/completions", ollama.chat_body(body, ollama.generate_messages(body)))
    return Plan(call, translator, _const_final(translator, []))


async def infill_plan(model: str, started: int, target: Target, body: dict[str, Any]) -> Plan:
    translator = streams.GenerateFromCompletion(model, started)
    return Plan(("/infill", ollama.infill_body(body)), translator, _const_final(translator, []))


async def completion_plan(model: str, started: int, target: Target, body: dict[str, Any]) -> Plan:
    """The prompt (templated unless ``raw``) after ``context``; its tokens are fetched meanwhile."""
    context = ollama.generate_context(body)
    prompt = body["prompt"] if body.get("raw") is True else await target.prompts.render(body)
    translator = streams.GenerateFromCompletion(model, started)
    tokens = PromptTokens(target.upstream, prompt, context)

    async def finish() -> Chunk:
        return translator.final(await tokens.get())

    call = ("/completion", ollama.completion_body(body, ollama.completion_prompt(prompt, context)))
    return Plan(call, translator, finish, tokens)


PLANNERS = {"chat": chat_plan, "infill": infill_plan, "completion": completion_plan}


def _const_final(translator: Any, prompt_tokens: list[int]) -> Callable[[], Awaitable[Chunk]]:
    async def finish() -> Chunk:
        return translator.final(prompt_tokens)

    return finish


async def generate(request: web.Request) -> web.StreamResponse:
    started = time.monotonic_ns()
    body = await read_json(request)
    model, target = await resolve(request, body)
    if not any(ollama.field(body, name, (str, list)) for name in ("prompt", "suffix", "images")):
        return await load_or_unload(model, target, body, chat=False)
    plan = await PLANNERS[ollama.generate_route(body)](model, started, target, body)
    try:
        return await relay(request, target.upstream, plan, streams.fold_generate, ollama.is_streaming(body))
    finally:
        if plan.tokens:
            plan.tokens.cancel()


async def chat(request: web.Request) -> web.StreamResponse:
    started = time.monotonic_ns()
    body = await read_json(request)
    model, target = await resolve(request, body)
    if not ollama.field(body, "messages", list):
        return await load_or_unload(model, target, body, chat=True)
    translator = streams.ChatFromChat(model, started)

    async def finish() -> Chunk:
        return translator.final()

    plan = Plan(("/v1/chat/completions", ollama.chat_body(body)), translator, finish)
    return await relay(request, target.upstream, plan, streams.fold_chat, ollama.is_streaming(body))


# ---------------------------------------------------------------------------------------------
# embeddings


async def upstream_embeddings(model: str, target: Target, inputs: list[str]) -> dict[str, Any]:
    try:
        return await target.upstream.post_json("/v1/embeddings", {"input": inputs})
    except UpstreamError as exc:
        if exc.code == 501:
            raise ApiError(400, f"model '{model}' does not support embeddings") from exc
        raise


async def embed(request: web.Request) -> web.Response:
    started = time.monotonic_ns()
    body = await read_json(request)
    model, target = await resolve(request, body)
    inputs = ollama.embed_inputs(body)
    answer = await upstream_embeddings(model, target, inputs) if inputs else {}
    dimensions = ollama.field(body, "dimensions", int)
    return json_response(
        {
            "model": model,
            "embeddings": [ollama.fit_dimensions(v, dimensions) for v in ollama.embeddings_of(answer)],
            "total_duration": time.monotonic_ns() - started,
            "load_duration": 0,
            "prompt_eval_count": int((answer.get("usage") or {}).get("prompt_tokens") or 0),
        }
    )


async def embeddings(request: web.Request) -> web.Response:
    """The legacy route: one prompt, one vector."""
    body = await read_json(request)
    model, target = await resolve(request, body)
    prompt = ollama.field(body, "prompt", str)
    if not prompt:
        return json_response({"embedding": []})
    answer = await upstream_embeddings(model, target, [prompt])
    return json_response({"embedding": ollama.embeddings_of(answer)[0]})


# ---------------------------------------------------------------------------------------------
# models


def tags_entry(name: str, md: ModelMetadata) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": md.modified_at,
        "size": md.size,
        "digest": md.digest,
        "details": md.details,
    }


async def tags(request: web.Request) -> web.Response:
    models = [tags_entry(t.name, md) for t, md in await available(request.app[CATALOG])]
    return json_response({"models": models})


async def ps(request: web.Request) -> web.Response:
    """Loaded models. VRAM is reported as the model's size: the operator offloads every layer by default."""
    expires_at = streams.rfc3339((datetime.now(UTC) + NEVER_EXPIRES).timestamp())
    models = [
        tags_entry(t.name, md)
        | {"expires_at": expires_at, "size_vram": md.size, "context_length": md.context_length}
        for t, md in await available(request.app[CATALOG])
    ]
    return json_response({"models": models})


async def show(request: web.Request) -> web.Response:
    body = await read_json(request)
    _, target = await resolve(request, body)
    md = await target.metadata.get()
    return json_response(
        {
            "modelfile": md.modelfile,
            "parameters": md.parameters,
            "template": md.template,
            "license": md.license,
            "details": md.details,
            "model_info": md.model_info,
            "capabilities": md.capabilities,
            "modified_at": md.modified_at,
        }
    )


async def pull(request: web.Request) -> web.Response:
    """Nothing to download: success for a served model, 404 for any other."""
    body = await read_json(request)
    await resolve(request, body)
    if not ollama.is_streaming(body):
        return json_response({"status": "success"})
    lines = [{"status": "pulling manifest"}, {"status": "success"}]
    return web.Response(body=b"".join(dumps(line) + b"\n" for line in lines), content_type=NDJSON)


def not_supported(action: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        raise ApiError(400, f"{action} is not supported: {NOT_HERE}")

    return handler


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def version(request: web.Request) -> web.Response:
    return json_response({"version": OLLAMA_VERSION})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", root)
    app.router.add_get("/api/version", version)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/api/ps", ps)
    app.router.add_post("/api/show", show)
    app.router.add_post("/api/generate", generate)
    app.router.add_post("/api/chat", chat)
    app.router.add_post("/api/embed", embed)
    app.router.add_post("/api/embeddings", embeddings)
    app.router.add_post("/api/pull", pull)
    app.router.add_post("/api/push", not_supported("pushing a model"))
    app.router.add_post("/api/create", not_supported("creating a model"))
    app.router.add_post("/api/copy", not_supported("copying a model"))
    app.router.add_delete("/api/delete", not_supported("deleting a model"))
    app.router.add_route("*", "/api/blobs/{digest}", not_supported("uploading a blob"))

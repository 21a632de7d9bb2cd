"""``/api/embed`` and the legacy ``/api/embeddings``, on llama-server's ``/v1/embeddings``."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from llamacontroller.serving import ollama
from llamacontroller.serving.catalog import Target
from llamacontroller.serving.errors import ApiError, UpstreamError
from llamacontroller.serving.http import json_response, read_json, resolve


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

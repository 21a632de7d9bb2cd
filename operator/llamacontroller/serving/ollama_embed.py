"""``/api/embed`` and the legacy ``/api/embeddings``, on llama-server's ``/v1/embeddings``.

llama-server embeds an input only when it fits in one batch, and says so in its error; Ollama's
``/api/embed`` truncates such inputs unless ``truncate`` is false. So an input that is too large is
cut to fit (through ``/tokenize`` and ``/detokenize``, only when it happened) and embedded again.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from llamacontroller.serving import ollama
from llamacontroller.serving.asgi import Request, Response
from llamacontroller.serving.catalog import Target
from llamacontroller.serving.errors import ApiError, UpstreamError
from llamacontroller.serving.http import json_response, read_json, resolve
from llamacontroller.serving.upstream import Upstream

# llama-server: "input (3006 tokens) is too large to process. increase the physical batch size
# (current batch size: 512)"
TOO_LARGE = re.compile(r"input \((\d+) tokens\) is too large.*batch size: (\d+)", re.DOTALL)
SPECIAL_TOKENS = 2  # room for the BOS and EOS that embedding a text adds
EMBEDDINGS_HINT = (
    "its server runs without --embeddings; set spec.parameters.embeddings: true in its LlamaModel"
)


def batch_limit(error: UpstreamError) -> int | None:
    """The tokens one input may have, when llama-server refused an input for its size."""
    found = TOO_LARGE.search(error.message)
    return int(found.group(2)) if found else None


async def upstream_embeddings(
    model: str, target: Target, inputs: list[str], truncate: bool
) -> dict[str, Any]:
    try:
        return await target.upstream.post_json("/v1/embeddings", {"input": inputs})
    except UpstreamError as exc:
        if exc.code == 501:
            raise ApiError(400, f"model '{model}' does not support embeddings: {EMBEDDINGS_HINT}") from exc
        limit = batch_limit(exc)
        if limit is None:
            raise
        if not truncate:
            raise ApiError(
                400,
                f"an input is longer than the {limit} tokens the model embeds at once (truncate is false)",
            ) from exc
    cut = await asyncio.gather(*(fit(target.upstream, text, limit - SPECIAL_TOKENS) for text in inputs))
    return await target.upstream.post_json("/v1/embeddings", {"input": cut})


async def fit(upstream: Upstream, text: str, tokens: int) -> str:
    """``text`` cut to its first ``tokens`` tokens (whole as it is when it fits)."""
    answer = await upstream.post_json("/tokenize", {"content": text})
    ids = answer.get("tokens") or []
    if len(ids) <= tokens:
        return text
    return (await upstream.post_json("/detokenize", {"tokens": ids[:tokens]})).get("content", "")


async def embed(request: Request) -> Response:
    started = time.monotonic_ns()
    body = read_json(request)
    model, target = await resolve(request, body)
    inputs = ollama.embed_inputs(body)
    truncate = body.get("truncate") is not False
    answer = await upstream_embeddings(model, target, inputs, truncate) if inputs else {}
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


async def embeddings(request: Request) -> Response:
    """The legacy route: one prompt, one vector (no truncation, as in Ollama)."""
    body = read_json(request)
    model, target = await resolve(request, body)
    prompt = ollama.field(body, "prompt", str)
    if not prompt:
        return json_response({"embedding": []})
    answer = await upstream_embeddings(model, target, [prompt], truncate=False)
    return json_response({"embedding": ollama.embeddings_of(answer)[0]})

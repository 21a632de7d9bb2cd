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

from llamacontroller.serving.catalog.target import Target, resolve
from llamacontroller.serving.errors import HttpError, UpstreamError
from llamacontroller.serving.ollama.requests import EmbeddingsRequest, EmbedRequest
from llamacontroller.serving.ollama.translate import embeddings_of, fit_dimensions
from llamacontroller.serving.upstream.llama_server import Upstream
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import Response, json_response

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
        answer: dict[str, Any] = await target.upstream.post_json("/v1/embeddings", {"input": inputs})
        return answer
    except UpstreamError as exc:
        if exc.code == 501:
            raise HttpError(400, f"model '{model}' does not support embeddings: {EMBEDDINGS_HINT}") from exc
        limit = batch_limit(exc)
        if limit is None:
            raise
        if not truncate:
            raise HttpError(
                400,
                f"an input is longer than the {limit} tokens the model embeds at once (truncate is false)",
            ) from exc
    cut = await asyncio.gather(*(fit(target.upstream, text, limit - SPECIAL_TOKENS) for text in inputs))
    answer = await target.upstream.post_json("/v1/embeddings", {"input": cut})
    return answer


async def fit(upstream: Upstream, text: str, tokens: int) -> str:
    """``text`` cut to its first ``tokens`` tokens (whole as it is when it fits)."""
    answer = await upstream.post_json("/tokenize", {"content": text})
    ids = answer.get("tokens") or []
    if len(ids) <= tokens:
        return text
    content: str = (await upstream.post_json("/detokenize", {"tokens": ids[:tokens]})).get("content", "")
    return content


async def embed(request: Request) -> Response:
    started = time.monotonic_ns()
    ask = EmbedRequest.parse(request.json_object())
    target = await resolve(request, ask.model)
    answer = await upstream_embeddings(ask.model, target, ask.inputs, ask.truncate) if ask.inputs else {}
    prompt_tokens = int((answer.get("usage") or {}).get("prompt_tokens") or 0)
    request.tokens = (prompt_tokens, 0)
    return json_response(
        {
            "model": ask.model,
            "embeddings": [fit_dimensions(v, ask.dimensions) for v in embeddings_of(answer)],
            "total_duration": time.monotonic_ns() - started,
            "load_duration": 0,
            "prompt_eval_count": prompt_tokens,
        }
    )


async def embeddings(request: Request) -> Response:
    """The legacy route: one prompt, one vector (no truncation, as in Ollama)."""
    ask = EmbeddingsRequest.parse(request.json_object())
    target = await resolve(request, ask.model)
    if not ask.prompt:
        return json_response({"embedding": []})
    answer = await upstream_embeddings(ask.model, target, [ask.prompt], truncate=False)
    request.tokens = (int((answer.get("usage") or {}).get("prompt_tokens") or 0), 0)
    return json_response({"embedding": embeddings_of(answer)[0]})

"""The Ollama routes about models: listings, ``show``, ``pull``, and what a cluster does not allow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from llamacontroller.serving import ollama, streams
from llamacontroller.serving.asgi import Handler, Request, Response, text_response
from llamacontroller.serving.catalog import available
from llamacontroller.serving.errors import ApiError
from llamacontroller.serving.http import NDJSON, catalog_of, json_response, read_json, resolve
from llamacontroller.serving.metadata import ModelMetadata
from llamacontroller.serving.upstream import dumps

# Copilot wants a version of at least 0.6.4; Open WebUI checks the connection with it.
OLLAMA_VERSION = "0.12.3"
# The model stays loaded as long as its LlamaModel exists: /api/ps shows an expiry far away.
NEVER_EXPIRES = timedelta(days=365 * 100)
NOT_HERE = "models are LlamaModel resources managed by LlamaController (kubectl), not through this API"


def tags_entry(name: str, md: ModelMetadata) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": md.modified_at,
        "size": md.size,
        "digest": md.digest,
        "details": md.details,
    }


async def tags(request: Request) -> Response:
    models = [tags_entry(t.name, md) for t, md in await available(catalog_of(request))]
    return json_response({"models": models})


async def ps(request: Request) -> Response:
    """Loaded models. VRAM is reported as the model's size: the operator offloads every layer by default."""
    expires_at = streams.rfc3339((datetime.now(UTC) + NEVER_EXPIRES).timestamp())
    models = [
        tags_entry(t.name, md)
        | {"expires_at": expires_at, "size_vram": md.size, "context_length": md.context_length}
        for t, md in await available(catalog_of(request))
    ]
    return json_response({"models": models})


async def show(request: Request) -> Response:
    body = read_json(request)
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


async def pull(request: Request) -> Response:
    """Nothing to download: success for a served model, 404 for any other."""
    body = read_json(request)
    await resolve(request, body)
    if not ollama.is_streaming(body):
        return json_response({"status": "success"})
    lines = [{"status": "pulling manifest"}, {"status": "success"}]
    return Response(b"".join(dumps(line) + b"\n" for line in lines), content_type=NDJSON)


def not_supported(action: str) -> Handler:
    async def handler(request: Request) -> Response:
        raise ApiError(400, f"{action} is not supported: {NOT_HERE}")

    return handler


async def root(request: Request) -> Response:
    return text_response("Ollama is running")


async def version(request: Request) -> Response:
    return json_response({"version": OLLAMA_VERSION})

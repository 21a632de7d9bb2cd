"""The Ollama routes about models: listings, ``show``, ``pull``, and what a cluster does not allow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from llamacontroller.serving.catalog.metadata import ModelMetadata
from llamacontroller.serving.catalog.target import available, catalog_of, resolve
from llamacontroller.serving.codec import dumps
from llamacontroller.serving.errors import HttpError
from llamacontroller.serving.ollama.ndjson import NDJSON
from llamacontroller.serving.ollama.requests import ModelRequest
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import Response, json_response, text_response
from llamacontroller.serving.web.router import Handler
from llamacontroller.status import rfc3339_micro

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
    expires_at = rfc3339_micro(datetime.now(UTC) + NEVER_EXPIRES)
    models = [
        tags_entry(t.name, md)
        | {"expires_at": expires_at, "size_vram": md.size, "context_length": md.context_length}
        for t, md in await available(catalog_of(request))
    ]
    return json_response({"models": models})


async def show(request: Request) -> Response:
    ask = ModelRequest.parse(request.json_object())
    target = await resolve(request, ask.model)
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
    ask = ModelRequest.parse(request.json_object())
    await resolve(request, ask.model)
    if not ask.stream:
        return json_response({"status": "success"})
    lines = [{"status": "pulling manifest"}, {"status": "success"}]
    return Response(b"".join(dumps(line) + b"\n" for line in lines), content_type=NDJSON)


def not_supported(action: str) -> Handler:
    async def handler(request: Request) -> Response:
        raise HttpError(400, f"{action} is not supported: {NOT_HERE}")

    return handler


async def root(request: Request) -> Response:
    return text_response("Ollama is running")


async def version(request: Request) -> Response:
    return json_response({"version": OLLAMA_VERSION})

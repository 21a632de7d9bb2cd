"""The OpenAI API (``/v1/*``): llama-server already speaks it, so requests pass through.

The only translation: the model name is checked (another model is a 404 in OpenAI's shape), errors
take OpenAI's shape, and a stream that breaks ends with an SSE error event. Answers carry the model
name llama-server serves (its ``--alias``), as OpenAI answers with the model it resolved.

A non-streamed request goes upstream non-streamed too (minimal translation): when its client goes
away the adapter closes the upstream connection, which llama-server notices about a second later,
and not at all while other requests keep reaching it (measured; for streams it notices at once,
which is why the Ollama routes always stream).
"""

from __future__ import annotations

from typing import Any

from llamacontroller.serving.catalog.target import Target, available, catalog_of, resolve
from llamacontroller.serving.codec import dumps
from llamacontroller.serving.errors import HttpError, UpstreamUnavailable, openai_body
from llamacontroller.serving.metrics import TAIL
from llamacontroller.serving.upstream.llama_server import UpstreamResponse
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import Answer, Response, StreamedResponse, json_response
from llamacontroller.serving.web.router import Handler, Router

OWNER = "llamacontroller"
EVENT_END = b"\n\n"


async def target_of(request: Request) -> tuple[Target, bool]:
    """The target of the body's ``model`` (None: the catalog's default), and whether it streams."""
    body = request.json_object(empty=False)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise HttpError(400, "'model' must be a string", param="model")
    return await resolve(request, model), body.get("stream") is True


def passthrough(path: str) -> Handler:
    async def handler(request: Request) -> Answer:
        target, stream = await target_of(request)
        async with target.upstream.open("POST", path, request.body, streamed=stream) as upstream:
            if stream:
                return await relay_sse(request, upstream)
            content = await upstream.aread()
            request.tail = content[-TAIL:]  # its usage, for the metrics
            return Response(content, upstream.status_code)

    return handler


async def relay_sse(request: Request, upstream: UpstreamResponse) -> StreamedResponse:
    """llama-server's events as they arrive; a broken upstream ends the stream with an error event."""
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    response = StreamedResponse(request, upstream.status_code, headers)
    await response.prepare()
    tail = EVENT_END
    try:
        async for chunk in upstream.aiter_raw():
            await response.write(chunk)
            request.tail = (request.tail + chunk)[-TAIL:]  # its last event has the usage
            tail = request.tail[-2:]
    except UpstreamUnavailable as exc:
        request.upstream_failure = "unavailable"
        error = openai_body(exc)
        separator = b"" if tail == EVENT_END else EVENT_END
        await response.write(separator + b"data: " + dumps(error) + EVENT_END)
    return await response.finish()


def model_entry(name: str, created: int) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": created, "owned_by": OWNER}


async def models(request: Request) -> Response:
    entries = [model_entry(t.name, md.created) for t, md in await available(catalog_of(request))]
    return json_response({"object": "list", "data": entries})


async def model(request: Request) -> Response:
    target = await resolve(request, request.match_info["model"])
    md = await target.metadata.get()
    return json_response(model_entry(target.name, md.created))


def add_routes(router: Router) -> None:
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        router.add("POST", path, passthrough(path))
    router.add("GET", "/v1/models", models)
    router.add("GET", "/v1/models/{model}", model)

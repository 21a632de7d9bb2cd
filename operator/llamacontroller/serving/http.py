"""What the Ollama and OpenAI routes share on top of ``asgi``: bodies, streams, errors, keys.

Handlers raise ``ApiError``; ``error_middleware`` answers it in the shape of the API the client
called (``/v1/...``: OpenAI, everything else: Ollama). Once a stream has started, the status is sent,
so the relay functions end the stream with an error line/event themselves.
"""

from __future__ import annotations

import logging
from typing import Any

from llamacontroller.serving import auth
from llamacontroller.serving.asgi import Handler, Request, Response, Stream
from llamacontroller.serving.catalog import Catalog, Target
from llamacontroller.serving.errors import ApiError, ollama_body, openai_body
from llamacontroller.serving.upstream import dumps, loads

log = logging.getLogger(__name__)

CATALOG = "catalog"  # app.state keys
API_KEYS = "api_keys"

NDJSON = "application/x-ndjson"


def catalog_of(request: Request) -> Catalog:
    catalog: Catalog = request.app.state[CATALOG]
    return catalog


def model_of(body: dict[str, Any]) -> str:
    """The request's model (``name`` for old Ollama clients), echoed as sent in every answer."""
    model = body.get("model") or body.get("name")
    if not isinstance(model, str) or not model.strip():
        raise ApiError(400, "model is required")
    return model


async def resolve(request: Request, body: dict[str, Any]) -> tuple[str, Target]:
    """The requested model's spelling and the target that serves it (ModelNotFound: 404)."""
    model = model_of(body)
    return model, await catalog_of(request).resolve(model)


def is_openai(request: Request) -> bool:
    return request.path.startswith("/v1/")


def json_response(body: Any, status: int = 200, content_type: str = "application/json") -> Response:
    return Response(dumps(body) + b"\n", status, content_type)


def error_response(request: Request, error: ApiError) -> Response:
    body = openai_body(error) if is_openai(request) else ollama_body(error)
    response = json_response(body, error.status)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def read_json(request: Request) -> dict[str, Any]:
    """The request's JSON object; anything else is a 400 in the API's shape."""
    raw = request.body
    try:
        body = loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise ApiError(400, f"invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


async def error_middleware(request: Request, handler: Handler) -> Response | Stream:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(request, exc)
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(request, ApiError(500, "internal error in the LlamaController adapter"))


async def auth_middleware(request: Request, handler: Handler) -> Response | Stream:
    keys = request.app.state[API_KEYS]
    token = auth.bearer_token(request.header(b"authorization"))
    if keys and auth.needs_key(request.method, request.path) and not auth.accepted(token, keys):
        message = "Invalid or missing API key" if is_openai(request) else "unauthorized"
        raise ApiError(401, message, code="invalid_api_key")
    return await handler(request)


class NdjsonStream:
    """An Ollama stream: one JSON object per line, each line sent as soon as it is written."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.response = Stream(request, headers={"Content-Type": NDJSON})

    async def start(self) -> None:
        await self.response.prepare()

    async def write(self, chunk: Any) -> None:
        await self.response.write(dumps(chunk) + b"\n")

    async def write_all(self, chunks: list[Any]) -> None:
        """Lines that are ready together go out in one write (none: nothing is sent)."""
        if chunks:
            await self.response.write(b"".join([dumps(chunk) + b"\n" for chunk in chunks]))

    async def error(self, error: ApiError) -> None:
        """A failure after the stream started: status 200 is gone, the last line says it."""
        log.warning("%s %s failed mid-stream: %s", self.request.method, self.request.path, error.message)
        await self.write(ollama_body(error))

    async def finish(self) -> Stream:
        return await self.response.finish()

"""The middleware every API app has: an error answers in the shape of the API the client called.

Handlers raise ``HttpError``; here it becomes OpenAI's error object for ``/v1/...`` and Ollama's for
everything else. Once a stream has started, its status is sent: the relays end such a stream with
an error line or event themselves.
"""

from __future__ import annotations

import logging

from llamacontroller.serving.errors import HttpError, note_failure, ollama_body, openai_body
from llamacontroller.serving.web.request import ClientGone, Request
from llamacontroller.serving.web.response import Answer, Response, json_response
from llamacontroller.serving.web.router import Handler

log = logging.getLogger(__name__)


def is_openai(request: Request) -> bool:
    return request.path.startswith("/v1/")


def error_response(request: Request, error: HttpError) -> Response:
    body = openai_body(error) if is_openai(request) else ollama_body(error)
    response = json_response(body, error.status)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


async def error_middleware(request: Request, handler: Handler) -> Answer:
    try:
        return await handler(request)
    except HttpError as exc:
        note_failure(request, exc)
        return error_response(request, exc)
    except ClientGone:
        raise  # nobody to answer
    except Exception:
        log.exception("%s %s failed", request.method, request.path)
        return error_response(request, HttpError(500, "internal error in the LlamaController adapter"))

"""API errors and their two wire shapes.

Handlers raise; one middleware (``web.middleware``) writes the error in the shape of the API the client
called: Ollama's ``{"error": "message"}`` or OpenAI's ``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llamacontroller.serving.web.request import Request

# OpenAI's error type for each status we answer with; the Ollama shape has no type.
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    501: "not_supported_error",
    503: "unavailable_error",
}


class HttpError(Exception):
    """An answer that is an error: status, a message for humans, OpenAI's type/param/code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str | None = None,
        param: str | None = None,
        code: str | int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or OPENAI_TYPES.get(status, "server_error")
        self.param = param
        self.code = code


class ModelNotFound(HttpError):
    def __init__(self, model: str) -> None:
        super().__init__(404, f"model '{model}' not found", param="model", code="model_not_found")


class UpstreamError(HttpError):
    """llama-server answered with an error (or sent one mid-stream)."""


class UpstreamUnavailable(HttpError):
    """llama-server could not be reached, timed out, or died mid-answer."""

    def __init__(self, message: str) -> None:
        super().__init__(502, message, kind="server_error", code="upstream_unavailable")


def note_failure(request: Request, error: HttpError) -> None:
    """For the metrics: the request failed because llama-server did."""
    if isinstance(error, UpstreamUnavailable):
        request.upstream_failure = "unavailable"
    elif isinstance(error, UpstreamError):
        request.upstream_failure = "error"


def ollama_body(error: HttpError) -> dict[str, Any]:
    return {"error": error.message}


def openai_body(error: HttpError) -> dict[str, Any]:
    return {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}}


# llama-server statuses that mean something else to our clients: "not supported" is the client's
# request (400), not a missing feature of the API.
UPSTREAM_STATUS = {501: 400}


def from_upstream(status: int, payload: Any, fallback: str = "") -> UpstreamError:
    """llama-server's ``{"error": {code, message, type}}`` (or any body) as an HttpError."""
    detail = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(detail, dict):
        message, kind = str(detail.get("message") or fallback), detail.get("type")
    elif isinstance(detail, str):
        message, kind = detail, None
    else:
        message, kind = fallback, None
    message = message or f"llama-server answered HTTP {status}"
    return UpstreamError(UPSTREAM_STATUS.get(status, status), message, kind=kind, code=status)

"""Optional API keys: ``Authorization: Bearer <key>`` on every route but the health check.

Keys come from a file (one per line, ``#`` comments; a mounted Kubernetes Secret) and/or an
environment variable (separated by commas or whitespace). No keys: the API is open. Keys are
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import os
import re
from pathlib import Path

from llamacontroller.errors import UserError
from llamacontroller.serving.errors import HttpError
from llamacontroller.serving.metrics import METRICS_PATH
from llamacontroller.serving.web.asgi import Middleware
from llamacontroller.serving.web.middleware import is_openai
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import Answer
from llamacontroller.serving.web.router import Handler

DEFAULT_ENV = "LLAMACONTROLLER_API_KEYS"
# GET/HEAD / answers "Ollama is running" to health checks and to the CLI's first probe; /metrics
# is scraped by Prometheus without a key (counts and the catalog's model names, no request content:
# docs/clients.md).
OPEN_PATHS = frozenset({"/", METRICS_PATH})


def load_api_keys(
    path: str | os.PathLike[str] | None = None, env: str | None = DEFAULT_ENV
) -> frozenset[str]:
    """The keys of the file and of the environment variable. A source that is given but holds no key
    is a UserError: an API meant to be guarded must not open because a Secret came out empty. No
    source at all means no keys (the API is open), and the log says so."""
    keys: set[str] = set()
    if path:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise UserError(f"API keys file {path}: {exc.strerror or exc}") from exc
        from_file = {line.strip() for line in text.splitlines()}
        from_file = {key for key in from_file if key and not key.startswith("#")}
        if not from_file:
            raise UserError(
                f"API keys file {path} holds no key: give one per line, or no file for an open API"
            )
        keys |= from_file
    if env and env in os.environ:
        from_env = {key for key in re.split(r"[,\s]+", os.environ[env]) if key}
        if not from_env:
            raise UserError(f"${env} is set but holds no key: give keys, or unset it for an open API")
        keys |= from_env
    return frozenset(keys)


def describe_keys(keys: frozenset[str]) -> str:
    """For a log line: how many keys, never the keys."""
    return f"{len(keys)} API key(s)" if keys else "no API keys"


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def accepted(token: str | None, keys: frozenset[str]) -> bool:
    """Constant time per key, so the answer's timing tells nothing about a key's prefix."""
    if token is None:
        return False
    given = token.encode()
    found = False
    for key in keys:
        found |= hmac.compare_digest(given, key.encode())
    return found


CONSOLE_PREFIX = "/ui"  # the web console signs its users in itself (console/session.py)


def needs_key(method: str, path: str) -> bool:
    if path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/"):
        return False
    return not (path in OPEN_PATHS and method in ("GET", "HEAD"))


def require_keys(keys: frozenset[str]) -> Middleware:
    """A request without one of ``keys`` is a 401 in the API's shape (the health check stays open)."""

    async def middleware(request: Request, handler: Handler) -> Answer:
        given = request.headers(b"authorization")  # two are refused: which one would count?
        token = bearer_token(given[0]) if len(given) == 1 else None
        if needs_key(request.method, request.path) and not accepted(token, keys):
            message = "Invalid or missing API key" if is_openai(request) else "unauthorized"
            raise HttpError(401, message, code="invalid_api_key")
        return await handler(request)

    return middleware

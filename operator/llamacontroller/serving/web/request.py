"""A request as the handlers see it: its body read whole, and how its answer goes out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from llamacontroller.serving.codec import loads
from llamacontroller.serving.errors import HttpError

if TYPE_CHECKING:
    from llamacontroller.serving.web.asgi import App

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


NO_MODEL = "none"  # the metrics' model label of a request that names no model (listings, version)


class ClientGone(Exception):
    """The client disconnected before its request's body was complete."""


class Request:
    """One request: its headers at once, its body once the app has read it (after the middlewares
    that need only the headers, such as the API key check); ``match_info`` holds the route's path
    parameter."""

    __slots__ = (
        "_send",
        "app",
        "arrived",
        "body",
        "body_read",
        "client_gone",
        "done",
        "first_write",
        "in_memory",
        "last_write",
        "match_info",
        "method",
        "model",
        "path",
        "receive",
        "remote",
        "scope",
        "status",
        "tail",
        "tokens",
        "upstream_failure",
        "watcher",
    )

    def __init__(self, app: App, scope: Scope, receive: Receive, send: Send) -> None:
        self.app = app
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.remote: str = (scope.get("client") or ("-",))[0]
        self.body = b""
        self.body_read = False  # until then its bytes are on the wire: an early answer closes
        self.in_memory = 0  # bytes of the app's body budget this request holds
        self.match_info: dict[str, str] = {}
        self.status = 0  # the status sent, once the answer started
        self.done = False  # the answer's last byte is on its way: a disconnect now cancels nothing
        self.client_gone = False
        self.watcher: asyncio.Future[None] | None = None  # cancels the handler if the client leaves
        self._send = send
        # What the metrics (serving/metrics.py) read once the request is done:
        self.arrived = time.monotonic()
        self.model = NO_MODEL  # the catalog's name of the model served, once resolved
        self.first_write = 0.0  # when a streamed answer's first and last bytes went out
        self.last_write = 0.0
        self.tokens: tuple[int, int] | None = None  # prompt and generated tokens, from llama-server
        self.tail = b""  # the end of a relayed OpenAI answer, where its usage is
        self.upstream_failure: str | None = None  # "error" or "unavailable" when llama-server failed

    def headers(self, name: bytes) -> list[str]:
        """Every value of a request header, by its lower-case name."""
        return [value.decode("latin-1") for key, value in self.scope["headers"] if key == name]

    def header(self, name: bytes) -> str | None:
        """A request header by its lower-case name (ASGI servers lower-case them)."""
        for key, value in self.scope["headers"]:
            if key == name:
                text: str = value.decode("latin-1")
                return text
        return None

    def json_object(self, *, empty: bool = True) -> dict[str, Any]:
        """The body's JSON object (an empty body is ``{}`` if ``empty``); anything else is a 400."""
        raw = self.body
        try:
            body = loads(raw) if raw.strip() or not empty else {}
        except ValueError as exc:
            raise HttpError(400, f"invalid JSON body: {exc}") from exc
        if not isinstance(body, dict):
            raise HttpError(400, "the body must be a JSON object")
        return body

    async def start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        self.status = status
        encoded = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers]
        await self._send({"type": "http.response.start", "status": status, "headers": encoded})

    async def write(self, data: bytes, *, last: bool = False) -> None:
        if last:
            self.done = True
        await self._send({"type": "http.response.body", "body": data, "more_body": not last})

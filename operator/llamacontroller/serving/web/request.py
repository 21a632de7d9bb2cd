"""A request as the handlers see it: its body read whole, and how its answer goes out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from llamacontroller.serving.codec import loads
from llamacontroller.serving.errors import HttpError

if TYPE_CHECKING:
    from llamacontroller.serving.web.asgi import App

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Request:
    """One request with its body read; ``match_info`` holds the route's path parameter."""

    __slots__ = (
        "_send",
        "app",
        "body",
        "client_gone",
        "done",
        "match_info",
        "method",
        "oversized",
        "path",
        "remote",
        "scope",
        "status",
    )

    def __init__(self, app: App, scope: Scope, body: bytes | None, send: Send) -> None:
        self.app = app
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.remote: str = (scope.get("client") or ("-",))[0]
        self.body = body or b""
        self.oversized = body is None  # larger than the app's max_body: answered 413, unread
        self.match_info: dict[str, str] = {}
        self.status = 0  # the status sent, once the answer started
        self.done = False  # the answer's last byte is on its way: a disconnect now cancels nothing
        self.client_gone = False
        self._send = send

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

"""A plain ASGI app for the API routes: requests, responses, streams, routing, lifespan.

Every request to a model passes through it, so it is as thin as uvicorn allows: in the relay of
bench/adapter_overhead.py, aiohttp's web server cost 0.3 ms per request more than uvicorn with a
plain ASGI app. What a web framework would have given and the API needs is here:

- the whole body is read before the handler runs, up to ``max_body`` (beyond it: 413);
- a client that disconnects cancels its handler (and with it the upstream request, so llama-server
  stops generating): ASGI only reports the disconnect to whoever awaits ``receive``, so a watcher
  does while the handler runs;
- middlewares wrap the dispatch, as in aiohttp: errors take the called API's shape there;
- the lifespan enters the app's contexts (clients, background tasks) and leaves them on shutdown;
- one access-log line per request, without headers (API keys travel in them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from llamacontroller.serving.errors import ApiError

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's status for the access log of a request whose client went away

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Response:
    """A whole answer: status, body, content type and any extra headers."""

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        body: bytes = b"",
        status: int = 200,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.content_type = content_type
        self.headers = headers or {}


def text_response(text: str, status: int = 200) -> Response:
    return Response(text.encode(), status, "text/plain; charset=utf-8")


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
        self.remote = (scope.get("client") or ("-",))[0]
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
                return value.decode("latin-1")
        return None

    async def start(self, status: int, headers: Iterable[tuple[str, str]]) -> None:
        self.status = status
        encoded = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers]
        await self._send({"type": "http.response.start", "status": status, "headers": encoded})

    async def write(self, data: bytes, *, last: bool = False) -> None:
        if last:
            self.done = True
        await self._send({"type": "http.response.body", "body": data, "more_body": not last})

    async def respond(self, response: Response) -> None:
        headers = {"Content-Type": response.content_type, "Content-Length": str(len(response.body))}
        await self.start(response.status, (headers | response.headers).items())
        await self.write(response.body, last=True)


class Stream:
    """An answer sent piece by piece (chunked) as the handler writes it."""

    def __init__(self, request: Request, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.request = request
        self.status = status
        self.headers = headers or {}

    async def prepare(self) -> None:
        await self.request.start(self.status, self.headers.items())

    async def write(self, data: bytes) -> None:
        await self.request.write(data)

    async def finish(self) -> Stream:
        await self.request.write(b"", last=True)
        return self


Handler = Callable[[Request], Awaitable[Response | Stream]]
Middleware = Callable[[Request, Handler], Awaitable[Response | Stream]]
Lifecycle = Callable[["App"], contextlib.AbstractAsyncContextManager[None]]


class Router:
    """Exact paths, and paths ending in one ``{parameter}`` that takes the rest of the path."""

    def __init__(self) -> None:
        self.exact: dict[str, dict[str, Handler]] = {}
        self.prefixed: list[tuple[str, str, dict[str, Handler]]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        """``method`` ``*`` answers any; a GET route answers HEAD too."""
        head, brace, rest = path.partition("{")
        if brace:
            param = rest.rstrip("}")
            methods = next((m for p, n, m in self.prefixed if (p, n) == (head, param)), None)
            if methods is None:
                methods = {}
                self.prefixed.append((head, param, methods))
        else:
            methods = self.exact.setdefault(path, {})
        methods[method] = handler
        if method == "GET":
            methods.setdefault("HEAD", handler)

    def match(self, request: Request) -> Handler:
        """The handler; 404 for an unknown path (in Ollama's words), 405 for a known one."""
        methods = self.exact.get(request.path)
        if methods is None:
            for prefix, param, candidate in self.prefixed:
                if request.path.startswith(prefix) and len(request.path) > len(prefix):
                    request.match_info[param] = request.path[len(prefix) :]
                    methods = candidate
                    break
            else:
                raise ApiError(404, "404 page not found")
        handler = methods.get(request.method) or methods.get("*")
        if handler is None:
            raise ApiError(405, "405 method not allowed")
        return handler


class App:
    """The ASGI application: ``router`` for the routes, ``state`` for what handlers share."""

    def __init__(
        self,
        middlewares: Iterable[Middleware] = (),
        *,
        max_body: int,
        access_log: logging.Logger | None = None,
    ) -> None:
        self.router = Router()
        self.state: dict[str, Any] = {}
        self.lifecycle: list[Lifecycle] = []
        self.max_body = max_body
        self.access_log = access_log
        self.handler: Handler = self._dispatch
        for middleware in reversed(list(middlewares)):
            self.handler = _wrap(middleware, self.handler)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _dispatch(self, request: Request) -> Response | Stream:
        if request.oversized:
            raise ApiError(413, f"the request body is larger than {self.max_body} bytes")
        return await self.router.match(request)(request)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.monotonic()
        try:
            body = await self._read_body(scope, receive)
        except ClientGone:
            return
        request = Request(self, scope, body, send)
        task = asyncio.current_task()
        assert task is not None
        watcher = asyncio.ensure_future(self._cancel_on_disconnect(request, receive, task))
        try:
            answer = await self.handler(request)
            if isinstance(answer, Response) and not request.status:
                if request.oversized:  # its body is still on the wire: do not read it as a request
                    answer.headers["Connection"] = "close"
                await request.respond(answer)
            elif not request.done:
                log.error("%s %s: the answer ended before it was complete", request.method, request.path)
        except asyncio.CancelledError:
            if not request.client_gone:
                raise  # not the client's disconnect: the server is stopping
            task.uncancel()
            log.info("%s %s: the client went away; the request is cancelled", request.method, request.path)
        finally:
            watcher.cancel()
        if self.access_log is not None:
            self.access_log.info(
                '%s "%s %s" %d %.0fms',
                request.remote,
                request.method,
                request.path,
                request.status or CLIENT_CLOSED_REQUEST,
                (time.monotonic() - started) * 1e3,
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to exceed ``max_body``."""
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), b"0")
        if declared.isdigit() and int(declared) > self.max_body:
            return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    @staticmethod
    async def _cancel_on_disconnect(request: Request, receive: Receive, handler: asyncio.Task[Any]) -> None:
        """Cancel the handler when its client goes away before the answer is complete."""
        while (await receive())["type"] != "http.disconnect":
            pass  # only the unread rest of an oversized body arrives before the disconnect
        if not request.done:
            request.client_gone = True
            handler.cancel()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        async with contextlib.AsyncExitStack() as contexts:
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    try:
                        for context in self.lifecycle:
                            await contexts.enter_async_context(context(self))
                    except Exception as exc:
                        log.exception("the app failed to start")
                        await send({"type": "lifespan.startup.failed", "message": str(exc)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await contexts.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return


class ClientGone(Exception):
    """The client disconnected before its request's body was complete."""


def _wrap(middleware: Middleware, inner: Handler) -> Handler:
    async def handler(request: Request) -> Response | Stream:
        return await middleware(request, inner)

    return handler

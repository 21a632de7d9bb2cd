"""The ASGI application under the API routes: bodies, dispatch, disconnects, lifespan, access log.

Every request to a model passes through it, so it is as thin as uvicorn allows (the measurement
that chose it: docs/decisions/serving-stack.md). What the API needs of a web framework is here:

- the whole body is read before the handler runs, up to ``max_body`` (beyond it: 413);
- a client that disconnects cancels its handler (and with it the upstream request, so llama-server
  stops generating): ASGI only reports the disconnect to whoever awaits ``receive``, so a watcher
  does while the handler runs;
- middlewares wrap the dispatch: errors take the called API's shape there;
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

from llamacontroller.serving.errors import HttpError
from llamacontroller.serving.web.request import Receive, Request, Scope, Send
from llamacontroller.serving.web.response import Answer, Response
from llamacontroller.serving.web.router import Handler, Router

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's status for the access log of a request whose client went away

Middleware = Callable[[Request, Handler], Awaitable[Answer]]
Lifecycle = Callable[["App"], contextlib.AbstractAsyncContextManager[None]]


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

    async def _dispatch(self, request: Request) -> Answer:
        if request.oversized:
            raise HttpError(413, f"the request body is larger than {self.max_body} bytes")
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
                await answer.send(request)
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
            chunk: bytes = message.get("body", b"")
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
    async def handler(request: Request) -> Answer:
        return await middleware(request, inner)

    return handler

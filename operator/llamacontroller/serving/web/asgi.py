"""The ASGI application under the API routes: bodies, dispatch, disconnects, lifespan, access log.

Every request to a model passes through it, so it is as thin as uvicorn allows (the measurement
that chose it: docs/decisions/serving-stack.md). What the API needs of a web framework is here:

- middlewares wrap the dispatch and see the headers before the body is read: a request without a
  valid API key is refused without reading a byte of it, errors take the called API's shape;
- the body is read whole before the route's handler runs, within bounds that keep memory well
  under a sidecar's limit: ``max_body`` per request (beyond it: 413, unread), ``body_budget`` for
  all bodies held at once (beyond it: 503, unread), ``body_timeout`` to arrive (a slow client: 408);
  an answer given before the body was read closes the connection, so its rest is never read;
- a client that disconnects cancels its handler (and with it the upstream request, so llama-server
  stops generating): ASGI only reports the disconnect to whoever awaits ``receive``, so a watcher
  does while the handler runs;
- the lifespan enters the app's contexts (clients, background tasks) and leaves them on shutdown;
- one access-log line per request, without headers (API keys travel in them);
- an observer (the metrics, ``serving/metrics.py``) is told when each request starts and ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

from llamacontroller.serving.errors import HttpError
from llamacontroller.serving.web.request import ClientGone, Receive, Request, Scope, Send
from llamacontroller.serving.web.response import Answer, Response
from llamacontroller.serving.web.router import Handler, Router

log = logging.getLogger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's status for the access log of a request whose client went away
BODY_TIMEOUT = 60.0  # seconds a request's body may take to arrive whole

Middleware = Callable[[Request, Handler], Awaitable[Answer]]
Lifecycle = Callable[["App"], contextlib.AbstractAsyncContextManager[None]]


class Observer(Protocol):
    """Told of every request: when it arrives, and when it is done (answered, refused or gone)."""

    def started(self, request: Request) -> None: ...

    def finished(self, request: Request, router: Router, seconds: float) -> None: ...


class App:
    """The ASGI application: ``router`` for the routes, ``state`` for what handlers share."""

    def __init__(
        self,
        middlewares: Iterable[Middleware] = (),
        *,
        max_body: int,
        body_budget: int | None = None,
        body_timeout: float = BODY_TIMEOUT,
        access_log: logging.Logger | None = None,
    ) -> None:
        self.router = Router()
        self.state: dict[str, Any] = {}
        self.lifecycle: list[Lifecycle] = []
        self.max_body = max_body
        self.body_budget = max_body if body_budget is None else body_budget
        self.body_timeout = body_timeout
        self.in_memory = 0  # bytes of request bodies held now
        self.access_log = access_log
        self.observer: Observer | None = None
        self.handler: Handler = self._dispatch
        for middleware in reversed(list(middlewares)):
            self.handler = _wrap(middleware, self.handler)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _dispatch(self, request: Request) -> Answer:
        """The route (an unknown one is answered unread), the body, then the route's handler; from
        here on a client that leaves cancels the request."""
        handler = self.router.match(request)
        await self._read_body(request)
        task = asyncio.current_task()
        assert task is not None
        request.watcher = asyncio.ensure_future(self._cancel_on_disconnect(request, task))
        return await handler(request)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(self, scope, receive, send)
        started = request.arrived
        observer = self.observer
        if observer is not None:
            observer.started(request)
        try:
            answer = await self.handler(request)
            if isinstance(answer, Response) and not request.status:
                if not request.body_read:  # its body is still on the wire: do not read it as a request
                    answer.headers["Connection"] = "close"
                await answer.send(request)
            elif not request.done:
                log.error("%s %s: the answer ended before it was complete", request.method, request.path)
        except ClientGone:
            request.client_gone = True
        except asyncio.CancelledError:
            if not request.client_gone:
                raise  # not the client's disconnect: the server is stopping
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()
            log.info("%s %s: the client went away; the request is cancelled", request.method, request.path)
        finally:
            if request.watcher is not None:
                request.watcher.cancel()
            self.in_memory -= request.in_memory
            seconds = time.monotonic() - started
            if observer is not None:
                observer.finished(request, self.router, seconds)
        if self.access_log is not None:
            self.access_log.info(
                '%s "%s %s" %d %.0fms',
                request.remote,
                request.method,
                request.path,
                request.status or CLIENT_CLOSED_REQUEST,
                seconds * 1e3,
            )

    def _hold(self, request: Request, size: int) -> None:
        """Count ``size`` more bytes of this request's body against the budget, or refuse it."""
        if size > self.max_body:
            raise HttpError(413, f"the request body is larger than {self.max_body} bytes")
        more = size - request.in_memory  # beyond what it declared, or what arrived before
        if more <= 0:
            return
        if self.in_memory + more > self.body_budget:
            raise HttpError(503, "too many large requests at once: try again in a moment")
        self.in_memory += more
        request.in_memory += more

    async def _read_body(self, request: Request) -> None:
        """The whole body into ``request.body``, within the bounds; HttpError before any byte is
        read when its declared length is out of bounds, ClientGone when the client leaves."""
        declared = next((v for k, v in request.scope["headers"] if k == b"content-length"), b"0")
        self._hold(request, int(declared) if declared.isdigit() else 0)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await request.receive()
                    if message["type"] != "http.request":
                        raise ClientGone
                    chunk: bytes = message.get("body", b"")
                    size += len(chunk)
                    self._hold(request, size)
                    chunks.append(chunk)
                    if not message.get("more_body"):
                        break
        except TimeoutError as exc:
            raise HttpError(408, f"the request body did not arrive within {self.body_timeout:.0f} s") from exc
        request.body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        request.body_read = True

    @staticmethod
    async def _cancel_on_disconnect(request: Request, handler: asyncio.Task[Any]) -> None:
        """Cancel the handler when its client goes away before the answer is complete."""
        while (await request.receive())["type"] != "http.disconnect":
            pass
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


def _wrap(middleware: Middleware, inner: Handler) -> Handler:
    async def handler(request: Request) -> Answer:
        return await middleware(request, inner)

    return handler

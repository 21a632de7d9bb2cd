"""Answers: whole (``Response``) or sent piece by piece as the handler writes (``StreamedResponse``)."""

from __future__ import annotations

import time
from typing import Any

from llamacontroller.serving.codec import dumps
from llamacontroller.serving.web.request import Request


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

    async def send(self, request: Request) -> None:
        headers = {"Content-Type": self.content_type, "Content-Length": str(len(self.body))}
        await request.start(self.status, (headers | self.headers).items())
        await request.write(self.body, last=True)


class StreamedResponse:
    """An answer sent (chunked) piece by piece as the handler writes it."""

    __slots__ = ("headers", "request", "status")

    def __init__(self, request: Request, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.request = request
        self.status = status
        self.headers = headers or {}

    async def prepare(self) -> None:
        await self.request.start(self.status, self.headers.items())

    async def write(self, data: bytes) -> None:
        request = self.request
        request.last_write = time.monotonic()
        if not request.first_write:
            request.first_write = request.last_write
        await request.write(data)

    async def finish(self) -> StreamedResponse:
        await self.request.write(b"", last=True)
        return self


Answer = Response | StreamedResponse


def text_response(text: str, status: int = 200) -> Response:
    return Response(text.encode(), status, "text/plain; charset=utf-8")


def json_response(body: Any, status: int = 200) -> Response:
    return Response(dumps(body) + b"\n", status)

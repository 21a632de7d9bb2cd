"""An Ollama stream on the wire: one JSON object per line, each line sent as soon as it is written."""

from __future__ import annotations

import logging
from typing import Any

from llamacontroller.serving.codec import dumps
from llamacontroller.serving.errors import HttpError, note_failure, ollama_body
from llamacontroller.serving.web.request import Request
from llamacontroller.serving.web.response import StreamedResponse

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


class NdjsonWriter:
    def __init__(self, request: Request) -> None:
        self.request = request
        self.response = StreamedResponse(request, headers={"Content-Type": NDJSON})

    async def start(self) -> None:
        await self.response.prepare()

    async def write(self, chunk: Any) -> None:
        await self.response.write(dumps(chunk) + b"\n")

    async def write_all(self, chunks: list[Any]) -> None:
        """Lines that are ready together go out in one write (none: nothing is sent)."""
        if chunks:
            await self.response.write(b"".join([dumps(chunk) + b"\n" for chunk in chunks]))

    async def error(self, error: HttpError) -> None:
        """A failure after the stream started: status 200 is gone, the last line says it."""
        log.warning("%s %s failed mid-stream: %s", self.request.method, self.request.path, error.message)
        note_failure(self.request, error)
        await self.write(ollama_body(error))

    async def finish(self) -> StreamedResponse:
        return await self.response.finish()

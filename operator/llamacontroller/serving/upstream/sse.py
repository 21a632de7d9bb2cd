"""llama-server's server-sent events, split into payloads without decoding text twice.

llama-server writes ``data: {json}`` events separated by blank lines, ``data: [DONE]`` at the end
of OpenAI streams, and ``error: {json}`` for some failures. Comment lines (``:``) and blank lines
carry nothing. Chunks from the socket may end anywhere, so a partial line waits for the next chunk.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from llamacontroller.serving.codec import loads
from llamacontroller.serving.errors import UpstreamUnavailable

DONE = b"[DONE]"


class Event(NamedTuple):
    field: bytes  # b"data" or b"error"
    payload: bytes


class SseDecoder:
    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> list[Event]:
        """The complete events in the bytes seen so far."""
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        return [event for line in lines if (event := parse_line(line)) is not None]

    def close(self) -> list[Event]:
        """What a stream that ended without a final newline still held."""
        rest, self._partial = self._partial, b""
        event = parse_line(rest)
        return [] if event is None else [event]


def parse_line(line: bytes) -> Event | None:
    field, sep, value = line.partition(b":")
    if not sep or field not in (b"data", b"error"):
        return None  # blank line, comment, or a field we do not use (event:, id:, retry:)
    return Event(field, value.strip())


def parse_event(event: Event) -> Any:
    """An event's JSON; an ``error:`` event becomes ``{"error": ...}`` like a ``data:`` error."""
    try:
        value = loads(event.payload)
    except ValueError as exc:
        raise UpstreamUnavailable(
            f"llama-server sent an event that is no JSON: {event.payload[:200]!r}"
        ) from exc
    return {"error": value} if event.field == b"error" else value

"""``/api/generate``'s prompt through the model's chat template, without a round trip per request.

llama-server renders templates on ``/apply-template``, but that costs milliseconds per call (more
than everything else the adapter does). Most templates place the system prompt and the user prompt
verbatim, so a rendering with placeholder texts is a skeleton every prompt fits into. The skeleton
is trusted only when two renderings with different placeholders agree on everything else (a
template that inspects or trims the text fails that test and keeps the round trip), and it expires
after a minute (templates may print today's date).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from llamacontroller.serving import ollama
from llamacontroller.serving.upstream import Upstream

TTL = 60.0
SLOTS = ("system", "prompt")
PLACEHOLDERS = (
    {"system": "LLCSYSTEMSLOTAQX", "prompt": "LLCPROMPTSLOTBZW"},
    {"system": "LLCSYSTEMSLOTKJV", "prompt": "LLCPROMPTSLOTMYT"},
)

Key = tuple[bool, str]  # (has a system prompt, the think kwargs)


@dataclass(frozen=True)
class Skeleton:
    """Literal pieces with slot names between them: ``pieces[0] slot[0] pieces[1] ...``."""

    pieces: tuple[str, ...]
    slots: tuple[str, ...]

    def fill(self, values: dict[str, str]) -> str:
        out = [self.pieces[0]]
        for slot, piece in zip(self.slots, self.pieces[1:], strict=True):
            out += [values[slot], piece]
        return "".join(out)


def split(rendered: str, placeholders: dict[str, str]) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The literal pieces and slot order of a rendering; None unless each placeholder is there once."""
    names = {text: slot for slot, text in placeholders.items()}
    parts = re.split("(" + "|".join(map(re.escape, names)) + ")", rendered)
    slots = tuple(names[text] for text in parts[1::2])
    if sorted(slots) != sorted(placeholders):
        return None
    return tuple(parts[0::2]), slots


def generate_request(body: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """The generate body with its texts replaced (the rest, e.g. ``think``, kept)."""
    return {**body, "system": values.get("system", ""), "prompt": values["prompt"], "images": None}


class PromptRenderer:
    """Renders non-raw generate prompts for one upstream; skeletons cached per (system?, think)."""

    def __init__(self, upstream: Upstream, ttl: float = TTL) -> None:
        self.upstream = upstream
        self.ttl = ttl
        # None: this template does not take placeholders, render remotely (until the entry expires)
        self._cache: dict[Key, tuple[Skeleton | None, float]] = {}
        self._locks: dict[Key, asyncio.Lock] = {}

    async def remote(self, body: dict[str, Any]) -> str:
        answer = await self.upstream.post_json("/apply-template", ollama.template_body(body))
        return answer["prompt"]

    async def render(self, body: dict[str, Any]) -> str:
        values = {"prompt": ollama.field(body, "prompt", str, "")}
        system = ollama.field(body, "system", str)
        if system:
            values["system"] = system
        key = (bool(system), repr(ollama.think_fields(body)))
        skeleton = await self._skeleton(key, body, list(values))
        return skeleton.fill(values) if skeleton else await self.remote(body)

    async def _skeleton(
        self, key: tuple[bool, str], body: dict[str, Any], slots: list[str]
    ) -> Skeleton | None:
        entry = self._cache.get(key)
        if entry is None or entry[1] <= time.monotonic():
            async with self._locks.setdefault(key, asyncio.Lock()):
                entry = self._cache.get(key)
                if entry is None or entry[1] <= time.monotonic():
                    entry = (await self._build(body, slots), time.monotonic() + self.ttl)
                    self._cache[key] = entry
        return entry[0]

    async def _build(self, body: dict[str, Any], slots: list[str]) -> Skeleton | None:
        found = []
        for placeholders in PLACEHOLDERS:
            values = {slot: placeholders[slot] for slot in slots}
            rendered = await self.remote(generate_request(body, values))
            found.append(split(rendered, values))
        if found[0] is None or found[0] != found[1]:
            return None
        return Skeleton(*found[0])

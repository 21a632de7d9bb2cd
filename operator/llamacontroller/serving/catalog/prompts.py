"""Prompts through the model's chat template, without a round trip per request.

llama-server renders templates on ``/apply-template`` (and inside its chat endpoint), but that costs
milliseconds per call: more than everything else the adapter does. Most templates place each
message's text verbatim (or trimmed), so a rendering of placeholder texts is a skeleton every
conversation of the same roles fits into. A skeleton is built from one rendering and trusted only if
it reproduces a second rendering with other placeholders exactly; the placeholders carry whitespace
at both ends, so a template that trims them is seen and the skeleton trims too. A template that
inspects the text in any other way fails that test and keeps the round trip; so does a text that is
empty or ends in whitespace the test did not cover. Skeletons expire after a minute (templates may
print today's date); one still in use is rebuilt in the background during its last quarter minute,
so that a model with steady traffic never has a request wait for a build.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llamacontroller.serving.errors import HttpError
from llamacontroller.serving.upstream.llama_server import Upstream

log = logging.getLogger(__name__)

TTL = 60.0
RENEW = 15.0  # seconds before a skeleton expires: a request that uses it has it rebuilt
MAX_SHAPES = 64  # cached skeletons per server (a chat's shape grows with every turn)
PAD = " \t\n"  # around each placeholder: whitespace a trimming template removes
VARIANTS = ("AQX", "KJV")  # two placeholder sets: the second checks the skeleton of the first

Text = tuple[str, str]  # (role, content): a message as the skeletons take it
Shape = tuple[tuple[str, ...], str]  # the roles in order and the template's kwargs


def placeholders(count: int, variant: str) -> list[str]:
    return [f"LLC{variant}SLOT{index}Q" for index in range(count)]


@dataclass(frozen=True)
class Skeleton:
    """Literal pieces with message texts between them: ``pieces[0] text[slots[0]] pieces[1] ...``;
    ``trimmed[i]``: the template strips the text of gap ``i``."""

    pieces: tuple[str, ...]
    slots: tuple[int, ...]
    trimmed: tuple[bool, ...]

    def fill(self, contents: Sequence[str]) -> str | None:
        """The rendering, or None if a text is outside what the skeleton was tested with."""
        out = [self.pieces[0]]
        for slot, trim, piece in zip(self.slots, self.trimmed, self.pieces[1:], strict=True):
            text = contents[slot].strip(PAD) if trim else contents[slot]
            if not text.strip() or (trim and (text[0].isspace() or text[-1].isspace())):
                return None  # templates may test for an empty text; other spaces may trim otherwise
            out += [text, piece]
        return "".join(out)


def skeleton_of(rendered: str, cores: Sequence[str]) -> Skeleton | None:
    """The skeleton of a rendering of ``PAD + core + PAD`` texts; None unless each core is there
    once, with its padding whole (verbatim) or gone on both sides (trimmed)."""
    slot_of = {core: index for index, core in enumerate(cores)}
    parts = re.split("(" + "|".join(map(re.escape, cores)) + ")", rendered)
    pieces, slots, trimmed = [parts[0]], [], []
    for core, after in zip(parts[1::2], parts[2::2], strict=True):
        before = pieces[-1]
        padded = (before.endswith(PAD), after.startswith(PAD))
        if padded == (True, True):
            pieces[-1], after = before[: -len(PAD)], after[len(PAD) :]
        elif padded != (False, False):
            return None
        slots.append(slot_of[core])
        trimmed.append(padded == (False, False))
        pieces.append(after)
    if sorted(slots) != list(range(len(cores))):
        return None
    return Skeleton(tuple(pieces), tuple(slots), tuple(trimmed))


@dataclass(frozen=True)
class Entry:
    """A cached skeleton; None: the shape does not fit one and renders remotely until it expires."""

    skeleton: Skeleton | None
    expires: float


def template_body(texts: Sequence[Text], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The ``/apply-template`` request for these messages (kwargs: e.g. the think fields)."""
    return {"messages": [{"role": role, "content": content} for role, content in texts], **kwargs}


class PromptRenderer:
    """Renders prompts for one upstream from skeletons cached per shape (roles and kwargs)."""

    def __init__(self, upstream: Upstream, ttl: float = TTL, renew: float = RENEW) -> None:
        if not 0 <= renew < ttl:
            raise ValueError(f"renew ({renew} s) must be shorter than the ttl ({ttl} s)")
        self.upstream = upstream
        self.ttl = ttl
        self.renew = renew
        self._cache: dict[Shape, Entry] = {}
        self._lock = asyncio.Lock()  # one build at a time: builds are rare, and cost the server
        self._building = False  # a build in the background: a chat's second request, or a renewal
        self._seen: dict[Shape, bool] = {}  # shapes asked for once, for ``cached``

    async def remote(self, texts: Sequence[Text], kwargs: dict[str, Any]) -> str:
        answer = await self.upstream.post_json("/apply-template", template_body(texts, kwargs))
        prompt: str = answer["prompt"]
        return prompt

    async def render(self, texts: Sequence[Text], kwargs: dict[str, Any]) -> str:
        """The prompt now: from a skeleton (built first if there is none) or rendered remotely."""
        shape = shape_of(texts, kwargs)
        entry = self._fresh(shape, kwargs)
        skeleton = entry.skeleton if entry else await self._build(shape, kwargs)
        prompt = skeleton.fill([content for _, content in texts]) if skeleton else None
        return prompt if prompt is not None else await self.remote(texts, kwargs)

    def cached(self, texts: Sequence[Text], kwargs: dict[str, Any]) -> str | None:
        """The prompt if a skeleton for its shape is ready, else None (the caller takes another way).

        The second request of a shape has its skeleton built in the background, for the next ones:
        a conversation's shape grows with every turn, so building on the first request would
        build for each turn of a chat a skeleton nobody uses."""
        shape = shape_of(texts, kwargs)
        entry = self._fresh(shape, kwargs)
        if entry is None:
            if shape not in self._seen:
                remember(self._seen, shape, True)
            else:
                self._build_in_background(shape, kwargs)
            return None
        return entry.skeleton.fill([content for _, content in texts]) if entry.skeleton else None

    def _build_in_background(self, shape: Shape, kwargs: dict[str, Any]) -> None:
        if not self._building:  # one at a time, none queued: a later request asks again
            self._building = True
            task = self.upstream.client.spawn(self._build_quietly(shape, kwargs))
            task.add_done_callback(self._built)

    def _built(self, _: object) -> None:
        self._building = False

    def _fresh(self, shape: Shape, kwargs: dict[str, Any]) -> Entry | None:
        """The shape's entry unless it expired; one about to expire is rebuilt meanwhile."""
        entry = self._cache.get(shape)
        if entry is None or entry.expires <= time.monotonic():
            return None
        if self._due(entry):
            self._build_in_background(shape, kwargs)
        return entry

    def _due(self, entry: Entry) -> bool:
        return entry.expires - time.monotonic() < self.renew

    async def _build(self, shape: Shape, kwargs: dict[str, Any]) -> Skeleton | None:
        async with self._lock:
            entry = self._cache.get(shape)
            if entry is None or self._due(entry):  # else built while this waited for the lock
                entry = self._remember(shape, await self._skeleton(shape[0], kwargs))
            return entry.skeleton

    async def _build_quietly(self, shape: Shape, kwargs: dict[str, Any]) -> None:
        try:
            await self._build(shape, kwargs)
        except HttpError as exc:  # the request that asked went another way; the next one asks again
            log.debug("no skeleton for %s: %s", shape[0], exc.message)

    async def _skeleton(self, roles: tuple[str, ...], kwargs: dict[str, Any]) -> Skeleton | None:
        cores = [placeholders(len(roles), variant) for variant in VARIANTS]
        texts = [[PAD + core + PAD for core in variant] for variant in cores]
        rendered = [await self.remote(list(zip(roles, variant, strict=True)), kwargs) for variant in texts]
        skeleton = skeleton_of(rendered[0], cores[0])
        if skeleton is None or skeleton.fill(texts[1]) != rendered[1]:
            return None
        return skeleton

    def _remember(self, shape: Shape, skeleton: Skeleton | None) -> Entry:
        entry = Entry(skeleton, time.monotonic() + self.ttl)
        remember(self._cache, shape, entry)
        return entry


def remember(cache: dict[Shape, Any], shape: Shape, value: Any) -> None:
    """Store, keeping at most MAX_SHAPES entries: the oldest goes first."""
    cache.pop(shape, None)
    while len(cache) >= MAX_SHAPES:
        del cache[next(iter(cache))]
    cache[shape] = value


def shape_of(texts: Sequence[Text], kwargs: dict[str, Any]) -> Shape:
    return tuple(role for role, _ in texts), repr(kwargs)

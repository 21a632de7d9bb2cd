"""Generate prompts rendered from a cached skeleton equal llama-server's own rendering."""

from __future__ import annotations

import asyncio

import pytest

from llamacontroller.serving.prompts import PromptRenderer
from llamacontroller.serving.upstream import Upstream, make_client
from tests.serving.conftest import Stack

pytestmark = pytest.mark.timeout(120)

BODIES = [
    {"prompt": "hello"},
    {"prompt": "  spaces and\nnew lines  ", "system": "be brief"},
    {"prompt": 'quotes " and {{ braces }} and <|im_end|>', "system": "ünïcödé"},
    {"prompt": "", "system": "only a system prompt"},
    {"prompt": "think", "think": False},
]


def test_skeleton_renderings_equal_llama_servers_without_a_round_trip_each(chat_stack: Stack):
    templated: list[str] = []
    counting = False

    def count(what: str, detail: str) -> None:
        if counting and detail == "POST /apply-template":
            templated.append(detail)

    async def scenario() -> tuple[list[str], list[str], int]:
        nonlocal counting
        async with make_client(observer=count) as client:
            renderer = PromptRenderer(Upstream(chat_stack.upstream, client))
            remote = [await renderer.remote(body) for body in BODIES]
            first = [await renderer.render(body) for body in BODIES]  # builds one skeleton per kind
            counting = True
            again = [await renderer.render(body) for body in BODIES]
            return remote, first + again, len(templated)

    remote, rendered, round_trips = asyncio.run(scenario())
    assert rendered == remote + remote
    assert round_trips == 0

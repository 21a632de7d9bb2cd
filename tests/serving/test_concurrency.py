"""Many clients at once through the adapter: every answer arrives whole, and the clients that leave
mid-stream stop their generations, as one client alone does (test_streaming.py).

A burst on a two-slot llama-server: most requests wait for a slot, so the adapter holds many
upstream connections at once (streamed ones, which llama-server closes after each answer, and kept
alive ones), while clients leave in the middle of theirs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.support.polling import eventually
from tests.support.stacks import MODEL, Stack, busy_slots

pytestmark = pytest.mark.timeout(180)

PER_KIND = 16
SHORT = {"num_predict": 4, "temperature": 0}  # greedy: four tokens, no end of text before
ENDLESS = 200_000  # tokens: minutes of generation, unless the client's leaving stops it


async def ollama_answers(url: str) -> list[Any]:
    client = ollama.AsyncClient(host=url, timeout=120)
    messages = [{"role": "user", "content": "hi"}]

    async def streamed(chunks: Any) -> Any:
        return [chunk async for chunk in chunks][-1]

    try:
        return [
            await client.generate(model=MODEL, prompt="hello", options=SHORT),
            await streamed(await client.generate(model=MODEL, prompt="hello", options=SHORT, stream=True)),
            await client.chat(model=MODEL, messages=messages, options=SHORT),
            await streamed(await client.chat(model=MODEL, messages=messages, options=SHORT, stream=True)),
        ]
    finally:
        await client.close()  # the client has no __aenter__ (ollama 0.6.3)


async def openai_answers(url: str) -> list[str | None]:
    async with openai.AsyncOpenAI(
        base_url=f"{url}/v1", api_key="unused", timeout=120, max_retries=0
    ) as client:
        create = client.chat.completions.create
        messages: Any = [{"role": "user", "content": "hi"}]
        plain = await create(model=MODEL, messages=messages, max_tokens=4, temperature=0)
        chunks = await create(model=MODEL, messages=messages, max_tokens=4, temperature=0, stream=True)
        last = [chunk async for chunk in chunks if chunk.choices][-1]
        return [plain.choices[0].finish_reason, last.choices[0].finish_reason]


async def leave_mid_stream(url: str) -> int:
    """Read three lines of an endless answer, then go away."""
    body = {"model": MODEL, "prompt": "hello", "options": {"num_predict": ENDLESS}}
    async with (
        httpx.AsyncClient(timeout=120) as client,
        client.stream("POST", f"{url}/api/generate", json=body) as response,
    ):
        lines = 0
        async for line in response.aiter_lines():
            lines += bool(line)
            if lines == 3:
                break
        return lines


def test_a_burst_of_clients_all_get_their_answers_and_those_that_leave_free_their_slots(chat_stack: Stack):
    eventually(lambda: busy_slots(chat_stack.upstream) == 0, what="idle slots before the test")

    async def burst() -> tuple[list[Any], list[Any], list[int]]:
        ollamas, openais, leavers = await asyncio.gather(
            asyncio.gather(*(ollama_answers(chat_stack.url) for _ in range(PER_KIND))),
            asyncio.gather(*(openai_answers(chat_stack.url) for _ in range(PER_KIND))),
            asyncio.gather(*(leave_mid_stream(chat_stack.url) for _ in range(PER_KIND))),
        )
        return ollamas, openais, leavers

    ollamas, openais, leavers = asyncio.run(burst())
    finals = [answer for answers in ollamas for answer in answers]
    assert [(final.done, final.done_reason) for final in finals] == [(True, "length")] * 4 * PER_KIND
    assert all(final.eval_count == 4 for final in finals)
    assert openais == [["length", "length"]] * PER_KIND
    assert leavers == [3] * PER_KIND
    # the endless generations would take minutes: their clients left, so the slots are free again
    eventually(
        lambda: busy_slots(chat_stack.upstream) == 0, timeout=30, what="llama-server to stop generating"
    )
    assert httpx.get(f"{chat_stack.url}/api/ps", timeout=10).status_code == 200

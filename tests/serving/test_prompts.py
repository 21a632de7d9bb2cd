"""Prompts rendered from cached skeletons equal llama-server's own rendering, and a plain /api/chat
served through them answers as llama-server's chat endpoint does.

Three real llama-servers with the demo model: its own template (ChatML, texts verbatim), a template
that trims every text (as Llama 3's does), and one that can think (its answers keep the chat path).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import ollama
import pytest

from llamacontroller.serving.adapter import adapter_app
from llamacontroller.serving.catalog import prompts
from llamacontroller.serving.catalog.prompts import PromptRenderer
from llamacontroller.serving.ollama.requests import GenerateRequest
from llamacontroller.serving.ollama.translate import generate_texts, think_fields
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.upstream.llama_server import Upstream
from tests.serving.wiretap import wiretap
from tests.support.stacks import CHAT_PARAMETERS, MODEL, Stack, Stacks, serve_during

pytestmark = pytest.mark.timeout(180)

TRIMMING_TEMPLATE = (
    "{{- bos_token }}{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] | trim + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
THINKING_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>\\n' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and not enable_thinking %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}"
)

GENERATE_BODIES = [
    {"prompt": "hello"},
    {"prompt": "  spaces and\nnew lines  ", "system": "\tbe brief "},
    {"prompt": 'quotes " and {{ braces }} and <|im_end|>', "system": "ünïcödé"},
    {"prompt": "think", "think": False},
]
EDGE_BODIES = [  # texts a skeleton may not take: then llama-server renders them
    {"prompt": "", "system": "only a system prompt"},
    {"prompt": "\u00a0no-break space\u00a0"},
]
CONVERSATIONS = [
    [{"role": "user", "content": "hello"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "  hi there \n"}],
    [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": " b b "},
        {"role": "user", "content": "c"},
    ],
]
ONE_ANSWER = {"temperature": 0, "top_k": 1, "num_predict": 6, "seed": 7}


def texts(chat: list[dict]) -> list[tuple[str, str]]:
    return [(message["role"], message["content"]) for message in chat]


def generate_prompt(body: dict) -> tuple[list[tuple[str, str]], dict]:
    """What a generate's prompt renders: its texts and the template's kwargs."""
    ask = GenerateRequest.parse({"model": MODEL, **body})
    return generate_texts(ask), think_fields(ask.think)


class Renderings:
    """Counts the renderings a client asks llama-server for (see ``wiretap``)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, what: str, detail: str) -> None:
        if detail == "POST /apply-template":
            self.count += 1


@pytest.fixture(scope="module")
def templates(session_stacks: Stacks, model_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """llama-server URLs by template: the model's own, a trimming one, a thinking one."""
    folder = tmp_path_factory.mktemp("templates")
    urls = {"own": None, "trimming": TRIMMING_TEMPLATE, "thinking": THINKING_TEMPLATE}
    for name, template in urls.items():
        extra = []
        if template is not None:
            (folder / f"{name}.jinja").write_text(template)
            extra = ["--chat-template-file", str(folder / f"{name}.jinja")]
        parameters = CHAT_PARAMETERS | {"extraArgs": [*CHAT_PARAMETERS["extraArgs"], *extra]}
        urls[name] = session_stacks.server(parameters, model_file).url
    return urls


@pytest.mark.parametrize("template", ["own", "trimming"])
def test_skeleton_renderings_equal_llama_servers_without_a_round_trip_each(templates: dict, template: str):
    renderings = Renderings()

    async def scenario() -> tuple[list[str], list[str], list[str], int]:
        bodies = [generate_prompt(body) for body in GENERATE_BODIES + EDGE_BODIES]
        async with Client(connect=wiretap(renderings)) as client:
            renderer = PromptRenderer(Upstream(templates[template], client))
            remote = [await renderer.remote(*body) for body in bodies]
            first = [await renderer.render(*body) for body in bodies]
            before = renderings.count
            again = [await renderer.render(*body) for body in bodies[: len(GENERATE_BODIES)]]
            chats = [await renderer.render(texts(chat), {}) for chat in CONVERSATIONS]
            chats_remote = [await renderer.remote(texts(chat), {}) for chat in CONVERSATIONS]
            return remote, first + again, chats + chats_remote, renderings.count - before

    remote, rendered, chats, round_trips = asyncio.run(scenario())
    assert rendered == remote + remote[: len(GENERATE_BODIES)]
    assert chats[: len(CONVERSATIONS)] == chats[len(CONVERSATIONS) :]
    # the second round of generates: none; the conversations: two to build the one new shape (the
    # others are the generates'), then one each for the comparison
    assert round_trips == 2 + len(CONVERSATIONS)
    if template == "trimming":
        assert "<|im_start|>user\nspaces and\nnew lines<|im_end|>" in rendered[1]  # trimmed


def ollama_chat(url: str, messages: list[dict], stream: bool = False) -> tuple[str, int]:
    client = ollama.Client(host=url)
    if not stream:
        answer = client.chat(model=MODEL, messages=messages, options=ONE_ANSWER)
        return answer.message.content or "", answer.prompt_eval_count or 0
    chunks = list(client.chat(model=MODEL, messages=messages, options=ONE_ANSWER, stream=True))
    return "".join(chunk.message.content or "" for chunk in chunks), chunks[-1].prompt_eval_count or 0


def chat_endpoint(upstream: str, messages: list[dict]) -> tuple[str, int]:
    """What llama-server's own chat endpoint answers (the same sampling as ONE_ANSWER)."""
    body = {"messages": messages, "temperature": 0, "top_k": 1, "max_tokens": 6, "seed": 7}
    answer = httpx.post(f"{upstream}/v1/chat/completions", json=body, timeout=60).json()
    return answer["choices"][0]["message"]["content"], answer["usage"]["prompt_tokens"]


Answer = tuple[str, int]  # the text and the prompt's token count


def served_by(upstream: str, messages: list[dict], tries: int = 20) -> tuple[list[Answer], list[str]]:
    """Answers of the real ollama client through the adapter's app (in this process, so that its
    upstream requests can be watched), until a plain chat took ``/completion`` or ``tries`` ran out."""
    paths: list[str] = []

    def watch(what: str, detail: str) -> None:
        method, path = detail.split()[:2] if what == "request" else ("", "")
        if method == "POST" and path in ("/completion", "/v1/chat/completions"):
            paths.append(path)

    answers: list[Answer] = []

    async def scenario(url: str) -> None:
        for attempt in range(tries):
            stream = attempt % 2 == 1
            answers.append(await asyncio.to_thread(ollama_chat, url, messages, stream))
            if paths[-1] == "/completion" and stream:
                return
            await asyncio.sleep(0.05)  # the skeleton is built in the background

    serve_during(adapter_app(upstream, connect=wiretap(watch)), scenario)
    return answers, paths


@pytest.mark.parametrize("template", ["own", "trimming"])
@pytest.mark.parametrize("messages", CONVERSATIONS, ids=["user", "system and user", "three turns"])
def test_a_plain_chat_goes_to_completion_and_answers_as_the_chat_endpoint(
    templates: dict, template: str, messages: list[dict]
):
    expected = chat_endpoint(templates[template], messages)
    answers, paths = served_by(templates[template], messages)
    # the first two of a shape: the second has its skeleton built (a conversation's shape changes
    # every turn: not built for one request)
    assert paths[:2] == ["/v1/chat/completions"] * 2
    assert paths[-1] == "/completion"
    assert answers == [expected] * len(answers)


def test_a_model_that_thinks_keeps_the_chat_endpoint(templates: dict):
    answers, paths = served_by(templates["thinking"], CONVERSATIONS[0], tries=4)
    assert set(paths) == {"/v1/chat/completions"}
    assert all(count > 0 for _, count in answers)


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "prefill"}],
        [{"role": "user", "content": ""}],
    ],
    ids=["assistant prefill", "empty text"],
)
def test_chats_outside_the_skeletons_keep_the_chat_endpoint(templates: dict, messages: list[dict]):
    expected = chat_endpoint(templates["own"], messages)
    answers, paths = served_by(templates["own"], messages, tries=4)
    assert set(paths) == {"/v1/chat/completions"}
    assert answers == [expected] * 4


def test_the_chat_stack_answers_a_plain_chat_like_its_server(chat_stack: Stack):
    """The adapter as its own process (as in the Pod) takes the same way: same answers."""
    expected = chat_endpoint(chat_stack.upstream, CONVERSATIONS[2])
    assert [ollama_chat(chat_stack.url, CONVERSATIONS[2], stream) for stream in (False, True) * 3] == [
        expected
    ] * 6


def test_the_cache_keeps_the_latest_shapes(templates: dict, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(prompts, "MAX_SHAPES", 2)
    shapes = [texts(chat) for chat in CONVERSATIONS]
    renderings = Renderings()

    async def scenario() -> list[int]:
        async with Client(connect=wiretap(renderings)) as client:
            renderer = PromptRenderer(Upstream(templates["own"], client))
            made = []
            for shape in [*shapes, shapes[2], shapes[0]]:
                before = renderings.count
                await renderer.render(shape, {})
                made.append(renderings.count - before)
            return made

    # three shapes built (two renderings each); the latest still cached; the first was dropped
    assert asyncio.run(scenario()) == [2, 2, 2, 0, 2]


def test_a_chat_builds_a_skeleton_for_a_shape_asked_for_twice_only(templates: dict):
    renderings = Renderings()
    turns = [[("user", "a")], [("user", "a"), ("assistant", "b"), ("user", "c")]]

    async def scenario() -> tuple[int, list[str | None], int, str]:
        async with Client(connect=wiretap(renderings)) as client:
            renderer = PromptRenderer(Upstream(templates["own"], client))
            for turn in turns:  # a growing conversation: each shape once
                assert renderer.cached(turn, {}) is None
            await asyncio.sleep(0.5)
            growing = renderings.count
            answers = []
            for _ in range(20):  # the same shape again and again: built once, then served
                answers.append(renderer.cached(turns[1], {}))
                if answers[-1] is not None:
                    break
                await asyncio.sleep(0.05)
            built = renderings.count
            return growing, answers, built, await renderer.remote(turns[1], {})

    growing, answers, built, expected = asyncio.run(scenario())
    assert (growing, built) == (0, 2)
    assert answers[0] is None and answers[-1] == expected


def test_a_skeleton_in_use_is_renewed_before_it_expires(templates: dict):
    """With steady traffic no request waits for a build once the first one is made: a skeleton in
    its last ``renew`` seconds is rebuilt in the background while requests keep using it."""
    renderings = Renderings()
    chat = texts(CONVERSATIONS[1])

    async def scenario() -> tuple[list[int], list[str | None], str]:
        async with Client(connect=wiretap(renderings)) as client:
            renderer = PromptRenderer(Upstream(templates["own"], client), ttl=3.0, renew=2.0)
            waited, answers = [], []
            for pause in (0.0, 1.5, 1.6):  # built; due for renewal; past the first one's expiry
                await asyncio.sleep(pause)
                before = renderings.count
                answers += [await renderer.render(chat, {}), renderer.cached(chat, {})]
                waited.append(renderings.count - before)
                for _ in range(500):  # the renewal, if one started, done before the next round
                    if not renderer._building:
                        break
                    await asyncio.sleep(0.02)
            return waited, answers, await renderer.remote(chat, {})

    waited, rendered, expected = asyncio.run(scenario())
    assert waited == [2, 0, 0]  # only the first request waited for a build (two renderings)
    assert rendered == [expected] * 6
    assert renderings.count == 2 + 2 + 2 + 1  # the build, two renewals, the comparison

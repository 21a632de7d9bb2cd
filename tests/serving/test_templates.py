"""Prompt skeletons against llama-server's own rendering, on the chat templates real models ship.

The real model's template (SmolLM2: ChatML with a default system prompt), and templates written for
these tests that do what other families' templates do, each embedded into a generated GGUF (as a
converted model carries its own): the system prompt folded into the first user turn, trimmed
contents, role-alternation checks that raise, ``loop.last``, the generation prompt, today's date.
For every conversation the adapter's rendering equals ``/apply-template``'s, and a template that
refuses a conversation refuses it through the adapter too. With real language: ``format`` gives JSON
that parses.
"""

from __future__ import annotations

import asyncio
import json

import ollama
import pytest

from llamacontroller.demo_model import write_demo_model
from llamacontroller.local.real_model import real_model_path
from llamacontroller.serving.catalog.prompts import PromptRenderer
from llamacontroller.serving.errors import HttpError
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.upstream.llama_server import Upstream
from tests.support.stacks import CHAT_PARAMETERS, MODEL, Stack, Stacks

pytestmark = pytest.mark.timeout(180)

ALTERNATE = "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...')"

# Llama 2 and Mistral: the system prompt inside the first [INST], roles checked to alternate.
FOLDED_SYSTEM = (
    "{%- if messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}"
    "{%- set turns = messages[1:] -%}{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}"
    "{%- endif -%}{{- bos_token -}}{%- for message in turns -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{- " + ALTERNATE + " -}}{%- endif -%}"
    "{%- if message['role'] == 'user' and loop.first and system -%}"
    "{{- '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + message['content'] + ' [/INST]' -}}"
    "{%- elif message['role'] == 'user' -%}{{- '[INST] ' + message['content'] + ' [/INST]' -}}"
    "{%- else -%}{{- ' ' + message['content'] + eos_token -}}{%- endif -%}{%- endfor -%}"
)
# Llama 3: today's date in a system header, every text trimmed, the generation prompt.
DATED_TRIMMED = (
    "{{- bos_token -}}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] | trim -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\nToday Date: ' + strftime_now('%d %b %Y') -}}"
    "{{- '\\n\\n' + system + '<|eot_id|>' -}}{%- for message in turns -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}"
    "{{- message['content'] | trim + '<|eot_id|>' -}}{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
# Gemma: the system prompt before the first user text, roles renamed, alternation checked, the
# generation prompt placed with loop.last.
LOOP_LAST = (
    "{{- bos_token -}}{%- if messages[0]['role'] == 'system' -%}"
    "{%- set prefix = messages[0]['content'] | trim + '\\n\\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}{{- " + ALTERNATE + " -}}{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<start_of_turn>' + role + '\\n' + (prefix if loop.first else '') -}}"
    "{{- message['content'] | trim + '<end_of_turn>\\n' -}}"
    "{%- if loop.last and add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
)
TEMPLATES = {"folded system": FOLDED_SYSTEM, "dated and trimmed": DATED_TRIMMED, "loop.last": LOOP_LAST}

CONVERSATIONS = {
    "user": [("user", "Why is the sky blue?")],
    "system and user": [("system", "  Be brief. "), ("user", " Why is the sky blue?\n")],
    "three turns": [("user", "hi"), ("assistant", "Hello! How can I help?"), ("user", "Tell me a joke.")],
    "system and three turns": [
        ("system", "You are a pirate."),
        ("user", "hi"),
        ("assistant", " Arr. "),
        ("user", "Where is the treasure?"),
    ],
}
OUT_OF_ORDER = [("user", "one"), ("user", "two")]


@pytest.fixture(scope="module")
def servers(session_stacks: Stacks, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """llama-server URLs: the real model, and the tiny model with each test template embedded."""
    folder = tmp_path_factory.mktemp("templates")
    urls = {"SmolLM2": session_stacks.server({"threads": 1, "ctxSize": 2048}, real_model_path()).url}
    for name, template in TEMPLATES.items():
        model = write_demo_model(folder / f"{name.replace(' ', '-')}.gguf", chat_template=template)
        urls[name] = session_stacks.server(CHAT_PARAMETERS, model).url
    return urls


async def renderings(url: str, texts: list[tuple[str, str]]) -> tuple[str, str, str]:
    """llama-server's rendering, and the adapter's twice: the first builds the skeleton, the
    second fills it without asking llama-server."""
    async with Client() as client:
        renderer = PromptRenderer(Upstream(url, client))
        remote = await renderer.remote(texts, {})
        return remote, await renderer.render(texts, {}), await renderer.render(texts, {})


@pytest.mark.parametrize("template", ["SmolLM2", *TEMPLATES])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
def test_the_skeleton_renders_as_llama_server(servers: dict[str, str], template: str, conversation: str):
    remote, built, filled = asyncio.run(renderings(servers[template], CONVERSATIONS[conversation]))
    assert built == remote and filled == remote
    assert "Why is the sky blue?" in remote or "hi" in remote


def test_the_real_template_adds_its_default_system_prompt(servers: dict[str, str]):
    remote, _, filled = asyncio.run(renderings(servers["SmolLM2"], CONVERSATIONS["user"]))
    assert filled == remote
    assert remote.startswith("<|im_start|>system\n") and "SmolLM" in remote


@pytest.mark.parametrize("template", ["folded system", "loop.last"])
def test_a_template_that_refuses_a_conversation_refuses_it_through_the_adapter(
    servers: dict[str, str], template: str
):
    async def both() -> tuple[HttpError, HttpError]:
        async with Client() as client:
            renderer = PromptRenderer(Upstream(servers[template], client))
            with pytest.raises(HttpError) as remote:
                await renderer.remote(OUT_OF_ORDER, {})
            with pytest.raises(HttpError) as rendered:
                await renderer.render(OUT_OF_ORDER, {})
            return remote.value, rendered.value

    remote, rendered = asyncio.run(both())
    assert (rendered.status, rendered.message) == (remote.status, remote.message)
    assert "Conversation roles must alternate" in remote.message


@pytest.fixture(scope="module")
def real_stack(session_stacks: Stacks) -> Stack:
    return session_stacks.stack({"threads": 1, "ctxSize": 2048}, real_model_path())


SKY = [{"role": "user", "content": "Describe the sky as a JSON object with the keys color and reason."}]
REAL_OPTIONS = {"temperature": 0, "num_predict": 96, "seed": 1}


def test_format_json_gives_json_that_parses(real_stack: Stack):
    answer = ollama.Client(host=real_stack.url).chat(
        model=MODEL, messages=SKY, format="json", options=REAL_OPTIONS
    )
    assert isinstance(json.loads(answer.message.content or ""), dict), answer.message.content


def test_format_schema_gives_json_of_that_schema(real_stack: Stack):
    schema = {
        "type": "object",
        "properties": {"color": {"type": "string"}, "reason": {"type": "string", "maxLength": 80}},
        "required": ["color", "reason"],
    }
    answer = ollama.Client(host=real_stack.url).chat(
        model=MODEL, messages=SKY, format=schema, options=REAL_OPTIONS
    )
    parsed = json.loads(answer.message.content or "")
    assert set(parsed) == {"color", "reason"} and all(isinstance(v, str) for v in parsed.values())


def test_the_real_model_answers_in_english(real_stack: Stack):
    """/api/generate renders the prompt with the model's template, as Ollama does: a real answer."""
    answer = ollama.Client(host=real_stack.url).generate(
        model=MODEL, prompt="Name three fruits.", options=REAL_OPTIONS
    )
    fruits = {"apple", "apples", "banana", "bananas", "orange", "oranges", "grape", "grapes", "pear", "pears"}
    assert len(fruits & set(answer.response.lower().replace(".", " ").split())) >= 2, answer.response

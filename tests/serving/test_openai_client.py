"""The official ``openai`` Python client against the adapter's ``/v1`` routes."""

from __future__ import annotations

import openai
import pytest

from llamacontroller.demo_model import IMAGE_TOKENS
from tests.support.stacks import ALIAS, MODEL, PIXEL, Stack

pytestmark = pytest.mark.timeout(120)

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def client(chat_stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{chat_stack.url}/v1", api_key="unused", timeout=60, max_retries=0)


def test_models_list_the_served_model(client: openai.OpenAI):
    (model,) = client.models.list().data
    assert model.id == ALIAS and model.object == "model" and model.created > 0
    assert client.models.retrieve(MODEL).id == ALIAS


def test_chat_completion(client: openai.OpenAI):
    answer = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=5)
    assert answer.choices[0].message.content
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 5


def test_chat_completion_streams(client: openai.OpenAI):
    stream = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=5, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "length"
    ]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5


def test_chat_completion_without_a_model_name(client: openai.OpenAI):
    answer = client.chat.completions.create(model="", messages=MESSAGES, max_tokens=2)
    assert answer.choices[0].message.content is not None


def test_completions(client: openai.OpenAI):
    answer = client.completions.create(model=MODEL, prompt="hello", max_tokens=4)
    assert answer.choices[0].text
    assert answer.usage is not None and answer.usage.completion_tokens == 4


def test_completions_stream(client: openai.OpenAI):
    text = "".join(
        c.choices[0].text
        for c in client.completions.create(model=MODEL, prompt="hi", max_tokens=4, stream=True)
        if c.choices
    )
    assert text


def test_tools_request_round_trips(client: openai.OpenAI):
    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    answer = client.chat.completions.create(model=MODEL, messages=MESSAGES, tools=[tool], max_tokens=4)
    assert answer.choices[0].finish_reason in ("length", "stop", "tool_calls")


def test_an_unknown_model_is_not_found(client: openai.OpenAI):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert caught.value.body == {
        "message": "model 'gpt-4o' not found",
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4o", prompt="hi")


def test_llama_server_errors_keep_their_status_in_openai_shape(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello " * 3000}])
    assert "context" in caught.value.message
    assert set(caught.value.body) == {"message", "type", "param", "code"}


def test_embeddings_on_a_server_without_them_are_a_clear_400(client: openai.OpenAI):
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MODEL, input="hello")
    assert "embeddings" in caught.value.message


def test_embeddings(embed_stack: Stack):
    client = openai.OpenAI(base_url=f"{embed_stack.url}/v1", api_key="unused", timeout=60, max_retries=0)
    answer = client.embeddings.create(model=MODEL, input=["hello", "world"])
    assert [len(item.embedding) for item in answer.data] == [64, 64]


PIXEL_URL = "data:image/png;base64," + PIXEL


def test_an_image_reaches_a_model_with_a_vision_projector(vision_stack: Stack):
    vision = openai.OpenAI(base_url=f"{vision_stack.url}/v1", api_key="unused", timeout=60, max_retries=0)
    text = {"type": "text", "text": "what is this?"}
    image = {"type": "image_url", "image_url": {"url": PIXEL_URL}}
    plain, pictured = (
        vision.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": content}], max_tokens=3
        )
        for content in ([text], [text, image])
    )
    assert pictured.choices[0].message.content
    assert plain.usage is not None and pictured.usage is not None
    assert pictured.usage.prompt_tokens == plain.usage.prompt_tokens + IMAGE_TOKENS

"""The official ``ollama`` Python client against the adapter in front of a real llama-server."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime

import ollama
import pytest

from llamacontroller.demo_model import IMAGE_TOKENS
from tests.support.stacks import ALIAS, MODEL, PIXEL, Stack

pytestmark = pytest.mark.timeout(120)

OPTIONS = {"num_predict": 6, "seed": 7, "temperature": 0.0}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def client(chat_stack: Stack) -> ollama.Client:
    return ollama.Client(host=chat_stack.url, timeout=60)


def test_list_shows_the_served_model_with_real_metadata(client: ollama.Client, chat_stack: Stack):
    (model,) = client.list().models
    assert model.model == ALIAS
    assert model.digest == hashlib.sha256(chat_stack.model_file.read_bytes()).hexdigest()
    assert model.size == chat_stack.model_file.stat().st_size
    assert isinstance(model.modified_at, datetime)
    assert model.details.format == "gguf"
    assert model.details.family == "llama"
    assert model.details.quantization_level == "F32"
    assert model.details.parameter_size == "133.6K"


def test_show_has_model_info_capabilities_and_template(client: ollama.Client):
    shown = client.show(MODEL)
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 2048
    assert shown.modelinfo["general.parameter_count"] == 133568
    assert "completion" in shown.capabilities and "tools" in shown.capabilities
    assert "embedding" not in shown.capabilities
    assert "<|im_start|>" in shown.template
    assert isinstance(shown.modified_at, datetime)


def test_ps_lists_the_loaded_model(client: ollama.Client):
    (model,) = client.ps().models
    assert model.name == ALIAS and model.model == ALIAS
    assert model.expires_at > datetime.now(model.expires_at.tzinfo)
    assert model.context_length == 2048
    assert model.size_vram == model.size


def test_generate_without_stream(client: ollama.Client):
    answer = client.generate(MODEL, "hello", options=OPTIONS)
    assert answer.done and answer.done_reason == "length"
    assert answer.model == MODEL  # the request's spelling is echoed
    assert answer.response
    assert answer.eval_count == 6
    assert answer.prompt_eval_count > 0 and answer.total_duration > 0
    assert answer.context and all(isinstance(token, int) for token in answer.context)


def test_generate_streams_chunks_then_a_final_chunk(client: ollama.Client):
    parts = list(client.generate(MODEL, "hello", options=OPTIONS, stream=True))
    *chunks, final = parts
    assert chunks and not any(chunk.done for chunk in chunks)
    assert final.done and final.done_reason == "length" and final.eval_count == 6
    assert "".join(chunk.response for chunk in chunks)


def test_generate_same_seed_same_text_streamed_or_not(client: ollama.Client):
    whole = client.generate(MODEL, "hello", options=OPTIONS).response
    streamed = "".join(
        part.response for part in client.generate(MODEL, "hello", options=OPTIONS, stream=True)
    )
    assert whole == streamed


def test_generate_continues_from_context(client: ollama.Client):
    first = client.generate(MODEL, "hello", options=OPTIONS)
    second = client.generate(MODEL, "again", context=first.context, options=OPTIONS)
    assert second.context[: len(first.context)] == first.context
    assert second.prompt_eval_count > len(first.context)


def test_generate_raw_and_with_system(client: ollama.Client):
    raw = client.generate(MODEL, "hello", raw=True, options=OPTIONS)
    templated = client.generate(MODEL, "hello", system="be brief", options=OPTIONS)
    assert raw.prompt_eval_count < templated.prompt_eval_count  # the template added the turns
    assert raw.context is None and templated.context  # Ollama gives no context for a raw prompt


def test_generate_logprobs_one_per_token_with_alternatives(client: ollama.Client):
    answer = client.generate(MODEL, "hello", options=OPTIONS, logprobs=True, top_logprobs=3)
    assert answer.logprobs and len(answer.logprobs) == answer.eval_count == 6
    assert "".join(entry.token for entry in answer.logprobs) == answer.response
    for entry in answer.logprobs:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.logprob <= entry.top_logprobs[0].logprob  # the best alternative comes first
    plain = client.generate(MODEL, "hello", options=OPTIONS, logprobs=True)
    assert len(plain.logprobs) == 6 and all(not entry.top_logprobs for entry in plain.logprobs)
    assert client.generate(MODEL, "hello", options=OPTIONS).logprobs is None


def test_chat_streams_logprobs_with_each_chunk(client: ollama.Client):
    messages = [{"role": "user", "content": "hello"}]
    chunks = list(client.chat(MODEL, messages, options=OPTIONS, stream=True, logprobs=True, top_logprobs=2))
    entries = [entry for chunk in chunks for entry in chunk.logprobs or ()]
    assert len(entries) == chunks[-1].eval_count == 6
    assert "".join(e.token for e in entries) == "".join(c.message.content for c in chunks)
    assert all(len(entry.top_logprobs) == 2 for entry in entries)


def test_a_template_of_its_own_is_a_clear_400(client: ollama.Client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(MODEL, "hello", template="{{ .Prompt }}", options=OPTIONS)
    assert caught.value.status_code == 400 and '"raw": true' in caught.value.error


def test_top_logprobs_out_of_range_is_a_clear_400(client: ollama.Client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(MODEL, "hello", options=OPTIONS, logprobs=True, top_logprobs=21)
    assert caught.value.status_code == 400 and "top_logprobs" in caught.value.error


def test_generate_format_json_gives_json(client: ollama.Client):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    answer = client.generate(MODEL, "a number", format=schema, options={"num_predict": 40, "seed": 1})
    if answer.done_reason == "stop":  # the grammar closed the object before the limit
        assert isinstance(json.loads(answer.response)["n"], int)
    assert answer.response.lstrip().startswith("{")


def test_chat_without_stream(client: ollama.Client):
    answer = client.chat(MODEL, messages=[{"role": "user", "content": "hello"}], options=OPTIONS)
    assert answer.message.role == "assistant" and answer.message.content
    assert answer.done_reason == "length" and answer.eval_count == 6


def test_chat_streams(client: ollama.Client):
    parts = list(
        client.chat(MODEL, messages=[{"role": "user", "content": "hello"}], options=OPTIONS, stream=True)
    )
    *chunks, final = parts
    assert all(chunk.message.role == "assistant" for chunk in parts)
    assert "".join(chunk.message.content for chunk in chunks)
    assert final.done and final.eval_count == 6 and final.prompt_eval_count > 0


def test_chat_with_tools_and_a_tool_turn_round_trips(client: ollama.Client):
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    answer = client.chat(MODEL, messages=messages, tools=[WEATHER_TOOL], options=OPTIONS)
    assert answer.done and answer.message.role == "assistant"


def test_chat_think_false_is_accepted(client: ollama.Client):
    answer = client.chat(MODEL, messages=[{"role": "user", "content": "hi"}], think=False, options=OPTIONS)
    assert answer.done


def test_chat_format_json_gives_a_json_object(client: ollama.Client):
    answer = client.chat(
        MODEL, messages=[{"role": "user", "content": "hi"}], format="json", options={"num_predict": 30}
    )
    assert answer.message.content.lstrip().startswith("{")


def test_generate_with_think_takes_the_chat_path(client: ollama.Client):
    answer = client.generate(MODEL, "hello", think=True, options=OPTIONS)
    assert answer.done and answer.eval_count == 6 and answer.response
    assert answer.context == []  # the chat endpoint gives no token ids


def test_images_for_a_model_without_vision_are_a_clear_400(client: ollama.Client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(MODEL, messages=[{"role": "user", "content": "what?", "images": [PIXEL]}])
    assert (caught.value.status_code, caught.value.error) == (400, f"model '{MODEL}' does not support images")
    with pytest.raises(ollama.ResponseError) as caught:
        client.generate(MODEL, "what?", images=[PIXEL])
    assert caught.value.status_code == 400


def test_images_reach_a_model_with_a_vision_projector(vision_stack: Stack):
    """Every image costs the demo projector IMAGE_TOKENS prompt tokens: counted, they prove that the
    image reached the model (through chat, and through generate, which takes the chat path)."""
    vision = ollama.Client(host=vision_stack.url, timeout=60)
    assert "vision" in vision.show(MODEL).capabilities
    text = {"role": "user", "content": "what is this?"}
    plain = vision.chat(MODEL, messages=[text], options=OPTIONS)
    pictured = vision.chat(MODEL, messages=[text | {"images": [PIXEL]}], options=OPTIONS)
    assert pictured.message.content and pictured.eval_count == 6
    assert pictured.prompt_eval_count == plain.prompt_eval_count + IMAGE_TOKENS
    two = vision.generate(MODEL, "what is this?", images=[PIXEL, PIXEL], options=OPTIONS)
    one = vision.generate(MODEL, "what is this?", images=[PIXEL], options=OPTIONS)
    assert two.response and two.prompt_eval_count == one.prompt_eval_count + IMAGE_TOKENS


def test_load_and_unload_requests(client: ollama.Client):
    assert client.generate(MODEL).done_reason == "load"
    assert client.generate(MODEL, keep_alive=0).done_reason == "unload"
    assert client.chat(MODEL, messages=[]).done_reason == "load"


def test_pull_of_the_served_model_succeeds(client: ollama.Client):
    assert client.pull(MODEL).status == "success"
    assert [p.status for p in client.pull(f"{MODEL}:latest", stream=True)][-1] == "success"


def test_pull_of_another_model_is_404(client: ollama.Client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("llama3.2")
    assert caught.value.status_code == 404
    assert caught.value.error == "model 'llama3.2' not found"


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.generate("other", "hello"),
        lambda c: c.chat("other", messages=[{"role": "user", "content": "hi"}]),
        lambda c: c.show("other"),
        lambda c: c.embed("other", "hi"),
    ],
    ids=["generate", "chat", "show", "embed"],
)
def test_an_unknown_model_is_a_404(client: ollama.Client, call):
    with pytest.raises(ollama.ResponseError) as caught:
        call(client)
    assert caught.value.status_code == 404
    assert "other" in caught.value.error


def test_names_resolve_like_ollama(client: ollama.Client):
    for spelling in ("phi-4", "PHI-4:Latest", "library/phi-4", "registry.ollama.ai/library/phi-4:latest"):
        assert client.generate(spelling).model == spelling


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.delete(MODEL),
        lambda c: c.copy(MODEL, "copy"),
        lambda c: c.push(MODEL),
        lambda c: c.create("new", from_=MODEL),
    ],
    ids=["delete", "copy", "push", "create"],
)
def test_model_management_is_refused_clearly(client: ollama.Client, call):
    with pytest.raises(ollama.ResponseError) as caught:
        call(client)
    assert caught.value.status_code == 400
    assert "LlamaModel" in caught.value.error


def test_embeddings_need_an_embedding_server(client: ollama.Client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(MODEL, "hello")
    assert caught.value.status_code == 400
    assert "set spec.parameters.embeddings: true in its LlamaModel" in caught.value.error


@pytest.fixture(scope="module")
def embed_client(embed_stack: Stack) -> ollama.Client:
    return ollama.Client(host=embed_stack.url, timeout=60)


def test_embed_truncates_a_long_input_unless_told_not_to(embed_client: ollama.Client):
    long = "hello " * 3000  # more tokens than llama-server embeds at once (its batch: 512)
    cut = embed_client.embed(MODEL, [long, "hello"])
    short = embed_client.embed(MODEL, "hello")
    assert len(cut.embeddings) == 2 and cut.embeddings[1] == short.embeddings[0]  # the short one as is
    assert 400 < cut.prompt_eval_count - short.prompt_eval_count <= 512  # the long one, cut to fit
    with pytest.raises(ollama.ResponseError) as caught:
        embed_client.embed(MODEL, long, truncate=False)
    assert caught.value.status_code == 400 and "512 tokens" in caught.value.error


def test_embed_one_and_many(embed_client: ollama.Client):
    one = embed_client.embed(MODEL, "hello")
    many = embed_client.embed(MODEL, ["hello", "world"])
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 64
    assert len(many.embeddings) == 2
    assert many.embeddings[0] == pytest.approx(one.embeddings[0])
    assert many.prompt_eval_count > 0 and many.total_duration > 0


def test_embed_dimensions_truncates_to_unit_length(embed_client: ollama.Client):
    (vector,) = embed_client.embed(MODEL, "hello", dimensions=8).embeddings
    assert len(vector) == 8
    assert sum(x * x for x in vector) == pytest.approx(1.0)


def test_legacy_embeddings(embed_client: ollama.Client):
    vector = embed_client.embeddings(MODEL, "hello").embedding
    assert vector == pytest.approx(embed_client.embed(MODEL, "hello").embeddings[0])


def test_show_lists_the_embedding_capability(embed_client: ollama.Client):
    assert "embedding" in embed_client.show(MODEL).capabilities

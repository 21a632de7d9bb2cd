"""The pure translation, on recorded llama-server streams (fixtures/*.sse) and crafted ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamacontroller.serving.catalog.model_names import parse_name, same_model, with_tag
from llamacontroller.serving.catalog.prompts import PAD, Skeleton, skeleton_of
from llamacontroller.serving.errors import HttpError, UpstreamError, UpstreamUnavailable, from_upstream
from llamacontroller.serving.ollama import translate
from llamacontroller.serving.ollama.chunks import (
    ChatFromChat,
    ChatFromCompletion,
    GenerateFromChat,
    GenerateFromCompletion,
    fold_chat,
    fold_generate,
    metrics,
)
from llamacontroller.serving.ollama.requests import ChatRequest, GenerateRequest
from llamacontroller.serving.ollama.tool_calls import ToolCallAccumulator, openai_tool_calls, parse_arguments
from llamacontroller.serving.upstream.sse import SseDecoder, parse_event
from tests.support.stacks import METRICS

FIXTURES = Path(__file__).parent / "fixtures"


def events(name: str, chunk_size: int | None = None) -> list[dict]:
    """A recorded stream through the SSE decoder, fed whole or in small pieces."""
    raw = (FIXTURES / name).read_bytes()
    decoder = SseDecoder()
    pieces = (
        [raw] if chunk_size is None else [raw[i : i + chunk_size] for i in range(0, len(raw), chunk_size)]
    )
    found = [event for piece in pieces for event in decoder.feed(piece)] + decoder.close()
    return [parse_event(event) for event in found if event.payload != b"[DONE]"]


def generate_request(**fields) -> GenerateRequest:
    return GenerateRequest.parse({"model": "m", **fields})


def chat_request(**fields) -> ChatRequest:
    return ChatRequest.parse({"model": "m", **fields})


# ---------------------------------------------------------------------------------------------
# names


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("phi-4", "phi-4:latest", True),
        ("PHI-4:Latest", "phi-4", True),
        ("library/phi-4", "phi-4:latest", True),
        ("registry.ollama.ai/library/phi-4", "phi-4", True),
        ("phi-4:q4", "phi-4", False),
        ("team/phi-4", "phi-4", False),
        ("other.host/library/phi-4", "phi-4", False),
        ("localhost:5000/ns/model:v1", "LOCALHOST:5000/ns/model:v1", True),
    ],
)
def test_names_compare_like_ollama(a: str, b: str, same: bool):
    assert same_model(a, b) is same


def test_name_parts_and_listing_form():
    assert parse_name("h.io/ns/m:t") == ("h.io", "ns", "m", "t")
    assert with_tag("phi-4") == "phi-4:latest"
    assert with_tag("localhost:5000/phi-4") == "localhost:5000/phi-4:latest"
    assert with_tag("phi-4:q8") == "phi-4:q8"


# ---------------------------------------------------------------------------------------------
# requests


def test_options_map_through_the_table_and_load_time_options_are_dropped():
    options = {"num_predict": 5, "num_keep": 2, "top_k": 3, "stop": ["x"], "seed": 1, "num_ctx": 8192}
    fields = translate.sampling_fields(generate_request(options=options).options)
    assert fields == {"n_predict": 5, "n_keep": 2, "top_k": 3, "stop": ["x"], "seed": 1}
    assert {"num_ctx", "num_gpu", "num_thread", "num_batch", "main_gpu"} <= translate.LOAD_TIME_OPTIONS


SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}}


@pytest.mark.parametrize(
    ("fmt", "completion", "chat"),
    [
        (None, {}, {}),
        ("", {}, {}),
        ("json", {"json_schema": {"type": "object"}}, {"response_format": {"type": "json_object"}}),
        (
            SCHEMA,
            {"json_schema": SCHEMA},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "response", "schema": SCHEMA},
                }
            },
        ),
    ],
)
def test_format(fmt, completion: dict, chat: dict):
    ask = generate_request(format=fmt)
    assert translate.completion_format(ask.format) == completion
    assert translate.chat_format(ask.format) == chat


def test_an_unknown_format_is_a_400():
    with pytest.raises(HttpError) as caught:
        generate_request(format="yaml")
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("think", "fields"),
    [
        (None, {}),
        (True, {"chat_template_kwargs": {"enable_thinking": True}}),
        (False, {"chat_template_kwargs": {"enable_thinking": False}}),
        ("high", {"chat_template_kwargs": {"enable_thinking": True, "reasoning_effort": "high"}}),
    ],
)
def test_think(think, fields: dict):
    assert translate.think_fields(generate_request(think=think).think) == fields


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        ("0", 0.0),
        ("0s", 0.0),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        (-1, -1.0),
        ("-1", -1.0),
    ],
)
def test_keep_alive(value, seconds):
    assert generate_request(keep_alive=value).keep_alive == seconds


def test_a_bad_keep_alive_is_a_400():
    with pytest.raises(HttpError):
        generate_request(keep_alive="soon")


def test_messages_become_openai_messages():
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is this?", "images": ["aGVsbG8="]},
        {
            "role": "assistant",
            "content": "",
            "thinking": "hmm",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ]
    system, user, assistant, tool = translate.chat_request_body(chat_request(messages=messages))["messages"]
    assert system == {"role": "system", "content": "be brief"}
    assert user["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,aGVsbG8="}},
    ]
    assert assistant["reasoning_content"] == "hmm"
    (call,) = assistant["tool_calls"]
    assert call["type"] == "function" and call["id"] == "call_0"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert tool == {"role": "tool", "content": "sunny", "name": "get_weather"}


def test_a_message_needs_a_role():
    with pytest.raises(HttpError):
        chat_request(messages=[{"content": "x"}])


@pytest.mark.parametrize(
    ("body", "route"),
    [
        ({"prompt": "x"}, "completion"),
        ({"prompt": "x", "raw": True}, "completion"),
        ({"prompt": "x", "suffix": "y"}, "infill"),
        ({"prompt": "x", "images": ["aGk="]}, "chat"),
        ({"prompt": "x", "think": True}, "chat"),
        ({"prompt": "x", "think": "low"}, "chat"),
        ({"prompt": "x", "think": False}, "completion"),
    ],
)
def test_generate_route(body: dict, route: str):
    assert translate.generate_route(generate_request(**body)) == route


def test_a_generate_as_the_chat_it_stands_for():
    ask = generate_request(prompt="what?", system="be brief", images=["AAAA"])
    assert translate.generate_texts(ask) == [("system", "be brief"), ("user", "what?")]
    assert translate.generate_messages(ask) == [
        {"role": "system", "content": "be brief"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
            ],
        },
    ]
    assert translate.generate_messages(generate_request(prompt="hi")) == [{"role": "user", "content": "hi"}]


def test_generate_bodies():
    ask = generate_request(prompt="hi", options={"num_predict": 3}, format="json")
    assert translate.completion_body(ask, translate.completion_prompt("T", [1, 2])) == {
        "prompt": [1, 2, "T"],
        "stream": True,
        "cache_prompt": True,
        "n_predict": 3,
        "json_schema": {"type": "object"},
    }
    assert translate.tokenize_body("T", []) == {"content": "T", "add_special": True, "parse_special": True}
    assert translate.tokenize_body("T", [1])["add_special"] is False


def test_context_must_be_token_ids():
    with pytest.raises(HttpError):
        generate_request(context=["a"])


def test_embedding_dimensions_keep_unit_length():
    assert translate.fit_dimensions([3.0, 4.0, 12.0], 2) == pytest.approx([0.6, 0.8])
    assert translate.fit_dimensions([1.0, 0.0], None) == [1.0, 0.0]
    assert translate.embeddings_of(
        {"data": [{"index": 1, "embedding": [2]}, {"index": 0, "embedding": [1]}]}
    ) == [
        [1],
        [2],
    ]


# ---------------------------------------------------------------------------------------------
# SSE


@pytest.mark.parametrize("name", ["completion.sse", "chat.sse", "chat_tools.sse", "chat_tool_calls.sse"])
def test_sse_decoding_does_not_depend_on_chunk_boundaries(name: str):
    assert events(name, chunk_size=1) == events(name, chunk_size=7) == events(name)


def test_sse_skips_comments_and_blank_lines_and_keeps_error_events():
    decoder = SseDecoder()
    found = decoder.feed(b': ping\n\ndata: {"a":1}\r\n\nerror: {"message":"boom"}\n\nid: 3\nda')
    assert [parse_event(e) for e in found] == [{"a": 1}, {"error": {"message": "boom"}}]
    assert decoder.feed(b'ta: {"b":2}\n') and decoder.close() == []


# ---------------------------------------------------------------------------------------------
# streams


def test_recorded_completion_stream_becomes_generate_chunks():
    recorded = events("completion.sse")
    translator = GenerateFromCompletion("phi-4", started_ns=0)
    chunks = [chunk for event in recorded for chunk in translator.feed(event)]
    final = translator.final([1, 2, 3])
    text = "".join(event["content"] for event in recorded)
    assert "".join(chunk["response"] for chunk in chunks) == text
    assert all(chunk["done"] is False and chunk["model"] == "phi-4" for chunk in chunks)
    timings = recorded[-1]["timings"]
    assert final["done_reason"] == "length"
    assert final["eval_count"] == timings["predicted_n"] == 5
    assert final["prompt_eval_count"] == timings["prompt_n"] + timings["cache_n"]
    assert final["prompt_eval_duration"] == round(timings["prompt_ms"] * 1e6)
    assert final["context"] == [1, 2, 3] + [t for event in recorded for t in event["tokens"]]
    assert fold_generate(chunks, final)["response"] == text


def test_recorded_chat_stream_becomes_chat_chunks():
    recorded = events("chat.sse")
    translator = ChatFromChat("phi-4", started_ns=0)
    chunks = [chunk for event in recorded for chunk in translator.feed(event)]
    final = translator.final()
    assert all(chunk["message"]["role"] == "assistant" and chunk["message"]["content"] for chunk in chunks)
    assert final["done_reason"] == "length" and final["eval_count"] == 5 and "context" not in final
    answer = fold_chat(chunks, final)
    assert answer["message"]["content"] == "".join(c["message"]["content"] for c in chunks)


def test_recorded_stream_of_a_tools_request_has_no_tool_calls_from_the_tiny_model():
    translator = ChatFromChat("phi-4", started_ns=0)
    chunks = [chunk for event in events("chat_tools.sse") for chunk in translator.feed(event)]
    assert chunks and not any("tool_calls" in c["message"] for c in chunks)
    assert translator.final()["done"] is True


def test_streamed_tool_call_fragments_become_whole_calls_with_object_arguments():
    translator = ChatFromChat("phi-4", started_ns=0)
    chunks = [chunk for event in events("chat_tool_calls.sse") for chunk in translator.feed(event)]
    thinking = [c["message"]["thinking"] for c in chunks if "thinking" in c["message"]]
    assert thinking == ["The user wants ", "two cities."]
    (with_calls,) = [c for c in chunks if "tool_calls" in c["message"]]
    assert with_calls["message"]["tool_calls"] == [
        {"id": "call_a", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}},
        {
            "id": "call_b",
            "function": {"index": 1, "name": "get_weather", "arguments": {"city": "Zürich", "days": [1, 2]}},
        },
    ]
    final = translator.final()
    assert final["done_reason"] == "stop"
    assert (final["prompt_eval_count"], final["eval_count"], final["eval_duration"]) == (43, 30, 12_250_000)
    answer = fold_chat(chunks, final)
    assert answer["message"]["thinking"] == "The user wants two cities."
    assert len(answer["message"]["tool_calls"]) == 2


def test_generate_through_the_chat_path_keeps_thinking_apart():
    translator = GenerateFromChat("phi-4", started_ns=0)
    chunks = [chunk for event in events("chat_tool_calls.sse") for chunk in translator.feed(event)]
    assert all("message" not in c for c in chunks)
    answer = fold_generate(chunks, translator.final([]))
    assert answer["thinking"] == "The user wants two cities." and answer["context"] == []


def test_an_error_event_mid_stream_raises_it():
    translator = ChatFromChat("phi-4", started_ns=0)
    with pytest.raises(UpstreamError) as caught:
        translator.feed({"error": {"code": 500, "message": "out of memory", "type": "server_error"}})
    assert caught.value.message == "out of memory"


def test_a_stream_that_stops_early_is_an_error():
    translator = GenerateFromCompletion("phi-4", started_ns=0)
    translator.feed(events("completion.sse")[0])
    with pytest.raises(UpstreamUnavailable):
        translator.final([])


def test_metrics_are_integers_even_without_timings():
    values = metrics(None, started_ns=0)
    assert set(values) == set(METRICS)
    assert all(isinstance(v, int) for v in values.values())
    assert metrics({"prompt_ms": 1.5, "predicted_ms": 0.0004}, 0)["prompt_eval_duration"] == 1_500_000


# ---------------------------------------------------------------------------------------------
# tool calls


def test_arguments_parse_into_objects_or_empty_ones():
    assert parse_arguments('{"a": [1]}') == {"a": [1]}
    assert parse_arguments("") == {}
    assert parse_arguments("{broken") == {}
    assert parse_arguments("[1, 2]") == {}


def test_fragments_without_index_join_the_first_call():
    calls = ToolCallAccumulator()
    calls.add([{"id": "x", "function": {"name": "f", "arguments": '{"a"'}}])
    calls.add([{"function": {"arguments": ": 1}"}}])
    assert calls.take() == [{"id": "x", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}]
    assert not calls


def test_tool_calls_to_openai_keep_ids_and_text_arguments():
    calls = [
        {"id": "c1", "function": {"name": "f", "arguments": {"a": 1}}},
        {"function": {"name": "g", "arguments": "{}"}},
    ]
    assert openai_tool_calls(calls) == [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "call_1", "type": "function", "function": {"name": "g", "arguments": "{}"}},
    ]


# ---------------------------------------------------------------------------------------------
# errors and prompt skeletons


def test_llama_server_errors_keep_message_and_status():
    error = from_upstream(
        400, {"error": {"code": 400, "message": "too long", "type": "exceed_context_size_error"}}
    )
    assert (error.status, error.message, error.kind) == (400, "too long", "exceed_context_size_error")
    assert from_upstream(501, {"error": {"message": "no"}}).status == 400
    loading = from_upstream(
        503, {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    )
    assert (loading.status, loading.message, loading.kind) == (503, "Loading model", "unavailable_error")
    assert from_upstream(503, "Loading model").message == "llama-server answered HTTP 503"
    assert from_upstream(502, None, "bad gateway").message == "bad gateway"


def padded(*cores: str) -> list[str]:
    return [PAD + core + PAD for core in cores]


def test_a_skeleton_fills_in_any_text_verbatim_or_trimmed_as_its_template_does():
    rendered = f"<s>[SYS]{PAD}S1{PAD}[/SYS][U]P1[/U]"  # the system text verbatim, the user's trimmed
    skeleton = skeleton_of(rendered, ["S1", "P1"])
    assert skeleton == Skeleton(("<s>[SYS]", "[/SYS][U]", "[/U]"), (0, 1), (False, True))
    assert skeleton.fill(padded("S2", "P2")) == f"<s>[SYS]{PAD}S2{PAD}[/SYS][U]P2[/U]"
    assert skeleton.fill([" be brief\n", "\n hi  "]) == "<s>[SYS] be brief\n[/SYS][U]hi[/U]"


def test_slots_follow_the_templates_order():
    skeleton = skeleton_of(f"[U]P1[/U][SYS]{PAD}S1{PAD}", ["S1", "P1"])
    assert skeleton is not None and skeleton.fill(["s", "p"]) == "[U]p[/U][SYS]s"


@pytest.mark.parametrize(
    "rendered",
    ["no placeholder", f"{PAD}P1{PAD} and {PAD}P1{PAD} again", f"{PAD}S1{PAD} only", f"[U]P1{PAD}[/U]"],
    ids=["none", "twice", "one missing", "stripped on one side"],
)
def test_a_rendering_without_each_placeholder_once_whole_or_trimmed_has_no_skeleton(rendered: str):
    assert skeleton_of(rendered, ["S1", "P1"]) is None


@pytest.mark.parametrize("text", ["", "  \n", "\u00a0hi", "hi\r"])
def test_texts_the_check_did_not_cover_are_left_to_the_server(text: str):
    """Empty texts (a template may test for them); other whitespace at the ends of a trimmed text."""
    skeleton = skeleton_of(f"[SYS]{PAD}S1{PAD}[U]P1[/U]", ["S1", "P1"])
    assert skeleton is not None and skeleton.fill(["s", text]) is None
    assert skeleton.fill(["\u00a0s\r", "p"]) == "[SYS]\u00a0s\r[U]p[/U]"  # verbatim: any text


def test_plain_chats_are_text_messages_ending_with_the_users():
    chat = [{"role": "system", "content": "s"}, {"role": "user", "content": "u", "images": []}]
    plain = translate.plain_chat_texts(chat_request(messages=chat, think=False))
    assert plain == [("system", "s"), ("user", "u")]
    not_plain = [
        {"messages": chat, "tools": [{"type": "function"}]},
        {"messages": chat, "think": True},
        {"messages": [*chat, {"role": "assistant", "content": "prefill"}]},
        {"messages": [{"role": "user", "content": "u", "images": ["aGk="]}]},
        {"messages": [{"role": "assistant", "content": "", "tool_calls": [{}]}, *chat]},
        {"messages": [{"role": "tool", "content": "42"}, *chat]},
        {"messages": [{"role": "assistant", "content": "a", "thinking": "t"}, *chat]},
        {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
    ]
    assert [translate.plain_chat_texts(chat_request(**body)) for body in not_plain] == [None] * len(not_plain)
    with_system = generate_request(prompt="p", system="s")
    assert translate.generate_texts(with_system) == [("system", "s"), ("user", "p")]
    assert translate.generate_texts(generate_request(prompt="p", system="")) == [("user", "p")]


def test_a_completion_stream_becomes_chat_chunks():
    translator = ChatFromCompletion("m", 0, top_logprobs=0)
    probs = [{"token": "a", "logprob": -0.5, "top_logprobs": []}]
    chunks = translator.feed({"content": "a", "completion_probabilities": probs})
    end = {"content": "", "stop": True, "stop_type": "limit", "timings": {"predicted_n": 1}}
    chunks += translator.feed(end)
    assert [list(chunk) for chunk in chunks] == [["model", "created_at", "message", "done", "logprobs"]]
    assert chunks[0]["message"] == {"role": "assistant", "content": "a"}
    assert chunks[0]["logprobs"] == [{"token": "a", "logprob": -0.5}]
    final = translator.final()
    assert list(final)[:5] == ["model", "created_at", "message", "done", "done_reason"]
    assert (final["message"], final["done_reason"], final["eval_count"]) == (
        {"role": "assistant", "content": ""},
        "length",
        1,
    )
    assert "context" not in final

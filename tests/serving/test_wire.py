"""The raw JSON other clients depend on (Go CLI, Open WebUI, LangChain, Copilot), read with httpx."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from tests.support.polling import eventually
from tests.support.stacks import ALIAS, METRICS, MODEL, Stack, busy_slots

pytestmark = pytest.mark.timeout(120)

HEX64 = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(scope="module")
def http(chat_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=chat_stack.url, timeout=60) as client:
        yield client


def rfc3339(text: str) -> datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", text), text
    return datetime.fromisoformat(text)


def ndjson(response: httpx.Response) -> list[dict]:
    """Every line one JSON object: no SSE prefix, no blank line."""
    assert response.headers["content-type"].startswith("application/x-ndjson")
    text = response.read().decode()
    assert text.endswith("\n")
    lines = text.split("\n")[:-1]
    assert all(line and not line.startswith("data:") for line in lines)
    objects = [json.loads(line) for line in lines]
    assert all(isinstance(o, dict) for o in objects)
    return objects


def test_root_answers_get_and_head(http: httpx.Client):
    assert http.get("/").text == "Ollama is running"
    head = http.head("/")
    assert head.status_code == 200 and head.content == b""


def test_version_is_a_recent_numeric_version(http: httpx.Client):
    version = http.get("/api/version").json()["version"]
    assert tuple(int(part) for part in version.split(".")) >= (0, 6, 4)


def test_tags_entries_have_the_types_clients_parse(http: httpx.Client):
    (entry,) = http.get("/api/tags").json()["models"]
    assert entry["name"] == entry["model"] == ALIAS
    assert HEX64.fullmatch(entry["digest"])
    assert isinstance(entry["size"], int) and entry["size"] > 0
    rfc3339(entry["modified_at"])
    assert set(entry["details"]) >= {"format", "family", "families", "parameter_size", "quantization_level"}
    # LangChain accepts a model when tags' model equals it or starts with it and ":"
    assert entry["model"] == MODEL or entry["model"].startswith(MODEL + ":")


def test_ps_entries(http: httpx.Client):
    (entry,) = http.get("/api/ps").json()["models"]
    assert entry["name"] == ALIAS
    rfc3339(entry["expires_at"])
    assert all(isinstance(entry[key], int) for key in ("size", "size_vram", "context_length"))


def test_show_accepts_the_old_name_field_and_copilot_finds_what_it_needs(http: httpx.Client):
    shown = http.post("/api/show", json={"name": MODEL}).json()
    info = shown["model_info"]
    assert isinstance(info, dict)
    assert isinstance(info[f"{info['general.architecture']}.context_length"], int)
    assert "tools" in shown["capabilities"]
    rfc3339(shown["modified_at"])


def test_final_generate_chunk_has_every_metric_and_context(http: httpx.Client):
    body = {"model": MODEL, "prompt": "hello", "options": {"num_predict": 3}}
    with http.stream("POST", "/api/generate", json=body) as response:
        *chunks, final = ndjson(response)
    assert all(chunk["done"] is False and isinstance(chunk["response"], str) for chunk in chunks)
    assert final["done"] is True and final["done_reason"] == "length"
    assert all(isinstance(final[key], int) for key in METRICS)
    assert final["eval_count"] == 3
    assert isinstance(final["context"], list) and final["context"]
    assert all(rfc3339(c["created_at"]) for c in [*chunks, final])


def test_final_chat_chunk_has_every_metric_and_no_context(http: httpx.Client):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "options": {"num_predict": 3}}
    with http.stream("POST", "/api/chat", json=body) as response:
        *chunks, final = ndjson(response)
    assert all(chunk["message"]["role"] == "assistant" for chunk in [*chunks, final])
    assert all(isinstance(final[key], int) for key in METRICS)
    assert "context" not in final and final["done_reason"] == "length"


def test_stream_false_is_one_json_object(http: httpx.Client):
    body = {"model": MODEL, "prompt": "hello", "stream": False, "options": {"num_predict": 3}}
    response = http.post("/api/generate", json=body)
    assert response.headers["content-type"].startswith("application/json")
    answer = response.json()
    assert answer["done"] is True and all(isinstance(answer[key], int) for key in METRICS)


def test_empty_values_mean_unset(http: httpx.Client):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    answer = http.post(
        "/api/chat", json=body | {"tools": [], "format": "", "options": {"num_predict": 2}}
    ).json()
    assert answer["done"] is True


@pytest.mark.parametrize(
    ("route", "body", "reason"),
    [
        ("/api/generate", {}, "load"),
        ("/api/generate", {"prompt": "", "keep_alive": 0}, "unload"),
        ("/api/generate", {"keep_alive": "0s"}, "unload"),
        ("/api/chat", {"messages": []}, "load"),
        ("/api/chat", {"messages": [], "keep_alive": "0"}, "unload"),
    ],
)
def test_load_and_unload_done_reasons(http: httpx.Client, route: str, body: dict, reason: str):
    answer = http.post(route, json={"model": MODEL} | body).json()
    assert answer["done"] is True and answer["done_reason"] == reason and answer["model"] == MODEL


def test_ndjson_lines_are_flushed_while_the_server_still_generates(http: httpx.Client, chat_stack: Stack):
    """Timing-free: the first line is in our hands while llama-server is still busy with the answer."""
    eventually(lambda: busy_slots(chat_stack.upstream) == 0, what="idle slots")
    body = {"model": MODEL, "prompt": "hello", "options": {"num_predict": 200000}}
    with http.stream("POST", "/api/generate", json=body) as response:
        lines = response.iter_lines()  # kept: a dropped iterator closes the connection
        first = json.loads(next(lines))
        assert first["done"] is False and first["response"]
        assert busy_slots(chat_stack.upstream) == 1
        assert json.loads(next(lines))["done"] is False
    eventually(lambda: busy_slots(chat_stack.upstream) == 0, what="the slot to be released")


def test_errors_have_ollama_shape(http: httpx.Client):
    missing = http.post("/api/generate", json={"model": "nope:7b", "prompt": "x"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope:7b' not found"})
    no_model = http.post("/api/chat", json={"messages": []})
    assert (no_model.status_code, no_model.json()) == (400, {"error": "model is required"})
    invalid = http.post("/api/generate", content=b"{not json")
    assert invalid.status_code == 400 and "invalid JSON" in invalid.json()["error"]
    unknown = http.get("/api/nothing")
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}


def test_llama_server_errors_before_the_stream_keep_their_status(http: httpx.Client):
    body = {"model": MODEL, "prompt": "hello " * 3000, "raw": True}
    response = http.post("/api/generate", json=body)
    assert response.status_code == 400
    assert "context size" in response.json()["error"]


def test_suffix_on_a_model_without_infill_is_a_clear_400(http: httpx.Client):
    response = http.post("/api/generate", json={"model": MODEL, "prompt": "def f(", "suffix": "return 1"})
    assert response.status_code == 400 and "Infill" in response.json()["error"]


def test_openai_models_shape(http: httpx.Client):
    answer = http.get("/v1/models").json()
    assert answer["object"] == "list"
    assert answer["data"] == [
        {
            "id": ALIAS,
            "object": "model",
            "created": answer["data"][0]["created"],
            "owned_by": "llamacontroller",
        }
    ]


def test_openai_errors_have_openai_shape(http: httpx.Client):
    invalid = http.post("/v1/chat/completions", content=b"[")
    assert invalid.status_code == 400
    assert set(invalid.json()["error"]) == {"message", "type", "param", "code"}
    unknown = http.get("/v1/nothing")
    assert unknown.status_code == 404 and set(unknown.json()["error"]) == {"message", "type", "param", "code"}


def test_openai_stream_is_passed_through_as_sse(http: httpx.Client):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"

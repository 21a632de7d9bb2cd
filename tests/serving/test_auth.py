"""Optional API keys: a second adapter, with keys, in front of the shared llama-server."""

from __future__ import annotations

from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.support.stacks import KEYS_ENV, MODEL, AdapterProcess, Stack, Stacks

pytestmark = pytest.mark.timeout(120)

FILE_KEY = "sk-file-0123456789abcdef"
ENV_KEY = "sk-env-fedcba9876543210"
WRONG = "sk-wrong-key-000000000000"


@pytest.fixture(scope="module")
def keyed(
    session_stacks: Stacks, chat_stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> AdapterProcess:
    keys = tmp_path_factory.mktemp("secret") / "api-keys"
    keys.write_text(f"# mounted from a Secret\n{FILE_KEY}\n\n")
    adapter = session_stacks.adapter(chat_stack.upstream, ("--api-keys-file", str(keys)), {KEYS_ENV: ENV_KEY})
    adapter.wait_ready(headers={"Authorization": f"Bearer {FILE_KEY}"})
    return adapter


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_the_health_check_stays_open(keyed: AdapterProcess):
    assert httpx.get(keyed.url + "/").text == "Ollama is running"
    assert httpx.head(keyed.url + "/").status_code == 200


@pytest.mark.parametrize(
    "headers", [{}, bearer(WRONG), {"Authorization": FILE_KEY}, {"Authorization": "Basic x"}]
)
def test_ollama_routes_need_a_key(keyed: AdapterProcess, headers: dict):
    for response in (
        httpx.get(keyed.url + "/api/tags", headers=headers),
        httpx.get(keyed.url + "/api/version", headers=headers),
        httpx.post(keyed.url + "/api/generate", json={"model": MODEL, "prompt": "x"}, headers=headers),
    ):
        assert (response.status_code, response.json()) == (401, {"error": "unauthorized"})


def test_openai_routes_need_a_key_in_their_shape(keyed: AdapterProcess):
    response = httpx.get(keyed.url + "/v1/models", headers=bearer(WRONG))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("key", [FILE_KEY, ENV_KEY], ids=["from-file", "from-env"])
def test_official_clients_with_a_key(keyed: AdapterProcess, key: str):
    client = ollama.Client(host=keyed.url, headers=bearer(key), timeout=60)
    assert client.generate(MODEL, "hi", options={"num_predict": 2}).done
    models = openai.OpenAI(base_url=keyed.url + "/v1", api_key=key, max_retries=0).models.list()
    assert [m.id for m in models.data] == ["phi-4:latest"]


def test_official_clients_without_the_right_key(keyed: AdapterProcess):
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=keyed.url, headers=bearer(WRONG)).list()
    assert caught.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed.url + "/v1", api_key=WRONG, max_retries=0).models.list()


def test_keys_never_reach_the_log(keyed: AdapterProcess):
    for key in (FILE_KEY, ENV_KEY, WRONG):
        httpx.get(keyed.url + "/api/tags", headers=bearer(key))
    log = Path(keyed.log_path).read_text()
    assert "GET /api/tags" in log  # the access log is on
    assert not any(key in log for key in (FILE_KEY, ENV_KEY, WRONG))

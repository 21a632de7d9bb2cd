"""Model metadata: the GGUF header (never the tensors), the digest off the event loop, the fallbacks."""

from __future__ import annotations

import asyncio
import hashlib
import re
import resource
from datetime import datetime
from pathlib import Path

import gguf
import httpx
import numpy as np
import pytest

from llamacontroller.serving.metadata import (
    FileDigests,
    MetadataSource,
    ServerFacts,
    capabilities,
    parameter_size,
    parses_answers,
    quantization_level,
    read_file_facts,
)
from llamacontroller.serving.upstream import Upstream, make_client
from tests.serving.conftest import ALIAS, CHAT_PARAMETERS, MODEL, Stack, Stacks

pytestmark = pytest.mark.timeout(180)

BIG = 1 << 30  # bytes of (sparse) tensor data behind a small header


@pytest.fixture(scope="module")
def big_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GGUF file whose header declares a 1 GiB tensor; the data is a sparse hole on disk."""
    path = tmp_path_factory.mktemp("big") / "big.gguf"
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    writer.add_context_length(131072)
    writer.add_token_list([f"t{i}" for i in range(1000)])
    writer.add_tensor_info("token_embd.weight", (BIG // 4,), np.dtype(np.float32), BIG)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    with path.open("r+b") as file:
        file.truncate(path.stat().st_size + BIG + 64)
    return path


def test_the_header_is_read_without_the_tensors(big_gguf: Path):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB
    facts = read_file_facts(str(big_gguf))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200  # the 1 GiB tensor was never read
    assert facts.size == big_gguf.stat().st_size
    assert facts.kv["general.architecture"] == "llama"
    assert facts.kv["llama.context_length"] == 131072
    assert quantization_level(facts.kv["general.file_type"], "") == "Q4_K_M"
    assert facts.kv["tokenizer.ggml.tokens"] is None  # long arrays are not carried around


def test_the_digest_is_computed_off_the_event_loop(big_gguf: Path):
    async def scenario() -> tuple[str | None, int]:
        digests = FileDigests()
        future = digests.digest(read_file_facts(str(big_gguf)))
        ticks = 0
        while not future.done():  # the loop keeps serving while the file is hashed
            await asyncio.sleep(0.001)
            ticks += 1
        assert digests.digest(read_file_facts(str(big_gguf))) is future  # computed once
        return await future, ticks

    digest, ticks = asyncio.run(scenario())
    assert ticks > 1
    expected = hashlib.sha256()
    with big_gguf.open("rb") as file:
        while chunk := file.read(8 << 20):
            expected.update(chunk)
    assert digest == expected.hexdigest()


def test_a_provisional_digest_stands_in_until_the_real_one_is_known(chat_stack: Stack):
    async def scenario() -> tuple[str, str]:
        async with make_client() as client:
            source = MetadataSource(Upstream(chat_stack.upstream, client), FileDigests(), digest_wait=0)
            first = (await source.get()).digest
            while (latest := (await source.get()).digest) == first:
                await asyncio.sleep(0.01)
            return first, latest

    provisional, real = asyncio.run(scenario())
    assert re.fullmatch("[0-9a-f]{64}", provisional)
    assert real == hashlib.sha256(chat_stack.model_file.read_bytes()).hexdigest() != provisional


@pytest.mark.parametrize(
    ("file_type", "ftype", "level"),
    [
        (0, "", "F32"),
        (1, "", "F16"),
        (15, "", "Q4_K_M"),
        (7, "", "Q8_0"),
        (None, "Q4_K - Medium", "Q4_K_M"),
        (None, "all F32", "F32"),
        (1024, "Q5_K - Small", "Q5_K_S"),
        (None, "IQ2_XXS - 2.0625 bpw", "IQ2_XXS"),
    ],
)
def test_quantization_level(file_type, ftype: str, level: str):
    assert quantization_level(file_type, ftype) == level


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (None, ""),
        (950, "950"),
        (133_568, "133.6K"),
        (1_234_567, "1.2M"),
        (7_615_616_512, "7.6B"),
        (8_000_000_000, "8B"),
    ],
)
def test_parameter_size(count, text: str):
    assert parameter_size(count) == text


def facts(**overrides) -> ServerFacts:
    base = dict(
        alias="m:latest",
        model_path="/models/m.gguf",
        n_ctx=4096,
        n_ctx_train=8192,
        n_params=1,
        size=1,
        ftype="",
        created=0,
        chat_template="{{ messages }}",
    )
    return ServerFacts(**(base | overrides))


@pytest.mark.parametrize(
    ("server", "kv", "expected"),
    [
        (facts(), {}, ["completion"]),
        (facts(template_caps={"supports_tools": True}), {}, ["completion", "tools"]),
        (facts(embeddings=True), {}, ["completion", "embedding"]),
        (facts(embeddings=True, chat_template=""), {}, ["embedding"]),
        (facts(modalities={"vision": True}), {}, ["completion", "vision"]),
        (facts(chat_template="{% if enable_thinking %}<think>{% endif %}"), {}, ["completion", "thinking"]),
        (
            facts(),
            {f"tokenizer.ggml.fim_{k}_token_id": 1 for k in ("pre", "suf", "mid")},
            ["completion", "insert"],
        ),
    ],
)
def test_capabilities(server: ServerFacts, kv: dict, expected: list[str]):
    assert capabilities(server, kv) == expected


@pytest.mark.parametrize(
    ("template", "parsed"),
    [
        ("{{ '<|im_start|>' + message.content }}", False),
        ("{% if enable_thinking %}<think>{% endif %}", True),
        ("{{ message.reasoning_content }}", True),
        ("<|channel|>analysis<|message|>", True),
        ("[THINK]{{ x }}[/THINK]", True),
        ("<|START_RESPONSE|>{{ x }}<|END_RESPONSE|>", True),
        (">>>all\n{{ x }}", True),
    ],
)
def test_templates_whose_answers_the_chat_endpoint_parses(template: str, parsed: bool):
    assert parses_answers(facts(chat_template=template)) is parsed


def test_without_the_file_the_answers_come_from_llama_server(
    stacks: Stacks, model_file: Path, tmp_path: Path
):
    """The sidecar cannot see the file (another mount path): everything still answers, from llama-server."""
    private = tmp_path / "private.gguf"
    private.write_bytes(model_file.read_bytes())
    server = stacks.server(CHAT_PARAMETERS, private)
    private.rename(tmp_path / "moved.gguf")  # llama-server has it loaded; the adapter will not find it
    adapter = stacks.adapter(server.url)
    adapter.wait_ready()
    meta = httpx.get(server.url + "/v1/models").json()["data"][0]["meta"]
    (entry,) = httpx.get(adapter.url + "/api/tags").json()["models"]
    assert entry["name"] == ALIAS
    assert len(entry["digest"]) == 64
    assert entry["size"] == meta["size"]
    datetime.fromisoformat(entry["modified_at"])
    assert entry["details"]["quantization_level"] == "F32"  # from /props' model_ftype
    shown = httpx.post(adapter.url + "/api/show", json={"model": MODEL}).json()
    assert shown["model_info"]["general.parameter_count"] == meta["n_params"]
    assert shown["capabilities"] == ["completion", "tools"]
    assert "could not" not in adapter.log_tail() and "Traceback" not in adapter.log_tail()
    assert "cannot read the GGUF file" in adapter.log_tail()

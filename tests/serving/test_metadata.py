"""Model metadata: the GGUF header (never the tensors), the digest off the event loop, the fallbacks."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import resource
import struct
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import gguf
import httpx
import numpy as np
import pytest

from llamacontroller.gguf_header import read_header
from llamacontroller.serving.catalog.digests import FileDigests
from llamacontroller.serving.catalog.gguf_facts import FileFactsCache, read_file_facts
from llamacontroller.serving.catalog.metadata import (
    capabilities,
    parameter_size,
    parses_answers,
    quantization_level,
)
from llamacontroller.serving.catalog.server_facts import ServerFacts
from llamacontroller.serving.catalog.source import MetadataSource
from llamacontroller.serving.upstream.client import Client
from llamacontroller.serving.upstream.llama_server import Upstream
from tests.support.stacks import ALIAS, CHAT_PARAMETERS, MODEL, Stack, Stacks

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
        async with Client() as client:
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
        (38, "", "MXFP4_MOE"),
        (5, "Q4_2", "Q4_2"),  # removed from llama.cpp: the server's word
    ],
)
def test_quantization_level(file_type, ftype: str, level: str):
    assert quantization_level(file_type, ftype) == level


def test_the_file_type_names_are_the_gguf_packages():
    """Our table of llama.h's llama_ftype names every file type the gguf package knows, alike."""
    for member in gguf.LlamaFileType:
        if member is not gguf.LlamaFileType.GUESSED:
            name = member.name.removeprefix("MOSTLY_").removeprefix("ALL_")
            assert quantization_level(member.value, "") == name


def test_the_serving_processes_import_neither_gguf_nor_numpy():
    """The adapter sidecar and the gateways read GGUF headers with our own reader: the gguf
    package (and numpy with it) stays out of their memory."""
    code = (
        "import sys\n"
        "import llamacontroller.cli, llamacontroller.serving.adapter\n"
        "import llamacontroller.serving.cluster_gateway, llamacontroller.local.gateway\n"
        "import llamacontroller.serving.catalog.source\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'gguf', 'numpy'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


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


# ---------------------------------------------------------------------------------------------
# one read per file, shared

PADDING_KEY = "llamacontroller.test.padding"


def padded_model(model_file: Path, path: Path, strings: int) -> Path:
    """The demo model with one more key-value, first: an array of ``strings`` short strings that
    llama.cpp ignores and a header reader walks (so that a read takes a while). The entry's bytes
    are a multiple of the alignment: the tensor data, moved by as much, stays aligned."""
    data = model_file.read_bytes()
    header = read_header(model_file)
    items = b"".join(struct.pack("<Q", 2) + b"%02d" % (i % 100) for i in range(strings))
    fixed = 8 + 4 + 4 + 8 + len(items)  # key length, value type, item type, count, items
    key = PADDING_KEY + "_" * (-(fixed + len(PADDING_KEY)) % header.alignment)
    entry = struct.pack("<Q", len(key)) + key.encode() + struct.pack("<IIQ", 9, 8, strings) + items
    (kv_count,) = struct.unpack_from("<Q", data, 16)
    path.write_bytes(data[:16] + struct.pack("<Q", kv_count + 1) + entry + data[24:])
    padded = read_header(path)
    assert padded.data_offset == header.data_offset + len(entry) and padded.tensors == header.tensors
    return path


def test_concurrent_metadata_requests_share_one_read_of_the_file(
    stacks: Stacks, model_file: Path, tmp_path: Path
):
    """Many requests at once while the file is being read: one read, awaited by all of them."""
    model = padded_model(model_file, tmp_path / "padded.gguf", 3_000_000)
    server = stacks.server(CHAT_PARAMETERS, model)
    files = FileFactsCache()
    requests = 16

    async def scenario() -> list:
        async with Client() as client:
            source = MetadataSource(Upstream(server.url, client), FileDigests(), digest_wait=0, files=files)
            return await asyncio.gather(*(source.get() for _ in range(requests)))

    answers = asyncio.run(scenario())
    assert files.reads == 1
    assert files.joined >= 1  # requests came while the file was being read, and awaited that read
    assert all(answer.model_info == answers[0].model_info for answer in answers)
    info = answers[0].model_info
    (padding,) = (key for key in info if key.startswith(PADDING_KEY))
    assert info[padding] is None and info["general.architecture"] == "llama"


def test_a_file_is_read_once_per_version_whoever_asks(model_file: Path, tmp_path: Path):
    """Callers on two event loops (threads) at once share one read; a changed file is read again;
    a failed read is not kept."""
    path = tmp_path / "model.gguf"
    path.write_bytes(model_file.read_bytes())
    files = FileFactsCache()

    async def ask(count: int) -> list:
        return await asyncio.gather(*(files.get(str(path)) for _ in range(count)))

    results: list = []
    threads = [threading.Thread(target=lambda: results.extend(asyncio.run(ask(8)))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 16 and all(facts is results[0] for facts in results)
    assert files.reads == 1

    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1_000_000))  # a new version of the file
    (changed,) = asyncio.run(ask(1))
    assert files.reads == 2 and changed is not results[0] and changed.kv == results[0].kv

    path.write_bytes(b"not a model")
    for reads in (3, 4):  # the failure is not kept: each call reads again
        with pytest.raises(ValueError, match="not a GGUF file"):
            asyncio.run(files.get(str(path)))
        assert files.reads == reads

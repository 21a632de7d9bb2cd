"""What clients learn about the served model: /api/tags, /api/show, /api/ps and /v1/models.

Sources, best first: the GGUF file (header and key-value metadata only, never the tensors, read
by our own ``gguf_header`` once per version of the file, whoever asks; its sha256 and mtime),
llama-server's ``/props`` (model path, context, chat template, modalities) and ``/v1/models``
(parameter count, size). The adapter finds the file at ``/props``' ``model_path``:
it runs as a sidecar of llama-server and mounts the models volume at the same path. When the file
cannot be read there, the answers fall back to what llama-server says; nothing fails because of it.

The digest is the file's sha256, computed once in a background thread (a 40 GB file takes a while
and must not hold up requests). Until it is known, answers carry a provisional digest: the sha256
of the file's path, size and mtime, 64 hex digits like the real one.

The cluster gateway does not mount the models: it asks the slot's adapter (``FILE_PATH``, the
``sidecar``) for the file's facts and sha256, so both answer alike.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llamacontroller.gguf_header import read_header
from llamacontroller.serving.errors import ApiError, UpstreamError
from llamacontroller.serving.streams import rfc3339
from llamacontroller.serving.upstream import Upstream

log = logging.getLogger(__name__)

MAX_ARRAY = 64  # longer GGUF arrays (vocabularies, merges) are listed as null, as Ollama does
HASH_CHUNK = 8 << 20
DIGEST_WAIT = 2.0  # how long answers wait, all in all, for a digest still being computed
FILE_PATH = "/llamacontroller/v1/file"  # the adapter's report of its model file, for the gateway
SIDECAR_RETRY = 10.0  # seconds between questions to an adapter that could not answer (yet)


@dataclass(frozen=True)
class ServerFacts:
    """What llama-server says about its model."""

    alias: str
    model_path: str
    n_ctx: int
    n_ctx_train: int | None
    n_params: int | None
    size: int | None
    ftype: str
    created: int | None
    chat_template: str
    template_caps: dict[str, Any] = field(default_factory=dict)
    modalities: dict[str, Any] = field(default_factory=dict)
    embeddings: bool = False


@dataclass(frozen=True)
class FileFacts:
    """What the GGUF file says: size, mtime and its key-value metadata (long arrays as None)."""

    path: str
    size: int
    mtime_ns: int
    kv: dict[str, Any]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    digest: str
    size: int
    modified_at: str
    created: int
    details: dict[str, Any]
    model_info: dict[str, Any]
    capabilities: list[str]
    context_length: int
    template: str
    parameters: str
    modelfile: str
    license: str


# ---------------------------------------------------------------------------------------------
# llama-server


async def fetch_server_facts(upstream: Upstream) -> ServerFacts:
    props, models, embeddings = await asyncio.gather(
        upstream.get_json("/props"), upstream.get_json("/v1/models"), serves_embeddings(upstream)
    )
    entry = (models.get("data") or [{}])[0]
    meta = entry.get("meta") or {}
    alias = props.get("model_alias") or entry.get("id") or Path(props.get("model_path", "model")).stem
    return ServerFacts(
        alias=alias,
        model_path=props.get("model_path") or "",
        n_ctx=int((props.get("default_generation_settings") or {}).get("n_ctx") or meta.get("n_ctx") or 0),
        n_ctx_train=meta.get("n_ctx_train"),
        n_params=meta.get("n_params"),
        size=meta.get("size"),
        ftype=props.get("model_ftype") or meta.get("ftype") or "",
        created=entry.get("created"),
        chat_template=props.get("chat_template") or "",
        template_caps=props.get("chat_template_caps") or {},
        modalities=props.get("modalities") or {},
        embeddings=embeddings,
    )


async def serves_embeddings(upstream: Upstream) -> bool:
    """Whether llama-server runs with ``--embeddings``: /props does not say, an empty request does.

    Without the flag it answers 501 at once; with it, 400 for the empty input. Nothing is computed.
    """
    try:
        await upstream.post_json("/v1/embeddings", {"input": []})
    except UpstreamError as exc:
        return exc.code == 400
    return True


# ---------------------------------------------------------------------------------------------
# the GGUF file


def read_file_facts(path: str) -> FileFacts:
    """Stat and header of the GGUF file (blocking: run it in a thread): the key-values, arrays of
    more than MAX_ARRAY items skipped unread (None). Milliseconds and a few MiB whatever the
    vocabulary; the tensor data is never read. Raises OSError, or GGUFError (a ValueError)."""
    header = read_header(path, MAX_ARRAY)
    return FileFacts(path=path, size=header.size, mtime_ns=header.mtime_ns, kv=header.kv)


class FileFactsCache:
    """The facts of GGUF files, read once per (path, size, mtime_ns) and shared: callers that come
    while a file is being read await that read (single-flight), later ones get its result.

    Concurrent futures and a thread per read, not asyncio's: the cache serves whichever event loop
    asks (the adapter's, the local gateway's thread, tests' loops) and needs none of their executors.
    A failed read is shared by the callers that awaited it, then forgotten, so that the next caller
    tries again. ``reads`` and ``joined`` count the reads started and the callers that awaited one
    in progress (observability: logs and tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[tuple[int, int], concurrent.futures.Future[FileFacts]]] = {}
        self.reads = 0
        self.joined = 0

    async def get(self, path: str) -> FileFacts:
        stat = await asyncio.to_thread(os.stat, path)
        key = (stat.st_size, stat.st_mtime_ns)
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None and entry[0] == key:
                future, start = entry[1], False
                if not future.done():
                    self.joined += 1
            else:  # new, or changed since it was read: only the latest version is kept
                future, start = concurrent.futures.Future(), True
                future.set_running_or_notify_cancel()  # a caller that is cancelled cannot cancel it
                self._entries[path] = (key, future)
                self.reads += 1
        if start:
            args = (path, key, future)
            threading.Thread(
                target=self._read, args=args, name=f"gguf {Path(path).name}", daemon=True
            ).start()
        return await asyncio.wrap_future(future)

    def _read(self, path: str, key: tuple[int, int], future: concurrent.futures.Future[FileFacts]) -> None:
        started = time.monotonic()
        try:
            facts = read_file_facts(path)
        except Exception as exc:
            with self._lock:
                if self._entries.get(path) == (key, future):
                    del self._entries[path]
            future.set_exception(exc)
            return
        log.info("GGUF header of %s read in %.0f ms", path, (time.monotonic() - started) * 1e3)
        future.set_result(facts)


FILE_FACTS = FileFactsCache()  # the process's: every MetadataSource reading a file shares its read


def sha256_file(path: str, stop: threading.Event) -> str | None:
    """The file's sha256 in chunks (hashlib releases the GIL); None when stopped first."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(HASH_CHUNK):
            if stop.is_set():
                return None
            digest.update(chunk)
    return digest.hexdigest()


def provisional_digest(*parts: object) -> str:
    return hashlib.sha256("\0".join(map(str, parts)).encode()).hexdigest()


def _settle(future: asyncio.Future[str | None], value: str | None) -> None:
    if not future.done():
        future.set_result(value)


class FileDigests:
    """sha256 of model files, each computed once per (path, size, mtime) in a daemon thread.

    A daemon thread, not the loop's executor: shutting the loop down waits for executor threads,
    and nobody should wait for 40 GB to be hashed to stop the adapter.
    """

    def __init__(self) -> None:
        self._futures: dict[tuple[str, int, int], asyncio.Future[str | None]] = {}
        self._stop = threading.Event()

    def digest(self, facts: FileFacts) -> asyncio.Future[str | None]:
        key = (facts.path, facts.size, facts.mtime_ns)
        if key not in self._futures:
            self._futures[key] = self._start(facts.path)
        return self._futures[key]

    def _start(self, path: str) -> asyncio.Future[str | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str | None] = loop.create_future()

        def run() -> None:
            started = time.monotonic()
            try:
                result = sha256_file(path, self._stop)
                log.info("sha256 of %s computed in %.1f s", path, time.monotonic() - started)
            except OSError as exc:
                log.warning("cannot compute the sha256 of %s: %s", path, exc)
                result = None
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
                loop.call_soon_threadsafe(_settle, future, result)

        threading.Thread(target=run, name=f"sha256 {Path(path).name}", daemon=True).start()
        return future

    def close(self) -> None:
        self._stop.set()


# ---------------------------------------------------------------------------------------------
# composing the answer (pure)

SIZE_WORDS = {"small": "S", "medium": "M", "large": "L", "extra small": "XS", "extra extra small": "XXS"}


# GGUF's general.file_type: llama.cpp's `enum llama_ftype` (include/llama.h), LLAMA_FTYPE_ALL_ and
# LLAMA_FTYPE_MOSTLY_ left out, as Ollama names them; the values llama.h comments out (removed
# types) are absent, and so is LLAMA_FTYPE_GUESSED (1024): llama-server's /props says more then.
LLAMA_FTYPES: dict[int, str] = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    21: "Q2_K_S",
    22: "IQ3_XS",
    23: "IQ3_XXS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
    36: "TQ1_0",
    37: "TQ2_0",
    38: "MXFP4_MOE",
    39: "NVFP4",
    40: "Q1_0",
    41: "Q2_0",
}


def quantization_level(file_type: Any, ftype: str) -> str:
    """GGUF ``general.file_type`` (e.g. 15) as Ollama spells it ("Q4_K_M"), else /props' ftype."""
    try:
        name = LLAMA_FTYPES.get(int(file_type))
    except (TypeError, ValueError):
        name = None
    if name is not None:
        return name
    text = ftype.strip()
    for prefix in ("all ", "mostly "):
        text = text.removeprefix(prefix)
    base, _, size = text.partition(" - ")  # llama.cpp's "Q4_K - Medium"
    suffix = SIZE_WORDS.get(size.strip().lower())
    return f"{base}_{suffix}" if suffix else base


def parameter_size(count: int | None) -> str:
    """A parameter count as Ollama shows it: "7.6B", "1.2M"."""
    if not count:
        return ""
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}".removesuffix(".0") + unit
    return str(count)


THINKING_MARKERS = ("enable_thinking", "<think>", "reasoning_content", "<|channel|>")
FIM_KEYS = (
    "tokenizer.ggml.fim_pre_token_id",
    "tokenizer.ggml.fim_suf_token_id",
    "tokenizer.ggml.fim_mid_token_id",
)


# llama-server's chat endpoint parses some models' answers even without tools: reasoning, answer
# channels and tags, prefixes (it picks a parser from the template). Broad on purpose: a template
# with any of these keeps that endpoint for every chat (see ``ollama_generate.plain_chat_plan``).
ANSWER_PARSING_MARKERS = ("think", "reason", "channel", "start_response", ">>>all", "functools")


def parses_answers(server: ServerFacts) -> bool:
    """The chat endpoint may change this model's answers (case-insensitive markers): a plain chat
    through ``/completion`` would not answer the same."""
    template = server.chat_template.lower()
    return any(marker in template for marker in ANSWER_PARSING_MARKERS)


Predicate = Callable[[ServerFacts, dict[str, Any]], bool]
CAPABILITIES: tuple[tuple[str, Predicate], ...] = (
    # llama-server completes even with --embeddings; a pure embedding model has no chat template.
    ("completion", lambda s, kv: bool(s.chat_template) or not s.embeddings),
    (
        "tools",
        lambda s, kv: bool(
            s.template_caps.get("supports_tools") or s.template_caps.get("supports_tool_calls")
        ),
    ),
    ("insert", lambda s, kv: all(kv.get(key) is not None for key in FIM_KEYS)),
    ("embedding", lambda s, kv: s.embeddings),
    ("vision", lambda s, kv: bool(s.modalities.get("vision"))),
    ("thinking", lambda s, kv: any(marker in s.chat_template for marker in THINKING_MARKERS)),
)


def capabilities(server: ServerFacts, kv: dict[str, Any]) -> list[str]:
    return [name for name, applies in CAPABILITIES if applies(server, kv)]


def model_info(server: ServerFacts, kv: dict[str, Any]) -> dict[str, Any]:
    """The GGUF key-values (without the chat template, which is ``template``), completed by the server."""
    info = {key: value for key, value in kv.items() if not key.startswith("tokenizer.chat_template")}
    if server.n_params:
        info.setdefault("general.parameter_count", server.n_params)
    arch = info.get("general.architecture")
    if arch and server.n_ctx_train:
        info.setdefault(f"{arch}.context_length", server.n_ctx_train)
    return info


def compose(server: ServerFacts, file: FileFacts | None, digest: str) -> ModelMetadata:
    kv = file.kv if file else {}
    arch = kv.get("general.architecture") or ""
    mtime = file.mtime_ns / 1e9 if file else float(server.created or time.time())
    modelfile_lines = [
        "# Modelfile of a model served by LlamaController (llama-server)",
        f"FROM {server.model_path}",
        f"PARAMETER num_ctx {server.n_ctx}",
    ]
    return ModelMetadata(
        name=server.alias,
        digest=digest,
        size=file.size if file else int(server.size or 0),
        modified_at=rfc3339(mtime),
        created=int(mtime),
        details={
            "parent_model": "",
            "format": "gguf",
            "family": arch,
            "families": [arch] if arch else [],
            "parameter_size": parameter_size(server.n_params or kv.get("general.parameter_count")),
            "quantization_level": quantization_level(kv.get("general.file_type"), server.ftype),
        },
        model_info=model_info(server, kv),
        capabilities=capabilities(server, kv),
        context_length=server.n_ctx,
        template=server.chat_template,
        parameters=f"num_ctx {server.n_ctx}",
        modelfile="\n".join(modelfile_lines) + "\n",
        license=kv.get("general.license") if isinstance(kv.get("general.license"), str) else "",
    )


# ---------------------------------------------------------------------------------------------
# one upstream's metadata, cached


class MetadataSource:
    """The metadata of the model behind one upstream: fetched once, the digest in the background.

    ``sidecar``: an adapter that reads the model file when this process cannot (the gateway's case).
    """

    def __init__(
        self,
        upstream: Upstream,
        digests: FileDigests,
        digest_wait: float = DIGEST_WAIT,
        sidecar: Upstream | None = None,
        files: FileFactsCache = FILE_FACTS,
    ) -> None:
        self.upstream = upstream
        self.digests = digests
        self.digest_wait = digest_wait
        self.sidecar = sidecar
        self.files = files
        self._server: ServerFacts | None = None
        self._file: FileFacts | None = None
        self._file_read = False
        self._final: ModelMetadata | None = None
        self._lock = asyncio.Lock()
        self._digest_deadline: float | None = None
        self._remote = False  # the file is not here: its facts and digest come from the sidecar
        self._sidecar_digest: str | None = None
        self._sidecar_next = 0.0

    async def server_facts(self) -> ServerFacts:
        """Cached after the first success; errors (llama-server down or loading) are raised."""
        if self._server is None:
            async with self._lock:
                if self._server is None:
                    self._server = await fetch_server_facts(self.upstream)
        return self._server

    async def file_facts(self, path: str) -> FileFacts | None:
        if not self._file_read:
            file, failure = None, None
            try:
                file = await self.files.get(path)  # concurrent requests share one read
            except (OSError, ValueError) as exc:
                failure = exc
            if not self._file_read:  # the first request back records (and logs) the outcome
                self._file_read = True
                self._file = file
                if failure is not None:
                    self._remote = self.sidecar is not None
                    if self._remote:  # expected: the gateway does not mount the models
                        log.info("GGUF file %r not here (%s): asking %s", path, failure, self.sidecar)
                    else:
                        log.warning(
                            "cannot read the GGUF file %r (answering from llama-server): %s", path, failure
                        )
        if self._remote:
            await self._ask_sidecar()
        return self._file

    async def get(self) -> ModelMetadata:
        if self._final is not None:
            return self._final
        server = await self.server_facts()
        file = await self.file_facts(server.model_path)
        digest, final = await self._digest(server, file)
        metadata = compose(server, file, digest)
        if final:
            self._final = metadata
        return metadata

    async def file_report(self) -> dict[str, Any]:
        """What ``FILE_PATH`` answers: the file's facts and sha256 (null while being computed)."""
        server = await self.server_facts()
        file = await self.file_facts(server.model_path)
        if file is None or self._remote:
            return {"file": None, "sha256": None}  # the file is not here
        try:
            sha256 = await asyncio.wait_for(asyncio.shield(self.digests.digest(file)), self.digest_wait)
        except TimeoutError:
            sha256 = None
        return {"file": asdict(file), "sha256": sha256}

    async def _ask_sidecar(self) -> None:
        """The file's facts and sha256 from the adapter that reads it; at most every SIDECAR_RETRY."""
        sidecar = self.sidecar
        if sidecar is None or self._sidecar_digest is not None or time.monotonic() < self._sidecar_next:
            return
        self._sidecar_next = time.monotonic() + SIDECAR_RETRY
        try:
            report = await sidecar.get_json(FILE_PATH)
            if report.get("file"):
                self._file = FileFacts(**report["file"])
            self._sidecar_digest = report.get("sha256") or None
        except (ApiError, TypeError, AttributeError) as exc:
            reason = exc.message if isinstance(exc, ApiError) else f"unexpected answer: {exc}"
            log.warning("no file metadata from the adapter at %s: %s", sidecar.base_url, reason)

    async def _digest(self, server: ServerFacts, file: FileFacts | None) -> tuple[str, bool]:
        """The sha256 and whether it is final: a provisional digest stands in while it is computed."""
        if file is None:
            return provisional_digest(server.alias, server.model_path, server.size, server.n_params), True
        if self._remote:  # a gateway: the adapter sent the file's facts and its digest (file_facts)
            if self._sidecar_digest:
                return self._sidecar_digest, True
            return provisional_digest(file.path, file.size, file.mtime_ns), False
        future = self.digests.digest(file)
        if self._digest_deadline is None:
            self._digest_deadline = time.monotonic() + self.digest_wait
        try:
            # the first answers wait a little (a small file is hashed by then), later ones do not
            wait = max(0.0, self._digest_deadline - time.monotonic())
            real = await asyncio.wait_for(asyncio.shield(future), wait)
        except TimeoutError:
            return provisional_digest(file.path, file.size, file.mtime_ns), False
        return (real, True) if real else (provisional_digest(file.path, file.size, file.mtime_ns), True)

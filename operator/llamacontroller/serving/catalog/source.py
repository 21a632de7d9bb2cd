"""The metadata of the model behind one upstream, cached: fetched once, the digest in the background.

The adapter finds the model file at ``/props``' ``model_path``: it runs as a sidecar of llama-server
and mounts the models volume at the same path. When the file cannot be read there, the answers fall
back to what llama-server says; nothing fails because of it. Until the file's sha256 is known,
answers carry a provisional digest.

The cluster gateway does not mount the models: it asks the slot's adapter (``FILE_PATH``, the
``sidecar``) for the file's facts and sha256, so both answer alike.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import Any

from llamacontroller.serving.catalog.digests import FileDigests, provisional_digest
from llamacontroller.serving.catalog.gguf_facts import FILE_FACTS, FileFacts, FileFactsCache
from llamacontroller.serving.catalog.metadata import ModelMetadata, compose
from llamacontroller.serving.catalog.server_facts import ServerFacts, fetch_server_facts
from llamacontroller.serving.errors import HttpError
from llamacontroller.serving.upstream.llama_server import Upstream

log = logging.getLogger(__name__)

DIGEST_WAIT = 2.0  # how long answers wait, all in all, for a digest still being computed
FILE_PATH = "/llamacontroller/v1/file"  # the adapter's report of its model file, for the gateway
SIDECAR_RETRY = 10.0  # seconds between questions to an adapter that could not answer (yet)


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
        except (HttpError, TypeError, AttributeError) as exc:
            reason = exc.message if isinstance(exc, HttpError) else f"unexpected answer: {exc}"
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

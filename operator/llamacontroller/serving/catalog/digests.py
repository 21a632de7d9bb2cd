"""Model digests: the file's sha256, computed once per version in a background thread, and the
provisional digest that stands in until it is known (64 hex digits like the real one)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from pathlib import Path

from llamacontroller.serving.catalog.gguf_facts import FileFacts

log = logging.getLogger(__name__)

HASH_CHUNK = 8 << 20


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

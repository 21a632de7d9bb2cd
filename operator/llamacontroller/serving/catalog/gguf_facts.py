"""The GGUF file's facts (size, mtime, key-value metadata), read once per version of the file.

The header is read by our own ``gguf_header`` (never the tensors): milliseconds and a few MiB
whatever the vocabulary, in a thread, shared by whoever asks while it is being read.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llamacontroller.gguf_header import read_header

log = logging.getLogger(__name__)

MAX_ARRAY = 64  # longer GGUF arrays (vocabularies, merges) are listed as null, as Ollama does


@dataclass(frozen=True)
class FileFacts:
    """What the GGUF file says: size, mtime and its key-value metadata (long arrays as None)."""

    path: str
    size: int
    mtime_ns: int
    kv: dict[str, Any]


def read_file_facts(path: str) -> FileFacts:
    """Stat and header of the GGUF file (blocking: run it in a thread): the key-values, arrays of
    more than MAX_ARRAY items skipped unread (None). Raises OSError, or GGUFError (a ValueError)."""
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

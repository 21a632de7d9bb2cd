"""Keys to work on (LlamaModels, as ``namespace/name``), worked on by a pool of tasks.

A key is in the queue at most once, and worked on by one task at a time: a key added while it is
being worked on is worked on once more afterwards, so the last change is always seen. A failed key
is tried again after a delay that doubles (per key) up to RETRY_MAX; a success forgets its delay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

RETRY_FIRST = 0.5  # seconds
RETRY_MAX = 60.0


class WorkQueue:
    def __init__(
        self, work: Callable[[str], Awaitable[None]], workers: int, retry_first: float = RETRY_FIRST
    ) -> None:
        self.work = work
        self.workers = workers
        self.retry_first = retry_first
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._queued: set[str] = set()
        self._working: set[str] = set()
        self._again: set[str] = set()  # added while being worked on
        self._delays: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def add(self, key: str) -> None:
        if key in self._working:
            self._again.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def add_later(self, key: str, delay: float) -> None:
        if key not in self._timers:
            self._timers[key] = asyncio.get_running_loop().call_later(delay, self._due, key)

    def _due(self, key: str) -> None:
        del self._timers[key]
        self.add(key)

    @property
    def idle(self) -> bool:
        """Nothing queued, in work or waiting to be retried."""
        return not (self._queued or self._working or self._timers)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker(), name=f"worker {i}") for i in range(self.workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            self._working.add(key)
            try:
                await self.work(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a worker must live on: the key is retried, the error logged
                delay = min(self._delays.get(key, self.retry_first / 2) * 2, RETRY_MAX)
                self._delays[key] = delay
                log.warning("%s: %s: %s (trying again in %.1f s)", key, type(exc).__name__, exc, delay)
                self.add_later(key, delay)
            else:
                self._delays.pop(key, None)
            finally:
                self._working.discard(key)
                if key in self._again:
                    self._again.discard(key)
                    self.add(key)

"""Logs for assertions in tests: every HTTP request served, and every watch event emitted.

Both logs are append-only lists of frozen records; appending is cheap and they are kept in full, so a
test can assert over the whole history (e.g. "at no instant were two pods bound to the same GPU").
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class AuditRecord:
    """One HTTP request as the API server saw it."""

    seq: int
    time: float  # time.monotonic() when the request arrived
    method: str
    verb: str | None  # get, list, watch, create, update, patch, delete, deletecollection (None: non-resource)
    group: str | None
    version: str | None
    resource: str | None
    subresource: str | None
    namespace: str | None
    name: str | None
    user_agent: str
    status: int  # the response status; 499 if the client went away first; watches: 200 when streaming starts
    path: str


@dataclass(frozen=True)
class WatchEventRecord:
    """One event emitted to watchers (whether anybody watched or not)."""

    seq: int
    time: float
    type: str  # ADDED, MODIFIED, DELETED
    group: str
    version: str
    resource: str
    namespace: str | None
    name: str
    resource_version: str
    snapshot: dict[str, Any]  # never mutated by the emulator (copy-on-write); use .object for a copy

    @property
    def object(self) -> dict[str, Any]:
        """A deep copy of the object as it was at this event."""
        return copy.deepcopy(self.snapshot)


class RecordLog:
    """A thread-safe append-only list of records with sequence numbers."""

    def __init__(self) -> None:
        self._records: list[Any] = []
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        return len(self._records) + 1

    def append(self, record: Any) -> None:
        with self._lock:
            self._records.append(record)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.snapshot())

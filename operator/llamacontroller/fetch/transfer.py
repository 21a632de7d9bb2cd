"""One HTTP download into a partial file, resumed with a Range request where it stopped (a broken
connection, or a fetch that was killed), hashing as it writes."""

from __future__ import annotations

import hashlib
import os
import re
import time
from pathlib import Path

import httpx

from llamacontroller.fetch.errors import FetchError
from llamacontroller.fetch.progress import Progress, human_size

CHUNK = 1 << 20
ATTEMPTS = 6  # connections per download: the first and five resumptions after a break
BACKOFF_SECONDS = (0.5, 1, 2, 4, 8)
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def _hash_of(partial: Path) -> tuple[hashlib._Hash, int]:
    """The sha256 state of what an earlier attempt left, and its length."""
    digest, size = hashlib.sha256(), 0
    with partial.open("rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
            size += len(block)
    return digest, size


def _total(response: httpx.Response, offset: int) -> int | None:
    if response.status_code == 206:
        match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
        if match and match.group(3) != "*":
            return int(match.group(3))
        return None
    length = response.headers.get("content-length")
    return offset + int(length) if length and length.isdigit() else None


def _range_start(response: httpx.Response) -> int | None:
    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
    return int(match.group(1)) if match else None


def download(
    client: httpx.Client,
    url: str,
    partial: Path,
    progress: Progress,
    *,
    headers: dict[str, str] | None = None,
    size: int | None = None,
) -> str:
    """Fetch ``url`` into ``partial`` (continuing what it holds) and return the sha256 of the whole.

    ``size``: the length the source announced, if it did. A server that ignores Range gets the whole
    file again; a broken connection is resumed up to ATTEMPTS times; an HTTP error is a FetchError."""
    digest, offset = _hash_of(partial) if partial.exists() else (hashlib.sha256(), 0)
    if offset:
        progress.say(f"resuming at {human_size(offset)}")
    for attempt in range(ATTEMPTS):
        asked = {**(headers or {}), **({"Range": f"bytes={offset}-"} if offset else {})}
        try:
            with client.stream("GET", url, headers=asked) as response:
                if response.status_code == 416 and offset and size == offset:
                    break  # an earlier attempt had it all
                if response.status_code == 416 or (
                    offset and response.status_code == 206 and _range_start(response) != offset
                ):
                    digest, offset = hashlib.sha256(), 0  # what was kept no longer fits: start over
                    partial.unlink(missing_ok=True)
                    continue
                answer = f"HTTP {response.status_code} {response.reason_phrase}"
                if response.status_code >= 500:
                    raise httpx.RemoteProtocolError(answer)  # the server's failure may pass: again
                if response.status_code >= 400:
                    raise FetchError(f"{_shown(url)}: {answer}")
                if offset and response.status_code == 200:
                    digest, offset = hashlib.sha256(), 0  # the server ignores Range: the whole again
                    partial.unlink(missing_ok=True)
                total = _total(response, offset) or size
                with partial.open("ab") as out:
                    for block in response.iter_bytes():  # as received: a break keeps all that came
                        out.write(block)
                        digest.update(block)
                        offset += len(block)
                        progress.update(offset, total)
                    out.flush()
                    os.fsync(out.fileno())
                if total is None or offset >= total:
                    progress.update(offset, offset)
                    break
                raise httpx.RemoteProtocolError("the body ended early")
        except httpx.TransportError as exc:
            why = str(exc) or type(exc).__name__
            if attempt == ATTEMPTS - 1:
                raise FetchError(f"{_shown(url)}: {why} (after {ATTEMPTS} tries)") from exc
            progress.say(f"the connection failed at {human_size(offset)} ({why}): trying again")
            time.sleep(BACKOFF_SECONDS[attempt])
    return digest.hexdigest()


def _shown(url: str) -> str:
    """A URL for messages: without a query, which may hold a signature."""
    return url.split("?", 1)[0]

"""A loopback stand-in for the places models come from: a plain HTTP file server with Range support,
and the Hugging Face hub's URL layout with the headers `huggingface_hub` reads (a fake of an external
system, on 127.0.0.1 only).

The hub answers ``/<owner>/<repo>/resolve/<revision>/<file>`` as huggingface.co does for an LFS
file: a 302 to its storage (``X-Repo-Commit``, ``X-Linked-Etag`` = the LFS sha256, ``X-Linked-Size``,
``ETag``), and 404s with ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound) or 401/403
for private and gated repositories. The storage is another origin (another port), as the hub's CDN
is, so the client stops at the redirect and takes the file's facts from it.

Every GET of a file's bytes is counted (``gets``); ``drop_once`` makes the next GET of a file end
the connection after that many bytes, as a broken network does.
"""

from __future__ import annotations

import hashlib
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

CHUNK = 64 * 1024
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class HubFile:
    data: bytes
    sha256: str
    commit: str


@dataclass
class HubRepo:
    files: dict[str, dict[str, HubFile]] = field(default_factory=dict)  # revision -> file -> content
    token: str | None = None  # private: the token it takes
    gated: bool = False


@dataclass
class Served:
    """What the servers hold and what they saw."""

    files: dict[str, bytes] = field(default_factory=dict)  # plain path -> bytes
    blobs: dict[str, bytes] = field(default_factory=dict)  # sha256 -> bytes (the hub's storage)
    repos: dict[str, HubRepo] = field(default_factory=dict)
    gets: Counter[str] = field(default_factory=Counter)  # path -> GETs of its bytes
    ranges: list[str] = field(default_factory=list)  # the Range headers asked, in order
    requests: list[str] = field(default_factory=list)  # "METHOD path" of every request, in order
    drop_once: dict[str, int] = field(default_factory=dict)  # path -> bytes to send before dropping
    fail_once: dict[str, int] = field(default_factory=dict)  # path -> the status of its next GET
    delay: float = 0.0  # seconds between chunks (a slow link, so that fetches overlap)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(served: Served, storage: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            with served.lock:
                served.requests.append(f"{self.command} {path}")
            if path.startswith("/blobs/"):
                data = served.blobs.get(path.removeprefix("/blobs/"))
                return self._bytes(path, data, body)
            resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if resolve:
                return self._resolve(*resolve.groups())
            return self._bytes(path, served.files.get(path), body)

        def _resolve(self, repo_id: str, revision: str, name: str) -> None:
            repo = served.repos.get(repo_id)
            auth = self.headers.get("Authorization", "")
            if repo is None or (repo.token and auth != f"Bearer {repo.token}" and not repo.gated):
                return self._error(401 if repo else 404, "RepoNotFound", "Repository not found")
            if repo.gated and auth != f"Bearer {repo.token}":
                return self._error(403, "GatedRepo", "Access to this repository is restricted")
            files = repo.files.get(revision)
            if files is None:
                return self._error(404, "RevisionNotFound", "Invalid rev id")
            found = files.get(name)
            if found is None:
                return self._error(404, "EntryNotFound", "Entry not found")
            self.send_response(302)
            self.send_header("Location", f"{storage[0]}/blobs/{found.sha256}?signature=abc")
            self.send_header("X-Repo-Commit", found.commit)
            self.send_header("ETag", f'"{hashlib.sha1(found.data).hexdigest()}"')
            self.send_header("X-Linked-Etag", f'"{found.sha256}"')
            self.send_header("X-Linked-Size", str(len(found.data)))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _error(self, status: int, code: str, message: str) -> None:
            text = message.encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def _bytes(self, path: str, data: bytes | None, body: bool) -> None:
            if data is None:
                return self._error(404, "NotFound", "no such file")
            with served.lock:
                failure = served.fail_once.pop(path, None) if body else None
            if failure is not None:
                return self._error(failure, "Failure", "failed on purpose")
            start, status = 0, 200
            asked = self.headers.get("Range")
            match = _RANGE.match(asked or "")
            if match:
                start = int(match.group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            with served.lock:
                if body:
                    served.gets[path] += 1
                    served.ranges.append(asked or "")
                drop = served.drop_once.pop(path, None) if body else None
            self.send_response(status)
            self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            end = len(data) if drop is None else start + drop
            for at in range(start, end, CHUNK):
                self.wfile.write(data[at : min(at + CHUNK, end)])
                self.wfile.flush()
                if served.delay:
                    threading.Event().wait(served.delay)
            if drop is not None:
                self.close_connection = True
                self.connection.shutdown(2)  # mid-body: the client sees the connection end early

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that goes away mid-answer (a fetch stopped, a connection dropped on purpose) is
        no error of the server; anything else is printed as usual."""
        if not isinstance(sys.exc_info()[1], ConnectionError | OSError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@dataclass
class ModelServers:
    served: Served
    url: str  # the plain file server, which is also the hub's endpoint
    storage: str  # the hub's storage (its CDN)

    def add_file(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``path``; its URL."""
        self.served.files[path] = data
        return f"{self.url}{path}"

    def add_hub_file(
        self, repo: str, name: str, data: bytes, revision: str = "main", commit: str | None = None
    ) -> HubFile:
        sha = hashlib.sha256(data).hexdigest()
        entry = HubFile(
            data=data, sha256=sha, commit=commit or hashlib.sha1(repo.encode() + data).hexdigest()
        )
        self.served.repos.setdefault(repo, HubRepo()).files.setdefault(revision, {})[name] = entry
        self.served.blobs[sha] = data
        return entry


@contextmanager
def model_servers(host: str = "127.0.0.1") -> Iterator[ModelServers]:
    """The file server (and hub) and the hub's storage, on two ports of ``host`` (loopback, or the
    test cluster's bridge, which its Pods reach)."""
    served = Served()
    storage: list[str] = []
    front = _Server((host, 0), _handler(served, storage))
    back = _Server((host, 0), _handler(served, storage))
    storage.append(f"http://{host}:{back.server_address[1]}")
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (front, back)]
    for thread in threads:
        thread.start()
    try:
        yield ModelServers(served, f"http://{host}:{front.server_address[1]}", storage[0])
    finally:
        for server in (front, back):
            server.shutdown()
            server.server_close()

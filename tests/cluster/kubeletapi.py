"""The kubelet API of a test node, as much of it as the API server needs for ``pods/log``
(``kubectl logs``): ``GET /containerLogs/{namespace}/{pod}/{container}`` over HTTPS on the node's
InternalIP and kubelet port (what the Node's status says: ``addresses`` and
``daemonEndpoints.kubeletEndpoint.Port``), answered from the log files the agent writes (pods.py).

As the kubelet:

* TLS with a serving certificate for the node's IP from the cluster's CA (the API server verifies it:
  ``--kubelet-certificate-authority``); a client certificate from that CA is asked for and checked;
  a request without one is 401, one from a user other than the API server's kubelet client
  (``--kubelet-client-certificate``) is 403. A real kubelet asks the API server whether the user
  may ``get nodes/proxy`` (a SubjectAccessReview); this one knows the one user the API server is;
* the query the API server forwards (PodLogOptions): ``tailLines``, ``limitBytes``, ``previous``,
  ``follow`` (the run's output as it grows, until the run ends or the client goes), ``stream=All``;
  the container's run is chosen from its status by the kubelet's rules (``log_run``), with its
  error texts (400), and an unknown Pod or container is 404;
* only GET (405 otherwise); any other path is 404;
* a lost node's (``Kubelet.disconnect``) kubelet API is out of reach: connections end unanswered.

Not done: ``timestamps``, ``sinceSeconds`` and ``sinceTime`` (the agent keeps no time per line: the
output goes straight to the file) and a split of stdout from stderr (one file holds both) are
refused with 400 and a message saying so; exec, attach, port-forward, stats and the rest of the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from tests.cluster.podstatus import ContainerRecord

log = logging.getLogger(__name__)

KUBELET_PORT = 10250
FOLLOW_POLL_SECONDS = 0.1
REQUEST_HEAD_LIMIT = 16 << 10
REQUEST_TIMEOUT_SECONDS = 30.0
TRUE_VALUES = ("true", "1", "True", "TRUE")
FALSE_VALUES = ("false", "0", "False", "FALSE", "")
UNRECORDED = {
    "timestamps": "timestamps: the test kubelet does not record when each line was written",
    "sinceSeconds": "sinceSeconds: the test kubelet does not record when each line was written",
    "sinceTime": "sinceTime: the test kubelet does not record when each line was written",
}


class LogRequestError(Exception):
    """A request the kubelet answers with ``status`` and this message as plain text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class LogOptions:
    """The PodLogOptions a request carries, as far as the agent serves them."""

    tail_lines: int | None = None
    limit_bytes: int | None = None
    previous: bool = False
    follow: bool = False


def _flag(query: Mapping[str, Sequence[str]], name: str) -> bool:
    value = query.get(name, ["false"])[-1]
    if value in TRUE_VALUES:
        return True
    if value in FALSE_VALUES:
        return False
    raise LogRequestError(400, f'{{"message": "Unable to decode query."}} ({name}={value!r})')


def _count(query: Mapping[str, Sequence[str]], name: str, least: int) -> int | None:
    if name not in query:
        return None
    try:
        value = int(query[name][-1])
    except ValueError:
        raise LogRequestError(400, f'{{"message": "Unable to decode query."}} ({name})') from None
    if value < least:
        raise LogRequestError(422, f'{{"message": "Invalid request."}} ({name} must be at least {least})')
    return value


def parse_log_options(query: Mapping[str, Sequence[str]]) -> LogOptions:
    """The options of a ``/containerLogs`` query (as the API server forwards them, plus the old
    ``tail`` alias); what the agent cannot serve is refused with a message saying why."""
    query = dict(query)
    if "tail" in query:  # the kubelet's older name for tailLines; "all" means no limit
        tail = query.pop("tail")
        if tail[-1] != "all":
            query["tailLines"] = tail
        else:
            query.pop("tailLines", None)
    for name, why in UNRECORDED.items():
        if name in query and not (name == "timestamps" and not _flag(query, name)):
            raise LogRequestError(400, why)
    stream = query.get("stream", ["All"])[-1]
    if stream != "All":
        raise LogRequestError(
            400, f"stream {stream!r}: the test kubelet keeps stdout and stderr in one file (only All)"
        )
    return LogOptions(
        tail_lines=_count(query, "tailLines", 0),
        limit_bytes=_count(query, "limitBytes", 1),
        previous=_flag(query, "previous"),
        follow=_flag(query, "follow"),
    )


def log_run(record: ContainerRecord, previous: bool, pod: str) -> int:
    """Which run of the container a request reads (the number of its ``<run>.log``), by the
    kubelet's rules on the container's status: the running or last terminated run, or with
    ``previous`` the one in ``lastState``; a container that never ran has no log yet (400, with the
    kubelet's words)."""
    name = record.name
    # Between runs (CrashLoopBackOff) the status is waiting, and lastState holds the run that ended.
    between_runs = record.state == "waiting" and record.ever_ran
    if previous:
        if between_runs:
            return record.restart_count
        if record.state != "waiting" and record.restart_count >= 1:
            return record.restart_count - 1
        raise LogRequestError(400, f'previous terminated container "{name}" in pod "{pod}" not found')
    if record.state != "waiting" or between_runs:
        return record.restart_count
    reason = record.waiting_reason
    if reason == "ErrImagePull":
        reason = "image can't be pulled"
    raise LogRequestError(400, f'container "{name}" in pod "{pod}" is waiting to start: {reason}')


def tail_lines(data: bytes, lines: int | None) -> bytes:
    """The last ``lines`` lines of ``data`` (all of it for None); an unfinished last line counts."""
    if lines is None:
        return data
    if lines == 0:
        return b""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    start = end
    for _ in range(lines):
        start = data.rfind(b"\n", 0, start)
        if start < 0:
            return data
    return data[start + 1 :]


class LogSource(Protocol):
    """A container as the kubelet API sees it: its status record and where each run's output is."""

    @property
    def record(self) -> ContainerRecord: ...

    def log_path(self, run: int) -> Path: ...


# namespace, pod name -> the Pod's containers by name (init containers too), None: no such Pod
PodLookup = Callable[[str, str], Mapping[str, LogSource] | None]


@dataclass(frozen=True)
class KubeletServing:
    """What a node's kubelet API serves with: its certificate and key, the CA of its clients and
    the users it answers (the API server's kubelet client)."""

    cert: Path
    key: Path
    client_ca: Path
    allowed_users: frozenset[str]

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        context.load_verify_locations(self.client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL  # as the kubelet: no certificate is a 401, not a TLS error
        context.set_alpn_protocols(["http/1.1"])
        return context


def certificate_user(peercert: Mapping[str, Any] | None) -> str | None:
    """The user a verified client certificate names (its CN, as the API server reads it)."""
    for rdn in (peercert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class KubeletServer:
    """The HTTPS server of one node's kubelet API. ``start`` binds it (the kubelet's port on the
    node's own address, which no other cluster uses) and returns the port; ``close`` ends it and
    every request in flight."""

    def __init__(
        self, host: str, serving: KubeletServing, pods: PodLookup, reachable: Callable[[], bool]
    ) -> None:
        self.host = host
        self.serving = serving
        self.pods = pods
        self.reachable = reachable  # False: the node is lost, and its kubelet out of reach with it
        self.port = 0
        self._server: asyncio.Server | None = None
        self._requests: set[asyncio.Task[Any]] = set()

    async def start(self) -> int:
        context = self.serving.ssl_context()
        self._server = await asyncio.start_server(self._serve, self.host, KUBELET_PORT, ssl=context)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._requests):
            task.cancel()
        await asyncio.gather(*self._requests, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._requests.add(task)
        try:
            await self._answer(reader, writer)
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went
        except asyncio.CancelledError:
            pass  # closed while it answered (a follow): asyncio's callback would report a cancelled task
        except TimeoutError:
            log.debug("kubelet API: a client sent no request within %.0f s", REQUEST_TIMEOUT_SECONDS)
        finally:
            if task is not None:
                self._requests.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_SECONDS)
        if not self.reachable():  # behind the partition: the connection ends without an answer
            return
        if len(head) > REQUEST_HEAD_LIMIT:
            return await _reply(writer, 431, "request header too large")
        method, _, rest = head.decode("latin-1").partition(" ")
        target = rest.partition(" ")[0]
        user = certificate_user(writer.get_extra_info("peercert"))
        if user is None:
            return await _reply(writer, 401, "Unauthorized")
        if user not in self.serving.allowed_users:
            return await _reply(
                writer, 403, f"Forbidden (user={user}, verb=get, resource=nodes, subresource=proxy)"
            )
        url = urlsplit(target)
        parts = [unquote(part) for part in url.path.split("/")[1:]]
        if len(parts) != 4 or parts[0] != "containerLogs":
            return await _reply(writer, 404, "404 page not found")
        if method != "GET":
            return await _reply(writer, 405, f"{method} is not allowed")
        _, namespace, pod, container = parts
        try:
            options = parse_log_options(parse_qs(url.query, keep_blank_values=True))
            source, run = self._find(namespace, pod, container, options.previous)
        except LogRequestError as error:
            return await _reply(writer, error.status, error.message)
        path = source.log_path(run)
        data = await asyncio.to_thread(_read, path, 0)
        body = tail_lines(data, options.tail_lines)
        if options.limit_bytes is not None:
            body = body[: options.limit_bytes]
        if not options.follow:
            return await _reply(writer, 200, body)
        left = None if options.limit_bytes is None else options.limit_bytes - len(body)
        await self._follow(writer, source, run, path, len(data), body, left)

    def _find(self, namespace: str, pod: str, container: str, previous: bool) -> tuple[LogSource, int]:
        containers = self.pods(namespace, pod)
        if containers is None:
            raise LogRequestError(404, f'pod "{pod}" does not exist')
        source = containers.get(container)
        if source is None:
            raise LogRequestError(404, f'container "{container}" not found in pod "{pod}"')
        return source, log_run(source.record, previous, pod)

    async def _follow(
        self,
        writer: asyncio.StreamWriter,
        source: LogSource,
        run: int,
        path: Path,
        offset: int,
        first: bytes,
        left: int | None,
    ) -> None:
        """The run's output as it grows (chunked), until the run has ended and all it wrote is
        sent, the byte limit is reached, or the client goes."""
        writer.write(_head(200, None))
        await _chunk(writer, first)
        while left is None or left > 0:
            live = source.record.restart_count == run and source.record.state == "running"
            data = await asyncio.to_thread(_read, path, offset)
            if data:
                offset += len(data)
                if left is not None:
                    data, left = data[:left], left - len(data)
                await _chunk(writer, data)
            elif not live:
                break
            else:
                await asyncio.sleep(FOLLOW_POLL_SECONDS)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


def _read(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as file:
            file.seek(offset)
            return file.read()
    except FileNotFoundError:
        return b""


def _head(status: int, length: int | None) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: text/plain; charset=utf-8"]
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _reply(writer: asyncio.StreamWriter, status: int, body: bytes | str) -> None:
    data = body.encode() if isinstance(body, str) else body
    writer.write(_head(status, len(data)) + data)
    await writer.drain()


async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    if data:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

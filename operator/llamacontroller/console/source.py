"""Where the console reads and writes its objects: the cluster, through kube/api.py only (the
LlamaModels from the gateway's own watch; Nodes, Events and logs read when a page asks), or the
local runtime (console/local.py). Every write is a LlamaModel write, so GitOps and ``kubectl`` see
what the console did, and each one is recorded as an Event naming the session."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from llamacontroller.kube.api import ApiError, KubeApi
from llamacontroller.llamanode import LlamaNode, parse_llamanode
from llamacontroller.resource import InvalidSpec
from llamacontroller.status import SERVER_CONTAINER, rfc3339

log = logging.getLogger(__name__)

NODES_TTL = 15.0  # seconds a read of the Nodes serves the pages (their GPU counts change rarely)
AGENTS_TTL = 5.0  # seconds a read of the LlamaNodes serves them (agents write every few seconds)
LOG_LINES = 40


class WriteError(Exception):
    """A write the source refused or could not make; the message is for the person who asked."""


@dataclass(frozen=True)
class EventLine:
    when: str
    type: str
    reason: str
    message: str
    count: int


class ConsoleSource(Protocol):
    where: str  # for the page: "cluster", "this machine"
    models_dir: Path | None  # where model files can be read (the fit estimate), if anywhere

    def llamamodels(self) -> list[dict[str, Any]]: ...

    async def nodes(self) -> list[dict[str, Any]]: ...

    async def agents(self) -> dict[str, LlamaNode]:
        """Each node's LlamaNode, by node name: what its node agent reads of its GPUs and models."""
        ...

    async def events(self, lm: dict[str, Any]) -> list[EventLine]: ...

    async def log_tail(self, lm: dict[str, Any], lines: int = LOG_LINES) -> str | None: ...

    def model_files(self) -> list[str]: ...

    async def create(self, body: dict[str, Any], actor: str) -> None: ...

    async def delete(self, lm: dict[str, Any], actor: str) -> None: ...

    async def patch(self, lm: dict[str, Any], spec: dict[str, Any], actor: str) -> None: ...


def event_lines(events: list[dict[str, Any]], limit: int = 20) -> list[EventLine]:
    """The newest ``limit`` Events, newest first, as `kubectl describe` tells them."""

    def when(event: dict[str, Any]) -> str:
        return str(
            event.get("lastTimestamp")
            or event.get("eventTime")
            or event.get("metadata", {}).get("creationTimestamp")
            or ""
        )

    newest = sorted(reversed(events), key=when, reverse=True)[:limit]  # ties: the later listed first
    return [
        EventLine(
            when(e),
            str(e.get("type", "")),
            str(e.get("reason", "")),
            str(e.get("message", "")),
            int(e.get("count") or 1),
        )
        for e in newest
    ]


def _api_failure(what: str, exc: ApiError) -> WriteError:
    return WriteError(f"{what}: the API server answered {exc}")


class ClusterSource:
    """The cluster as the gateway's ServiceAccount sees it. ``llamamodels``: the watch's current
    objects (console/view.py's ``strip_for_console`` keeps what the console reads)."""

    where = "cluster"
    models_dir: Path | None = None

    def __init__(self, api: KubeApi, llamamodels: Callable[[], list[dict[str, Any]]]) -> None:
        self.api = api
        self._llamamodels = llamamodels
        self._nodes: list[dict[str, Any]] = []
        self._nodes_read = float("-inf")
        self._llamanodes: list[LlamaNode] = []
        self._llamanodes_read = float("-inf")

    def llamamodels(self) -> list[dict[str, Any]]:
        return self._llamamodels()

    async def nodes(self) -> list[dict[str, Any]]:
        if time.monotonic() - self._nodes_read > NODES_TTL:
            nodes = await self.api.list_nodes()
            self._nodes = [
                {"metadata": {"name": n["metadata"]["name"], "labels": n["metadata"].get("labels") or {}}}
                for n in nodes
            ]
            self._nodes_read = time.monotonic()
        return self._nodes

    async def _read_llamanodes(self) -> list[LlamaNode]:
        """The node agents' LlamaNodes; none where their kind is not installed (an older CRD set) or
        the console's role does not grant them (an older component): the board says "no node agent".
        One that does not parse (another version's agent gone wrong) is left out, and logged."""
        if time.monotonic() - self._llamanodes_read > AGENTS_TTL:
            try:
                listed = await self.api.list_llamanodes()
            except ApiError as exc:
                if exc.status != 403:
                    raise
                listed = []
            self._llamanodes = []
            for body in listed:
                try:
                    self._llamanodes.append(parse_llamanode(body))
                except InvalidSpec as exc:
                    log.warning("console: LlamaNode %s: %s", (body.get("metadata") or {}).get("name"), exc)
            self._llamanodes_read = time.monotonic()
        return self._llamanodes

    async def agents(self) -> dict[str, LlamaNode]:
        return {node.metadata.name: node for node in await self._read_llamanodes()}

    async def events(self, lm: dict[str, Any]) -> list[EventLine]:
        meta = lm["metadata"]
        return event_lines(await self.api.events_of(meta["namespace"], meta["uid"]))

    async def log_tail(self, lm: dict[str, Any], lines: int = LOG_LINES) -> str | None:
        pod = (lm.get("status") or {}).get("podName")
        if not pod:
            return None
        return await self.api.pod_log(lm["metadata"]["namespace"], pod, SERVER_CONTAINER, lines)

    def model_files(self) -> list[str]:
        """The files of the models volume as the node agents list them, and those the cluster's
        LlamaModels serve."""
        served = {str((lm.get("spec") or {}).get("model", {}).get("path", "")) for lm in self.llamamodels()}
        listed = {file.path for node in self._llamanodes for file in node.status.models}
        return sorted((served | listed) - {""})

    async def _record(self, lm: dict[str, Any], reason: str, message: str) -> None:
        await self.api.post_event(lm, "Normal", reason, message, rfc3339(datetime.now(UTC)))

    async def create(self, body: dict[str, Any], actor: str) -> None:
        meta = body["metadata"]
        try:
            created = await self.api.create_llamamodel(body)
        except ApiError as exc:
            raise _api_failure(f"create {meta['namespace']}/{meta['name']}", exc) from exc
        slot = body["spec"]["gpu"]
        await self._record(
            created,
            "ConsoleLoad",
            f"created by {actor}: {body['spec']['model']['path']} on {body['spec']['nodeName']} ({slot})",
        )

    async def delete(self, lm: dict[str, Any], actor: str) -> None:
        meta = lm["metadata"]
        await self._record(lm, "ConsoleUnload", f"deleted by {actor}")
        try:
            await self.api.delete_llamamodel(meta["namespace"], meta["name"], meta["uid"])
        except ApiError as exc:
            raise _api_failure(f"delete {meta['namespace']}/{meta['name']}", exc) from exc

    async def patch(self, lm: dict[str, Any], spec: dict[str, Any], actor: str) -> None:
        meta = lm["metadata"]
        try:
            patched = await self.api.patch_llamamodel_spec(
                meta["namespace"], meta["name"], spec, meta.get("resourceVersion", "")
            )
        except ApiError as exc:
            raise _api_failure(f"change {meta['namespace']}/{meta['name']}", exc) from exc
        await self._record(patched, "ConsoleSwitch", f"changed by {actor}: {spec}")

"""The node agent's loop: read the GPUs and the models volume, write the node's LlamaNode.

It watches the slot Pods bound to its node (label and field selectors: the operator's server Pods
on ``spec.nodeName``), reads NVML every ``interval`` seconds and when a slot Pod comes or goes, and
patches the LlamaNode's status when what it says changed (not for utilization alone, nor for used
memory moving by less than WRITE_MEMORY_STEP), at most every ``interval`` seconds, and at least
every ``heartbeat`` seconds (``heartbeatAt``: the operator trusts no LlamaNode whose agent stopped
writing). It creates its LlamaNode when there is none, and again at its next write when someone
deleted it. SIGTERM or SIGINT stops it between two readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from llamacontroller import __version__
from llamacontroller.kube.api import ApiError, KubeApi
from llamacontroller.kube.informer import Change, Informer
from llamacontroller.llamanode import NODE_API_VERSION, NODE_KIND, LlamaNodeStatus
from llamacontroller.nodeagent.cgroup import read_pod_uid
from llamacontroller.nodeagent.models import ModelsVolume
from llamacontroller.nodeagent.nvml import NvmlReader
from llamacontroller.nodeagent.occupancy import node_status, owners_by_pod
from llamacontroller.render.names import LABEL_MANAGED_BY, LABEL_NAME, MANAGER, SERVER_NAME

log = logging.getLogger(__name__)

SLOT_PODS = f"{LABEL_MANAGED_BY}={MANAGER},{LABEL_NAME}={SERVER_NAME}"
WRITE_MEMORY_STEP = 64 << 20  # bytes: a GPU's used memory moving less than this is no change to write
USER_AGENT = "llamacontroller-node-agent"


def rfc3339(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def significant(status: LlamaNodeStatus) -> Any:
    """What a write is for: the status without its times, the utilization, and used memory in
    steps of WRITE_MEMORY_STEP."""
    data = status.model_dump(mode="json", exclude={"observed_at", "heartbeat_at"})
    for gpu in data["gpus"]:
        gpu.pop("utilization", None)
        gpu["memory_used"] //= WRITE_MEMORY_STEP
    return data


@dataclass(frozen=True)
class Written:
    at: float  # time.monotonic() of the write
    what: Any  # significant() of the status written


def write_due(now: float, last: Written | None, what: Any, interval: float, heartbeat: float) -> str | None:
    """Why the status is to be written now, None when it is not."""
    if last is None:
        return "first reading"
    elapsed = now - last.at
    if elapsed >= heartbeat:
        return "heartbeat"
    if what != last.what and elapsed >= interval:
        return "changed"
    return None


def status_patch(status: LlamaNodeStatus) -> dict[str, Any]:
    """The merge patch of the whole status: fields it no longer has are removed (null)."""
    body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    for name, field in LlamaNodeStatus.model_fields.items():
        body.setdefault(field.alias or name, None)
    return body


def _strip_pod(pod: dict[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    keep = ("uid", "name", "namespace", "labels", "ownerReferences", "resourceVersion")
    return {"metadata": {key: meta[key] for key in keep if key in meta}}


class NodeAgent:
    """One node's agent: NVML kept open while it runs, a PID's Pod from /proc/<pid>/cgroup."""

    def __init__(
        self,
        api: KubeApi,
        node: str,
        volume: ModelsVolume | None,
        *,
        interval: float = 5.0,
        heartbeat: float = 30.0,
    ) -> None:
        self.api = api
        self.node = node
        self.volume = volume
        self.reader = NvmlReader()
        self.interval = interval
        self.heartbeat = heartbeat
        self.pods = Informer(
            api,
            "/api/v1/pods",
            self._on_pod_change,
            label_selector=SLOT_PODS,
            field_selector=f"spec.nodeName={node}",
            strip=_strip_pod,
        )
        self.wake = asyncio.Event()
        self.written: Written | None = None
        self.exists = False
        self.last_state: str | None = None

    def _on_pod_change(self, change: Change) -> None:
        self.wake.set()

    async def _ensure_llamanode(self) -> None:
        if self.exists:
            return
        if await self.api.get_llamanode(self.node) is None:
            body = {
                "apiVersion": NODE_API_VERSION,
                "kind": NODE_KIND,
                "metadata": {"name": self.node, "labels": {LABEL_MANAGED_BY: MANAGER}},
            }
            created = await self.api.create_llamanode(body)
            log.info("LlamaNode %s %s", self.node, "created" if created else "created meanwhile by another")
        self.exists = True

    def _status(self, pods: list[dict[str, Any]]) -> LlamaNodeStatus:
        reading = self.reader.read()
        if reading.state != self.last_state:
            log.info("NVML: %s (%d GPUs)", reading.state, len(reading.gpus))
            self.last_state = reading.state
        owners = owners_by_pod(pods, read_pod_uid)
        return node_status(
            reading,
            owners,
            models_dir=str(self.volume.root) if self.volume else None,
            models=self.volume.scan() if self.volume else [],
            agent_version=__version__,
        )

    async def step(self) -> bool:
        """One reading, written if due; True when it was written."""
        observed = time.time()
        pods = list(self.pods.store.values())  # here: the watch changes the store in this thread
        status = await asyncio.to_thread(self._status, pods)
        what = significant(status)
        now = time.monotonic()
        why = write_due(now, self.written, what, self.interval, self.heartbeat)
        if why is None:
            return False
        status = status.model_copy(
            update={"observed_at": rfc3339(observed), "heartbeat_at": rfc3339(time.time())}
        )
        await self._ensure_llamanode()
        if await self.api.patch_llamanode_status(self.node, status_patch(status)) is None:
            log.info("LlamaNode %s is gone: creating it again", self.node)
            self.exists = False
            self.written = None  # the next reading writes, whatever changed
            return False
        if why != "heartbeat":
            log.info(
                "LlamaNode %s written (%s): %s",
                self.node,
                why,
                "; ".join(f"GPU {gpu.index} {gpu.summary}" for gpu in status.gpus) or status.nvml,
            )
        self.written = Written(at=now, what=what)
        return True

    async def run(self, stop: asyncio.Event) -> None:
        watcher = asyncio.create_task(self.pods.run(), name="slot pods")
        try:
            waiting = asyncio.create_task(stop.wait())
            synced = asyncio.create_task(self.pods.synced.wait())
            await asyncio.wait({waiting, synced}, return_when=asyncio.FIRST_COMPLETED)
            synced.cancel()
            waiting.cancel()
            log.info("node agent of %s: %d slot Pods on the node", self.node, len(self.pods.store))
            while not stop.is_set():
                started = time.monotonic()
                self.wake.clear()
                try:
                    await self.step()
                except ApiError as exc:
                    log.warning("LlamaNode %s not written: %s", self.node, exc)
                    self.exists = self.exists and exc.status != 404
                await self._pause(stop, started)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            self.reader.close()

    async def _pause(self, stop: asyncio.Event, started: float) -> None:
        """Until the next reading: ``interval`` after this one, sooner (but not before a second has
        passed) when a slot Pod changed; at once on stop."""
        deadline = started + self.interval
        await _until(stop, max(started + 1.0 - time.monotonic(), 0))
        waiters = {asyncio.create_task(stop.wait()), asyncio.create_task(self.wake.wait())}
        try:
            await asyncio.wait(
                waiters, timeout=max(deadline - time.monotonic(), 0), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waiter in waiters:
                waiter.cancel()


async def _until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _main(
    node: str, volume: ModelsVolume | None, interval: float, heartbeat: float, timeout: float
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    api = KubeApi.from_environment(user_agent=USER_AGENT, timeout=timeout)
    try:
        await api.check_reachable()
        log.info(
            "node agent of %s: models volume %s, a reading every %.0f s, a heartbeat every %.0f s",
            node,
            volume.root if volume else "none",
            interval,
            heartbeat,
        )
        await NodeAgent(api, node, volume, interval=interval, heartbeat=heartbeat).run(stop)
        log.info("node agent of %s stopped", node)
    finally:
        await api.close()


def run_node_agent(
    node: str, volume: ModelsVolume | None, interval: float, heartbeat: float, timeout: float
) -> None:
    asyncio.run(_main(node, volume, interval, heartbeat, timeout))

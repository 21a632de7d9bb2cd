"""Running the emulator for tests: a background thread with its own event loop and HTTP port.

The test process may run other event loops (pytest-asyncio, kopf's KopfRunner) and the operator
under test usually runs as a separate process, so the emulator gets a thread of its own. Tests act
on the cluster through thread-safe helpers that run the same store code as HTTP requests do
(watchers see those changes too), or through kubectl / the kubernetes client via ``write_kubeconfig``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import kmock
import yaml

from .audit import AuditRecord, WatchEventRecord
from .errors import ApiError
from .handler import KubeEmulator
from .resources import ResourceDef
from .selectors import make_matcher
from .store import DeleteOptions

T = TypeVar("T")
Resource = tuple[str, str, str] | str  # ("", "v1", "pods"), ("example.test", "v1", "widgets"), or "pods"

_PATCH_TYPES = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}


class EmulatorThread:
    """A Kubernetes API emulator served on 127.0.0.1 from a background thread (a context manager)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        pod_termination_seconds: float = 0.2,
        history_size: int = 20_000,
        request_history_tail: int | None = 64,
        aggregated_discovery: bool = True,
        startup_timeout: float = 30.0,
    ) -> None:
        self.handler = KubeEmulator(
            pod_termination_seconds=pod_termination_seconds,
            history_size=history_size,
            request_history_tail=request_history_tail,
            aggregated_discovery=aggregated_discovery,
        )
        self._host = host
        self._port = port
        self._startup_timeout = startup_timeout
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._server: kmock.Server | None = None
        self._changes = 0
        self._changed = threading.Condition()
        self.handler.store.on_change.append(self._notify_change)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("The emulator is already started.")
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._startup_timeout):
            raise TimeoutError("The kube emulator did not start in time.")
        if self._error is not None:
            raise RuntimeError("The kube emulator failed to start.") from self._error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop serving: open watches are closed first, then the HTTP server."""
        if self._thread is None or self._loop is None:
            return
        if self._stop_event is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop_event.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError("The kube emulator did not stop in time.")
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # pragma: no cover  # reported to start()
            self._error = exc
        finally:
            self._ready.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _main(self) -> None:
        self._stop_event = asyncio.Event()
        try:
            async with self.handler:
                server = kmock.Server(self.handler, host=self._host, port=self._port or None)
                await server.__aenter__()
                try:
                    self._server = server
                    self._ready.set()
                    await self._stop_event.wait()
                    self.handler.stop_streams()
                    await asyncio.sleep(0.01)  # let the watch streams write their last bytes
                finally:
                    # kmock's resolver chain may be exited out of order by another emulator: harmless.
                    with contextlib.suppress(RuntimeError):
                        await server.__aexit__(None, None, None)
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            raise

    # --- addresses ---------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("The emulator is not started.")
        return self._server.port

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def kmock(self) -> KubeEmulator:
        """The kmock handler, for DSL reactions: ``emu.kmock['post /api/v1/...'] << 500``."""
        return self.handler

    def __getitem__(self, item: Any) -> Any:
        """``emu['post /api/v1/namespaces/default/pods'] << 500`` (reactions win over the store)."""
        return self.handler[item]

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kube-emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "kube-emulator", "user": {}}],
            "contexts": [
                {
                    "name": "kube-emulator",
                    "context": {"cluster": "kube-emulator", "user": "kube-emulator", "namespace": namespace},
                }
            ],
            "current-context": "kube-emulator",
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for plain HTTP without auth, one context, and return its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.kubeconfig(namespace), sort_keys=False))
        return path

    # --- running code on the emulator's loop -------------------------------------------------------

    def call(self, fn: Callable[..., T], *args: Any, timeout: float = 30.0, **kwargs: Any) -> T:
        """Run a function on the emulator's loop thread (where the store lives) and return its result."""
        if self._loop is None or self._thread is None:
            raise RuntimeError("The emulator is not started.")
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)

        async def invoke() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(invoke(), self._loop).result(timeout)

    def resource(self, resource: Resource) -> ResourceDef:
        """Resolve ("", "v1", "pods"), ("example.test", "v1", "widgets"), "pods" or "widgets.example.test"."""

        def resolve() -> ResourceDef | None:
            if isinstance(resource, tuple):
                return self.handler.registry.get(*resource)
            return self.handler.registry.resolve(resource)

        rd = self.call(resolve)
        if rd is None:
            raise LookupError(f"No such resource is served: {resource!r}")
        return rd

    # --- acting on the cluster like a kubelet or a controller ---------------------------------------

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        rd = self.resource(resource)

        def read() -> dict[str, Any] | None:
            try:
                return copy.deepcopy(self.handler.store.get(rd, namespace, name))
            except ApiError as exc:
                if exc.code == 404:
                    return None
                raise

        return self.call(read)

    def list(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        rd = self.resource(resource)
        matcher = make_matcher(label_selector, field_selector)
        return self.call(lambda: copy.deepcopy(self.handler.store.list(rd, namespace, matcher)))

    def create(
        self,
        resource: Resource,
        body: dict[str, Any],
        namespace: str | None = None,
        *,
        field_validation: str = "Strict",
    ) -> dict[str, Any]:
        rd = self.resource(resource)
        return self.call(
            lambda: copy.deepcopy(
                self.handler.store.create(rd, namespace, body, field_validation=field_validation).obj
            )
        )

    def update(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        rd = self.resource(resource)
        return self.call(
            lambda: copy.deepcopy(
                self.handler.store.update(
                    rd, namespace, name, body, subresource=subresource, field_validation="Strict"
                ).obj
            )
        )

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: str = "merge",
        subresource: str | None = None,
    ) -> dict[str, Any]:
        """Patch an object; patch_type is merge, json or strategic (or a full content type)."""
        rd = self.resource(resource)
        content_type = _PATCH_TYPES.get(patch_type, patch_type)
        return self.call(
            lambda: copy.deepcopy(
                self.handler.store.patch(
                    rd,
                    namespace,
                    name,
                    content_type,
                    patch,
                    subresource=subresource,
                    field_validation="Strict",
                ).obj
            )
        )

    def patch_status(
        self, resource: Resource, namespace: str | None, name: str, patch: Any, *, patch_type: str = "merge"
    ) -> dict[str, Any]:
        """Patch the status subresource (``{"status": {...}}`` for a merge patch), like a kubelet."""
        return self.patch(resource, namespace, name, patch, patch_type=patch_type, subresource="status")

    def delete(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        *,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        missing_ok: bool = False,
    ) -> dict[str, Any] | None:
        """Delete an object; returns its state (with deletionTimestamp if deletion is pending)."""
        rd = self.resource(resource)
        options = DeleteOptions(grace_period=grace_period_seconds, propagation=propagation_policy)

        def delete() -> dict[str, Any] | None:
            try:
                obj, _ = self.handler.store.delete(rd, namespace, name, options)
            except ApiError as exc:
                if exc.code == 404 and missing_ok:
                    return None
                raise
            return copy.deepcopy(obj)

        return self.call(delete)

    def add_node(
        self,
        name: str,
        labels: dict[str, str] | None = None,
        *,
        ready: bool = True,
        capacity: dict[str, str] | None = None,
        taints: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Register a node as a kubelet would (with status: Ready, capacity, addresses, node info)."""
        capacity = dict(capacity or {"cpu": "8", "memory": "32Gi", "pods": "110"})
        node_labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        }
        node_labels.update(labels or {})
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": node_labels},
            "spec": {"taints": taints} if taints else {},
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True" if ready else "False",
                        "reason": "KubeletReady" if ready else "KubeletNotReady",
                        "message": "kubelet is posting ready status" if ready else "kubelet is not ready",
                        "lastHeartbeatTime": stamp,
                        "lastTransitionTime": stamp,
                    }
                ],
                "addresses": [
                    {"type": "InternalIP", "address": f"10.0.0.{len(name) % 250 + 2}"},
                    {"type": "Hostname", "address": name},
                ],
                "nodeInfo": {
                    "kubeletVersion": "v1.32.0",
                    "kubeProxyVersion": "v1.32.0",
                    "osImage": "Kube Emulator",
                    "kernelVersion": "6.1.0",
                    "containerRuntimeVersion": "containerd://1.7.0",
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                    "bootID": str(uuid.uuid4()),
                    "machineID": uuid.uuid4().hex,
                    "systemUUID": str(uuid.uuid4()),
                },
                "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            },
        }
        return self.create(("", "v1", "nodes"), body)

    # --- observing ---------------------------------------------------------------------------------

    def _notify_change(self) -> None:
        with self._changed:
            self._changes += 1
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[], T], timeout: float = 30.0, *, message: str = "") -> T:
        """Re-evaluate the predicate after every change in the cluster until it is truthy; return that."""
        deadline = time.monotonic() + timeout
        while True:
            with self._changed:
                seen = self._changes
            result = predicate()
            if result:
                return result
            with self._changed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        message or f"The condition was not met within {timeout} s: {predicate!r}"
                    )
                self._changed.wait_for(lambda seen=seen: self._changes != seen, timeout=min(remaining, 0.25))

    @property
    def audit_log(self) -> list[AuditRecord]:
        """Every HTTP request served so far (a snapshot)."""
        return self.handler.audit_log.snapshot()

    @property
    def event_log(self) -> list[WatchEventRecord]:
        """Every watch event emitted so far (a snapshot)."""
        return self.handler.event_log.snapshot()

    def requests(self, **criteria: Any) -> list[AuditRecord]:
        """Audit records whose fields equal the values, e.g. ``requests(verb='patch', resource='pods')``."""
        return [
            record
            for record in self.audit_log
            if all(getattr(record, key) == value for key, value in criteria.items())
        ]

    def events(self, **criteria: Any) -> list[WatchEventRecord]:
        """Event-log records whose fields equal the values, e.g. ``events(type='DELETED', name='x')``."""
        return [
            record
            for record in self.event_log
            if all(getattr(record, key) == value for key, value in criteria.items())
        ]

    @property
    def resource_version(self) -> int:
        return self.handler.store.resource_version

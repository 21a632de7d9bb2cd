"""The tests' side of a test cluster (tests/cluster): one namespace's objects as the API server serves
them (plain dicts, as admin), kubectl in that namespace, watches that record every change from the
moment they start, and the API server's audit log read by identity."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from llamacontroller.local.binary import find_llama_server
from tests.cluster.cluster import LocalCluster
from tests.cluster.images import Image
from tests.cluster.network import namespace_prefix
from tests.support.polling import eventually

LLAMAMODELS = "/apis/llamacontroller.io/v1alpha1"
LABEL_MODEL = "llamacontroller.io/llamamodel"
LABEL_NODE = "llamacontroller.io/node"
LABEL_SLOT = "llamacontroller.io/slot"
DECISION = "authorization.k8s.io/decision"  # the audit annotation: "allow" or "forbid"
WHOLE_NODE_SLOTS = {"both", "all"}

# Images of the project's test cluster besides llama.cpp's and the project's own (tests/cluster's
# image table): servers that take seconds to stop, as a server busy with a request or a large model
# does. SIGTERM stops their program, the container lives on for LINGER_SECONDS, then exits.
SLOW_STOP_IMAGE = "test.local/slow-stop/llama-server:1"  # llama-server with the container's args
NEVER_READY_IMAGE = "test.local/slow-stop/never-ready:1"  # never listens: every probe fails
LINGER_SECONDS = 4.0
LINGER = """
import os, signal, subprocess, sys, threading
stopping = threading.Event()
def stop(*_):
    if not stopping.is_set():
        stopping.set()
        threading.Timer(float(sys.argv[1]), os._exit, (143,)).start()
signal.signal(signal.SIGTERM, stop)
child = subprocess.Popen(sys.argv[2:])
code = child.wait()
if stopping.is_set():
    threading.Event().wait()
sys.exit(code)
"""


def stand_in_images(python: str) -> dict[str, Image]:
    """The test images, by pattern, for ClusterOptions.images."""
    return {
        SLOW_STOP_IMAGE: Image(lambda: [python, "-c", LINGER, str(LINGER_SECONDS), str(find_llama_server())]),
        NEVER_READY_IMAGE: Image(
            [python, "-c", LINGER, str(LINGER_SECONDS), "/bin/sh", "-c", "exec sleep 3600", "sh"]
        ),
    }


class Kube:
    """One namespace of a test cluster, as admin. Reads return what the API server holds now."""

    def __init__(self, cluster: LocalCluster, namespace: str) -> None:
        assert cluster.control_plane is not None, "the cluster is not started"
        self.cluster = cluster
        self.namespace = namespace
        self.http = _client(cluster)

    def close(self) -> None:
        self.http.close()

    # -- the API ----------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any] | None:
        """One call; None when the object is not there (404), an AssertionError for any other error."""
        headers = {"Content-Type": content_type} if body is not None else {}
        content = json.dumps(body).encode() if body is not None else None
        response = self.http.request(method, path, content=content, params=params, headers=headers)
        if response.status_code == 404:
            return None
        if response.status_code >= 300:
            raise AssertionError(f"{method} {path}: {response.status_code} {response.text}")
        answer: dict[str, Any] = response.json()
        return answer

    def get(self, path: str) -> dict[str, Any] | None:
        return self.request("GET", path)

    def items(self, path: str, **params: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (self.request("GET", path, params=params) or {}).get("items") or []
        return items

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        created = self.request("POST", path, body)
        assert created is not None
        return created

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def ns_path(self, resource: str, name: str = "", group: str = "/api/v1") -> str:
        path = f"{group}/namespaces/{self.namespace}/{resource}"
        return f"{path}/{name}" if name else path

    # -- kubectl ----------------------------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> Any:
        """The built kubectl as admin, in this namespace."""
        return self.cluster.kubectl("--namespace", self.namespace, *args, stdin=stdin, check=check)

    def apply(self, *bodies: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(bodies))

    # -- LlamaModels ------------------------------------------------------------------------------

    def llamamodel(self, name: str) -> dict[str, Any] | None:
        return self.get(self.ns_path("llamamodels", name, LLAMAMODELS))

    def llamamodels(self) -> list[dict[str, Any]]:
        return self.items(self.ns_path("llamamodels", group=LLAMAMODELS))

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = (self.llamamodel(name) or {}).get("status") or {}
        return status

    def condition(self, name: str, kind: str) -> dict[str, Any]:
        conditions = self.status(name).get("conditions") or []
        return next((c for c in conditions if c["type"] == kind), {})

    def wait_phase(self, name: str, phase: str, reason: str | None = None, timeout: float = 30.0) -> Any:
        """The LlamaModel's status once it says ``phase`` (and the Ready condition ``reason``)."""

        def check() -> dict[str, Any] | None:
            status = self.status(name)
            ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
            matches = status.get("phase") == phase and reason in (None, ready.get("reason"))
            return status if matches else None

        try:
            return eventually(check, timeout=timeout, what=f"{name} {phase} ({reason or 'any reason'})")
        except AssertionError as error:
            raise AssertionError(f"{error}\nstatus now: {self.status(name)}") from error

    # -- Pods, Services, Events -------------------------------------------------------------------

    def pods(self, **labels: str) -> list[dict[str, Any]]:
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        return self.items(self.ns_path("pods"), **({"labelSelector": selector} if selector else {}))

    def server_pods(self, model: str) -> list[dict[str, Any]]:
        return self.pods(**{LABEL_MODEL: model})

    def one_pod(self, model: str) -> dict[str, Any]:
        """The one server Pod of a LlamaModel (an AssertionError while there is none, or several)."""
        pods = self.server_pods(model)
        assert len(pods) == 1, [p["metadata"]["name"] for p in pods]
        return pods[0]

    def pod(self, name: str) -> dict[str, Any] | None:
        return self.get(self.ns_path("pods", name))

    def services(self) -> list[dict[str, Any]]:
        return self.items(self.ns_path("services"))

    def service(self, name: str) -> dict[str, Any] | None:
        return self.get(self.ns_path("services", name))

    def events(self, involved: str | None = None) -> list[dict[str, Any]]:
        """The namespace's Events (of one object when ``involved`` names it), oldest first."""
        params = {"fieldSelector": f"involvedObject.name={involved}"} if involved else {}
        events = self.items(self.ns_path("events"), **params)
        return sorted(events, key=lambda e: int(e["metadata"]["resourceVersion"]))

    def reasons(self, involved: str) -> list[str]:
        return [e["reason"] for e in self.events(involved)]

    def watch(self, resource: str = "pods", group: str = "/api/v1") -> Watch:
        """Records every change of the namespace's ``resource`` from now on (``with kube.watch() as w``)."""
        return Watch(self.cluster, self.ns_path(resource, group=group))


@dataclass(frozen=True)
class Change:
    """One watch event: ADDED, MODIFIED or DELETED, and the object as it was then."""

    type: str
    object: dict[str, Any]

    @property
    def name(self) -> str:
        name: str = self.object["metadata"]["name"]
        return name

    @property
    def uid(self) -> str:
        uid: str = self.object["metadata"]["uid"]
        return uid

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.object["metadata"].get("labels") or {}
        return labels


class Watch:
    """A list, then a watch from the list's resourceVersion, in a thread: ``changes`` holds what was
    there at the start (as ADDED) and every change since, in the order the API server gives them (the
    order of its resourceVersions), each with the object as it was at that moment."""

    def __init__(self, cluster: LocalCluster, path: str) -> None:
        self.path = path
        self.http = _client(cluster, read_timeout=None)
        self._changes: list[Change] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._socket: socket.socket | None = None
        self.error: BaseException | None = None
        listed = self.http.get(path)
        listed.raise_for_status()
        body = listed.json()
        self._changes = [Change("ADDED", item) for item in body.get("items") or []]
        self._version = str(body["metadata"]["resourceVersion"])
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)
        self._thread.start()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def changes(self) -> list[Change]:
        assert self.error is None, f"the watch of {self.path} broke: {self.error!r}"
        with self._lock:
            return list(self._changes)

    def _run(self) -> None:
        while not self._stopped.is_set():
            params = {"watch": "true", "resourceVersion": self._version, "allowWatchBookmarks": "true"}
            try:
                with self.http.stream("GET", self.path, params=params | {"timeoutSeconds": "5"}) as response:
                    response.raise_for_status()
                    with self._lock:
                        self._socket = response.extensions["network_stream"].get_extra_info("socket")
                    try:
                        for line in response.iter_lines():
                            if line.strip():
                                self._take(json.loads(line))
                    finally:
                        with self._lock:  # before the stream closes: stop() never touches a reused fd
                            self._socket = None
            except Exception as error:  # a stop shuts the socket under the reader: that is no error
                if not self._stopped.is_set():
                    self.error = error
                return

    def _take(self, event: dict[str, Any]) -> None:
        kind, obj = event["type"], event["object"]
        if kind == "ERROR":
            raise RuntimeError(f"watch error: {obj}")  # 410 Gone would lose changes: the test must fail
        self._version = obj["metadata"]["resourceVersion"]
        if kind != "BOOKMARK":
            with self._lock:
                self._changes.append(Change(kind, obj))

    def stop(self) -> None:
        """Ends the watch: the reader's socket is shut down (not closed: the reader closes it, in its
        own thread, so that no other thread's new file descriptor can be read from under it)."""
        self._stopped.set()
        with self._lock:
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    socket.socket.shutdown(self._socket, socket.SHUT_RDWR)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.http.close()

    def wait_for(self, what: str, check: Any, timeout: float = 30.0) -> list[Change]:
        """The changes once ``check(changes)`` holds."""
        return eventually(lambda: check(self.changes) and self.changes, timeout=timeout, what=what)  # type: ignore[no-any-return]


def _client(cluster: LocalCluster, read_timeout: float | None = 30.0) -> httpx.Client:
    assert cluster.control_plane is not None, "the cluster is not started"
    admin = cluster.control_plane.admin
    return httpx.Client(
        base_url=admin.server,
        verify=admin.ssl_context(),
        trust_env=False,
        timeout=httpx.Timeout(30.0, read=read_timeout),
        headers={"Accept": "application/json", "User-Agent": "tests"},
    )


def live_pods(changes: Iterable[Change]) -> Iterator[tuple[Change, dict[str, Change]]]:
    """Replays Pod changes: after each one, the Pods that exist then (by UID). A terminating Pod still
    exists: its server may still run, so it still holds its GPUs."""
    live: dict[str, Change] = {}
    for change in changes:
        if change.type == "DELETED":
            live.pop(change.uid, None)
        else:
            live[change.uid] = change
        yield change, dict(live)


def slots_overlap(a: str, b: str) -> bool:
    """Whether two slots of one node share a GPU (gpu<i> has GPU i; both and all have every GPU)."""
    return a == b or a in WHOLE_NODE_SLOTS or b in WHOLE_NODE_SLOTS


def gpu_conflicts(changes: Iterable[Change]) -> list[str]:
    """Every observation at which two server Pods on one node held overlapping GPUs."""
    problems = []
    for change, live in live_pods(changes):
        if change.type == "DELETED" or LABEL_SLOT not in change.labels:
            continue
        node, slot = change.labels[LABEL_NODE], change.labels[LABEL_SLOT]
        for uid, other in live.items():
            labels = other.labels
            same_node = uid != change.uid and labels.get(LABEL_NODE) == node and LABEL_SLOT in labels
            if same_node and slots_overlap(slot, labels[LABEL_SLOT]):
                problems.append(
                    f"{change.type} {change.name} ({slot}) while {other.name} ({labels[LABEL_SLOT]}) "
                    f"exists on {node}"
                )
    return problems


def pod_processes(cluster: LocalCluster, pod: Mapping[str, Any]) -> list[list[str]]:
    """The command lines of the processes that run in a Pod's network namespace on this machine."""
    assert cluster.network is not None, "the cluster is not started"
    name = f"{namespace_prefix(cluster.network.octet)}{pod['metadata']['uid'].replace('-', '')[:12]}"
    try:
        wanted = os.stat(f"/run/netns/{name}").st_ino
    except FileNotFoundError:
        return []
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.stat(proc / "ns" / "net").st_ino != wanted:
                continue
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        found.append([part.decode(errors="replace") for part in argv if part])
    return found


# -- the audit log ---------------------------------------------------------------------------------


def service_account_user(namespace: str, name: str) -> str:
    return f"system:serviceaccount:{namespace}:{name}"


def requests_of(events: Iterable[dict[str, Any]], user: str) -> list[dict[str, Any]]:
    """The audit events of one identity's requests."""
    return [e for e in events if (e.get("user") or {}).get("username") == user]


def refused_by_rbac(events: Iterable[dict[str, Any]]) -> list[str]:
    """The requests that authorization refused (403 for want of a grant, not a refusal of admission
    such as a quota's), one line each."""
    return [
        f"{e['verb']} {e['requestURI']}: {e.get('annotations', {}).get('authorization.k8s.io/reason', '')}"
        for e in events
        if (e.get("annotations") or {}).get(DECISION) == "forbid"
    ]


def new_namespace(cluster: LocalCluster, prefix: str = "test") -> str:
    """A fresh namespace, ready for the operator's Pods: its default ServiceAccount exists (until it
    does, Pods are refused) and so does its bound `llama-models` claim."""
    assert cluster.control_plane is not None, "the cluster is not started"
    control = cluster.control_plane
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    control.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    eventually(
        lambda: control.request("GET", f"/api/v1/namespaces/{name}/serviceaccounts/default", ok=(200, 404)),
        what=f"the default ServiceAccount of {name}",
    )
    cluster.create_models_claim(name)
    return name


def remove_namespace(cluster: LocalCluster, name: str) -> None:
    """Deletes a namespace and waits until its LlamaModels and Pods are gone (the namespace itself
    may take longer): no server holds a slot any more, no LlamaModel is a holder or a waiter."""
    assert cluster.control_plane is not None, "the cluster is not started"
    control = cluster.control_plane
    llamamodels = f"{LLAMAMODELS}/namespaces/{name}/llamamodels"
    pods = f"/api/v1/namespaces/{name}/pods"
    for path in (llamamodels, pods, f"/api/v1/namespaces/{name}"):
        control.request("DELETE", path, ok=(200, 202, 404))

    def remaining() -> list[str]:
        return [
            f"{kind} {item['metadata']['name']}"
            for kind, path in (("llamamodel", llamamodels), ("pod", pods))
            for item in (control.request("GET", path, ok=(200, 404)) or {}).get("items", [])
        ]

    wait_gone(remaining, f"the LlamaModels and Pods of namespace {name}", timeout=90)
    control.request("DELETE", f"/api/v1/persistentvolumes/models-{name}-llama-models", ok=(200, 404))


def wait_gone(check: Any, what: str, timeout: float = 60.0) -> None:
    """Until ``check()`` is falsy."""
    deadline = time.monotonic() + timeout
    while (last := check()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not last, f"{what} still there after {timeout:.0f} s: {last!r}"

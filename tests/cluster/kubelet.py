"""The kubelet of the test nodes: registers a Node and runs the Pods bound to it as local processes.

What it does, as the kubelet does:

* registers the Node (``kubernetes.io/hostname``, ``nvidia.com/gpu.count``, capacity and
  allocatable ``nvidia.com/gpu``, addresses, the Ready condition) with the node's own client
  certificate (``system:node:<name>``, so the Node authorizer and NodeRestriction apply), renews its
  Lease in ``kube-node-lease`` and reports its status regularly;
* watches the Pods bound to it (fieldSelector ``spec.nodeName``; relists on 410 Gone) and runs each
  one (pods.PodWorker): a network namespace per Pod with its own IP, every container a local process
  chosen by the image table (images.py), env from the spec (``secretKeyRef`` read with the node's
  credentials), startup/readiness/liveness probes,
  restartPolicy with CrashLoopBackOff, FallbackToLogsOnError termination messages, init containers
  (in order, each to its success, restarted with the backoff when it fails, before the containers
  start; initContainerStatuses and the Initialized condition), status through
  pods/status, graceful deletion (SIGTERM, SIGKILL at the deadline, then delete with grace 0 and a
  UID precondition);
* serves the kubelet API's ``/containerLogs`` over HTTPS on its InternalIP and the kubelet port it
  writes in ``daemonEndpoints`` (kubeletapi.py), so ``kubectl logs`` and ``pods/log`` work;
* can lose its node (``disconnect``): no heartbeat, no API traffic at all, while the processes go on,
  as behind a network partition; ``reconnect`` resumes and resyncs by listing again.

What it cannot do: pull or isolate images (an image is a local command), GPUs (``nvidia.com/gpu`` is
a number on the Node), resource limits (a Pod has a cgroup that names it, cgroups.py, but nothing is
limited: OOMKilled never happens), securityContext, sidecar init containers (restartPolicy Always on
an init container) and ephemeral containers, volumes other than the folders it is given by mountPath
(the models volume: the Pod sees it at the same path through a bind mount), projected
service-account tokens, envFrom and configMapKeyRef, terminationMessagePath files,
lifecycle hooks, the rest of the kubelet API (``kubectl exec``, ``attach``, ``port-forward``, stats)
and Pod resource accounting (the scheduler does that from the Node's allocatable). A passive node
serves no kubelet API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.cluster.kubeapi import STRATEGIC_MERGE_PATCH, ApiError, KubeClient, Reflector
from tests.cluster.kubeletapi import KubeletServer, KubeletServing, LogSource
from tests.cluster.network import ClusterNetwork
from tests.cluster.pods import KubeletSettings, PodWorker, log_failure
from tests.cluster.podstatus import now_rfc3339, status_patch

log = logging.getLogger(__name__)

KUBELET_VERSION = "v1.37.2"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_COUNT_LABEL = "nvidia.com/gpu.count"
LEASE_NAMESPACE = "kube-node-lease"
TERMINAL_PHASES = ("Succeeded", "Failed")


@dataclass(frozen=True)
class TestNode:
    """A test node: its name, GPU count, extra labels and taints, and the fake machine size the
    scheduler sees (enough for many Pods: nothing is enforced).

    A ``passive`` node's kubelet registers the node and keeps it Ready, but runs nothing: its Pods stay
    as the scheduler bound them (no container statuses) until a test writes their status as a kubelet
    would (``LocalCluster.write_pod_status``), for what no local process can show (OOMKilled,
    Evicted); it confirms their deletion at once, as a kubelet with no container left to stop."""

    __test__ = False  # not a pytest test class, despite the name

    name: str
    gpus: int = 2
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()
    cpu: str = "64"
    memory: str = "256Gi"
    max_pods: int = 110
    passive: bool = False


@dataclass(frozen=True)
class Heartbeat:
    """How often the kubelet renews the Lease and reports the Node's status (the kubelet: 10 s and
    up to 5 min); the node-lifecycle controller's grace period must be longer than the renewal."""

    lease_seconds: int = 40
    renew_interval: float = 10.0
    status_interval: float = 60.0


def node_conditions(previous: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conditions a healthy kubelet reports; transition times kept unless the status changes."""
    now = now_rfc3339()
    before = {c.get("type"): c for c in previous}
    wanted = [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
    ]
    conditions = []
    for kind, status, reason, message in wanted:
        old = before.get(kind) or {}
        same = old.get("status") == status
        conditions.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": old.get("lastTransitionTime") if same else now,
            }
        )
    return conditions


class Kubelet:
    """One test node. ``run`` registers it and serves its Pods until cancelled; ``shutdown`` stops
    every process of the node."""

    def __init__(
        self,
        node: TestNode,
        index: int,
        client: KubeClient,
        network: ClusterNetwork,
        settings: KubeletSettings,
        api_server: tuple[str, int],
        heartbeat: Heartbeat,
        serving: KubeletServing | None = None,
    ) -> None:
        self.node = node
        self.name = node.name
        self.index = index
        self.address = network.node_address(index)
        self.client = client
        self.network = network
        self.settings = settings
        self.api_server = api_server
        self.heartbeat = heartbeat
        # The kubelet API (logs), on the node's address; none for a passive node, which runs nothing.
        self.api = (
            KubeletServer(self.address, serving, self.pod_containers, self.is_connected)
            if serving is not None and not node.passive
            else None
        )
        self.workers: dict[str, PodWorker] = {}
        self._worker_tasks: dict[str, asyncio.Task[None]] = {}
        self._connected = asyncio.Event()
        self._connected.set()
        self._disconnected = asyncio.Event()
        self._watch: asyncio.Task[None] | None = None
        self.registered = asyncio.Event()
        self.pods = Reflector(
            client, "/api/v1/pods", self._on_pod_event, params={"fieldSelector": f"spec.nodeName={node.name}"}
        )

    # -- NodeContext ------------------------------------------------------------------------------

    def is_connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    # -- the node's life --------------------------------------------------------------------------

    async def run(self) -> None:
        await asyncio.to_thread(self.network.add_node_address, self.index)
        if self.api is not None:
            await self.api.start()
        await self._register()
        self.registered.set()
        self._start_watch()
        await self._heartbeat_loop()

    def _start_watch(self) -> None:
        self._watch = asyncio.create_task(self.pods.run(), name=f"pods of {self.name}")
        self._watch.add_done_callback(log_failure)

    def disconnect(self) -> None:
        """The node is lost: heartbeats and every API call stop; its processes keep running."""
        self._connected.clear()
        self._disconnected.set()
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def reconnect(self) -> None:
        """The node is back: heartbeats resume, the Pods are listed again and statuses rewritten."""
        if self._connected.is_set():
            return
        self._disconnected.clear()
        self._connected.set()
        self._start_watch()
        for worker in self.workers.values():
            worker.resend()

    async def shutdown(self) -> None:
        """Stops every Pod's processes and removes their sandboxes (no API writes)."""
        if self._watch is not None:
            self._watch.cancel()
        if self.api is not None:
            await self.api.close()
        for worker in self.workers.values():
            await worker.shutdown()
        await asyncio.gather(*self._worker_tasks.values(), return_exceptions=True)

    # -- the Node object and its heartbeats -------------------------------------------------------

    def node_object(self) -> dict[str, Any]:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            GPU_COUNT_LABEL: str(self.node.gpus),
            **self.node.labels,
        }
        spec: dict[str, Any] = {}
        if self.node.taints:
            spec["taints"] = [dict(taint) for taint in self.node.taints]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": spec,
        }

    def node_status(self, previous_conditions: list[dict[str, Any]]) -> dict[str, Any]:
        resources = {
            "cpu": self.node.cpu,
            "memory": self.node.memory,
            "pods": str(self.node.max_pods),
            "ephemeral-storage": "100Gi",
            GPU_RESOURCE: str(self.node.gpus),
        }
        return {
            "capacity": resources,
            "allocatable": resources,
            "conditions": node_conditions(previous_conditions),
            "addresses": [
                {"type": "InternalIP", "address": self.address},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.api.port if self.api else 0}},
            "nodeInfo": {
                "machineID": f"{self.name}-machine",
                "systemUUID": f"{self.name}-uuid",
                "bootID": f"{self.name}-boot",
                "kernelVersion": platform.release(),
                "osImage": "llamacontroller test node",
                "containerRuntimeVersion": "local://1.0",
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    async def _register(self) -> None:
        try:
            await self.client.create("/api/v1/nodes", self.node_object())
        except ApiError as error:
            if error.status != 409:
                raise
        await self._report_status()

    async def _report_status(self) -> None:
        """Posts the Node's status; transition times follow what the API holds now (the lifecycle
        controller may have set Ready=Unknown while the node was lost)."""
        current = await self.client.get(f"/api/v1/nodes/{self.name}")
        previous = (current.get("status") or {}).get("conditions") or []
        await self.client.patch(
            f"/api/v1/nodes/{self.name}/status", {"status": self.node_status(previous)}, STRATEGIC_MERGE_PATCH
        )

    async def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{self.name}"
        renew = now_rfc3339().replace("Z", ".000000Z")
        spec = {
            "holderIdentity": self.name,
            "leaseDurationSeconds": self.heartbeat.lease_seconds,
            "renewTime": renew,
        }
        try:
            await self.client.patch(path, {"spec": spec})
        except ApiError as error:
            if error.status != 404:
                raise
            node = await self.client.get(f"/api/v1/nodes/{self.name}")
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node["metadata"]["uid"]}
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE, "ownerReferences": [owner]},
                "spec": spec,
            }
            await self.client.create(
                f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases", lease
            )

    async def _heartbeat_loop(self) -> None:
        """Renews the Lease every renew_interval and reports the status every status_interval, and
        at once after a reconnect; nothing while the node is lost."""
        loop = asyncio.get_running_loop()
        last_status = loop.time()
        report_now = False
        while True:
            if not self._connected.is_set():
                await self._connected.wait()
                report_now = True
            try:
                await self._renew_lease()
                if report_now or loop.time() - last_status >= self.heartbeat.status_interval:
                    await self._report_status()
                    last_status, report_now = loop.time(), False
            except (ApiError, httpx.HTTPError) as error:
                log.warning("node %s: heartbeat failed: %r", self.name, error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._disconnected.wait(), self.heartbeat.renew_interval)

    # -- Pods -------------------------------------------------------------------------------------

    async def _on_pod_event(self, kind: str, pod: dict[str, Any]) -> None:
        if self.node.passive:
            if kind != "DELETED" and pod["metadata"].get("deletionTimestamp"):
                await self._confirm_deletion(pod)
            return
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.gone()
        elif worker is not None:
            worker.update(pod)
        elif (pod.get("status") or {}).get("phase") not in TERMINAL_PHASES or pod["metadata"].get(
            "deletionTimestamp"
        ):
            self._start_worker(pod)
        # A Pod re-created under the same name while the node was lost replaces the old one.
        current = {p["metadata"]["uid"] for p in self.pods.store.values()}
        for known_uid, known in self.workers.items():
            if known_uid not in current:
                known.gone()

    async def _confirm_deletion(self, pod: dict[str, Any]) -> None:
        """A passive node's Pod has no process to stop: its deletion completes now (grace 0, with the
        UID as precondition, as the kubelet's final delete)."""
        meta = pod["metadata"]
        try:
            await self.client.delete(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )
        except ApiError as error:
            if error.status not in (404, 409):
                raise

    async def write_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """A status for one of a passive node's Pods, written as its kubelet would: a strategic merge
        patch of pods/status with the node's own credentials (the Node authorizer and NodeRestriction
        judge it), conditions merged by type, container statuses replaced."""
        assert self.node.passive, f"node {self.name} runs its Pods: its kubelet writes their status"
        path = f"/api/v1/namespaces/{namespace}/pods/{name}"
        pod = await self.client.get(path)
        assert pod["spec"].get("nodeName") == self.name, f"pod {namespace}/{name} is not on {self.name}"
        await self.client.patch(
            f"{path}/status", status_patch(pod["metadata"]["uid"], status), STRATEGIC_MERGE_PATCH
        )

    def pod_containers(self, namespace: str, name: str) -> dict[str, LogSource] | None:
        """The containers (init containers too) of the Pod the node runs under this name, for the
        kubelet API; None if it runs none (of two, the one still in the API: a Pod re-created under
        the same name while the old one stops)."""
        found = [w for w in self.workers.values() if w.namespace == namespace and w.name == name]
        if not found:
            return None
        worker = next((w for w in reversed(found) if not w.removed), found[-1])
        return {c.name: c for c in [*worker.init_containers, *worker.containers]}

    def _start_worker(self, pod: dict[str, Any]) -> None:
        worker = PodWorker(self, pod)
        worker.update(pod)
        self.workers[worker.uid] = worker
        task = asyncio.create_task(worker.run(), name=f"pod {worker.describe()}")
        task.add_done_callback(log_failure)
        task.add_done_callback(lambda _: self._forget(worker.uid))
        self._worker_tasks[worker.uid] = task

    def _forget(self, uid: str) -> None:
        self.workers.pop(uid, None)
        self._worker_tasks.pop(uid, None)

"""A whole test cluster: the network, the control plane, a kubelet per test node and the Service
hosts file, started and stopped together.

The kubelets and the hosts-file updater share one asyncio loop in a thread of their own (so the kernel
stops the Pods' processes if that thread dies); the methods here are called from any thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.cluster.controlplane import ControlPlane, ControlPlaneOptions, write_kubeconfig
from tests.cluster.images import Image, project_images
from tests.cluster.kubeapi import KubeClient
from tests.cluster.kubelet import Heartbeat, Kubelet, TestNode
from tests.cluster.network import MAX_NODES, ClusterNetwork, netns_exec, require_root
from tests.cluster.pods import KubeletSettings
from tests.cluster.services import BASE_HOSTS, ServiceHosts

log = logging.getLogger(__name__)
T = TypeVar("T")
MODELS_MOUNT_PATH = "/models"


@dataclass(frozen=True)
class ClusterOptions:
    """The nodes and how their kubelets behave. Defaults suit tests: a 1 s CrashLoopBackOff base and
    1 s lease renewals (the control plane's node grace period is 8 s)."""

    nodes: Sequence[TestNode] = (TestNode("node-1"),)
    models_dir: Path | None = None
    images: Mapping[str, Image] = field(default_factory=dict)  # before the project's images
    backoff_base: float = 1.0
    backoff_max: float = 300.0
    heartbeat: Heartbeat = field(
        default_factory=lambda: Heartbeat(lease_seconds=40, renew_interval=1.0, status_interval=10.0)
    )
    control_plane: ControlPlaneOptions = field(default_factory=ControlPlaneOptions)
    # The hosts file that resolves Service names in the client namespace; a cluster whose Pods serve
    # nothing (passive nodes only, as in a benchmark) goes without its work on every Service change.
    service_hosts: bool = True


class LocalCluster:
    """``start`` brings everything up (nodes Ready); ``stop`` brings everything down."""

    def __init__(self, directory: Path, options: ClusterOptions | None = None) -> None:
        self.directory = directory
        self.options = options or ClusterOptions()
        for index, node in enumerate(self.options.nodes, start=1):
            if index > MAX_NODES and not node.passive:
                raise ValueError(
                    f"node {node.name} is number {index}: past {MAX_NODES}, nodes must be passive"
                )
        self.network: ClusterNetwork | None = None
        self.control_plane: ControlPlane | None = None
        self.kubelets: dict[str, Kubelet] = {}
        self.startup_seconds: dict[str, float] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._clients: list[KubeClient] = []

    # -- what tests use ---------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (system:masters)."""
        assert self.control_plane is not None, "the cluster is not started"
        return self.control_plane.admin_kubeconfig

    @property
    def client_namespace(self) -> str:
        """The network namespace where clients of Services run (its /etc/hosts maps their names)."""
        assert self.network is not None, "the cluster is not started"
        return self.network.client_namespace

    def client_command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as a command that runs in the client namespace."""
        return netns_exec(self.client_namespace, argv)

    @property
    def hosts_file(self) -> Path:
        assert self.network is not None, "the cluster is not started"
        return self.network.client_hosts_file

    def kubelet(self, node: str) -> Kubelet:
        return self.kubelets[node]

    def lose_node(self, node: str) -> None:
        """The node stops talking to the API (no heartbeats, no status), its processes go on."""
        self._call(self.kubelets[node].disconnect)

    def recover_node(self, node: str) -> None:
        self._call(self.kubelets[node].reconnect)

    def write_pod_status(self, namespace: str, pod: str, status: dict[str, Any]) -> None:
        """Writes a Pod's status as the kubelet of its (passive) node would: see TestNode.passive."""
        assert self.control_plane is not None, "the cluster is not started"
        found = self.control_plane.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}") or {}
        node = (found.get("spec") or {}).get("nodeName")
        assert node in self.kubelets, f"pod {namespace}/{pod} is not bound to a test node ({node})"
        self._run(self.kubelets[node].write_pod_status(namespace, pod, status), timeout=30)

    def paused(self, program: str) -> contextlib.AbstractContextManager[None]:
        """Holds a control-plane program still for a while (``with cluster.paused("kube-scheduler")``)."""
        assert self.control_plane is not None, "the cluster is not started"
        return self.control_plane.paused(program)

    def container_log(self, namespace: str, pod: str, container: str, run: int | None = None) -> str:
        """A container's output (its latest run unless ``run`` says which), read from the kubelet's
        files (also once the Pod is gone; ``kubectl logs`` reads it through the kubelet API)."""
        folders = sorted((self.directory / "agent" / "pods").glob(f"{namespace}_{pod}_*/{container}"))
        if not folders:
            return ""
        runs = sorted(folders[-1].glob("*.log"), key=lambda p: int(p.stem))
        chosen = [p for p in runs if run is None or int(p.stem) == run]
        return chosen[-1].read_text(errors="replace") if chosen else ""

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert self.control_plane is not None, "the cluster is not started"
        return self.control_plane.kubectl(*args, stdin=stdin, check=check)

    def create_models_claim(self, namespace: str, claim: str = "llama-models", timeout: float = 30.0) -> None:
        """A bound PersistentVolumeClaim for the models volume (the operator's default Pods mount the
        claim ``llama-models``; the scheduler places no Pod whose claim is unbound). Its
        PersistentVolume is a hostPath of the models folder, which every kubelet maps anyway."""
        assert self.control_plane is not None and self.options.models_dir is not None
        volume = f"models-{namespace}-{claim}"
        access = ["ReadOnlyMany", "ReadWriteOnce"]
        self.control_plane.request(
            "POST",
            "/api/v1/persistentvolumes",
            {
                "apiVersion": "v1",
                "kind": "PersistentVolume",
                "metadata": {"name": volume},
                "spec": {
                    "capacity": {"storage": "1Gi"},
                    "accessModes": access,
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": "",
                    "hostPath": {"path": str(self.options.models_dir)},
                    "claimRef": {"namespace": namespace, "name": claim},
                },
            },
        )
        claims = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims"
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim},
            "spec": {
                "accessModes": access[:1],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        self.control_plane.request("POST", claims, body)
        deadline = time.monotonic() + timeout
        while (self.control_plane.request("GET", f"{claims}/{claim}") or {}).get("status", {}).get(
            "phase"
        ) != "Bound":
            if time.monotonic() > deadline:
                raise TimeoutError(f"claim {namespace}/{claim} not Bound after {timeout:.0f} s")
            time.sleep(0.1)

    def log_tails(self, lines: int = 30) -> str:
        return self.control_plane.log_tails(lines) if self.control_plane else ""

    # -- start and stop ---------------------------------------------------------------------------

    def start(self) -> LocalCluster:
        require_root()
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds["total"] = time.monotonic() - began
        return self

    def _start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        mark = time.monotonic()
        network = self.network = ClusterNetwork.create()
        network.add_client_namespace(BASE_HOSTS)
        self.startup_seconds["network"] = time.monotonic() - mark
        options = replace(self.options.control_plane, bind_address=network.host_address)
        self.control_plane = ControlPlane(self.directory / "control-plane", options)
        self.control_plane.start()
        self.startup_seconds.update(
            {f"control-plane {k}": v for k, v in self.control_plane.startup_seconds.items()}
        )
        mark = time.monotonic()
        self._start_loop()
        self._run(self._start_kubelets())
        self.startup_seconds["nodes"] = time.monotonic() - mark

    def _settings(self) -> KubeletSettings:
        mounts = {MODELS_MOUNT_PATH: self.options.models_dir} if self.options.models_dir else {}
        return KubeletSettings(
            images=project_images().with_entries(self.options.images),
            state_dir=self.directory / "agent",
            mounts=mounts,
            backoff_base=self.options.backoff_base,
            backoff_max=self.options.backoff_max,
        )

    async def _start_kubelets(self) -> None:
        assert self.control_plane is not None and self.network is not None
        control_plane, network = self.control_plane, self.network
        settings = self._settings()
        api_server = (network.host_address, control_plane.apiserver_port)
        for index, node in enumerate(self.options.nodes, start=1):
            credentials = await asyncio.to_thread(
                control_plane.client_credentials,
                f"node-{node.name}",
                f"system:node:{node.name}",
                ["system:nodes"],
            )
            write_kubeconfig(
                self.directory / f"node-{node.name}.kubeconfig", credentials, f"system:node:{node.name}"
            )
            serving = None
            if not node.passive:  # a passive node runs nothing: no logs to serve
                serving = await asyncio.to_thread(
                    control_plane.kubelet_serving, node.name, network.node_address(index)
                )
            client = KubeClient(credentials, f"kubelet/{node.name}")
            self._clients.append(client)
            kubelet = Kubelet(
                node, index, client, network, settings, api_server, self.options.heartbeat, serving
            )
            self.kubelets[node.name] = kubelet
            self._spawn(kubelet.run(), f"kubelet {node.name}")
        if self.options.service_hosts:
            hosts_client = KubeClient(control_plane.admin, "service-hosts")
            self._clients.append(hosts_client)
            self._spawn(ServiceHosts(hosts_client, network.client_hosts_file).run(), "service hosts")
        timeout = 60 + 0.2 * len(self.kubelets)  # a few hundred nodes register in tens of seconds
        await asyncio.wait_for(
            asyncio.gather(*(a.registered.wait() for a in self.kubelets.values())), timeout
        )
        await asyncio.to_thread(self._wait_nodes_ready, timeout)

    def _wait_nodes_ready(self, timeout: float = 60.0) -> None:
        """Until every Node is Ready without the not-ready taints of the lifecycle controller."""
        assert self.control_plane is not None
        deadline = time.monotonic() + timeout
        names = set(self.kubelets)
        while time.monotonic() < deadline:
            try:
                listed = self.control_plane.request("GET", "/api/v1/nodes") or {}
            except httpx.TimeoutException:  # hundreds of kubelets registering at once: ask again
                continue
            ready = {node["metadata"]["name"] for node in listed.get("items", []) if _node_ready(node)}
            if names <= ready:
                return
            time.sleep(0.1 if len(names) < 50 else 1.0)  # a list of hundreds of Nodes costs
        raise TimeoutError(f"nodes not Ready after {timeout:.0f} s: {sorted(names)}")

    def _start_loop(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(started.set)
            loop.run_forever()

        self._thread = threading.Thread(target=serve, name="test-cluster-kubelets", daemon=True)
        self._thread.start()
        started.wait()

    def _spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        task.add_done_callback(_log_failure)
        self._tasks.append(task)

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _call(self, function: Any) -> None:
        async def call() -> None:
            function()

        self._run(call())

    def stop(self) -> None:
        """Stops the Pods' processes, the kubelets, the control plane, and removes the network."""
        if self._loop is not None and self._thread is not None:
            try:
                self._run(self._stop_kubelets(), timeout=60)
            except (concurrent.futures.TimeoutError, RuntimeError) as error:
                log.error("stopping the kubelets: %r", error)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None
        if self.control_plane is not None:
            self.control_plane.stop()
        if self.network is not None:
            self.network.destroy()
            self.network = None

    async def _stop_kubelets(self) -> None:
        await asyncio.gather(
            *(kubelet.shutdown() for kubelet in self.kubelets.values()), return_exceptions=True
        )
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for client in self._clients:
            await client.aclose()


def _node_ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    taints = (node.get("spec") or {}).get("taints") or []
    return ready and not any(t.get("key", "").startswith("node.kubernetes.io/") for t in taints)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed", task.get_name(), exc_info=task.exception())

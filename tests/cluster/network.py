"""The test cluster's network: a Linux bridge on this machine and one network namespace per Pod.

Address plan of a cluster (one free ``10.<octet>.0.0/16`` per running cluster, octet 200..254):

* the bridge ``lcbr<octet>`` holds ``10.<octet>.0.1`` (the API server binds there, so that processes
  in any namespace of the cluster reach it) and each node's InternalIP ``10.<octet>.<node>.1``;
  nodes past the 250th (passive ones only: they run no Pod, so they need no Pod range) take
  ``10.<octet>.251.1`` .. ``10.<octet>.254.254``;
* a Pod of node ``n`` gets its own namespace with a veth on the bridge and ``10.<octet>.<n>.<k>``
  (k = 2..254), so two Pods can bind the same port, as in a cluster;
* the client namespace (``10.<octet>.0.2``) is where tests run processes that resolve Service
  names: ``ip netns exec`` bind-mounts ``/etc/netns/<namespace>/hosts`` over ``/etc/hosts``.

No namespace has a default route and this machine does not forward, so every packet stays on the
bridge. A cluster's bridge carries its owner's pid in its alias: a later cluster removes the bridge,
namespaces and hosts folders of an owner that died without cleaning up. Needs root and iproute2.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FIRST_OCTET = 200
LAST_OCTET = 254
LOCK_FILE = Path("/run/lock/llamacontroller-cluster-network.lock")
NETNS_ETC = Path("/etc/netns")
ALIAS_PREFIX = "llamacontroller-cluster pid="
CLIENT_ADDRESS_HOST = 2  # 10.<octet>.0.2
MAX_NODES = 250  # nodes that may run Pods: node n's Pods take 10.<octet>.<n>.0/24
PASSIVE_BLOCKS = (251, 252, 253, 254)  # third octets of the passive nodes past MAX_NODES
MAX_PASSIVE_NODES = MAX_NODES + 254 * len(PASSIVE_BLOCKS)
MAX_PODS_PER_NODE = 253  # 10.<octet>.<n>.2 .. .254
IP = shutil.which("ip") or "/usr/sbin/ip"


class NetworkError(RuntimeError):
    """An ``ip`` command failed; the message has its output."""


def ip(*args: str, check: bool = True) -> str:
    """Runs ``ip ARGS`` and returns its output."""
    done = subprocess.run([IP, *args], capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def require_root() -> None:
    """Network namespaces need root; the harness says so instead of failing obscurely."""
    if os.geteuid() != 0:
        raise PermissionError("the test cluster needs root (network namespaces, bind mounts)")
    if not os.access(IP, os.X_OK):
        raise FileNotFoundError("the test cluster needs iproute2's 'ip' command")


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with LOCK_FILE.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _bridges() -> dict[int, int | None]:
    """The clusters' bridges on this machine: octet -> owner pid (None if unreadable)."""
    owners: dict[int, int | None] = {}
    for block in re.split(r"\n(?=\d+:)", ip("-d", "-o", "link", "show", "type", "bridge")):
        name = re.match(r"\d+: (lcbr(\d+))[:@]", block)
        if not name:
            continue
        alias = re.search(re.escape(ALIAS_PREFIX) + r"(\d+)", ip("link", "show", name.group(1)))
        owners[int(name.group(2))] = int(alias.group(1)) if alias else None
    return owners


def _used_octets() -> set[int]:
    """Second octets of 10.x addresses already on this machine (ours or anybody's)."""
    found = re.findall(r"inet 10\.(\d+)\.", ip("-4", "-o", "addr", "show"))
    return {int(octet) for octet in found}


def _namespaces(prefix: str) -> list[str]:
    names = [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]
    return [name for name in names if name.startswith(prefix)]


def _remove_cluster(octet: int) -> None:
    """Removes a cluster's namespaces, hosts folders and bridge (the veths go with the namespaces)."""
    prefix = namespace_prefix(octet)
    # Deleting the host ends now (not when the kernel frees the namespaces) frees their names at once.
    for veth in re.findall(rf"^\d+: (lc{octet}v\d+)@", ip("-o", "link", "show"), re.MULTILINE):
        ip("link", "delete", veth, check=False)
    for name in _namespaces(prefix):
        ip("netns", "delete", name, check=False)
    if NETNS_ETC.is_dir():
        for folder in NETNS_ETC.glob(f"{prefix}*"):
            shutil.rmtree(folder, ignore_errors=True)
    ip("link", "delete", f"lcbr{octet}", check=False)


def namespace_prefix(octet: int) -> str:
    return f"lc{octet}-"


@dataclass
class PodNetwork:
    """A Pod's network namespace: its name (for ``ip netns exec``) and its address."""

    namespace: str
    address: str
    host_veth: str


@dataclass
class ClusterNetwork:
    """A cluster's bridge and the namespaces made on it. ``create`` allocates, ``destroy`` removes."""

    octet: int
    _pod_addresses: dict[int, set[int]] = field(default_factory=dict)
    _last_host: dict[int, int] = field(default_factory=dict)
    _veth_numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _namespaces: set[str] = field(default_factory=set)

    @property
    def bridge(self) -> str:
        return f"lcbr{self.octet}"

    @property
    def host_address(self) -> str:
        """The bridge's address: this machine as the cluster sees it; the API server binds here."""
        return f"10.{self.octet}.0.1"

    @property
    def client_namespace(self) -> str:
        return f"{namespace_prefix(self.octet)}client"

    @property
    def client_address(self) -> str:
        return f"10.{self.octet}.0.{CLIENT_ADDRESS_HOST}"

    @property
    def client_hosts_file(self) -> Path:
        """Bind-mounted over /etc/hosts for processes run in the client namespace."""
        return NETNS_ETC / self.client_namespace / "hosts"

    def node_address(self, node_index: int) -> str:
        """Node ``node_index`` (1-based) is this machine at 10.<octet>.<node_index>.1; past
        MAX_NODES (a passive node's), at the next free address of the PASSIVE_BLOCKS."""
        if 1 <= node_index <= MAX_NODES:
            return f"10.{self.octet}.{node_index}.1"
        if MAX_NODES < node_index <= MAX_PASSIVE_NODES:
            block, host = divmod(node_index - MAX_NODES - 1, 254)
            return f"10.{self.octet}.{PASSIVE_BLOCKS[block]}.{host + 1}"
        raise ValueError(f"node index {node_index} is outside 1..{MAX_PASSIVE_NODES}")

    def pod_cidr(self, node_index: int) -> str:
        return f"10.{self.octet}.{node_index}.0/24"

    @classmethod
    def create(cls) -> ClusterNetwork:
        """Takes a free /16, removing the leftovers of clusters whose owner died, and makes the bridge."""
        require_root()
        with _allocation_lock():
            for octet, owner in _bridges().items():
                if owner is None or not _pid_alive(owner):
                    _remove_cluster(octet)
            used = _used_octets() | set(_bridges())
            free = [octet for octet in range(FIRST_OCTET, LAST_OCTET + 1) if octet not in used]
            if not free:
                raise NetworkError(f"no free 10.x.0.0/16 for a test cluster (10.{FIRST_OCTET}-{LAST_OCTET})")
            network = cls(octet=free[0])
            network._make_bridge()
        return network

    def _make_bridge(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("link", "set", self.bridge, "alias", f"{ALIAS_PREFIX}{os.getpid()}")
        ip("addr", "add", f"{self.host_address}/16", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")

    def add_node_address(self, node_index: int) -> str:
        """Puts the node's InternalIP on the bridge, so the node's address answers like a host's."""
        address = self.node_address(node_index)
        ip("addr", "add", f"{address}/16", "dev", self.bridge)
        return address

    def _add_namespace(self, name: str, address: str) -> PodNetwork:
        """A namespace with loopback up and a veth on the bridge holding ``address``."""
        host_veth = f"lc{self.octet}v{next(self._veth_numbers)}"
        ip("netns", "add", name)
        self._namespaces.add(name)
        try:
            ip("link", "add", host_veth, "type", "veth", "peer", "name", "eth0", "netns", name)
            ip("link", "set", host_veth, "master", self.bridge, "up")
            ip("-n", name, "addr", "add", f"{address}/16", "dev", "eth0")
            ip("-n", name, "link", "set", "eth0", "up")
            ip("-n", name, "link", "set", "lo", "up")
        except NetworkError:
            self.remove_namespace(name)
            raise
        return PodNetwork(name, address, host_veth)

    def add_client_namespace(self, hosts_text: str) -> PodNetwork:
        """The namespace where tests run clients of Services, with the hosts file they resolve with."""
        self.client_hosts_file.parent.mkdir(parents=True, exist_ok=True)
        self.client_hosts_file.write_text(hosts_text)
        return self._add_namespace(self.client_namespace, self.client_address)

    def add_pod(self, node_index: int, pod_uid: str) -> PodNetwork:
        """A Pod's sandbox network: its own namespace and the node's next free address. Addresses
        go round (a freed one is taken last), and this machine forgets the MAC an address had
        before: else packets to a new Pod would go to the old veth until the ARP entry expires."""
        if not 1 <= node_index <= MAX_NODES:
            raise NetworkError(f"node {node_index} has no Pod addresses: only nodes 1..{MAX_NODES} run Pods")
        used = self._pod_addresses.setdefault(node_index, set())
        last = self._last_host.get(node_index, 1)
        candidates = [2 + (last - 1 + step) % MAX_PODS_PER_NODE for step in range(MAX_PODS_PER_NODE)]
        host = next((k for k in candidates if k not in used), None)
        if host is None:
            raise NetworkError(f"node {node_index} has no free Pod address")
        used.add(host)
        self._last_host[node_index] = host
        address = f"10.{self.octet}.{node_index}.{host}"
        name = f"{namespace_prefix(self.octet)}{pod_uid.replace('-', '')[:12]}"
        ip("neigh", "flush", "to", address, "dev", self.bridge, check=False)
        try:
            return self._add_namespace(name, address)
        except NetworkError:
            used.discard(host)
            raise

    def remove_pod(self, node_index: int, pod: PodNetwork) -> None:
        ip("link", "delete", pod.host_veth, check=False)
        self.remove_namespace(pod.namespace)
        self._pod_addresses.get(node_index, set()).discard(int(pod.address.rsplit(".", 1)[1]))

    def remove_namespace(self, name: str) -> None:
        ip("netns", "delete", name, check=False)
        shutil.rmtree(NETNS_ETC / name, ignore_errors=True)
        self._namespaces.discard(name)

    def destroy(self) -> None:
        """Removes every namespace of the cluster, its hosts folders and the bridge."""
        with _allocation_lock():
            _remove_cluster(self.octet)
        self._namespaces.clear()
        self._pod_addresses.clear()


def netns_exec(namespace: str, argv: Sequence[str]) -> list[str]:
    """The command that runs ``argv`` in ``namespace`` (with its /etc/netns files over /etc)."""
    return [IP, "netns", "exec", namespace, *argv]

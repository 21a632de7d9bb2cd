"""A real Kubernetes control plane for the tests: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler as local processes, built by build.sh.

* etcd on loopback with its data in the cluster's folder (no fsync: the data dies with the test);
* kube-apiserver with TLS (pki.py), client-certificate authentication, ``Node,RBAC`` authorization,
  the default admission plugins plus NodeRestriction (``admission_plugins``), a service-account issuer
  and signing key, and an audit log (every request at Metadata level, JSON lines in ``audit.log``:
  ``audit_events()``, from an ``audit_mark()`` on); it reaches the kubelets' kubelet API (logs) at
  their InternalIP with its kubelet client certificate (``KUBELET_CLIENT_USER``) and verifies their
  serving certificates (``kubelet_serving``) against the cluster's CA;
* kube-controller-manager with an explicit list of controllers (garbage collector, namespaces,
  service accounts and their tokens, endpoint slices, node lifecycle and taint eviction, Pod GC,
  Deployments/ReplicaSets, the root CA publisher, the PersistentVolume binder and the volumes'
  protection finalizers (without them a deleted claim, and its namespace, would never go), resource
  quotas), each with its own service account;
* kube-scheduler.

Each program is its own process group with its log in ``logs/<program>.log``; ``stop`` ends them
all, ``paused(name)`` holds one still for a while. ``admin_kubeconfig`` is a client certificate of
``system:masters``; ``client_credentials`` makes other identities (the kubelets use
``system:node:<name>``) and ``service_account_kubeconfig`` a kubeconfig with a TokenRequest token of
a ServiceAccount.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.cluster.binaries import bin_dir
from tests.cluster.component import Component, wait_until
from tests.cluster.kubeapi import Credentials
from tests.cluster.kubeletapi import KubeletServing
from tests.cluster.pki import KeyPair, Pki

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
CONTROLLERS = (
    "garbage-collector-controller",
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "endpointslice-controller",
    "endpointslice-mirroring-controller",
    "node-lifecycle-controller",
    "taint-eviction-controller",
    "pod-garbage-collector-controller",
    "deployment-controller",
    "replicaset-controller",
    "root-ca-certificate-publisher-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "resourcequota-controller",
)
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}
RUNTIME_CLASSES = {"nvidia": "nvidia"}  # the project's Pods name runtimeClassName: nvidia
# Who the API server is to the kubelets (kubeadm's name for its certificate's user).
KUBELET_CLIENT_USER = "kube-apiserver-kubelet-client"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ControlPlaneOptions:
    """What the tests may want to change. Node monitoring is quick by default (a lost node is
    Unknown after ``node_monitor_grace_seconds``); a real cluster waits 50 s."""

    bind_address: str = "127.0.0.1"
    service_cidr: str = "10.96.0.0/16"
    controllers: Sequence[str] = CONTROLLERS
    node_monitor_period_seconds: int = 1
    node_monitor_grace_seconds: int = 8
    runtime_classes: Mapping[str, str] = field(default_factory=lambda: dict(RUNTIME_CLASSES))
    # Beside the API server's default admission plugins (which include ResourceQuota).
    admission_plugins: Sequence[str] = ("NodeRestriction",)
    # Applied (kubectl apply -f) as soon as the API server is ready, before the controllers start: the
    # CRDs among them are then known to the garbage collector and the quota controller from their
    # start (they look for new resources only every 30 s, and until then delete no dependent of a
    # custom resource).
    preinstalled: Sequence[Path] = ()
    extra_apiserver_args: Sequence[str] = ()
    extra_controller_manager_args: Sequence[str] = ()
    start_timeout: float = 90.0


def kubeconfig(credentials: Credentials, user: str, namespace: str = "default") -> dict[str, Any]:
    """A self-contained kubeconfig (certificates embedded) for these credentials."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    auth: dict[str, Any] = {}
    if credentials.token:
        auth["token"] = credentials.token
    if credentials.cert_file and credentials.key_file:
        auth["client-certificate-data"] = b64(credentials.cert_file)
        auth["client-key-data"] = b64(credentials.key_file)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "test",
                "cluster": {
                    "server": credentials.server,
                    "certificate-authority-data": b64(credentials.ca_file),
                },
            }
        ],
        "users": [{"name": user, "user": auth}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": user, "namespace": namespace}}],
        "current-context": "test",
    }


def write_kubeconfig(path: Path, credentials: Credentials, user: str, namespace: str = "default") -> Path:
    path.write_text(yaml.safe_dump(kubeconfig(credentials, user, namespace), sort_keys=False))
    path.chmod(0o600)
    return path


class ControlPlane:
    """Starts and stops the control plane in ``directory`` (certificates, etcd data, kubeconfigs,
    logs, audit log)."""

    def __init__(
        self, directory: Path, options: ControlPlaneOptions | None = None, binaries: Path | None = None
    ) -> None:
        self.directory = directory
        self.options = options or ControlPlaneOptions()
        self.binaries = binaries
        self.logs_dir = directory / "logs"
        self.audit_log = directory / "audit.log"
        self.admin_kubeconfig = directory / "admin.kubeconfig"
        self.components: list[Component] = []
        self.pki: Pki | None = None
        self.apiserver_port = 0
        self.etcd_url = ""
        self.startup_seconds: dict[str, float] = {}

    # -- addresses and identities -----------------------------------------------------------------

    @property
    def server(self) -> str:
        return f"https://{self.options.bind_address}:{self.apiserver_port}"

    @property
    def ca_file(self) -> Path:
        assert self.pki is not None, "the control plane is not started"
        return self.pki.ca.cert

    def client_credentials(self, name: str, user: str, groups: Sequence[str] = ()) -> Credentials:
        """A client certificate for ``user`` in ``groups`` (file names from ``name``)."""
        assert self.pki is not None, "the control plane is not started"
        pair = self.pki.client(name, user, groups)
        return Credentials(self.server, self.ca_file, pair.cert, pair.key)

    def kubelet_serving(self, node: str, address: str) -> KubeletServing:
        """What a node's kubelet API serves with: a certificate for its InternalIP (and name) from
        the cluster's CA, which the API server verifies, and the API server's kubelet client as the
        one user it answers."""
        assert self.pki is not None, "the control plane is not started"
        pair = self.pki.server(f"kubelet-{node}", ips=[address], dns_names=[node])
        return KubeletServing(pair.cert, pair.key, self.pki.ca.cert, frozenset({KUBELET_CLIENT_USER}))

    @property
    def admin(self) -> Credentials:
        assert self.pki is not None, "the control plane is not started"
        pair = KeyPair(self.pki.directory / "admin.crt", self.pki.directory / "admin.key")
        return Credentials(self.server, self.ca_file, pair.cert, pair.key)

    # -- start and stop ---------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds["total"] = time.monotonic() - began
        return self

    def _start(self) -> None:
        binaries = self.binaries = self.binaries or bin_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        mark = time.monotonic()
        pki = self.pki = Pki(self.directory / "pki")
        host = self.options.bind_address
        serving = pki.server(
            "apiserver",
            ips=sorted({host, "127.0.0.1", self._service_ip()}),
            dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       "kubernetes.default.svc.cluster.local"],
        )  # fmt: skip
        pki.client("admin", "admin", ["system:masters"])
        signer = pki.signing_key("service-account")
        self.apiserver_port = free_port(host)
        write_kubeconfig(self.admin_kubeconfig, self.admin, "admin")
        manager = write_kubeconfig(
            self.directory / "controller-manager.kubeconfig",
            self.client_credentials("controller-manager", "system:kube-controller-manager"),
            "system:kube-controller-manager",
        )
        scheduler = write_kubeconfig(
            self.directory / "scheduler.kubeconfig",
            self.client_credentials("scheduler", "system:kube-scheduler"),
            "system:kube-scheduler",
        )
        self.startup_seconds["pki"] = time.monotonic() - mark

        mark = time.monotonic()
        etcd_url = self._start_etcd(binaries)
        self.startup_seconds["etcd"] = time.monotonic() - mark
        mark = time.monotonic()
        self._start_apiserver(binaries, etcd_url, serving, signer)
        self.startup_seconds["kube-apiserver"] = time.monotonic() - mark
        mark = time.monotonic()
        self._preinstall()
        self.startup_seconds["preinstalled"] = time.monotonic() - mark
        mark = time.monotonic()
        manager_port = self._start_controller_manager(binaries, manager, signer)
        scheduler_port = self._start_scheduler(binaries, scheduler)
        with ThreadPoolExecutor(3) as pool:
            waits = [
                pool.submit(self._wait_healthz, self.components[-2], manager_port),
                pool.submit(self._wait_healthz, self.components[-1], scheduler_port),
                pool.submit(self._bootstrap),
            ]
            for wait in waits:
                wait.result()
        self.startup_seconds["controllers"] = time.monotonic() - mark

    def _service_ip(self) -> str:
        """The first address of the Service range: the ``kubernetes`` Service's ClusterIP."""
        network, _ = self.options.service_cidr.split("/")
        parts = network.split(".")
        return ".".join([*parts[:3], str(int(parts[3]) + 1)])

    def _component(self, name: str, argv: Sequence[str]) -> Component:
        component = Component(name, argv, self.logs_dir / f"{name}.log")
        self.components.append(component)
        component.start()
        return component

    def _start_etcd(self, binaries: Path) -> str:
        client_port, peer_port = free_port(), free_port()
        client_url, peer_url = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        etcd = self._component(
            "etcd",
            [
                str(binaries / "etcd"),
                "--name=test",
                f"--data-dir={self.directory / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=test={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        wait_until(lambda: _http_ok(f"{client_url}/health"), 30, "healthy", etcd)
        self.etcd_url = client_url
        return client_url

    def _start_apiserver(self, binaries: Path, etcd_url: str, serving: KeyPair, signer: KeyPair) -> None:
        assert self.pki is not None
        policy = self.directory / "audit-policy.yaml"
        policy.write_text(yaml.safe_dump(AUDIT_POLICY))
        kubelet_client = self.pki.client("apiserver-kubelet-client", KUBELET_CLIENT_USER)
        loopback = self.options.bind_address.startswith("127.")
        apiserver = self._component(
            "kube-apiserver",
            [
                str(binaries / "kube-apiserver"),
                f"--etcd-servers={etcd_url}",
                f"--bind-address={self.options.bind_address}",
                f"--advertise-address={self.options.bind_address}",
                f"--secure-port={self.apiserver_port}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={self.pki.ca.cert}",
                "--authorization-mode=Node,RBAC",
                f"--enable-admission-plugins={','.join(self.options.admission_plugins)}",
                "--allow-privileged=true",
                f"--service-cluster-ip-range={self.options.service_cidr}",
                f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
                f"--service-account-key-file={signer.cert}",
                f"--service-account-signing-key-file={signer.key}",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-format=json",
                # The kubelet API (pods/log): its client certificate, the CA of the kubelets' serving
                # certificates, and the InternalIP (a test node's name resolves nowhere).
                f"--kubelet-client-certificate={kubelet_client.cert}",
                f"--kubelet-client-key={kubelet_client.key}",
                f"--kubelet-certificate-authority={self.pki.ca.cert}",
                "--kubelet-preferred-address-types=InternalIP",
                f"--cert-dir={self.directory / 'apiserver-certs'}",
                # A loopback advertise address cannot be an endpoint of the `kubernetes` Service.
                f"--endpoint-reconciler-type={'none' if loopback else 'lease'}",
                "--profiling=false",
                # PodTemplates bypass the watch cache: after compact_etcd, a watch from an older
                # version of them gets 410 Gone, which the tests of watch clients need.
                "--watch-cache-sizes=podtemplates#0",
                *self.options.extra_apiserver_args,
            ],
        )
        admin = self.admin
        wait_until(
            lambda: _http_ok(f"{self.server}/readyz", admin), self.options.start_timeout, "ready", apiserver
        )

    def _start_controller_manager(self, binaries: Path, kubeconfig_path: Path, signer: KeyPair) -> int:
        assert self.pki is not None
        port = free_port()
        self._component(
            "kube-controller-manager",
            [
                str(binaries / "kube-controller-manager"),
                f"--kubeconfig={kubeconfig_path}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.directory / 'controller-manager-certs'}",
                "--leader-elect=false",
                f"--controllers={','.join(self.options.controllers)}",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={signer.key}",
                f"--root-ca-file={self.pki.ca.cert}",
                f"--service-cluster-ip-range={self.options.service_cidr}",
                f"--node-monitor-period={self.options.node_monitor_period_seconds}s",
                f"--node-monitor-grace-period={self.options.node_monitor_grace_seconds}s",
                "--profiling=false",
                *self.options.extra_controller_manager_args,
            ],
        )
        return port

    def _start_scheduler(self, binaries: Path, kubeconfig_path: Path) -> int:
        port = free_port()
        self._component(
            "kube-scheduler",
            [
                str(binaries / "kube-scheduler"),
                f"--kubeconfig={kubeconfig_path}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.directory / 'scheduler-certs'}",
                "--leader-elect=false",
                "--profiling=false",
            ],
        )
        return port

    def _preinstall(self) -> None:
        for path in self.options.preinstalled:
            self.kubectl("apply", "-f", str(path))
        if self.options.preinstalled:
            self.kubectl("wait", "--for=condition=established", "--all", "customresourcedefinitions")

    def _wait_healthz(self, component: Component, port: int) -> None:
        url = f"https://127.0.0.1:{port}/healthz"
        wait_until(lambda: _http_ok(url), self.options.start_timeout, "healthy", component)

    def _bootstrap(self) -> None:
        """What the tests' Pods need before the first one is created: the RuntimeClasses they name,
        and the ``default`` ServiceAccount (the ServiceAccount admission refuses Pods without it)."""
        for name, handler in self.options.runtime_classes.items():
            body = {
                "apiVersion": "node.k8s.io/v1",
                "kind": "RuntimeClass",
                "metadata": {"name": name},
                "handler": handler,
            }
            self.request("POST", "/apis/node.k8s.io/v1/runtimeclasses", body, ok=(201, 409))
        wait_until(
            lambda: (
                self.request("GET", "/api/v1/namespaces/default/serviceaccounts/default", ok=(200, 404))
                is not None
            ),
            self.options.start_timeout,
            "given the default ServiceAccount",
        )

    def stop(self) -> None:
        """Stops every program, the last started first, and removes etcd's data (the logs stay)."""
        for component in reversed(self.components):
            component.stop()
        shutil.rmtree(self.directory / "etcd", ignore_errors=True)

    # -- using it ---------------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        ok: Sequence[int] = (200, 201),
        credentials: Credentials | None = None,
    ) -> dict[str, Any] | None:
        """One API call as admin; None for a tolerated non-2xx status, an error for any other."""
        creds = credentials or self.admin
        with httpx.Client(
            base_url=creds.server, verify=creds.ssl_context(), trust_env=False, timeout=30
        ) as http:
            headers = {"Authorization": f"Bearer {creds.token}"} if creds.token else {}
            response = http.request(method, path, json=body, headers=headers)
        if response.status_code not in ok:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if 200 <= response.status_code < 300 else None

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The built kubectl (1.37, within the supported skew) as admin."""
        assert self.binaries is not None, "the control plane is not started"
        done = subprocess.run(
            [str(self.binaries / "kubectl"), f"--kubeconfig={self.admin_kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done

    def service_account_token(self, namespace: str, name: str, expiration_seconds: int = 3600) -> str:
        """A token of the ServiceAccount from the TokenRequest API."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": expiration_seconds},
        }
        answer = self.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body)
        assert answer is not None
        return str(answer["status"]["token"])

    def service_account_kubeconfig(
        self, namespace: str, name: str, path: Path, expiration_seconds: int = 3600
    ) -> Path:
        """A kubeconfig that acts as the ServiceAccount (as a Pod of it would), for the operator and
        the gateway: their RBAC grants are what the API server enforces."""
        token = self.service_account_token(namespace, name, expiration_seconds)
        credentials = Credentials(self.server, self.ca_file, token=token)
        return write_kubeconfig(path, credentials, f"system:serviceaccount:{namespace}:{name}", namespace)

    def compact_etcd(self) -> int:
        """Compacts etcd's history up to now (the API server does so every 5 minutes): watches from
        older versions then get 410 Gone. Returns the revision."""
        with httpx.Client(base_url=self.etcd_url, trust_env=False, timeout=10) as http:
            key = base64.b64encode(b"/").decode()
            revision = int(http.post("/v3/kv/range", json={"key": key}).json()["header"]["revision"])
            http.post("/v3/kv/compaction", json={"revision": revision, "physical": True}).raise_for_status()
        return revision

    def audit_events(self, since: int = 0) -> list[dict[str, Any]]:
        """Every request the API server has logged so far (audit.k8s.io/v1 Events, Metadata level),
        or those logged after ``since`` (an ``audit_mark()``)."""
        return list(iter_audit_events(self.audit_log, since))

    def audit_mark(self) -> int:
        """Where the audit log ends now: ``audit_events(since=mark)`` reads what comes after."""
        try:
            return self.audit_log.stat().st_size
        except FileNotFoundError:
            return 0

    @contextlib.contextmanager
    def paused(self, name: str) -> Iterator[None]:
        """The program stands still (SIGSTOP) until the block ends (SIGCONT): a paused scheduler,
        for one, leaves new Pods unscheduled without saying why, as a busy one does."""
        (component,) = [c for c in self.components if c.name == name]
        assert component.process is not None and component.running, f"{name} is not running"
        os.killpg(component.process.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(component.process.pid, signal.SIGCONT)

    def log_tails(self, lines: int = 30) -> str:
        """The end of every program's log, for a failed test's report."""
        parts = []
        for component in self.components:
            state = "running" if component.running else "stopped"
            parts.append(
                f"----- {component.name} ({state}): {component.log_path}\n{component.log_tail(lines)}"
            )
        return "\n".join(parts)


def iter_audit_events(path: Path, since: int = 0) -> Iterator[dict[str, Any]]:
    try:
        with path.open("rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
    except FileNotFoundError:
        return
    for line in text.splitlines():
        if line.strip():
            try:
                yield json.loads(line)
            except ValueError:
                continue  # the last line may be half written


def _http_ok(url: str, credentials: Credentials | None = None) -> bool:
    """GET ``url`` answers 200 (TLS unverified without credentials: the programs self-sign)."""
    verify: Any = credentials.ssl_context() if credentials else False
    try:
        with httpx.Client(verify=verify, trust_env=False, timeout=2) as http:
            return http.get(url).status_code == 200
    except httpx.HTTPError:
        return False

"""How the operator scales: N LlamaModels applied at once on a real control plane, in one run.

    .venv/bin/python bench/operator_scale.py [--sizes 1,100,1000] [--idle-seconds 60] [--json FILE]
        [--plot docs/operator-scale.png] [--samples 20] [--connections 32]
        [--operator-source DIR] [--profile PATH]

For each N, a fresh test cluster (tests/cluster: etcd, kube-apiserver, controller-manager, scheduler)
with N/2 passive two-GPU nodes (one at N = 1): their agents register the Node, keep it Ready and run
nothing. Needs root, as the tests' cluster does; matplotlib for ``--plot`` (the ``bench`` extra).
The operator runs as ``llamacontroller operator --namespace bench`` with the built-in settings
(leader election on, resync every 30 s, the models volume a hostPath) and a client certificate of
its own, so that the API server's audit log tells its requests apart.

A round, repeated until there are ``--samples`` LlamaModels (20 rounds of one at N = 1, one round
above 20), everything cleaned between rounds:

1. The yardstick: N bare triples (create the Pod, create the Service, merge-patch the status, as the
   operator renders and writes them for a LlamaModel that claims its slot, in turn) done at once by
   the bench itself, in namespace ``yardstick`` (which the operator does not serve); each triple's
   time counts from the common start.
2. The apply: N LlamaModels created at once (LlamaModel i on node i // 2, GPU i % 2: every one gets
   a slot). A watcher in a process of its own watches Pods and LlamaModels and stamps each event on
   arrival (the system's monotonic clock, which this process shares): apply -> Pod is its Pod's
   ADDED event after the common start. A LlamaModel has converged once its Pod exists and its status
   is written (``podName`` and ``phase: Pending``, or ``phase: Waiting``). The scheduler then binds
   the Pod and the operator follows (``ContainerCreating``, as it follows a kubelet's news); a
   passive node does nothing more, so the round ends once every status says so and the operator has
   made no request for two seconds ("settled").
3. The operator's API requests from the apply to settled, from the audit log, by verb and
   resource; apart, those that come with time, not with LlamaModels: the lease renewals of leader
   election (every 5 s) and the informers' watches, which the API server ends every 5 minutes.
   Status patches are counted per LlamaModel: the first converges it, later ones follow its Pod
   (each with its Event). And the operator's CPU time over the same time (utime + stime, /proc).

Then ``--idle-seconds`` of idle: the operator's CPU, its requests (a resync reads nothing: the goal
is none but the periodic ones), and its peak RSS over the whole run (VmHWM).

Both client sides use ``--connections`` connections at most (HTTP/1.1, as the operator's client).
The agents renew their nodes' Leases every 60 s (a kubelet's: 10 s) and report the status every 5
minutes (as kubelets do): 500 nodes then write 8 times a second, not the 50 that this small
machine's API server would spend much of its CPU on. The machine is shared and small: absolute
figures move with its load; the ratios to the yardstick, measured minutes apart against the same API
server, are what the goals are about. Goals (issue 21): apply -> Pod p50 <= 2x the triple's at
N = 1 and <= 3x at N = 1,000; converging linear in N; <= 4 requests per LlamaModel to converge and
none per resync; idle CPU < 1 % of a core and peak RSS <= 150 MiB at N = 1,000.

``--operator-source`` runs another checkout's package (``git archive main operator | tar -x -C
DIR``, then ``DIR/operator``), to compare two versions under the same conditions; ``--profile`` runs
the operator under cProfile (slower: to find where its time goes, not for the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "operator")]  # the checkout's package and its tests' cluster

from report import print_table  # noqa: E402  (bench/report.py: the script's folder is on sys.path)

from llamacontroller.config import OperatorConfig  # noqa: E402
from llamacontroller.reconcile import Observed, decide, status_patch  # noqa: E402
from llamacontroller.render.children import render_children  # noqa: E402
from llamacontroller.resource import parse_llamamodel  # noqa: E402
from tests.cluster.cluster import ClusterOptions, LocalCluster  # noqa: E402
from tests.cluster.controlplane import ControlPlaneOptions, write_kubeconfig  # noqa: E402
from tests.cluster.kubeapi import Credentials  # noqa: E402
from tests.cluster.nodeagent import Heartbeat, TestNode  # noqa: E402

NAMESPACE = "bench"
YARDSTICK = "yardstick"
OPERATOR_USER = "llamacontroller-bench-operator"
GROUP_PATH = "/apis/llamacontroller.io/v1alpha1"
MERGE_PATCH = "application/merge-patch+json"
QUIET_SECONDS = 2.0  # no operator request for this long: it has nothing left to do
LEASES = "leases"


def periodic(kind: str) -> bool:
    """Requests that come with time, not with LlamaModels: lease renewals, watches resumed."""
    verb, resource = kind.split(" ", 1)
    return resource == LEASES or verb == "watch"


GOALS = {
    "ratio_n1": 2.0,
    "ratio_n1000": 3.0,
    "requests_per_llamamodel": 4.0,
    "idle_cpu_percent": 1.0,
    "peak_rss_mib": 150.0,
}


def llamamodel(index: int, namespace: str, number: int = 0) -> dict[str, Any]:
    """LlamaModel ``index`` of round ``number``: on node index // 2, GPU index % 2."""
    return {
        "apiVersion": "llamacontroller.io/v1alpha1",
        "kind": "LlamaModel",
        "metadata": {"name": f"lm-{number}-{index:04d}", "namespace": namespace},
        "spec": {
            "model": {"path": "tiny.gguf"},
            "nodeName": node_name(index // 2),
            "gpu": {"mode": "single", "gpuId": index % 2},
        },
    }


def node_name(index: int) -> str:
    return f"node-{index:03d}"


def operator_settings() -> dict[str, Any]:
    """The built-in settings; the models volume a hostPath (no claim for the scheduler to wait for)."""
    settings: dict[str, Any] = OperatorConfig().model_dump(mode="json", by_alias=True, exclude_none=True)
    settings["modelsVolume"] = {"mountPath": "/models", "hostPath": {"path": "/models", "type": "Directory"}}
    return settings


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# -- the watcher: a process of its own, so that its stamps do not wait for this one's work ---------

WATCHER = r"""
import asyncio, json, sys, time
import httpx
server, ca, cert, key, namespace = sys.argv[1:6]
context = httpx.create_ssl_context(verify=ca)
context.load_cert_chain(cert, key)

def say(record):
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()

async def watch(client, kind, path):
    listed = (await client.get(path)).json()
    version = listed["metadata"]["resourceVersion"]
    say({"ready": kind})
    params = {"watch": "true", "resourceVersion": version, "timeoutSeconds": "7200"}
    async with client.stream("GET", path, params=params, timeout=httpx.Timeout(30, read=None)) as answer:
        async for line in answer.aiter_lines():
            if not line:
                continue
            stamp = time.monotonic()
            event = json.loads(line)
            obj = event.get("object") or {}
            meta, status = obj.get("metadata") or {}, obj.get("status") or {}
            record = {"t": stamp, "kind": kind, "type": event.get("type"), "name": meta.get("name")}
            if kind == "pod":
                record["lm"] = (meta.get("labels") or {}).get("llamacontroller.io/llamamodel")
                record["node"] = (obj.get("spec") or {}).get("nodeName")
            else:
                ready = [c for c in status.get("conditions") or [] if c.get("type") == "Ready"]
                record |= {"phase": status.get("phase"), "podName": status.get("podName"),
                           "reason": ready[0].get("reason") if ready else None}
            say(record)

async def main():
    limits = httpx.Limits(max_connections=4)
    async with httpx.AsyncClient(base_url=server, verify=context, limits=limits, trust_env=False) as client:
        await asyncio.gather(
            watch(client, "pod", f"/api/v1/namespaces/{namespace}/pods"),
            watch(client, "lm", f"/apis/llamacontroller.io/v1alpha1/namespaces/{namespace}/llamamodels"),
        )

asyncio.run(main())
"""


class Watcher:
    """The watcher process and what it said, read by a thread."""

    def __init__(self, credentials: Credentials, namespace: str) -> None:
        argv = [
            sys.executable,
            "-c",
            WATCHER,
            credentials.server,
            str(credentials.ca_file),
            str(credentials.cert_file),
            str(credentials.key_file),
            namespace,
        ]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.records: list[dict[str, Any]] = []
        self.ready: set[str] = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            record = json.loads(line)
            with self.lock:
                if "ready" in record:
                    self.ready.add(record["ready"])
                else:
                    self.records.append(record)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.ready != {"pod", "lm"}:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the watcher did not start")
            time.sleep(0.05)

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.records)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@dataclass
class Progress:
    """Per LlamaModel, from the watcher's records: when its Pod appeared, when its status was first
    written (with the Pod's name, or Waiting), and when the status followed the bound Pod."""

    pod: dict[str, float] = field(default_factory=dict)
    status: dict[str, float] = field(default_factory=dict)
    settled: dict[str, float] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, records: list[dict[str, Any]]) -> Progress:
        progress = cls()
        for record in records:
            if record["kind"] == "pod" and record["type"] == "ADDED" and record["lm"]:
                progress.pod.setdefault(record["lm"], record["t"])
            elif record["kind"] == "lm" and record["type"] in ("ADDED", "MODIFIED"):
                name, waits = record["name"], record["phase"] == "Waiting"
                if waits:
                    progress.waiting.add(name)
                if waits or (record["phase"] == "Pending" and record["podName"]):
                    progress.status.setdefault(name, record["t"])
                if waits or record["reason"] == "ContainerCreating":
                    progress.settled.setdefault(name, record["t"])
        return progress

    def converged(self, name: str) -> float | None:
        """When it had its Pod and its status written (a waiter: its status), None if not yet."""
        status = self.status.get(name)
        if status is None or name in self.waiting:
            return status
        pod = self.pod.get(name)
        return None if pod is None else max(pod, status)


# -- the audit log ---------------------------------------------------------------------------------


class Audit:
    """One user's requests in the API server's audit log (JSON lines, Metadata level), read as the
    log grows; one entry per request (a watch logs two stages under one audit ID)."""

    def __init__(self, path: Path, user: str) -> None:
        self.path = path
        self.needle = f'"username":"{user}"'.encode()
        self.offset = 0
        self.events: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        self._rest = b""

    def read(self) -> None:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        self.offset += len(chunk)
        *lines, self._rest = (self._rest + chunk).split(b"\n")
        for line in lines:
            if self.needle in line:
                event = json.loads(line)
                if event["auditID"] not in self._ids:
                    self._ids.add(event["auditID"])
                    self.events.append(event)

    def mark(self) -> int:
        """Where the requests logged so far end: ``since(mark)`` gives what comes after."""
        self.read()
        return len(self.events)

    def since(self, mark: int) -> list[dict[str, Any]]:
        self.read()
        return self.events[mark:]

    def quiet(self, mark: int) -> float:
        """Seconds since the last request after ``mark`` that is neither a lease's nor a watch."""
        stamps = [
            e["stageTimestamp"]
            for e in self.since(mark)
            if (e.get("objectRef") or {}).get("resource") != LEASES and e["verb"] != "watch"
        ]
        if not stamps:
            return math.inf
        last = datetime.fromisoformat(max(stamps).replace("Z", "+00:00"))
        return (datetime.now(UTC) - last).total_seconds()


def request_kind(event: dict[str, Any]) -> str:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", event.get("requestURI", "?"))
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    return f"{event['verb']} {resource}"


def split_requests(events: list[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
    """Requests by verb and resource: those that come with LlamaModels, and the periodic ones."""
    kinds = Counter(request_kind(e) for e in events)
    return (
        Counter({k: n for k, n in kinds.items() if not periodic(k)}),
        Counter({k: n for k, n in kinds.items() if periodic(k)}),
    )


# -- /proc of the operator -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise KeyError(name)


# -- the API, as the bench's own client ------------------------------------------------------------


def client(credentials: Credentials, connections: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=credentials.server,
        verify=credentials.ssl_context(),
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=httpx.Timeout(120.0),
        trust_env=False,
    )


def checked(answer: httpx.Response) -> dict[str, Any]:
    if answer.status_code >= 300:
        raise RuntimeError(
            f"{answer.request.method} {answer.request.url}: {answer.status_code} {answer.text}"
        )
    body: dict[str, Any] = answer.json()
    return body


def llamamodels_path(namespace: str) -> str:
    return f"{GROUP_PATH}/namespaces/{namespace}/llamamodels"


async def create_llamamodels(
    http: httpx.AsyncClient, namespace: str, bodies: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], float]]:
    """Every create at once: the objects as created, and when each answer came."""

    async def create(body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        created = checked(await http.post(llamamodels_path(namespace), json=body))
        return created, time.monotonic()

    return list(await asyncio.gather(*(create(body) for body in bodies)))


def triple_of(body: dict[str, Any], config: OperatorConfig) -> tuple[dict[str, Any], ...]:
    """The Pod, the Service and the status the operator writes for a LlamaModel that claims its slot,
    from the operator's own pure functions."""
    children = render_children(parse_llamamodel(body), config)
    now = datetime.now(UTC)
    decision = decide(body, config, Observed(pods=[], services=[], node_pods=[]), now)
    assert decision.create_pod is not None, decision.report
    return children.pod, children.service, status_patch(body, decision, now)


async def bare_triples(
    http: httpx.AsyncClient, bodies: list[dict[str, Any]], config: OperatorConfig
) -> list[float]:
    """One triple per LlamaModel, all at once; each one's seconds from the common start to its last
    answer."""
    triples = [triple_of(body, config) for body in bodies]
    started = time.monotonic()

    async def triple(
        body: dict[str, Any], pod: dict[str, Any], service: dict[str, Any], status: Any
    ) -> float:
        namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]
        checked(await http.post(f"/api/v1/namespaces/{namespace}/pods", json=pod))
        checked(await http.post(f"/api/v1/namespaces/{namespace}/services", json=service))
        patch = json.dumps({"status": status})
        path = f"{llamamodels_path(namespace)}/{name}/status"
        checked(await http.patch(path, content=patch, headers={"Content-Type": MERGE_PATCH}))
        return time.monotonic() - started

    return list(await asyncio.gather(*(triple(b, *t) for b, t in zip(bodies, triples, strict=True))))


async def count(http: httpx.AsyncClient, path: str, **params: str) -> int:
    return len(checked(await http.get(path, params=params)).get("items") or [])


async def until(what: str, check: Any, timeout: float, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        await asyncio.sleep(every)


async def emptied(http: httpx.AsyncClient, namespace: str, timeout: float) -> None:
    """Until no LlamaModel, Pod or Service is left in the namespace."""

    async def empty() -> bool:
        paths = [f"/api/v1/namespaces/{namespace}/{kind}" for kind in ("pods", "services")]
        return not any([await count(http, path) for path in [*paths, llamamodels_path(namespace)]])

    await until(f"namespace {namespace} emptied", empty, timeout, every=0.5)


# -- one size --------------------------------------------------------------------------------------


@contextlib.contextmanager
def operator_process(
    kubeconfig: Path, settings: Path, log: Path, source: Path, profile: Path | None
) -> Iterator[subprocess.Popen[bytes]]:
    """``llamacontroller operator`` from the package in ``source``, until the block ends (Ctrl-C);
    under cProfile with ``profile`` (its stats written there when it ends)."""
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(source)}
    for variable in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        env.pop(variable, None)
    profiled = ["-m", "cProfile", "-o", str(profile)] if profile else []
    argv = [sys.executable, *profiled, "-m", "llamacontroller.cli", "operator", "--namespace", NAMESPACE]
    argv += ["--config", str(settings), "--liveness", f"http://127.0.0.1:{port}/healthz"]
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while "Watching " not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the operator did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_cluster(directory: Path, nodes: int) -> LocalCluster:
    options = ClusterOptions(
        nodes=tuple(TestNode(node_name(i), gpus=2, passive=True) for i in range(nodes)),
        # the Lease every 60 s, the status every 5 minutes (the module's docstring says why); a node
        # is lost after 5 minutes of silence
        heartbeat=Heartbeat(lease_seconds=240, renew_interval=60.0, status_interval=300.0),
        control_plane=ControlPlaneOptions(node_monitor_grace_seconds=300, preinstalled=(REPO / "crds",)),
        service_hosts=False,
    )
    return LocalCluster(directory, options).start()


def wait_for(what: str, check: Any, timeout: float, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f} s")
        time.sleep(every)


def measure(size: int, rounds: int, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    nodes = max(1, math.ceil(size / 2))
    began = time.monotonic()
    cluster = start_cluster(workdir / "cluster", nodes)
    print(f"  cluster of {nodes} passive node(s) up in {time.monotonic() - began:.0f} s", flush=True)
    try:
        return Bench(cluster, size, rounds, args, workdir).run()
    finally:
        cluster.stop()


@dataclass
class Round:
    """One apply of N LlamaModels (seconds from its start) and its yardstick."""

    triples: list[float]
    to_pod: list[float]
    converged: float
    settled: float
    requests: list[dict[str, Any]]  # the operator's, from the audit log, apply to settled
    log_lines: int
    cpu: float  # the operator's CPU seconds, apply to settled


class Bench:
    """One size on one cluster: ``rounds`` rounds of a yardstick and an apply, then the idle time."""

    def __init__(
        self, cluster: LocalCluster, size: int, rounds: int, args: argparse.Namespace, workdir: Path
    ) -> None:
        assert cluster.control_plane is not None
        self.plane = cluster.control_plane
        self.size = size
        self.rounds = rounds
        self.args = args
        self.workdir = workdir
        self.config = OperatorConfig.model_validate(operator_settings())
        self.log = workdir / "operator.log"
        self.audit = Audit(self.plane.audit_log, OPERATOR_USER)
        self.timeout = 300 + 2.0 * size

    def run(self) -> dict[str, Any]:
        plane = self.plane
        for namespace in (NAMESPACE, YARDSTICK):
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
            plane.request("POST", "/api/v1/namespaces", body)
        wait_for(
            "the namespaces' default ServiceAccounts",
            lambda: all(
                plane.request("GET", f"/api/v1/namespaces/{ns}/serviceaccounts/default", ok=(200, 404))
                for ns in (NAMESPACE, YARDSTICK)
            ),
            60,
        )
        credentials = plane.client_credentials("bench-operator", OPERATOR_USER, ["system:masters"])
        kubeconfig = write_kubeconfig(self.workdir / "operator.kubeconfig", credentials, OPERATOR_USER)
        settings = self.workdir / "operator.yaml"
        settings.write_text(yaml.safe_dump(operator_settings()))
        profile = self.args.profile.with_suffix(f".{self.size}.prof") if self.args.profile else None
        with operator_process(kubeconfig, settings, self.log, self.args.operator_source, profile) as operator:
            self.pid = operator.pid
            rss_idle = status_kib(self.pid, "VmRSS") / 1024
            watcher = Watcher(plane.admin, NAMESPACE)
            try:
                watcher.wait_ready()
                rounds = []
                for number in range(self.rounds):
                    last = number == self.rounds - 1
                    triples = asyncio.run(self.yardstick(number, clean=not last))
                    rounds.append(self.apply(number, triples, watcher, clean=not last))
            finally:
                watcher.stop()
            idle = self.idle()
        return self.summary(rounds, idle) | {"rss_before_apply_mib": rss_idle}

    async def yardstick(self, number: int, clean: bool) -> list[float]:
        """The bare triples, against the same API server, with the operator running (and idle)."""
        bodies = [llamamodel(i, YARDSTICK, number) for i in range(self.size)]
        async with client(self.plane.admin, self.args.connections) as http:
            created = [body for body, _ in await create_llamamodels(http, YARDSTICK, bodies)]
            await asyncio.sleep(0.5)
            times = await bare_triples(http, created, self.config)
            pods = f"/api/v1/namespaces/{YARDSTICK}/pods"

            async def bound() -> bool:
                return await count(http, pods, fieldSelector="spec.nodeName=") == 0

            await until("the yardstick's Pods bound", bound, self.timeout)
            if clean:  # the next round's triples take the same Service names
                await http.request(
                    "DELETE", llamamodels_path(YARDSTICK), json={"propagationPolicy": "Foreground"}
                )
                await emptied(http, YARDSTICK, self.timeout)
        await asyncio.sleep(1.0)
        return times

    def apply(self, number: int, triples: list[float], watcher: Watcher, clean: bool) -> Round:
        audit = self.audit
        bodies = [llamamodel(i, NAMESPACE, number) for i in range(self.size)]
        names = [body["metadata"]["name"] for body in bodies]
        log_before = len(self.log.read_text(errors="replace").splitlines())
        start_mark = audit.mark()
        cpu_before = cpu_seconds(self.pid)
        started = time.monotonic()

        async def create() -> None:
            async with client(self.plane.admin, self.args.connections) as http:
                await create_llamamodels(http, NAMESPACE, bodies)

        asyncio.run(create())

        def converged() -> bool:
            progress = Progress.of(watcher.snapshot())
            return all(progress.converged(n) is not None for n in names)

        def settled() -> bool:
            progress = Progress.of(watcher.snapshot())
            return all(n in progress.settled for n in names)

        wait_for("every LlamaModel converged", converged, self.timeout, every=0.2)
        wait_for("every status following its bound Pod", settled, self.timeout, every=0.2)
        wait_for("the operator quiet", lambda: audit.quiet(start_mark) >= QUIET_SECONDS, self.timeout, 0.5)
        requests = audit.since(start_mark)
        cpu = cpu_seconds(self.pid) - cpu_before
        seen = Progress.of(watcher.snapshot())
        done = Round(
            triples=triples,
            to_pod=[seen.pod[n] - started for n in names],
            converged=max(c for n in names if (c := seen.converged(n)) is not None) - started,
            settled=max(seen.settled[n] for n in names) - started,
            requests=requests,
            log_lines=len(self.log.read_text(errors="replace").splitlines()) - log_before,
            cpu=cpu,
        )
        per_llamamodel = sum(split_requests(requests)[0].values()) / self.size
        print(
            f"  round {number + 1}: triple p50 {1e3 * percentile(triples, 0.5):.1f} ms, apply -> Pod p50 "
            f"{1e3 * percentile(done.to_pod, 0.5):.1f} ms, all converged {done.converged:.2f} s, "
            f"settled {done.settled:.2f} s, {per_llamamodel:.2f} requests per LlamaModel",
            flush=True,
        )
        if clean:

            async def delete() -> None:
                async with client(self.plane.admin, self.args.connections) as http:
                    await http.request("DELETE", llamamodels_path(NAMESPACE))  # as `kubectl delete lm --all`
                    await emptied(http, NAMESPACE, self.timeout)

            asyncio.run(delete())
            mark = audit.mark()
            wait_for("the operator quiet", lambda: audit.quiet(mark) >= QUIET_SECONDS, self.timeout, 0.5)
        return done

    def idle(self) -> dict[str, Any]:
        mark = self.audit.mark()
        cpu_before, began = cpu_seconds(self.pid), time.monotonic()
        time.sleep(self.args.idle_seconds)
        cpu_used, span = cpu_seconds(self.pid) - cpu_before, time.monotonic() - began
        kinds, leases = split_requests(self.audit.since(mark))
        return {
            "idle_seconds": span,
            "idle_cpu_percent": 100 * cpu_used / span,
            "idle_requests": dict(sorted(kinds.items())),
            "idle_periodic_requests": dict(sorted(leases.items())),
            "peak_rss_mib": status_kib(self.pid, "VmHWM") / 1024,
            "rss_mib": status_kib(self.pid, "VmRSS") / 1024,
        }

    def summary(self, rounds: list[Round], idle: dict[str, Any]) -> dict[str, Any]:
        applies = self.size * len(rounds)
        triples = [t for r in rounds for t in r.triples]
        to_pod = [t for r in rounds for t in r.to_pod]
        events = [e for r in rounds for e in r.requests]
        kinds, leases = split_requests(events)
        reads = sum(n for kind, n in kinds.items() if kind.split(" ")[0] in ("get", "list", "watch"))
        patches = Counter(
            (e.get("objectRef") or {}).get("name")
            for e in events
            if request_kind(e) == "patch llamamodels/status"
        )
        following = sum(n - 1 for n in patches.values())  # the status patches after each one's first
        return {
            "n": self.size,
            "nodes": max(1, math.ceil(self.size / 2)),
            "rounds": len(rounds),
            "yardstick_p50_ms": 1e3 * percentile(triples, 0.5),
            "yardstick_p95_ms": 1e3 * percentile(triples, 0.95),
            "yardstick_all_s": statistics.median(max(r.triples) for r in rounds),
            "apply_to_pod_p50_ms": 1e3 * percentile(to_pod, 0.5),
            "apply_to_pod_p95_ms": 1e3 * percentile(to_pod, 0.95),
            "converged_s": statistics.median(r.converged for r in rounds),
            "settled_s": statistics.median(r.settled for r in rounds),
            "requests": {kind: n / applies for kind, n in sorted(kinds.items())},
            "requests_per_llamamodel": sum(kinds.values()) / applies,
            "reads_per_llamamodel": reads / applies,
            "status_patches_after_the_first_per_llamamodel": following / applies,
            "periodic_requests": dict(sorted(leases.items())),
            "log_lines_per_llamamodel": sum(r.log_lines for r in rounds) / applies,
            "cpu_ms_per_llamamodel": 1e3 * sum(r.cpu for r in rounds) / applies,
        } | idle


# -- the report ------------------------------------------------------------------------------------


def to_converge(r: dict[str, Any]) -> float | None:
    """Requests per LlamaModel of the decision that converged it: all of them, less the status
    patches after each one's first and the Events that came with them (one Event per status change:
    known when there are as many Events as status patches, else None)."""
    events, patches = (
        r["requests"].get("create events", 0.0),
        r["requests"].get("patch llamamodels/status", 0.0),
    )
    if not math.isclose(events, patches):
        return None
    return float(r["requests_per_llamamodel"] - 2 * r["status_patches_after_the_first_per_llamamodel"])


def report(results: list[dict[str, Any]]) -> dict[str, str]:
    rows = []
    for r in results:
        r["ratio_p50"] = r["apply_to_pod_p50_ms"] / r["yardstick_p50_ms"]
        r["converged_ms_per_llamamodel"] = 1e3 * r["converged_s"] / r["n"]
        r["converged_to_yardstick"] = r["converged_s"] / r["yardstick_all_s"]
        r["requests_to_converge_per_llamamodel"] = to_converge(r)
        converging = r["requests_to_converge_per_llamamodel"]
        rows.append(
            (
                f"{r['n']:,}",
                f"{r['nodes']}",
                f"{r['rounds']}",
                f"{r['yardstick_p50_ms']:.1f}",
                f"{r['apply_to_pod_p50_ms']:.1f}",
                f"{r['apply_to_pod_p95_ms']:.1f}",
                f"{r['ratio_p50']:.2f}x",
                f"{r['converged_s']:.2f}",
                f"{r['converged_ms_per_llamamodel']:.1f}",
                "?" if converging is None else f"{converging:.2f}",
                f"{r['requests_per_llamamodel']:.2f}",
                f"{r['reads_per_llamamodel']:.2f}",
                f"{r['idle_cpu_percent']:.2f}",
                f"{sum(r['idle_requests'].values())}+{sum(r['idle_periodic_requests'].values())}",
                f"{r['peak_rss_mib']:.0f}",
            )
        )
    print_table(
        "the operator at scale (times from the common start of each apply)",
        ("N", "nodes", "rounds", "triple p50 ms", "apply->Pod p50 ms", "p95 ms", "p50/triple", "converged s",
         "ms per LM", "req/LM to converge", "req/LM to settle", "reads/LM", "idle CPU %",
         "idle req+periodic", "peak RSS MiB"),
        rows,
    )  # fmt: skip
    for r in results:
        split = ", ".join(f"{kind} {n:.2f}" for kind, n in r["requests"].items())
        print(
            f"N={r['n']:,}: per LlamaModel, apply to settled: {split} (status patches after the first "
            f"{r['status_patches_after_the_first_per_llamamodel']:.2f}); "
            f"periodic {r['periodic_requests']}; CPU {r['cpu_ms_per_llamamodel']:.1f} ms per LlamaModel; "
            f"log lines per LlamaModel {r['log_lines_per_llamamodel']:.2f}; in the idle "
            f"{r['idle_seconds']:.0f} s: {r['idle_requests'] or 'no request'} and "
            f"{r['idle_periodic_requests']}; RSS {r['rss_before_apply_mib']:.0f} MiB before, "
            f"{r['rss_mib']:.0f} after"
        )
    verdict = goals(results)
    print("\ngoals:\n" + "\n".join(f"  {k}: {v}" for k, v in verdict.items()))
    return verdict


def judged(value: str, met: bool) -> str:
    return f"{value} ({'met' if met else 'MISSED'})"


def goals(results: list[dict[str, Any]]) -> dict[str, str]:
    by_n = {r["n"]: r for r in results}
    verdict: dict[str, str] = {}
    for n, goal in ((1, GOALS["ratio_n1"]), (1000, GOALS["ratio_n1000"])):
        if n in by_n:
            ratio = by_n[n]["ratio_p50"]
            verdict[f"apply->Pod p50 <= {goal:g}x the triple at N={n}"] = judged(
                f"{ratio:.2f}x", ratio <= goal
            )
    converging = [r["requests_to_converge_per_llamamodel"] for r in results]
    if None not in converging:
        worst = max(c for c in converging if c is not None)
        verdict["<= 4 requests per LlamaModel to converge"] = judged(f"{worst:.2f}", worst <= 4)
    reads = max(r["reads_per_llamamodel"] for r in results)
    verdict["reads per LlamaModel"] = f"{reads:.2f}"
    idle = max(sum(r["idle_requests"].values()) for r in results)
    verdict["no request per resync"] = judged(f"{idle} in the idle time, periodic apart", idle == 0)
    sized = sorted(results, key=lambda r: r["n"])
    for low, high in itertools.pairwise(sized):
        if low["n"] >= 100:  # below, the fixed costs of one apply hide the per-LlamaModel ones
            growth = (high["converged_s"] / low["converged_s"]) / (high["n"] / low["n"])
            bare = (high["yardstick_all_s"] / low["yardstick_all_s"]) / (high["n"] / low["n"])
            before, after = low["converged_to_yardstick"], high["converged_to_yardstick"]
            verdict[f"converging linear ({low['n']:,} -> {high['n']:,})"] = (
                f"{growth:.2f}x the time per LlamaModel (the bare triples': {bare:.2f}x); all "
                f"converged in {before:.2f}x, then {after:.2f}x the time of all the triples"
            )
    if 1000 in by_n:
        r = by_n[1000]
        cpu, rss = r["idle_cpu_percent"], r["peak_rss_mib"]
        verdict["idle CPU < 1 % of a core at N=1000"] = judged(f"{cpu:.2f} %", cpu < 1)
        verdict["peak RSS <= 150 MiB at N=1000"] = judged(f"{rss:.0f} MiB", rss <= 150)
    return verdict


def request_segments(sized: list[dict[str, Any]]) -> list[tuple[str, list[float], str]]:
    """The bars' parts: each kind of request per LlamaModel, the status patches after each one's
    first and their Events apart (they follow the scheduler's binding, after converging)."""
    after = [r["status_patches_after_the_first_per_llamamodel"] for r in sized]
    segments = []
    for kind in sorted({kind for r in sized for kind in r["requests"]}):
        heights = [r["requests"].get(kind, 0.0) for r in sized]
        if kind in ("patch llamamodels/status", "create events"):
            segments.append((kind, [h - a for h, a in zip(heights, after, strict=True)], ""))
        else:
            segments.append((kind, heights, ""))
    segments.append(("patch status + create event, following the bind", [2 * a for a in after], "//"))
    return segments


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sized = sorted(results, key=lambda r: r["n"])
    ns = [r["n"] for r in sized]
    figure, (latency, requests) = plt.subplots(1, 2, figsize=(10, 4))
    latency.plot(ns, [r["apply_to_pod_p50_ms"] for r in sized], "o-", label="apply → Pod p50")
    latency.plot(ns, [r["apply_to_pod_p95_ms"] for r in sized], "o--", label="apply → Pod p95")
    latency.plot(ns, [r["yardstick_p50_ms"] for r in sized], "s-", label="bare triple p50 (yardstick)")
    latency.plot(ns, [1e3 * r["converged_s"] for r in sized], "^:", label="all converged")
    ratios = ", ".join(f"{r['apply_to_pod_p50_ms'] / r['yardstick_p50_ms']:.2f}x" for r in sized)
    latency.text(
        0.97, 0.04, f"apply → Pod p50 / triple p50:\n{ratios}", transform=latency.transAxes, ha="right",
        fontsize=8, bbox={"facecolor": "white", "edgecolor": "0.8"},
    )  # fmt: skip
    latency.set(xscale="log", yscale="log", xlabel="LlamaModels applied at once", ylabel="ms")
    latency.set_title("latency from the common start")
    latency.legend(fontsize=8)
    latency.grid(True, which="both", alpha=0.3)
    bottom = [0.0] * len(sized)
    positions = range(len(sized))
    for label, heights, hatch in request_segments(sized):
        requests.bar(positions, heights, bottom=bottom, label=label, hatch=hatch)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    requests.axhline(
        GOALS["requests_per_llamamodel"], color="black", linestyle="--", linewidth=1, label="goal"
    )
    requests.set_xticks(list(positions), [f"{n:,}" for n in ns])
    requests.set(xlabel="LlamaModels applied at once", ylabel="API requests per LlamaModel")
    requests.set_title("apply → settled (audit log); hatched: after converging")
    requests.set_ylim(0, 1.7 * max(bottom))
    requests.legend(fontsize=7, ncol=2, loc="upper center")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")


def machine() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        platform.processor(),
    )  # fmt: skip
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def interrupted(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,100,1000", help="LlamaModels applied at once, comma-separated")
    parser.add_argument("--idle-seconds", type=float, default=60.0, help="the idle time measured afterwards")
    parser.add_argument("--connections", type=int, default=32, help="the bench client's connections")
    parser.add_argument(
        "--samples", type=int, default=20, help="apply -> Pod samples per size at least (rounds of N)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--plot", type=Path, help="draw latency and requests against N here (PNG)")
    parser.add_argument(
        "--operator-source",
        type=Path,
        default=REPO / "operator",
        help="the folder whose llamacontroller package the operator runs (default: this checkout's), "
        "to compare two versions under the same conditions",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="run the operator under cProfile, its stats written to PATH.<N>.prof when it stops "
        "(slower: to find where its time goes, not for the figures)",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupted)  # stopped: the clusters and the operator stop too
    sizes = [int(n) for n in args.sizes.split(",") if n.strip()]
    host = machine()
    print(f"{host['cpus']} CPUs ({host['cpu']}), {host['memory_gib']} GiB, load {host['load_average']}")
    results = []
    for size in sizes:
        print(f"\nN = {size:,}", flush=True)
        rounds = math.ceil(args.samples / size)
        with tempfile.TemporaryDirectory(prefix="operator-scale-") as tmp:
            results.append(measure(size, rounds, args, Path(tmp)))
    verdict = report(results)
    if args.json:
        host["load_average_after"] = os.getloadavg()
        args.json.write_text(
            json.dumps({"machine": host, "sizes": results, "goals": verdict}, indent=2) + "\n"
        )
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())

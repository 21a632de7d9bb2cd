"""The operator and the gateway under a faulty API (tests/support/faultproxy.py): 500s, throttling
with Retry-After, conflicts, answers lost past the client's timeout, watches reset and expired, on a
fifth of their calls, while 20 LlamaModels on three nodes are created, switched, moved, deleted and
re-created (tests/support/churn.py). At every Pod change a watch saw, no two server Pods were on
overlapping GPUs of a node and no LlamaModel had two; once the faults stop, every LlamaModel
converges (Ready with its one Pod of its spec, or waiting for a slot that is rightly held), no Pod is
orphaned, the gateway routes exactly the Ready ones, and every failed write to a Pod or a Service
was told by the status."""

from __future__ import annotations

import random
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.cluster.cluster import LocalCluster
from tests.support.builders import write_settings
from tests.support.churn import Fleet, shared_owners, wait_converged
from tests.support.components import (
    GATEWAY_ACCOUNT,
    GATEWAY_USER,
    OPERATOR_ACCOUNT,
    OPERATOR_USER,
    GatewayProcess,
    OperatorProcess,
    service_account_kubeconfig,
)
from tests.support.faultproxy import Call, FaultProxy, Schedule, proxied_kubeconfig
from tests.support.kube import LABEL_MODEL, LLAMAMODELS, Kube, gpu_conflicts, refused_by_rbac, requests_of
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(300)

SEED = 20
API_TIMEOUT = 2.0  # the operator's and the gateway's: a slow answer comes after it
CHANGES = 50


def fault_proxy(cluster: LocalCluster, seed: int) -> FaultProxy:
    """Faults on a fifth of the calls; slow answers a second past the clients' timeout."""
    assert cluster.control_plane is not None and cluster.network is not None
    control = cluster.control_plane
    schedule = Schedule(seed, rate=0.2)
    return FaultProxy(
        control.server, control.ca_file, cluster.network.host_address, schedule, slow_seconds=API_TIMEOUT + 1
    )


def written_for(call: Call, namespace: str, pod_owners: dict[str, str]) -> str | None:
    """The LlamaModel whose reconcile made a write to a Pod or a Service (None: another call)."""
    pods = re.fullmatch(rf"/api/v1/namespaces/{namespace}/pods(?:/([^/]+))?", call.path)
    services = re.fullmatch(rf"/api/v1/namespaces/{namespace}/services(?:/[^/]+)?", call.path)
    if pods and call.method == "DELETE":
        return pod_owners.get(pods.group(1) or "")
    if (pods or services) and call.method == "POST":
        return str(call.body["metadata"]["labels"][LABEL_MODEL])
    if services and call.method == "PATCH":  # a JSON patch: its labels name the LlamaModel
        labels = next(op["value"] for op in call.body if op["path"] == "/metadata/labels")
        return str(labels[LABEL_MODEL])
    return None


def unreported_failures(
    calls: list[Call], namespace: str, pod_owners: dict[str, str]
) -> tuple[int, list[str]]:
    """Faults on the operator's writes to a LlamaModel's Pods and Services that its status did not
    tell: the first status write of that LlamaModel afterwards (unless it failed too, when nothing
    can be said) says that the call failed and is tried again, or the status already said so (an
    unchanged status is not written again). How many faults were looked at, and those untold."""
    status = re.compile(rf"{LLAMAMODELS}/namespaces/{namespace}/llamamodels/([^/]+)/status$")
    written: dict[str, str] = {}  # the last status message written, by LlamaModel
    problems, checked = [], 0
    for index, call in enumerate(calls):
        said = status.match(call.path)
        if said and call.method == "PATCH" and call.fault in (None, "slow"):
            written[said.group(1)] = call.body["status"]["message"]
        if call.fault in (None, "throttle"):
            continue  # a throttled call is tried again after Retry-After: that is another call
        owner = written_for(call, namespace, pod_owners)
        if owner is None:
            continue
        checked += 1
        if "trying again" in written.get(owner, ""):
            continue
        for later in calls[index + 1 :]:
            if later.method != "PATCH" or (m := status.match(later.path)) is None or m.group(1) != owner:
                continue
            if later.fault == "throttle":
                continue  # the same write is tried again after Retry-After
            if later.fault is None or later.fault == "slow":
                message = later.body["status"]["message"]
                if "trying again" not in message:
                    problems.append(f"{call.method} {call.path}: {call.fault}; {owner}'s status: {message}")
            break
    return checked, problems


def test_under_api_faults_every_llamamodel_converges_and_no_gpu_is_ever_shared(
    cluster: LocalCluster, kube: Kube, tmp_path: Path
) -> None:
    assert cluster.control_plane is not None
    control = cluster.control_plane
    mark = control.audit_mark()
    settings = write_settings(
        tmp_path,
        adapter={"enabled": False},
        apiTimeoutSeconds=API_TIMEOUT,
        # A lease long enough that faults on its renewals (and a loaded machine) never take it away
        # in this test, which is about reconciling under faults; tests/e2e/test_chaos.py and
        # test_leader.py are about losing and taking leases.
        leaderElection={"leaseName": f"faults-{kube.namespace}", "leaseDurationSeconds": 120},
    )
    proxy = fault_proxy(cluster, SEED)
    rng = random.Random(SEED)
    fleet = Fleet(kube, 20, rng)
    with proxy, kube.watch() as pods:
        operator_kubeconfig = proxied_kubeconfig(
            service_account_kubeconfig(cluster, OPERATOR_ACCOUNT, tmp_path / "operator.kubeconfig"),
            proxy,
            tmp_path / "operator-proxied.kubeconfig",
        )
        gateway_kubeconfig = proxied_kubeconfig(
            service_account_kubeconfig(cluster, GATEWAY_ACCOUNT, tmp_path / "gateway.kubeconfig"),
            proxy,
            tmp_path / "gateway-proxied.kubeconfig",
        )
        operator = OperatorProcess(operator_kubeconfig, tmp_path / "operator.log", settings)
        gateway = GatewayProcess(
            cluster,
            gateway_kubeconfig,
            tmp_path / "gateway.log",
            extra=("--namespace", kube.namespace, "--api-timeout", str(API_TIMEOUT)),
        )
        try:
            operator.start_ready()
            gateway.start_listening()
            fleet.create_all()
            for _ in range(CHANGES):
                time.sleep(rng.uniform(0.2, 0.6))
                fleet.change()
            faults_until = time.monotonic()
            proxy.faults(on=False)
            wait_converged(kube, fleet.wanted, timeout=60)
            converged_after = time.monotonic() - faults_until
            ready = {
                item["status"]["model"]
                for item in kube.llamamodels()
                if (item.get("status") or {}).get("phase") == "Ready"
            }

            def served() -> set[str]:
                listed = httpx.get(f"{gateway.url}/v1/models", timeout=10).json()["data"]
                return {entry["id"] for entry in listed}

            eventually(lambda: served() == ready, timeout=30, what="the gateway to route the Ready models")
            operator.check_running()
            gateway.check_running()
            changes = pods.changes
        finally:
            operator.stop()
            gateway.stop()
        gateway_calls = [c for c in proxy.calls if c.agent == "llamacontroller-gateway"]
        owners = {c.name: c.labels.get(LABEL_MODEL, "") for c in changes}
        checked, untold = unreported_failures(proxy.calls, kube.namespace, owners)
        print(
            f"changes {dict(fleet.made)}; faults {dict(proxy.counts())} on {len(proxy.calls)} calls, "
            f"{sum(1 for c in gateway_calls if c.fault)} of the gateway's {len(gateway_calls)}; "
            f"{checked} failed writes to Pods and Services, {len(untold)} untold by the status; "
            f"converged {converged_after:.1f} s after the faults"
        )

    assert gpu_conflicts(changes) == []
    assert shared_owners(changes) == []
    assert set(proxy.counts()) == {"error", "throttle", "conflict", "slow", "reset", "expire"}
    assert any(c.fault for c in gateway_calls)
    assert checked > 0 and untold == []
    for process in (operator, gateway):
        assert "Traceback" not in process.log(), process.log()[-20000:]
    events = control.audit_events(mark)
    for user in (OPERATOR_USER, GATEWAY_USER):
        assert refused_by_rbac(requests_of(events, user)) == []

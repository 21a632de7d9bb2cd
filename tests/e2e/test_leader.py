"""Two operators at once (a rollout gone wrong, `replicas: 2`): only the holder of the Lease acts;
the other stands by, reading nothing but the Lease and writing nothing, and takes over within a
bound when the holder dies (SIGKILL: once its lease expires) or stops (Ctrl-C: it gives the lease up
at once). Each operator has a token of its own, so the API server's audit log tells their requests
apart (the token's ID is in each audit event)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.cluster.cluster import LocalCluster
from tests.support.builders import lm, write_settings
from tests.support.components import OPERATOR_ACCOUNT, OPERATOR_USER, OperatorProcess
from tests.support.components import service_account_kubeconfig as account_kubeconfig
from tests.support.kube import Kube, refused_by_rbac, requests_of
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(180)

DURATION, RENEW = 4.0, 1.0  # the lease's, short for the test (15 s and 5 s by default)
WRITES = {"create", "update", "patch", "delete", "deletecollection"}
CREDENTIAL = "authentication.kubernetes.io/credential-id"


def token_id(kubeconfig: Path) -> str:
    """The credential ID the API server writes in the audit log for the kubeconfig's token."""
    token = yaml.safe_load(kubeconfig.read_text())["users"][0]["user"]["token"]
    payload = token.split(".")[1]
    return f"JTI={json.loads(base64.urlsafe_b64decode(payload + '=' * (-len(payload) % 4)))['jti']}"


class Operators:
    """Operators of one lease, each started with a fresh token of the operator's ServiceAccount."""

    def __init__(self, cluster: LocalCluster, folder: Path, lease: str) -> None:
        self.cluster = cluster
        self.folder = folder
        self.settings = write_settings(
            folder,
            adapter={"enabled": False},
            leaderElection={"leaseName": lease, "leaseDurationSeconds": DURATION, "renewSeconds": RENEW},
        )
        self.started: list[OperatorProcess] = []
        self.tokens: dict[str, str] = {}

    def new(self, name: str) -> OperatorProcess:
        kubeconfig = account_kubeconfig(self.cluster, OPERATOR_ACCOUNT, self.folder / f"{name}.kubeconfig")
        process = OperatorProcess(kubeconfig, self.folder / f"{name}.log", self.settings)
        self.tokens[name] = token_id(kubeconfig)
        self.started.append(process)
        process.start()
        return process

    def requests(self, name: str, since: int, until: int | None = None) -> list[dict[str, Any]]:
        """The audit events of one operator's requests between two marks of the audit log."""
        assert self.cluster.control_plane is not None
        logged = self.cluster.control_plane.audit_log.read_bytes()[since:until]
        events = []
        for line in logged.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # the last line may be half written
        return [e for e in events if (e["user"].get("extra") or {}).get(CREDENTIAL) == [self.tokens[name]]]


@pytest.fixture
def operators(cluster: LocalCluster, namespace: str, tmp_path: Path) -> Iterator[Operators]:
    pair = Operators(cluster, tmp_path, f"pair-{namespace}")
    yield pair
    for process in pair.started:
        process.stop()
    for process in pair.started:
        assert "Traceback" not in process.log(), process.log()[-10000:]


def holding(process: OperatorProcess) -> bool:
    process.check_running()
    return "Holding the lease" in process.log()


def standing_by(process: OperatorProcess) -> bool:
    process.check_running()
    return "Standing by" in process.log()


def probes(process: OperatorProcess) -> tuple[int, dict[str, bool], int]:
    """What the kubelet's probes would see: /healthz's code and answer, /readyz's code."""
    health = httpx.get(process.liveness, timeout=5)
    return health.status_code, health.json(), httpx.get(process.readiness, timeout=5).status_code


def test_one_of_two_operators_acts_and_the_other_takes_over_when_it_dies_or_stops(
    cluster: LocalCluster, kube: Kube, operators: Operators
) -> None:
    assert cluster.control_plane is not None
    control = cluster.control_plane
    began = control.audit_mark()
    first = operators.new("first")
    eventually(lambda: holding(first), timeout=30, what="the first operator to hold the lease")
    second = operators.new("second")
    eventually(lambda: standing_by(second), timeout=30, what="the second to stand by")
    # a stand-by is alive (no restart by its liveness probe) and not ready; the holder is both
    assert probes(second) == (200, {"leading": False, "synced": False}, 503)
    eventually(lambda: probes(first)[2] == 200, what="the holder to be ready")
    assert probes(first) == (200, {"leading": True, "synced": True}, 200)
    kube.apply(lm("one"))
    eventually(lambda: kube.status("one").get("podName") and kube.one_pod("one"), what="one's pod")
    time.sleep(2 * RENEW)  # a few of the stand-by's looks at the lease

    # SIGKILL: the holder's lease expires, the stand-by takes over
    assert first.process is not None
    killed_at, killed = control.audit_mark(), time.monotonic()
    first.process.kill()
    first.process.wait(10)
    eventually(lambda: holding(second), timeout=3 * DURATION, what="the second to take over")
    took = time.monotonic() - killed
    # no sooner than the lease's duration after the holder's last renewal (at most RENEW before the
    # kill), no later than the duration after the stand-by saw it, plus one look at the lease
    assert DURATION - RENEW <= took <= DURATION + 2 * RENEW + 1.5, took
    kube.apply(lm("two", gpu={"gpuId": 1}))
    eventually(lambda: kube.one_pod("two"), what="the new holder to act")

    # Ctrl-C: the holder gives the lease up at once, the stand-by takes it at its next look
    third = operators.new("third")
    eventually(lambda: standing_by(third), timeout=30, what="the third to stand by")
    kube.apply(lm("three", node="gpu-node-1"))
    eventually(lambda: kube.one_pod("three"), what="three's pod, from the second operator")
    stopping_at = control.audit_mark()
    second.stop()  # returns once it has exited: it gave the lease up before
    stopped = time.monotonic()
    eventually(lambda: holding(third), timeout=3 * DURATION, what="the third to take over")
    handed = time.monotonic() - stopped
    print(f"taken over {took:.1f} s after a SIGKILL, {handed:.1f} s after the end of a Ctrl-C")
    assert handed <= RENEW + 1.5, "a lease given up is taken at the next look"
    kube.apply(lm("four", node="gpu-node-2"))
    eventually(lambda: kube.one_pod("four"), what="the third operator to act")

    # While standing by, each read the lease and wrote nothing
    for name, since, until in (("second", began, killed_at), ("third", began, stopping_at)):
        seen = operators.requests(name, since, until)
        assert seen, f"the {name} operator's requests are in the audit log"
        touched = {(e["verb"], (e.get("objectRef") or {}).get("resource")) for e in seen}
        assert touched <= {("get", "leases"), ("get", None)}, touched  # None: /version
    # and, acting, each created only the Pods of the LlamaModels applied while it held the lease
    created = {
        name: {
            e["objectRef"].get("name")
            for e in operators.requests(name, began)
            if e["verb"] == "create" and e["objectRef"]["resource"] == "pods"
        }
        for name in ("first", "second", "third")
    }
    assert {k: sorted(n.split("-")[0] for n in v) for k, v in created.items()} == {
        "first": ["one"],
        "second": ["three", "two"],
        "third": ["four"],
    }
    assert refused_by_rbac(requests_of(control.audit_events(began), OPERATOR_USER)) == []

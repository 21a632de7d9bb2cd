"""Audit and event logs, fault injection with kmock's DSL, and the flat per-request cost of its history."""

from __future__ import annotations

import httpx
import pytest

from .conftest import CONFIGMAPS, PODS, pod
from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(120)


def test_audit_log_records_requests(kube: EmulatorThread, http: httpx.Client) -> None:
    http.post("/api/v1/namespaces/default/pods", json=pod("p"), headers={"User-Agent": "auditor/1"})
    http.get("/api/v1/namespaces/default/pods/p", headers={"User-Agent": "auditor/1"})
    http.patch(
        "/api/v1/namespaces/default/pods/p/status",
        json={"status": {"phase": "Running"}},
        headers={"User-Agent": "auditor/1", "Content-Type": "application/merge-patch+json"},
    )
    http.get("/api/v1/namespaces/default/pods/nope", headers={"User-Agent": "auditor/1"})
    http.get("/version", headers={"User-Agent": "auditor/1"})
    records = kube.requests(user_agent="auditor/1")
    assert [(r.method, r.verb, r.resource, r.subresource, r.name, r.status) for r in records] == [
        ("POST", "create", "pods", None, None, 201),
        ("GET", "get", "pods", None, "p", 200),
        ("PATCH", "patch", "pods", "status", "p", 200),
        ("GET", "get", "pods", None, "nope", 404),
        ("GET", None, None, None, None, 200),
    ]
    assert all(r.namespace == "default" and r.group == "" and r.version == "v1" for r in records[:4])
    assert [r.seq for r in records] == sorted(r.seq for r in records)
    assert records[0].time <= records[-1].time


def test_event_log_keeps_snapshots(kube: EmulatorThread) -> None:
    kube.create(CONFIGMAPS, {"metadata": {"name": "c"}, "data": {"v": "1"}})
    kube.patch(CONFIGMAPS, "default", "c", {"data": {"v": "2"}})
    kube.delete(CONFIGMAPS, "default", "c")
    records = kube.events(resource="configmaps", name="c")
    assert [(r.type, r.object["data"]["v"]) for r in records] == [
        ("ADDED", "1"),
        ("MODIFIED", "2"),
        ("DELETED", "2"),
    ]
    assert [int(r.resource_version) for r in records] == sorted(int(r.resource_version) for r in records)
    records[0].object["data"]["v"] = "mutated"
    assert kube.events(resource="configmaps", name="c")[0].object["data"]["v"] == "1"
    assert records[0].group == "" and records[0].version == "v1" and records[0].namespace == "default"


def test_history_assertion_over_all_instants(kube: EmulatorThread) -> None:
    """The kind of assertion the event log is for: at no instant were two pods on one node."""
    kube.create(PODS, pod("a", nodeName="n1"))
    kube.delete(PODS, "default", "a", grace_period_seconds=0)
    kube.create(PODS, pod("b", nodeName="n1"))
    on_node: dict[str, str] = {}
    for record in kube.events(resource="pods"):
        if record.type == "DELETED":
            on_node.pop(record.name, None)
        else:
            on_node[record.name] = record.object["spec"].get("nodeName")
        assert list(on_node.values()).count("n1") <= 1


def test_fault_injection_takes_priority(kube: EmulatorThread, http: httpx.Client) -> None:
    kube["post /api/v1/namespaces/default/pods"] << 500
    assert http.post("/api/v1/namespaces/default/pods", json=pod("p")).status_code == 500
    assert kube.get(PODS, "default", "p") is None
    assert http.get("/api/v1/namespaces/default/pods").status_code == 200  # other requests still emulated
    kube.kmock["get /api/v1/namespaces/default/configmaps"][:1] << 503
    assert http.get("/api/v1/namespaces/default/configmaps").status_code == 503
    assert http.get("/api/v1/namespaces/default/configmaps").status_code == 200


@pytest.mark.parametrize("kube_options", [{"request_history_tail": 16}])
def test_kmock_history_is_trimmed(kube: EmulatorThread, http: httpx.Client) -> None:
    """kmock re-checks its whole request history on each request; the emulator keeps only a short tail,
    so the work per request stays flat however many requests were served."""
    kube["get /never/matches"] << 404  # a reaction, so that kmock filters every request against its history
    retained = []
    for i in range(300):
        http.get("/api/v1/namespaces/default/configmaps", params={"i": str(i)})
        retained.append(kube.handler.retained_requests)
    assert kube.handler.request_count >= 300
    assert max(retained) <= 2 * 16 + 2
    assert max(retained[-100:]) == max(retained[100:200])  # flat, not growing

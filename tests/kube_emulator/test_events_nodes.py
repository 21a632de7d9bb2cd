"""Events (core/v1 and events.k8s.io/v1), leases, and nodes that tests register like kubelets."""

from __future__ import annotations

import httpx
import kubernetes
import pytest

from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(60)


def core_event(name: str, involved: str, uid: str, reason: str = "Started") -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "reason": reason,
        "message": f"{reason} {involved}",
        "type": "Normal",
        "involvedObject": {
            "kind": "Pod",
            "namespace": "default",
            "name": involved,
            "uid": uid,
            "apiVersion": "v1",
        },
        "source": {"component": "kubelet"},
        "count": 1,
    }


def test_core_events_with_describe_selector(http: httpx.Client) -> None:
    url = "/api/v1/namespaces/default/events"
    for i, (involved, uid) in enumerate([("p1", "u1"), ("p1", "u-old"), ("p2", "u2")]):
        assert http.post(url, json=core_event(f"e{i}", involved, uid)).status_code == 201
    selector = "involvedObject.name=p1,involvedObject.namespace=default,involvedObject.uid=u1"
    items = http.get(url, params={"fieldSelector": selector}).json()["items"]
    assert [item["metadata"]["name"] for item in items] == ["e0"]
    assert http.get("/api/v1/events").json()["kind"] == "EventList"


def test_events_k8s_io(http: httpx.Client) -> None:
    url = "/apis/events.k8s.io/v1/namespaces/default/events"
    body = {
        "metadata": {"generateName": "ev-"},
        "eventTime": "2024-01-01T00:00:00.000000Z",
        "reportingController": "example.test/ctl",
        "reportingInstance": "ctl-1",
        "action": "Reconcile",
        "reason": "Done",
        "note": "ok",
        "type": "Normal",
        "regarding": {"kind": "Pod", "name": "p1", "namespace": "default"},
    }
    response = http.post(url, json=body)
    assert response.status_code == 201
    assert response.json()["apiVersion"] == "events.k8s.io/v1"
    items = http.get(url, params={"fieldSelector": "regarding.name=p1"}).json()["items"]
    assert len(items) == 1 and items[0]["note"] == "ok"


def test_leases(http: httpx.Client) -> None:
    url = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    body = {"metadata": {"name": "leader"}, "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}
    assert http.post(url, json=body).status_code == 201
    assert http.get(f"{url}/leader").json()["spec"]["holderIdentity"] == "me"


def test_nodes(kube: EmulatorThread, api_client: kubernetes.client.ApiClient) -> None:
    kube.add_node("gpu-a", {"llamacontroller.io/gpus": "2"})
    kube.add_node("cpu-b", ready=False)
    v1 = kubernetes.client.CoreV1Api(api_client)
    nodes = v1.list_node(label_selector="llamacontroller.io/gpus")
    assert [node.metadata.name for node in nodes.items] == ["gpu-a"]
    node = v1.read_node("cpu-b")
    assert node.status.conditions[0].status == "False"
    assert node.metadata.labels["kubernetes.io/hostname"] == "cpu-b"
    patched = v1.patch_node_status("gpu-a", {"status": {"allocatable": {"nvidia.com/gpu": "2"}}})
    assert patched.status.allocatable["nvidia.com/gpu"] == "2"
    assert kube.get(("", "v1", "nodes"), None, "gpu-a")["status"]["capacity"]["cpu"] == "8"  # type: ignore[index]

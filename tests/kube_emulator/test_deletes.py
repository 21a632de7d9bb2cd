"""Deletion: finalizers, graceful pod termination, deletecollection, garbage collection of dependents
(Background, Orphan, Foreground), namespace and CRD cascades."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import CONFIGMAPS, PODS, pod, widget
from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(60)
W_URL = "/apis/example.test/v1/namespaces/default/widgets"


def history(kube: EmulatorThread, name: str) -> list[str]:
    return [record.type for record in kube.events(name=name)]


def owner_ref(obj: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        **extra,
    }


def test_finalizers_hold_deletion(
    kube: EmulatorThread, http: httpx.Client, widgets: tuple[str, str, str]
) -> None:
    body = widget("w", size=1)
    body["metadata"]["finalizers"] = ["example.test/a", "example.test/b"]
    kube.create(widgets, body)
    response = http.delete(f"{W_URL}/w")
    assert response.status_code == 200
    deleting = response.json()
    assert deleting["metadata"]["deletionTimestamp"]
    assert deleting["metadata"]["deletionGracePeriodSeconds"] == 0
    assert deleting["metadata"]["generation"] == 2
    assert http.get(f"{W_URL}/w").status_code == 200
    again = http.delete(f"{W_URL}/w")
    assert again.json()["metadata"]["resourceVersion"] == deleting["metadata"]["resourceVersion"]
    kube.patch(widgets, "default", "w", {"metadata": {"finalizers": ["example.test/b"]}})
    assert http.get(f"{W_URL}/w").status_code == 200
    kube.patch(widgets, "default", "w", [{"op": "remove", "path": "/metadata/finalizers"}], patch_type="json")
    assert http.get(f"{W_URL}/w").status_code == 404
    assert history(kube, "w") == ["ADDED", "MODIFIED", "MODIFIED", "MODIFIED", "DELETED"]


def test_graceful_pod_deletion(kube: EmulatorThread, http: httpx.Client) -> None:
    kube.create(PODS, pod("p"))
    response = http.delete("/api/v1/namespaces/default/pods/p")
    assert response.status_code == 200
    meta = response.json()["metadata"]
    assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 30
    assert history(kube, "p") == ["ADDED", "MODIFIED"]
    kube.wait_for(lambda: kube.get(PODS, "default", "p") is None, timeout=10)
    assert history(kube, "p") == ["ADDED", "MODIFIED", "DELETED"]


@pytest.mark.parametrize("kube_options", [{"pod_termination_seconds": 30}])
def test_pod_deletion_with_zero_grace_is_immediate(kube: EmulatorThread, http: httpx.Client) -> None:
    kube.create(PODS, pod("q"))
    kube.create(PODS, pod("b"))
    response = http.delete("/api/v1/namespaces/default/pods/q", params={"gracePeriodSeconds": "0"})
    assert response.status_code == 200
    assert kube.get(PODS, "default", "q") is None
    http.request(
        "DELETE",
        "/api/v1/namespaces/default/pods/b",
        json={"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0},
    )
    assert kube.get(PODS, "default", "b") is None
    kube.create(PODS, pod("slow"))
    http.delete("/api/v1/namespaces/default/pods/slow")
    assert kube.get(PODS, "default", "slow") is not None  # still terminating (30 s)
    http.delete("/api/v1/namespaces/default/pods/slow", params={"gracePeriodSeconds": "0"})
    assert kube.get(PODS, "default", "slow") is None


def test_delete_preconditions(kube: EmulatorThread, http: httpx.Client) -> None:
    kube.create(CONFIGMAPS, {"metadata": {"name": "c"}})
    response = http.request(
        "DELETE", "/api/v1/namespaces/default/configmaps/c", json={"preconditions": {"uid": "other"}}
    )
    assert response.status_code == 409
    assert response.json()["message"].startswith(
        'Operation cannot be fulfilled on configmaps "c": Precondition failed: UID in precondition: other'
    )
    response = http.delete("/api/v1/namespaces/default/configmaps/c")
    assert response.json()["status"] == "Success"
    assert response.json()["details"]["name"] == "c"


def test_delete_collection_with_selectors(kube: EmulatorThread, http: httpx.Client) -> None:
    for name, app in [("a", "web"), ("b", "web"), ("c", "db")]:
        kube.create(CONFIGMAPS, {"metadata": {"name": name, "labels": {"app": app}}})
    response = http.delete("/api/v1/namespaces/default/configmaps", params={"labelSelector": "app=web"})
    assert response.status_code == 200
    assert response.json()["kind"] == "ConfigMapList"
    assert sorted(item["metadata"]["name"] for item in response.json()["items"]) == ["a", "b"]
    assert [cm["metadata"]["name"] for cm in kube.list(CONFIGMAPS, "default")] == ["c"]
    http.delete("/api/v1/namespaces/default/configmaps", params={"fieldSelector": "metadata.name=c"})
    assert kube.list(CONFIGMAPS, "default") == []


def test_garbage_collection_background(kube: EmulatorThread, widgets: tuple[str, str, str]) -> None:
    owner = kube.create(widgets, widget("owner", size=1))
    other = kube.create(widgets, widget("other", size=1))
    kube.create(
        CONFIGMAPS, {"metadata": {"name": "dep", "ownerReferences": [owner_ref(owner, controller=True)]}}
    )
    kube.create(
        CONFIGMAPS, {"metadata": {"name": "shared", "ownerReferences": [owner_ref(owner), owner_ref(other)]}}
    )
    kube.create(
        PODS,
        {
            **pod("dep-pod"),
            "metadata": {"name": "dep-pod", "namespace": "default", "ownerReferences": [owner_ref(owner)]},
        },
    )
    kube.delete(widgets, "default", "owner")
    kube.wait_for(lambda: kube.get(CONFIGMAPS, "default", "dep") is None, timeout=10)
    kube.wait_for(lambda: kube.get(PODS, "default", "dep-pod") is None, timeout=10)
    shared = kube.wait_for(
        lambda: (lambda o: o if len(o["metadata"]["ownerReferences"]) == 1 else None)(
            kube.get(CONFIGMAPS, "default", "shared")
        ),
        timeout=10,
    )
    assert shared["metadata"]["ownerReferences"][0]["uid"] == other["metadata"]["uid"]
    kube.delete(widgets, "default", "other")
    kube.wait_for(lambda: kube.get(CONFIGMAPS, "default", "shared") is None, timeout=10)
    deleted = [r for r in kube.events(type="DELETED") if r.resource == "pods"]
    assert [r.name for r in deleted] == ["dep-pod"]


def test_garbage_collection_orphan(
    kube: EmulatorThread, http: httpx.Client, widgets: tuple[str, str, str]
) -> None:
    owner = kube.create(widgets, widget("owner", size=1))
    kube.create(CONFIGMAPS, {"metadata": {"name": "dep", "ownerReferences": [owner_ref(owner)]}})
    response = http.delete(f"{W_URL}/owner", params={"propagationPolicy": "Orphan"})
    assert "orphan" in response.json()["metadata"]["finalizers"]
    kube.wait_for(lambda: kube.get(widgets, "default", "owner") is None, timeout=10)
    dep = kube.get(CONFIGMAPS, "default", "dep")
    assert dep is not None and "ownerReferences" not in dep["metadata"]


def test_garbage_collection_foreground(
    kube: EmulatorThread, http: httpx.Client, widgets: tuple[str, str, str]
) -> None:
    owner = kube.create(widgets, widget("owner", size=1))
    dep = {
        "metadata": {
            "name": "dep",
            "ownerReferences": [owner_ref(owner, blockOwnerDeletion=True)],
            "finalizers": ["hold"],
        }
    }
    kube.create(CONFIGMAPS, dep)
    response = http.request("DELETE", f"{W_URL}/owner", json={"propagationPolicy": "Foreground"})
    assert response.json()["metadata"]["finalizers"] == ["foregroundDeletion"]
    kube.wait_for(
        lambda: (kube.get(CONFIGMAPS, "default", "dep") or {}).get("metadata", {}).get("deletionTimestamp"),
        timeout=10,
    )
    assert kube.get(widgets, "default", "owner") is not None  # waits for its dependents
    kube.patch(CONFIGMAPS, "default", "dep", {"metadata": {"finalizers": None}})
    kube.wait_for(lambda: kube.get(widgets, "default", "owner") is None, timeout=10)


def test_dangling_owner_reference_is_collected(kube: EmulatorThread) -> None:
    ref = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "gone",
        "uid": "00000000-0000-0000-0000-000000000000",
    }
    kube.create(CONFIGMAPS, {"metadata": {"name": "orphaned", "ownerReferences": [ref]}})
    kube.wait_for(lambda: kube.get(CONFIGMAPS, "default", "orphaned") is None, timeout=10)


def test_namespace_deletion_deletes_its_contents(
    kube: EmulatorThread, http: httpx.Client, widgets: tuple[str, str, str]
) -> None:
    kube.create(("", "v1", "namespaces"), {"metadata": {"name": "doomed"}})
    kube.wait_for(lambda: kube.get(("", "v1", "serviceaccounts"), "doomed", "default"), timeout=10)
    kube.create(PODS, pod("p", namespace="doomed"))
    kube.create(CONFIGMAPS, {"metadata": {"name": "c", "namespace": "doomed"}})
    body = widget("w", size=1, namespace="doomed")
    body["metadata"]["finalizers"] = ["hold"]
    kube.create(widgets, body)
    response = http.delete("/api/v1/namespaces/doomed")
    assert response.json()["status"]["phase"] == "Terminating"
    refused = http.post("/api/v1/namespaces/doomed/configmaps", json={"metadata": {"name": "late"}})
    assert refused.status_code == 403
    kube.wait_for(lambda: kube.get(PODS, "doomed", "p") is None, timeout=10)
    kube.wait_for(lambda: kube.get(CONFIGMAPS, "doomed", "c") is None, timeout=10)
    assert kube.get(("", "v1", "namespaces"), None, "doomed") is not None  # the widget's finalizer holds it
    kube.patch(widgets, "doomed", "w", {"metadata": {"finalizers": None}})
    kube.wait_for(lambda: kube.get(("", "v1", "namespaces"), None, "doomed") is None, timeout=10)


def test_crd_deletion_removes_objects_and_resource(
    kube: EmulatorThread, http: httpx.Client, widgets: tuple[str, str, str]
) -> None:
    kube.create(widgets, widget("a", size=1))
    kube.create(widgets, widget("b", size=1))
    http.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.test")
    kube.wait_for(lambda: http.get("/apis/example.test/v1").status_code == 404, timeout=10)
    assert http.get(W_URL).status_code == 404
    assert sorted(r.name for r in kube.events(type="DELETED", resource="widgets")) == ["a", "b"]
    assert "example.test" not in {g["name"] for g in http.get("/apis").json()["groups"]}

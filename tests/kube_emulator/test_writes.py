"""Writes: the three patch formats, PUT, optimistic concurrency, generation, the status subresource,
dry runs and no-op writes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import CONFIGMAPS, PODS, pod, widget
from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(60)
W_URL = "/apis/example.test/v1/namespaces/default/widgets"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
SMP = {"Content-Type": "application/strategic-merge-patch+json"}


@pytest.fixture()
def w1(kube: EmulatorThread, widgets: tuple[str, str, str]) -> dict[str, Any]:
    return kube.create(widgets, widget("w1", size=3, tags=["a"], labels={"k1": "v1"}))


def test_merge_patch(http: httpx.Client, w1: dict[str, Any]) -> None:
    response = http.patch(
        f"{W_URL}/w1",
        headers=MERGE,
        json={"metadata": {"labels": {"x": "y"}}, "spec": {"size": 4, "tags": None, "color": "red"}},
    )
    assert response.status_code == 200
    spec = response.json()["spec"]
    assert spec["size"] == 4 and spec["color"] == "red" and "tags" not in spec
    assert response.json()["metadata"]["labels"] == {"x": "y"}


def test_json_patch_all_operations(http: httpx.Client, w1: dict[str, Any]) -> None:
    rv = w1["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/annotations", "value": {"a/b": "1", "c~d": "2"}},
        {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "slash"},
        {"op": "remove", "path": "/metadata/annotations/c~0d"},
        {"op": "add", "path": "/spec/tags/-", "value": "b"},
        {"op": "add", "path": "/spec/tags/0", "value": "z"},
        {"op": "copy", "from": "/spec/size", "path": "/spec/gpu/count"},
        {"op": "move", "from": "/spec/labels/k1", "path": "/spec/labels/k2"},
        {"op": "test", "path": "/spec/tags", "value": ["z", "a", "b"]},
    ]
    response = http.patch(f"{W_URL}/w1", headers=JSON_PATCH, json=ops)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["metadata"]["annotations"] == {"a/b": "slash"}
    assert body["spec"]["tags"] == ["z", "a", "b"]
    assert body["spec"]["gpu"]["count"] == 3
    assert body["spec"]["labels"] == {"k2": "v1"}


def test_json_patch_failed_test_is_422(http: httpx.Client, w1: dict[str, Any]) -> None:
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "1"},
        {"op": "replace", "path": "/spec/size", "value": 9},
    ]
    response = http.patch(f"{W_URL}/w1", headers=JSON_PATCH, json=ops)
    assert response.status_code == 422
    assert response.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "the server rejected our request due to an error in our request",
        "reason": "Invalid",
        "details": {},
        "code": 422,
    }
    assert http.get(f"{W_URL}/w1").json()["spec"]["size"] == 3
    missing = [{"op": "replace", "path": "/spec/nothing/here", "value": 1}]
    assert http.patch(f"{W_URL}/w1", headers=JSON_PATCH, json=missing).status_code == 422


def test_kopf_style_finalizer_json_patch(http: httpx.Client, w1: dict[str, Any]) -> None:
    rv = w1["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": rv},
        {"op": "add", "path": "/metadata/finalizers", "value": ["kopf.zalando.org/KopfFinalizerMarker"]},
    ]
    response = http.patch(f"{W_URL}/w1", headers=JSON_PATCH, json=ops)
    assert response.status_code == 200
    assert response.json()["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]
    # The same patch again is stale now: the resourceVersion test fails.
    assert http.patch(f"{W_URL}/w1", headers=JSON_PATCH, json=ops).status_code == 422


def test_strategic_merge_patch(kube: EmulatorThread, http: httpx.Client) -> None:
    body = pod("p")
    body["spec"]["containers"] = [
        {"name": "a", "image": "img:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
        {"name": "b", "image": "img:1"},
    ]
    kube.create(PODS, body)
    patch = {
        "metadata": {"finalizers": ["f2"]},
        "spec": {
            "containers": [{"name": "a", "image": "img:2"}, {"name": "b", "image": "img:3"}],
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
        },
    }
    kube.patch(PODS, "default", "p", {"metadata": {"finalizers": ["f1"]}})
    response = http.patch("/api/v1/namespaces/default/pods/p", headers=SMP, json=patch)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["metadata"]["finalizers"] == ["f1", "f2"]
    containers = result["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [("a", "img:2"), ("b", "img:3")]
    assert containers[0]["env"] == [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]
    status = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    http.patch("/api/v1/namespaces/default/pods/p/status", headers=SMP, json=status)
    status = {"status": {"conditions": [{"type": "Scheduled", "status": "True"}]}}
    result = http.patch("/api/v1/namespaces/default/pods/p/status", headers=SMP, json=status).json()
    assert [c["type"] for c in result["status"]["conditions"]] == ["Ready", "Scheduled"]


def test_strategic_merge_patch_is_unsupported_for_custom_resources(
    http: httpx.Client, w1: dict[str, Any]
) -> None:
    response = http.patch(f"{W_URL}/w1", headers=SMP, json={"spec": {"size": 5}})
    assert response.status_code == 415
    assert response.json()["reason"] == "UnsupportedMediaType"


def test_apply_patch_is_415(http: httpx.Client, w1: dict[str, Any]) -> None:
    response = http.patch(
        f"{W_URL}/w1",
        headers={"Content-Type": "application/apply-patch+yaml"},
        params={"fieldManager": "test"},
        content=b"spec: {size: 5}",
    )
    assert response.status_code == 415
    assert response.json()["reason"] == "UnsupportedMediaType"
    assert "server-side apply is not supported" in response.json()["message"]


def test_stale_resource_version_is_409(http: httpx.Client, w1: dict[str, Any]) -> None:
    stale = w1["metadata"]["resourceVersion"]
    http.patch(f"{W_URL}/w1", headers=MERGE, json={"spec": {"size": 4}})
    expected = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Operation cannot be fulfilled on widgets.example.test "w1": the object has been '
        "modified; please apply your changes to the latest version and try again",
        "reason": "Conflict",
        "details": {"name": "w1", "group": "example.test", "kind": "widgets"},
        "code": 409,
    }
    response = http.patch(
        f"{W_URL}/w1", headers=MERGE, json={"metadata": {"resourceVersion": stale}, "spec": {"size": 5}}
    )
    assert (response.status_code, response.json()) == (409, expected)
    response = http.put(f"{W_URL}/w1", json=dict(w1, spec={"size": 6}))
    assert (response.status_code, response.json()) == (409, expected)


def test_put_replaces(http: httpx.Client, w1: dict[str, Any]) -> None:
    current = http.get(f"{W_URL}/w1").json()
    current["spec"] = {"size": 9}
    current["metadata"]["labels"] = {"new": "label"}
    current["metadata"]["uid"] = "forged"
    current["metadata"]["creationTimestamp"] = "2000-01-01T00:00:00Z"
    response = http.put(f"{W_URL}/w1", json=current)
    assert response.status_code == 200
    body = response.json()
    assert body["spec"] == {"size": 9, "mode": "single", "gpu": {"count": 1}}
    assert body["metadata"]["labels"] == {"new": "label"}
    assert body["metadata"]["uid"] == w1["metadata"]["uid"]
    assert body["metadata"]["creationTimestamp"] == w1["metadata"]["creationTimestamp"]
    del current["metadata"]["resourceVersion"]
    response = http.put(f"{W_URL}/w1", json=current)
    assert response.status_code == 422
    assert response.json()["message"] == (
        'Widget.example.test "w1" is invalid: metadata.resourceVersion: '
        'Invalid value: "0x0": must be specified for an update'
    )
    response = http.put(f"{W_URL}/w1", json=dict(current, metadata={"name": "other"}))
    assert response.status_code == 400


def test_generation_bumps_only_on_spec_changes(kube: EmulatorThread, w1: dict[str, Any]) -> None:
    assert w1["metadata"]["generation"] == 1
    obj = kube.patch(("example.test", "v1", "widgets"), "default", "w1", {"metadata": {"labels": {"a": "b"}}})
    assert obj["metadata"]["generation"] == 1
    obj = kube.patch_status(
        ("example.test", "v1", "widgets"), "default", "w1", {"status": {"phase": "Ready"}}
    )
    assert obj["metadata"]["generation"] == 1
    obj = kube.patch(("example.test", "v1", "widgets"), "default", "w1", {"spec": {"size": 10}})
    assert obj["metadata"]["generation"] == 2
    cm = kube.create(CONFIGMAPS, {"metadata": {"name": "c"}, "data": {"a": "1"}})
    assert kube.patch(CONFIGMAPS, "default", "c", {"data": {"a": "2"}})["metadata"]["generation"] == 2
    assert cm["metadata"]["generation"] == 1


def test_status_subresource_isolation(http: httpx.Client, w1: dict[str, Any]) -> None:
    response = http.patch(
        f"{W_URL}/w1/status",
        headers=MERGE,
        json={"spec": {"size": 99}, "status": {"phase": "Ready"}, "metadata": {"labels": {"z": "z"}}},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == {"phase": "Ready"}
    assert body["spec"]["size"] == 3
    assert "z" not in (body["metadata"].get("labels") or {})
    response = http.patch(
        f"{W_URL}/w1", headers=MERGE, json={"spec": {"size": 5}, "status": {"phase": "Failed"}}
    )
    assert response.json()["status"] == {"phase": "Ready"}
    assert response.json()["spec"]["size"] == 5
    current = http.get(f"{W_URL}/w1").json()
    current["status"] = {"phase": "Pending"}
    current["spec"]["size"] = 6
    body = http.put(f"{W_URL}/w1/status", json=current).json()
    assert body["status"] == {"phase": "Pending"} and body["spec"]["size"] == 5


def test_dry_run_does_not_persist(kube: EmulatorThread, http: httpx.Client, w1: dict[str, Any]) -> None:
    events_before = len(kube.event_log)
    rv_before = kube.resource_version
    response = http.post(W_URL, params={"dryRun": "All"}, json=widget("dry", size=1))
    assert response.status_code == 201
    assert response.json()["metadata"]["name"] == "dry"
    assert http.get(f"{W_URL}/dry").status_code == 404
    response = http.patch(f"{W_URL}/w1", params={"dryRun": "All"}, headers=MERGE, json={"spec": {"size": 50}})
    assert response.json()["spec"]["size"] == 50
    assert http.get(f"{W_URL}/w1").json()["spec"]["size"] == 3
    invalid = http.patch(f"{W_URL}/w1", params={"dryRun": "All"}, headers=MERGE, json={"spec": {"size": 500}})
    assert invalid.status_code == 422
    response = http.delete(f"{W_URL}/w1", params={"dryRun": "All"})
    assert response.status_code == 200
    assert http.get(f"{W_URL}/w1").status_code == 200
    assert len(kube.event_log) == events_before
    assert kube.resource_version == rv_before


def test_no_op_write_keeps_resource_version(
    kube: EmulatorThread, http: httpx.Client, w1: dict[str, Any]
) -> None:
    events_before = len(kube.event_log)
    response = http.patch(f"{W_URL}/w1", headers=MERGE, json={"spec": {"size": 3}})
    assert response.json()["metadata"]["resourceVersion"] == w1["metadata"]["resourceVersion"]
    current = http.get(f"{W_URL}/w1").json()
    assert (
        http.put(f"{W_URL}/w1", json=current).json()["metadata"]["resourceVersion"]
        == w1["metadata"]["resourceVersion"]
    )
    assert len(kube.event_log) == events_before


def test_pod_spec_is_immutable(kube: EmulatorThread, http: httpx.Client) -> None:
    kube.create(PODS, pod("p"))
    response = http.patch(
        "/api/v1/namespaces/default/pods/p", headers=MERGE, json={"spec": {"restartPolicy": "Never"}}
    )
    assert response.status_code == 422
    assert response.json()["message"].startswith(
        'Pod "p" is invalid: spec: Forbidden: pod updates may not change fields other than'
    )
    image = [{"name": "main", "image": "busybox:1.37"}]
    response = http.patch(
        "/api/v1/namespaces/default/pods/p", headers=SMP, json={"spec": {"containers": image}}
    )
    assert response.status_code == 200


def test_finalizers_cannot_be_added_while_deleting(
    kube: EmulatorThread, http: httpx.Client, w1: dict[str, Any]
) -> None:
    kube.patch(("example.test", "v1", "widgets"), "default", "w1", {"metadata": {"finalizers": ["a"]}})
    http.delete(f"{W_URL}/w1")
    response = http.patch(f"{W_URL}/w1", headers=MERGE, json={"metadata": {"finalizers": ["a", "b"]}})
    assert response.status_code == 422
    assert "no new finalizers can be added if the object is being deleted" in response.json()["message"]

"""Object creation and errors: system metadata, status codes and Status bodies shaped like the real ones."""

from __future__ import annotations

import re
import uuid

import httpx
import pytest

from .conftest import pod, widget
from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(60)
PODS_URL = "/api/v1/namespaces/default/pods"


def test_initial_namespaces(http: httpx.Client) -> None:
    names = {ns["metadata"]["name"] for ns in http.get("/api/v1/namespaces").json()["items"]}
    assert {"default", "kube-system", "kube-public"} <= names


def test_create_sets_system_metadata(http: httpx.Client) -> None:
    before = int(http.get(PODS_URL).json()["metadata"]["resourceVersion"])
    body = pod("p1")
    del body["metadata"]["namespace"]
    response = http.post(PODS_URL, json=body)
    assert response.status_code == 201
    created = response.json()
    meta = created["metadata"]
    assert uuid.UUID(meta["uid"]).version == 4
    assert int(meta["resourceVersion"]) > before
    assert meta["generation"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert meta["namespace"] == "default"
    assert created["apiVersion"] == "v1" and created["kind"] == "Pod"
    assert created["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    assert http.get(f"{PODS_URL}/p1").json() == created


def test_resource_version_is_global_and_monotonic(http: httpx.Client) -> None:
    rvs = []
    for i in range(3):
        rvs.append(int(http.post(PODS_URL, json=pod(f"p{i}")).json()["metadata"]["resourceVersion"]))
        cm = {"metadata": {"name": f"c{i}"}, "data": {}}
        rvs.append(
            int(
                http.post("/api/v1/namespaces/default/configmaps", json=cm).json()["metadata"][
                    "resourceVersion"
                ]
            )
        )
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs)


def test_generate_name(http: httpx.Client) -> None:
    body = pod("x")
    body["metadata"] = {"generateName": "worker-"}
    first = http.post(PODS_URL, json=body).json()["metadata"]["name"]
    second = http.post(PODS_URL, json=body).json()["metadata"]["name"]
    assert re.fullmatch(r"worker-[a-z0-9]{5}", first)
    assert first != second


def test_duplicate_is_409_already_exists(http: httpx.Client) -> None:
    assert http.post(PODS_URL, json=pod("dup")).status_code == 201
    response = http.post(PODS_URL, json=pod("dup"))
    assert response.status_code == 409
    assert response.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "dup" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "dup", "kind": "pods"},
        "code": 409,
    }


def test_missing_object_is_404_not_found(http: httpx.Client, widgets: tuple[str, str, str]) -> None:
    response = http.get(f"{PODS_URL}/nope")
    assert response.status_code == 404
    assert response.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"},
        "code": 404,
    }
    response = http.delete("/apis/example.test/v1/namespaces/default/widgets/nope")
    assert response.json()["message"] == 'widgets.example.test "nope" not found'
    assert response.json()["details"] == {"name": "nope", "group": "example.test", "kind": "widgets"}


def test_missing_namespace_is_404(http: httpx.Client) -> None:
    response = http.post("/api/v1/namespaces/ghost/pods", json=pod("p", namespace="ghost"))
    assert response.status_code == 404
    assert response.json()["message"] == 'namespaces "ghost" not found'
    assert response.json()["details"] == {"name": "ghost", "kind": "namespaces"}


def test_namespace_mismatch_is_400(http: httpx.Client) -> None:
    response = http.post(PODS_URL, json=pod("p", namespace="kube-system"))
    assert response.status_code == 400
    assert response.json()["reason"] == "BadRequest"
    assert response.json()["message"] == (
        "the namespace of the provided object does not match the namespace sent on the request"
    )


def test_name_is_required_and_validated(http: httpx.Client) -> None:
    body = pod("x")
    del body["metadata"]["name"]
    response = http.post(PODS_URL, json=body)
    assert response.status_code == 422
    assert response.json()["message"] == (
        'Pod "" is invalid: metadata.name: Required value: name or generateName is required'
    )
    response = http.post(PODS_URL, json=pod("Bad_Name"))
    assert response.status_code == 422
    assert response.json()["message"].startswith(
        'Pod "Bad_Name" is invalid: metadata.name: Invalid value: '
        '"Bad_Name": a lowercase RFC 1123 subdomain must consist of'
    )


def test_resource_version_on_create_is_rejected(http: httpx.Client) -> None:
    body = pod("p")
    body["metadata"]["resourceVersion"] = "5"
    response = http.post(PODS_URL, json=body)
    assert response.status_code == 500
    assert response.json()["message"] == (
        "Internal error occurred: resourceVersion should not be set on objects to be created"
    )


def test_cluster_scoped_objects(kube: EmulatorThread, http: httpx.Client) -> None:
    node = kube.add_node("gpu-1", {"gpu": "a100"})
    assert "namespace" not in node["metadata"]
    assert http.get("/api/v1/nodes/gpu-1").json()["metadata"]["labels"]["gpu"] == "a100"
    assert http.get("/api/v1/namespaces/default/nodes/gpu-1").status_code == 404


def test_custom_resource_create(http: httpx.Client, widgets: tuple[str, str, str]) -> None:
    body = widget("w1", size=5)
    body["status"] = {"phase": "Ready"}
    response = http.post("/apis/example.test/v1/namespaces/default/widgets", json=body)
    assert response.status_code == 201
    created = response.json()
    assert created["apiVersion"] == "example.test/v1" and created["kind"] == "Widget"
    assert "status" not in created  # the status subresource ignores status on create
    assert created["spec"] == {"size": 5, "mode": "single", "gpu": {"count": 1}}  # schema defaults


def test_secret_string_data_is_encoded(http: httpx.Client) -> None:
    body = {"metadata": {"name": "s"}, "stringData": {"token": "abc"}}
    created = http.post("/api/v1/namespaces/default/secrets", json=body).json()
    assert created["data"] == {"token": "YWJj"}
    assert "stringData" not in created
    assert created["type"] == "Opaque"


def test_service_gets_a_cluster_ip(http: httpx.Client) -> None:
    body = {"metadata": {"name": "svc"}, "spec": {"selector": {"app": "x"}, "ports": [{"port": 80}]}}
    created = http.post("/api/v1/namespaces/default/services", json=body).json()
    assert created["spec"]["clusterIP"].startswith("10.96.")
    assert created["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert created["spec"]["type"] == "ClusterIP"

"""Discovery as a real API server answers it, for kopf (legacy documents) and kubectl (aggregated)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from .conftest import Kubectl, widget_crd
from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(60)
ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def test_version(http: httpx.Client) -> None:
    body = http.get("/version").json()
    assert body["major"] == "1" and body["minor"] == "32"
    assert body["gitVersion"].startswith("v1.32.")


def test_core_api_versions_and_resources(http: httpx.Client) -> None:
    assert http.get("/api").json()["versions"] == ["v1"]
    body = http.get("/api/v1").json()
    assert body["kind"] == "APIResourceList"
    assert body["groupVersion"] == "v1"
    resources = {r["name"]: r for r in body["resources"]}
    assert {
        "namespaces",
        "pods",
        "pods/status",
        "services",
        "services/status",
        "events",
        "nodes",
        "nodes/status",
        "configmaps",
        "secrets",
        "serviceaccounts",
    } <= set(resources)
    pods = resources["pods"]
    assert pods == {
        "name": "pods",
        "singularName": "pod",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ALL_VERBS,
        "shortNames": ["po"],
        "categories": ["all"],
        "storageVersionHash": pods["storageVersionHash"],
    }
    assert resources["pods/status"]["verbs"] == ["get", "patch", "update"]
    assert resources["nodes"]["namespaced"] is False
    assert resources["namespaces"]["namespaced"] is False
    assert resources["configmaps"]["shortNames"] == ["cm"]


def test_named_groups(http: httpx.Client, widgets: tuple[str, str, str]) -> None:
    groups = {g["name"]: g for g in http.get("/apis").json()["groups"]}
    assert {"apiextensions.k8s.io", "events.k8s.io", "coordination.k8s.io", "example.test"} <= set(groups)
    assert groups["example.test"]["preferredVersion"] == {"groupVersion": "example.test/v1", "version": "v1"}
    group = http.get("/apis/example.test").json()
    assert group["kind"] == "APIGroup" and group["name"] == "example.test"
    body = http.get("/apis/example.test/v1").json()
    assert body["groupVersion"] == "example.test/v1"
    resources = {r["name"]: r for r in body["resources"]}
    assert resources["widgets"] == {
        "name": "widgets",
        "singularName": "widget",
        "namespaced": True,
        "kind": "Widget",
        "verbs": ALL_VERBS,
        "shortNames": ["wd"],
        "categories": ["all", "examples"],
        "storageVersionHash": resources["widgets"]["storageVersionHash"],
    }
    assert resources["widgets/status"]["kind"] == "Widget"
    crds = {r["name"]: r for r in http.get("/apis/apiextensions.k8s.io/v1").json()["resources"]}
    assert crds["customresourcedefinitions"]["namespaced"] is False
    assert "customresourcedefinitions/status" in crds
    assert {r["name"] for r in http.get("/apis/events.k8s.io/v1").json()["resources"]} == {"events"}
    assert {r["name"] for r in http.get("/apis/coordination.k8s.io/v1").json()["resources"]} == {"leases"}


def test_unknown_group_is_404(http: httpx.Client) -> None:
    assert http.get("/apis/nothing.example").status_code == 404
    assert http.get("/apis/nothing.example/v1").status_code == 404
    response = http.get("/apis/nothing.example/v1/things")
    assert response.status_code == 404
    assert response.json()["reason"] == "NotFound"


def test_aggregated_discovery(http: httpx.Client, widgets: tuple[str, str, str]) -> None:
    accept = (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
        "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
    )
    response = http.get("/apis", headers={"Accept": accept})
    assert (
        response.headers["Content-Type"]
        == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    items = {item["metadata"]["name"]: item for item in response.json()["items"]}
    widget = items["example.test"]["versions"][0]["resources"][0]
    assert widget["resource"] == "widgets"
    assert widget["scope"] == "Namespaced"
    assert widget["responseKind"] == {"group": "example.test", "version": "v1", "kind": "Widget"}
    assert widget["subresources"][0]["subresource"] == "status"
    core = http.get("/api", headers={"Accept": accept}).json()
    assert core["items"][0]["versions"][0]["version"] == "v1"
    # Plain clients still get the legacy documents.
    assert http.get("/apis").json()["kind"] == "APIGroupList"


def test_kubectl_api_resources(kube: EmulatorThread, kubectl: Kubectl, widgets: tuple[str, str, str]) -> None:
    out = kubectl.ok("api-resources")
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert lines["pods"] == ["pods", "po", "v1", "true", "Pod"]
    assert lines["nodes"] == ["nodes", "no", "v1", "false", "Node"]
    assert lines["widgets"] == ["widgets", "wd", "example.test/v1", "true", "Widget"]
    result = kubectl.run("get", "pods")
    assert result.stdout == ""
    assert result.stderr == "No resources found in default namespace.\n"


def test_multi_version_crd(kube: EmulatorThread, http: httpx.Client) -> None:
    crd = widget_crd()
    crd["spec"]["versions"].append({**crd["spec"]["versions"][0], "name": "v1beta1", "storage": False})
    kube.create(("apiextensions.k8s.io", "v1", "customresourcedefinitions"), crd)
    group = http.get("/apis/example.test").json()
    assert [v["version"] for v in group["versions"]] == ["v1", "v1beta1"]
    assert group["preferredVersion"]["version"] == "v1"
    old = {
        "apiVersion": "example.test/v1beta1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": 1},
    }
    assert http.post("/apis/example.test/v1beta1/namespaces/default/widgets", json=old).status_code == 201
    assert (
        http.get("/apis/example.test/v1/namespaces/default/widgets/w").json()["apiVersion"]
        == "example.test/v1"
    )
    listed = http.get("/apis/example.test/v1beta1/namespaces/default/widgets").json()
    assert listed["apiVersion"] == "example.test/v1beta1" and listed["kind"] == "WidgetList"


def test_kubectl_without_aggregated_discovery(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with EmulatorThread(aggregated_discovery=False) as emu:
        monkeypatch.setenv("KUBECONFIG", str(emu.write_kubeconfig(tmp_path / "config")))
        monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "cache"))
        kubectl = Kubectl(tmp_path)
        assert "pods" in kubectl.ok("api-resources")
        assert "default" in kubectl.ok("get", "namespaces")

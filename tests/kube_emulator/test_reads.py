"""Reads: lists with kinds and resourceVersions, label and field selectors, tables and metadata-only forms."""

from __future__ import annotations

import httpx
import pytest

from .conftest import PODS, pod, widget
from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(60)
TABLE = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,"
    "application/json"
)


@pytest.fixture()
def labelled(kube: EmulatorThread) -> None:
    kube.create(("", "v1", "namespaces"), {"metadata": {"name": "other"}})
    for name, labels, namespace in [
        ("a", {"app": "web", "tier": "front"}, "default"),
        ("b", {"app": "web", "tier": "back"}, "default"),
        ("c", {"app": "db"}, "default"),
        ("d", {}, "default"),
        ("e", {"app": "web", "tier": "front"}, "other"),
    ]:
        kube.create(PODS, pod(name, namespace, labels))
    kube.patch(PODS, "default", "a", {"spec": {"nodeName": "node-1"}})
    kube.patch_status(PODS, "default", "b", {"status": {"phase": "Running"}})


def names(http: httpx.Client, url: str, **params: str) -> list[str]:
    response = http.get(url, params=params)
    assert response.status_code == 200, response.text
    return [item["metadata"]["name"] for item in response.json()["items"]]


def test_list_shape(http: httpx.Client, labelled: None) -> None:
    body = http.get("/api/v1/namespaces/default/pods").json()
    assert body["apiVersion"] == "v1"
    assert body["kind"] == "PodList"
    latest = max(int(item["metadata"]["resourceVersion"]) for item in body["items"])
    assert int(body["metadata"]["resourceVersion"]) >= latest
    assert [item["metadata"]["name"] for item in body["items"]] == ["a", "b", "c", "d"]
    assert names(http, "/api/v1/pods") == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("app=web", ["a", "b"]),
        ("app==web", ["a", "b"]),
        ("app!=web", ["c", "d"]),
        ("app in (web, db)", ["a", "b", "c"]),
        ("app notin (web)", ["c", "d"]),
        ("tier", ["a", "b"]),
        ("!tier", ["c", "d"]),
        ("app=web,tier=front", ["a"]),
        ("app in (web),!tier", []),
    ],
)
def test_label_selectors(http: httpx.Client, labelled: None, selector: str, expected: list[str]) -> None:
    assert names(http, "/api/v1/namespaces/default/pods", labelSelector=selector) == expected


def test_bad_label_selector_is_400(http: httpx.Client) -> None:
    response = http.get("/api/v1/pods", params={"labelSelector": "a b c"})
    assert response.status_code == 400
    assert response.json()["reason"] == "BadRequest"


@pytest.mark.parametrize(
    "selector, expected",
    [
        ("metadata.name=b", ["b"]),
        ("metadata.name!=b", ["a", "c", "d"]),
        ("metadata.namespace==default,metadata.name=c", ["c"]),
        ("spec.nodeName=node-1", ["a"]),
        ("spec.nodeName=", ["b", "c", "d"]),
        ("status.phase=Running", ["b"]),
        ("status.phase!=Running", ["a", "c", "d"]),
    ],
)
def test_field_selectors(http: httpx.Client, labelled: None, selector: str, expected: list[str]) -> None:
    assert names(http, "/api/v1/namespaces/default/pods", fieldSelector=selector) == expected


def test_table_for_pods(http: httpx.Client, labelled: None) -> None:
    table = http.get("/api/v1/namespaces/default/pods", headers={"Accept": TABLE}).json()
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    columns = [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0]
    assert columns == ["Name", "Ready", "Status", "Restarts", "Age"]
    rows = {row["cells"][0]: row for row in table["rows"]}
    assert rows["b"]["cells"][1:4] == ["0/1", "Running", 0]
    assert rows["a"]["object"]["kind"] == "PartialObjectMetadata"
    full = http.get(
        "/api/v1/namespaces/default/pods", headers={"Accept": TABLE}, params={"includeObject": "Object"}
    ).json()
    assert full["rows"][0]["object"]["kind"] == "Pod"
    bare = http.get(
        "/api/v1/namespaces/default/pods/a", headers={"Accept": TABLE}, params={"includeObject": "None"}
    ).json()
    assert len(bare["rows"]) == 1 and "object" not in bare["rows"][0]


def test_table_for_custom_resources(
    kube: EmulatorThread, http: httpx.Client, widgets: tuple[str, str, str]
) -> None:
    kube.create(widgets, widget("w1", size=7, color="red"))
    kube.patch_status(widgets, "default", "w1", {"status": {"phase": "Ready"}})
    table = http.get("/apis/example.test/v1/namespaces/default/widgets", headers={"Accept": TABLE}).json()
    assert [(c["name"], c["type"], c["priority"]) for c in table["columnDefinitions"]] == [
        ("Name", "string", 0),
        ("Size", "integer", 0),
        ("Mode", "string", 0),
        ("Phase", "string", 0),
        ("Color", "string", 1),
        ("Age", "date", 0),
    ]
    cells = table["rows"][0]["cells"]
    assert cells[:5] == ["w1", 7, "single", "Ready", "red"]
    assert cells[5].endswith("s")


def test_partial_object_metadata(http: httpx.Client, labelled: None) -> None:
    accept = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"
    body = http.get("/api/v1/namespaces/default/pods", headers={"Accept": accept}).json()
    assert body["kind"] == "PartialObjectMetadataList"
    assert set(body["items"][0]) == {"kind", "apiVersion", "metadata"}

"""Watches: initial state, resumption from a resourceVersion without replay, 410 Expired, timeouts,
selector transitions, bookmarks, tables, and prompt closing when the emulator stops."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import kubernetes
import pytest

from .conftest import CONFIGMAPS
from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(60)
CM_URL = "/api/v1/namespaces/default/configmaps"


def configmap(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {}}


def read_watch(http: httpx.Client, url: str, **params: str) -> list[dict[str, Any]]:
    """Read a whole (server-timed-out) watch stream."""
    with http.stream("GET", url, params={"watch": "true", **params}) as response:
        assert response.status_code == 200
        return [json.loads(line) for line in response.iter_lines() if line]


class Follower:
    """Follows a watch stream in a thread, collecting its events."""

    def __init__(self, kube: EmulatorThread, url: str, **params: str) -> None:
        self.kube = kube
        self.events: list[dict[str, Any]] = []
        self.closed = threading.Event()
        before = kube.handler.open_watches
        self._thread = threading.Thread(target=self._run, args=(url, params), daemon=True)
        self._thread.start()
        kube.wait_for(lambda: kube.handler.open_watches > before, timeout=10)

    def _run(self, url: str, params: dict[str, str]) -> None:
        with (
            httpx.Client(base_url=self.kube.url, timeout=60) as client,
            client.stream("GET", url, params={"watch": "true", **params}) as response,
        ):
            for line in response.iter_lines():
                if line:
                    self.events.append(json.loads(line))
        self.closed.set()

    def wait(self, count: int) -> list[tuple[str, str]]:
        self.kube.wait_for(
            lambda: len(self.events) >= count,
            timeout=10,
            message=f"expected {count} events, got {self.events}",
        )
        return [(e["type"], e["object"]["metadata"].get("name", "")) for e in self.events]


def test_watch_sends_current_state_then_follows(kube: EmulatorThread) -> None:
    kube.create(CONFIGMAPS, configmap("old"))
    follower = Follower(kube, CM_URL)
    assert follower.wait(1) == [("ADDED", "old")]
    kube.create(CONFIGMAPS, configmap("new"))
    kube.patch(CONFIGMAPS, "default", "new", {"data": {"k": "v"}})
    kube.delete(CONFIGMAPS, "default", "old")
    assert follower.wait(4) == [("ADDED", "old"), ("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "old")]
    assert follower.events[2]["object"]["data"] == {"k": "v"}


def test_watch_resumes_from_resource_version_without_replay(kube: EmulatorThread, http: httpx.Client) -> None:
    kube.create(CONFIGMAPS, configmap("a"))
    kube.create(CONFIGMAPS, configmap("b"))
    resume_from = http.get(CM_URL).json()["metadata"]["resourceVersion"]
    kube.patch(CONFIGMAPS, "default", "a", {"data": {"x": "1"}})
    kube.delete(CONFIGMAPS, "default", "b")
    kube.create(CONFIGMAPS, configmap("c"))
    events = read_watch(http, CM_URL, resourceVersion=resume_from, timeoutSeconds="1")
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("MODIFIED", "a"),
        ("DELETED", "b"),
        ("ADDED", "c"),
    ]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(resume_from)
    latest = events[-1]["object"]["metadata"]["resourceVersion"]
    assert read_watch(http, CM_URL, resourceVersion=latest, timeoutSeconds="1") == []


@pytest.mark.parametrize("kube_options", [{"history_size": 5}])
def test_expired_resource_version_is_410(kube: EmulatorThread, http: httpx.Client) -> None:
    first = kube.create(CONFIGMAPS, configmap("c0"))["metadata"]["resourceVersion"]
    for i in range(1, 10):
        kube.create(CONFIGMAPS, configmap(f"c{i}"))
    events = read_watch(http, CM_URL, resourceVersion=first)
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert status["kind"] == "Status" and status["code"] == 410 and status["reason"] == "Expired"
    assert status["message"].startswith(f"too old resource version: {first} (")
    # A recent resourceVersion is still served from the retained history.
    recent = http.get(CM_URL).json()["metadata"]["resourceVersion"]
    assert read_watch(http, CM_URL, resourceVersion=recent, timeoutSeconds="1") == []


def test_timeout_seconds_closes_the_stream(http: httpx.Client) -> None:
    started = time.monotonic()
    assert read_watch(http, CM_URL, resourceVersion="1", timeoutSeconds="1") == []
    assert time.monotonic() - started < 10


def test_selector_transitions(kube: EmulatorThread) -> None:
    follower = Follower(kube, CM_URL, labelSelector="app=web", watch="1")
    kube.create(CONFIGMAPS, configmap("x", app="web"))
    kube.create(CONFIGMAPS, configmap("ignored", app="db"))
    kube.patch(CONFIGMAPS, "default", "x", {"metadata": {"labels": {"app": "db"}}})
    kube.patch(CONFIGMAPS, "default", "x", {"metadata": {"labels": {"app": "web"}}})
    kube.delete(CONFIGMAPS, "default", "x")
    assert follower.wait(4) == [("ADDED", "x"), ("DELETED", "x"), ("ADDED", "x"), ("DELETED", "x")]
    # The DELETED on leaving the selector carries the previous content at the new resourceVersion.
    left = follower.events[1]["object"]
    assert left["metadata"]["labels"] == {"app": "web"}
    assert int(left["metadata"]["resourceVersion"]) > int(
        follower.events[0]["object"]["metadata"]["resourceVersion"]
    )


def test_field_selector_watch(kube: EmulatorThread) -> None:
    follower = Follower(kube, CM_URL, fieldSelector="metadata.name=target")
    kube.create(CONFIGMAPS, configmap("other"))
    kube.create(CONFIGMAPS, configmap("target"))
    assert follower.wait(1) == [("ADDED", "target")]


def test_bookmarks(kube: EmulatorThread, http: httpx.Client) -> None:
    kube.create(CONFIGMAPS, configmap("a"))
    events = read_watch(http, CM_URL, allowWatchBookmarks="true", timeoutSeconds="1")
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[1]["object"]["kind"] == "ConfigMap"
    assert int(events[1]["object"]["metadata"]["resourceVersion"]) >= int(
        events[0]["object"]["metadata"]["resourceVersion"]
    )
    initial = read_watch(
        http,
        CM_URL,
        allowWatchBookmarks="true",
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        timeoutSeconds="1",
    )
    assert initial[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_watch_as_table(kube: EmulatorThread) -> None:
    kube.create(CONFIGMAPS, configmap("a"))
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    events: list[dict[str, Any]] = []
    with (
        httpx.Client(base_url=kube.url, timeout=30) as client,
        client.stream(
            "GET", CM_URL, params={"watch": "true", "timeoutSeconds": "1"}, headers={"Accept": accept}
        ) as response,
    ):
        kube.create(CONFIGMAPS, configmap("b"))
        events = [json.loads(line) for line in response.iter_lines() if line]
    assert [e["object"]["kind"] for e in events] == ["Table", "Table"]
    assert events[0]["object"]["columnDefinitions"][0]["name"] == "Name"
    assert events[1]["object"]["columnDefinitions"] == []
    assert events[1]["object"]["rows"][0]["cells"][0] == "b"


def test_kubernetes_client_watch(kube: EmulatorThread, api_client: kubernetes.client.ApiClient) -> None:
    v1 = kubernetes.client.CoreV1Api(api_client)
    listing = v1.list_namespaced_config_map("default")
    kube.create(CONFIGMAPS, configmap("w"))
    stream = kubernetes.watch.Watch().stream(
        v1.list_namespaced_config_map,
        "default",
        resource_version=listing.metadata.resource_version,
        timeout_seconds=1,
    )
    assert [(e["type"], e["object"].metadata.name) for e in stream] == [("ADDED", "w")]


def test_stopping_the_emulator_closes_watches_promptly() -> None:
    emulator = EmulatorThread().start()
    try:
        follower = Follower(emulator, CM_URL)
    finally:
        started = time.monotonic()
        emulator.stop()
    assert follower.closed.wait(10)
    assert time.monotonic() - started < 10

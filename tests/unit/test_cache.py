"""The cluster cache's account of what a decision reads: equal while nothing the decision reads has
changed (so a resync may skip it), different after any change it reads.

Objects go in as the operator's own writes do (``Informer.put``); no API is called."""

from __future__ import annotations

from typing import Any

from llamacontroller.kube.cache import ClusterCache
from llamacontroller.render import names

NODE = "node-a"


def meta(uid: str, version: int, **extra: Any) -> dict[str, Any]:
    return {"uid": uid, "name": uid, "namespace": "default", "resourceVersion": str(version), **extra}


def llamamodel(uid: str, version: int, **status: Any) -> dict[str, Any]:
    spec = {"model": {"path": "m.gguf"}, "nodeName": NODE}
    return {"metadata": meta(uid, version), "spec": spec, "status": {"node": NODE, **status}}


def pod(uid: str, version: int, owner: str) -> dict[str, Any]:
    labels = {names.LABEL_OWNER_UID: owner, names.LABEL_MANAGED_BY: names.MANAGER}
    annotations = {names.ANNOTATION_NODE: NODE, names.ANNOTATION_HOLDER: f"default/{owner}"}
    return {"metadata": meta(uid, version, labels=labels, annotations=annotations), "spec": {}, "status": {}}


def node(version: int, ready: str = "True", since: str = "2026-01-01T00:00:00Z", beat: str = "") -> dict:
    condition = {"type": "Ready", "status": ready, "lastTransitionTime": since, "lastHeartbeatTime": beat}
    labels = {"nvidia.com/gpu.count": "2"}
    return {"metadata": {**meta(NODE, version), "labels": labels}, "status": {"conditions": [condition]}}


def cache_with(*objects: tuple[str, dict[str, Any]]) -> ClusterCache:
    cache = ClusterCache(None, None, "nvidia.com/gpu.count", lambda kind, change: None)  # type: ignore[arg-type]
    for kind, obj in objects:
        put(cache, kind, obj)
    return cache


def put(cache: ClusterCache, kind: str, obj: dict[str, Any]) -> None:
    informer = cache.nodes if kind == "node" else cache.informer_of(kind, "default")
    informer.put(obj)


def inputs(cache: ClusterCache, uid: str = "a") -> object:
    body = cache.llamamodel("default", uid)
    assert body is not None
    return cache.decision_inputs(body, NODE)


def test_what_a_decision_reads_is_equal_until_something_it_reads_changes() -> None:
    cache = cache_with(("llamamodel", llamamodel("a", 1)), ("pod", pod("p", 2, "a")), ("node", node(3)))
    before = inputs(cache)
    assert inputs(cache) == before

    put(cache, "node", node(4, beat="2026-01-01T00:05:00Z"))  # a kubelet's status report: nothing new
    assert inputs(cache) == before

    put(cache, "llamamodel", llamamodel("b", 5, phase="Waiting"))  # a waiter on the node
    after_waiter = inputs(cache)
    assert after_waiter != before

    put(cache, "pod", pod("p", 6, "a"))  # its Pod moved on
    after_pod = inputs(cache)
    assert after_pod != after_waiter

    put(cache, "node", node(7, ready="Unknown", since="2026-01-01T00:06:00Z"))  # the node is lost
    assert inputs(cache) != after_pod


def test_a_status_written_by_the_operator_is_a_change() -> None:
    cache = cache_with(("llamamodel", llamamodel("a", 1)), ("node", node(2)))
    before = inputs(cache)
    put(cache, "llamamodel", llamamodel("a", 3, phase="Pending"))
    assert inputs(cache) != before

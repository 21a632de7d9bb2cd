"""The cluster cache's account of what a decision reads: equal while nothing the decision reads has
changed (so a resync may skip it), different after any change it reads.

Objects go in as the operator's own writes do (``Informer.put``); no API is called."""

from __future__ import annotations

from datetime import datetime
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


def llamanode(version: int, foreign: int = 0, beat: str = "2026-01-01T00:00:00Z", **file: Any) -> dict:
    """node-a's LlamaNode as its agent writes it: one GPU, the file m.gguf."""
    gpu = {
        "index": 0,
        "memoryTotal": 24 << 30,
        "memoryUsed": foreign + (1 << 30),
        "foreignMemory": foreign,
        "utilization": version % 100,  # moves at every reading; the fit does not read it
        "processes": [
            {"pid": 9, "name": "llama-server", "usedMemory": 1 << 30, "llamaModel": "default/other"},
            *([{"pid": 7, "name": "python", "usedMemory": foreign}] if foreign else []),
        ],
    }
    model = {"path": "m.gguf", "size": 1, "modified": "2026-01-01T00:00:00Z", "facts": None, **file}
    status = {"nvml": "ok", "heartbeatAt": beat, "gpus": [gpu], "models": [model]}
    return {"metadata": {"uid": "ln", "name": NODE, "resourceVersion": str(version)}, "status": status}


def fit_inputs(cache: ClusterCache, now: str = "2026-01-01T00:00:30+00:00") -> object:
    body = cache.llamamodel("default", "a")
    assert body is not None
    return cache.decision_inputs(body, NODE, datetime.fromisoformat(now))


def test_what_the_fit_check_reads_of_a_llamanode_is_an_input_but_its_heartbeat_is_not() -> None:
    cache = cache_with(("llamamodel", llamamodel("a", 1)), ("node", node(2)))
    without = fit_inputs(cache)
    cache.llamanodes.put(llamanode(3))
    before = fit_inputs(cache)
    assert before != without
    cache.llamanodes.put(llamanode(4, beat="2026-01-01T00:00:20Z"))  # a heartbeat, a new utilization
    assert fit_inputs(cache) == before
    cache.llamanodes.put(llamanode(5, foreign=3 << 30))  # another process takes memory
    occupied = fit_inputs(cache)
    assert occupied != before
    cache.llamanodes.put(llamanode(6, error="not a GGUF file"))  # the file changed
    assert fit_inputs(cache) not in (before, occupied)
    # the agent stops writing: past fit.nodeStaleSeconds the same reading is no longer trusted
    cache.llamanodes.put(llamanode(7))
    assert fit_inputs(cache) == before
    assert fit_inputs(cache, now="2026-01-01T00:01:31+00:00") != before


def test_the_fit_is_no_input_of_a_llamamodel_whose_server_exists() -> None:
    cache = cache_with(("llamamodel", llamamodel("a", 1)), ("pod", pod("p", 2, "a")), ("node", node(3)))
    cache.llamanodes.put(llamanode(4))
    before = fit_inputs(cache)
    cache.llamanodes.put(llamanode(5, foreign=3 << 30))
    assert fit_inputs(cache) == before


def test_a_llamanode_is_parsed_once_per_version_and_an_unreadable_one_is_none() -> None:
    cache = cache_with()
    cache.llamanodes.put(llamanode(1))
    parsed = cache.llamanode(NODE)
    assert parsed is not None and parsed.status.gpus[0].foreign_memory == 0
    assert [p.pid for p in parsed.status.gpus[0].processes] == []  # only other processes are kept
    assert cache.llamanode(NODE) is parsed
    broken = llamanode(2)
    del broken["status"]["gpus"][0]["memoryTotal"]
    cache.llamanodes.put(broken)
    assert cache.llamanode(NODE) is None

"""Which LlamaNode changes wake the LlamaModels of their node: what the fit check reads, or whether
the node's agent is trusted; not its heartbeat alone (every write of the agent moves it)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.kube.cache import strip_llamanode
from llamacontroller.kube.informer import Change
from llamacontroller.kube.operator import Operator


def reading(beat: datetime, foreign: int = 0, utilization: int = 0) -> dict[str, Any]:
    gpu = {
        "index": 0,
        "memoryTotal": 24 << 30,
        "memoryUsed": foreign,
        "foreignMemory": foreign,
        "utilization": utilization,
        "processes": [{"pid": 7, "name": "python", "usedMemory": foreign}] if foreign else [],
    }
    status = {"nvml": "ok", "heartbeatAt": beat.strftime("%Y-%m-%dT%H:%M:%SZ"), "gpus": [gpu], "models": []}
    return strip_llamanode({"metadata": {"uid": "u", "name": "node-a"}, "status": status})


def test_a_heartbeat_alone_wakes_nobody_but_a_change_of_memory_or_of_trust_does() -> None:
    operator = Operator(None, OperatorConfig())  # type: ignore[arg-type]
    now = datetime.now(UTC)
    before = reading(now - timedelta(seconds=20))
    assert not operator._fit_changed(Change(before, reading(now, utilization=80)))
    assert operator._fit_changed(Change(before, reading(now, foreign=2 << 30)))
    assert operator._fit_changed(Change(None, before)) and operator._fit_changed(Change(before, None))
    stale = reading(now - timedelta(seconds=600))
    assert operator._fit_changed(Change(stale, before))  # the agent writes again after a silence

"""Random changes to a fleet of LlamaModels, and what must hold of the cluster meanwhile and after
them: the driver of tests/e2e/test_faults.py, tests/e2e/test_chaos.py and bench/chaos.py.

A change is one of: a create, a switch (another server on the same slot: a new context size), a
move (another node or slot), a delete, and a delete followed at once by a create of the same name (a
new object, a new UID: a GitOps delete/re-create) elsewhere. Changes are made as admin, straight to
the API server.

Meanwhile (``gpu_conflicts``, ``shared_owners``, at every observation of a watch of the Pods): no two
server Pods on overlapping GPUs of one node, and no LlamaModel with two server Pods at once.
Afterwards (``unsettled``: empty once converged): every LlamaModel is Ready with its one Pod of its
current spec, or Waiting for a slot that an overlapping server or an older waiter holds; no Pod of a
gone LlamaModel, none still terminating.
"""

from __future__ import annotations

import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tests.support.builders import arg, lm
from tests.support.kube import LABEL_SLOT, LLAMAMODELS, Change, Kube, live_pods, slots_overlap

LABEL_OWNER_UID = "llamacontroller.io/owner-uid"
ANNOTATION_NODE = "llamacontroller.io/node"
NODES = ("node-a", "gpu-node-1", "gpu-node-2")  # three of the test cluster's two-GPU nodes
PLACEMENTS = {"gpu0": {"gpuId": 0}, "gpu1": {"gpuId": 1}, "both": {"mode": "both"}}
CONTEXTS = (2048, 4096)
KINDS = ("create", "switch", "move", "delete", "recreate")


@dataclass(frozen=True)
class Want:
    """What the fleet asks of one LlamaModel."""

    node: str
    slot: str
    ctx: int

    def spec(self) -> dict[str, Any]:
        body = lm("x", node=self.node, gpu=PLACEMENTS[self.slot], parameters={"ctxSize": self.ctx})
        spec: dict[str, Any] = body["spec"]
        return spec


class Fleet:
    """``size`` LlamaModels named m00, m01 ... in one namespace; ``wanted`` is what exists now."""

    def __init__(self, kube: Kube, size: int, rng: random.Random, nodes: Iterable[str] = NODES) -> None:
        self.kube = kube
        self.rng = rng
        self.nodes = tuple(nodes)
        self.names = [f"m{i:02d}" for i in range(size)]
        self.wanted: dict[str, Want] = {}
        self.made: Counter[str] = Counter()  # changes, by kind

    def _path(self, name: str = "") -> str:
        return self.kube.ns_path("llamamodels", name, LLAMAMODELS)

    def _random_want(self) -> Want:
        """A node, a slot (a single GPU twice as often as the whole node: more servers run at once,
        so more Pods come and go) and a context size."""
        slot = self.rng.choice(["gpu0", "gpu1", "both", "gpu0", "gpu1"])
        return Want(self.rng.choice(self.nodes), slot, self.rng.choice(CONTEXTS))

    def create(self, name: str, want: Want | None = None) -> None:
        want = want or self._random_want()
        body = lm(name) | {"spec": want.spec()}
        self.kube.create(self._path(), body)
        self.wanted[name] = want

    def create_all(self) -> None:
        for name in self.names:
            self.create(name)
            self.made["create"] += 1

    def change(self) -> str:
        """One random change; what it was, for the record."""
        absent = [n for n in self.names if n not in self.wanted]
        kinds = (["create"] if absent else []) + ([k for k in KINDS if k != "create"] if self.wanted else [])
        kind = self.rng.choice(kinds)
        if kind == "create":
            name = self.rng.choice(absent)
            self.create(name)
        else:
            name = self.rng.choice(sorted(self.wanted))
            was = self.wanted[name]
            if kind == "switch":
                self._respec(name, Want(was.node, was.slot, CONTEXTS[1 - CONTEXTS.index(was.ctx)]))
            elif kind == "move":
                self._respec(name, self._moved(was))
            elif kind == "delete":
                self._delete(name)
            else:
                self._delete(name)
                self.create(name, self._moved(was))
        self.made[kind] += 1
        return f"{kind} {name}"

    def _moved(self, was: Want) -> Want:
        while (want := self._random_want()) and (want.node, want.slot) == (was.node, was.slot):
            pass
        return want

    def _respec(self, name: str, want: Want) -> None:
        patch = [{"op": "replace", "path": "/spec", "value": want.spec()}]
        self.kube.request("PATCH", self._path(name), patch, content_type="application/json-patch+json")
        self.wanted[name] = want

    def _delete(self, name: str) -> None:
        self.kube.delete(self._path(name))
        del self.wanted[name]


# -- what must hold --------------------------------------------------------------------------------


def shared_owners(changes: Iterable[Change]) -> list[str]:
    """Every observation at which one LlamaModel (one UID) had two server Pods."""
    problems = []
    for change, live in live_pods(changes):
        owner = change.labels.get(LABEL_OWNER_UID)
        if change.type == "DELETED" or not owner:
            continue
        others = [c for c in live.values() if c.uid != change.uid]
        twins = [c.name for c in others if c.labels.get(LABEL_OWNER_UID) == owner]
        if twins:
            problems.append(f"{change.type} {change.name} while {', '.join(twins)} of the same owner exist")
    return problems


def _queue_key(lm: dict[str, Any]) -> tuple[str, str, str]:
    status = lm.get("status") or {}
    created = lm["metadata"]["creationTimestamp"]
    return created, status.get("waitingSince") or "", lm["metadata"]["name"]


def unsettled(kube: Kube, wanted: dict[str, Want]) -> list[str]:
    """What keeps the fleet from being converged (nothing, once it is)."""
    lms = {item["metadata"]["name"]: item for item in kube.llamamodels()}
    pods = kube.pods()
    problems = []
    if set(lms) != set(wanted):
        problems.append(f"LlamaModels {sorted(lms)}, wanted {sorted(wanted)}")
    owners = {item["metadata"]["uid"]: name for name, item in lms.items()}
    owned: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for pod in pods:
        meta = pod["metadata"]
        owner = meta.get("labels", {}).get(LABEL_OWNER_UID, "")
        owned[owner].append(pod)
        if owner not in owners:
            problems.append(f"pod {meta['name']} belongs to no LlamaModel (owner {owner})")
        if meta.get("deletionTimestamp"):
            problems.append(f"pod {meta['name']} is still terminating")
    for name, item in sorted(lms.items()):
        want, status = wanted.get(name), item.get("status") or {}
        if want is None:
            continue
        mine = owned[item["metadata"]["uid"]]
        said = f"{status.get('phase')} ({status.get('message')})"
        if status.get("observedGeneration") != item["metadata"]["generation"]:
            problems.append(f"{name}: generation {item['metadata']['generation']} not observed: {said}")
        elif (status.get("node"), status.get("slot")) != (want.node, want.slot):
            problems.append(f"{name}: status on {status.get('node')}/{status.get('slot')}, wanted {want}")
        elif status.get("phase") == "Ready":
            problems += _served(name, want, status, mine)
        elif status.get("phase") == "Waiting":
            if mine:
                problems.append(f"{name} waits but has pods {[p['metadata']['name'] for p in mine]}")
            elif not _blocked(item, want, lms, wanted, pods):
                problems.append(f"{name} waits for a free slot: {said}")
        else:
            problems.append(f"{name} is {said}")
    return problems


def _served(name: str, want: Want, status: dict[str, Any], mine: list[dict[str, Any]]) -> list[str]:
    if len(mine) != 1:
        return [f"{name} is Ready with pods {[p['metadata']['name'] for p in mine]}"]
    pod = mine[0]
    labels = pod["metadata"].get("labels", {})
    node = pod["metadata"].get("annotations", {}).get(ANNOTATION_NODE)
    if pod["metadata"]["name"] != status.get("podName"):
        return [f"{name}: status names pod {status.get('podName')}, its pod is {pod['metadata']['name']}"]
    if (node, labels.get(LABEL_SLOT), arg(pod, "--ctx-size")) != (want.node, want.slot, str(want.ctx)):
        return [f"{name}: pod {pod['metadata']['name']} is not of the wanted spec {want}"]
    return []


def _blocked(
    item: dict[str, Any],
    want: Want,
    lms: dict[str, dict[str, Any]],
    wanted: dict[str, Want],
    pods: list[dict[str, Any]],
) -> bool:
    """A waiter waits rightly: a server holds an overlapping slot of its node, or an older waiter
    wants one."""
    for pod in pods:
        meta = pod["metadata"]
        on_node = meta.get("annotations", {}).get(ANNOTATION_NODE) == want.node
        if on_node and slots_overlap(meta.get("labels", {}).get(LABEL_SLOT, ""), want.slot):
            return True
    for name, other in lms.items():
        theirs = wanted.get(name)
        if other is item or theirs is None or (other.get("status") or {}).get("phase") != "Waiting":
            continue
        overlaps = theirs.node == want.node and slots_overlap(theirs.slot, want.slot)
        if overlaps and _queue_key(other) < _queue_key(item):
            return True
    return False


def wait_converged(kube: Kube, wanted: dict[str, Want], timeout: float) -> float:
    """Seconds until the fleet is converged; an AssertionError naming what is not, after ``timeout``."""
    began = time.monotonic()
    problems = unsettled(kube, wanted)
    while problems and time.monotonic() - began < timeout:
        time.sleep(0.2)
        problems = unsettled(kube, wanted)
    assert not problems, f"not converged after {timeout:.0f} s:\n" + "\n".join(problems)
    return time.monotonic() - began

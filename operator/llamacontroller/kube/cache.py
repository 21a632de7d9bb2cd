"""The operator's view of the cluster, in memory: its LlamaModels, its server Pods, its slot
Services, the Nodes and their LlamaNodes, each kept current by an Informer, with the indexes the
decisions ask.

A reconcile reads from here and makes no API read in the steady state. Objects are stripped to
what the decisions read (``strip_*``); Pods and Services are only the operator's own (by label).
Every change is also said to ``on_change``, so the operator can reconcile whoever it concerns.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from datetime import UTC, datetime
from typing import Any

from llamacontroller.fit.check import fresh
from llamacontroller.kube.api import LLAMAMODELS, KubeApi
from llamacontroller.kube.informer import Change, Informer, Object
from llamacontroller.llamanode import NODE_PLURAL, LlamaNode, parse_llamanode
from llamacontroller.render import names
from llamacontroller.resource import PLURAL, InvalidSpec

log = logging.getLogger(__name__)

OWN = f"{names.LABEL_MANAGED_BY}={names.MANAGER}"
# Kept of a LlamaModel's annotations: none are read, and some tools write large ones.
KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp")


def _metadata(obj: Object, *extra: str) -> dict[str, Any]:
    meta = obj.get("metadata", {})
    return {key: meta[key] for key in (*KEPT_METADATA, *extra) if key in meta}


def strip_llamamodel(obj: Object) -> Object:
    stripped = {key: obj[key] for key in ("apiVersion", "kind", "spec", "status") if key in obj}
    return stripped | {"metadata": _metadata(obj, "deletionTimestamp")}


def strip_pod(obj: Object) -> Object:
    status = obj.get("status", {})
    kept = {key: status[key] for key in ("phase", "reason", "message", "conditions") if key in status}
    for kind in ("containerStatuses", "initContainerStatuses"):  # init: the fetch of a model source
        containers = [
            {key: c[key] for key in ("name", "state", "lastState", "restartCount", "ready") if key in c}
            for c in status.get(kind) or []
        ]
        if containers:
            kept[kind] = containers
    return {
        "metadata": _metadata(obj, "labels", "annotations", "deletionTimestamp"),
        "spec": {"nodeName": obj.get("spec", {}).get("nodeName")},
        "status": kept,
    }


def strip_service(obj: Object) -> Object:
    spec = obj.get("spec", {})
    return {
        "metadata": _metadata(obj, "labels", "annotations", "ownerReferences"),
        "spec": {"selector": spec.get("selector"), "ports": spec.get("ports")},
    }


def strip_node(obj: Object, gpu_count_label: str) -> Object:
    labels = obj.get("metadata", {}).get("labels") or {}
    ready = [c for c in obj.get("status", {}).get("conditions") or [] if c.get("type") == "Ready"]
    return {
        "metadata": _metadata(obj) | {"labels": {k: v for k, v in labels.items() if k == gpu_count_label}},
        "status": {"conditions": ready},
    }


def strip_llamanode(obj: Object) -> Object:
    """What the fit check reads: the agent's state and heartbeat, each GPU's memory and the other
    processes on it (not this project's servers), and each model file's header facts."""
    status = obj.get("status") or {}
    gpus = [
        {key: gpu[key] for key in ("index", "memoryTotal", "memoryUsed", "foreignMemory") if key in gpu}
        | {
            "processes": [
                {key: p[key] for key in ("pid", "name", "usedMemory") if key in p}
                for p in gpu.get("processes") or []
                if not p.get("llamaModel")
            ]
        }
        for gpu in status.get("gpus") or []
    ]
    models = [
        {key: m[key] for key in ("path", "size", "modified", "facts", "error") if key in m}
        for m in status.get("models") or []
    ]
    kept = {key: status[key] for key in ("nvml", "heartbeatAt") if key in status}
    return {"metadata": _metadata(obj), "status": kept | {"gpus": gpus, "models": models}}


def llamanode_facts(obj: Object | None, path: str | None = None) -> Hashable:
    """What of a LlamaNode the fit check reads, but for the time of its heartbeat (which every write
    of its agent moves): the agent's state and each GPU's memory and other processes, and the model
    files' facts (only ``path``'s, when given)."""
    if obj is None:
        return None
    status = obj["status"]
    gpus = tuple(
        (
            gpu.get("index"),
            gpu.get("memoryTotal"),
            gpu.get("foreignMemory"),
            tuple((p.get("pid"), p.get("name"), p.get("usedMemory")) for p in gpu["processes"]),
        )
        for gpu in status["gpus"]
    )
    models = [m for m in status["models"] if path is None or m.get("path") == path]
    files = tuple(json.dumps(m, sort_keys=True) for m in models)
    return status.get("nvml"), gpus, files


def versions(objects: Iterable[Object]) -> tuple[tuple[str, str], ...]:
    """Which objects, at which versions: equal for equal contents (a write moves the version)."""
    return tuple(sorted((o["metadata"]["uid"], o["metadata"].get("resourceVersion", "")) for o in objects))


def node_facts(node: Object | None) -> Hashable:
    """What of a Node the decisions read: its readiness (and since when) and its labels (the GPU
    count); not its version, which every status report of its kubelet moves."""
    if node is None:
        return None
    ready = tuple((c.get("status"), c.get("lastTransitionTime")) for c in node["status"]["conditions"])
    return ready, tuple(sorted((node["metadata"].get("labels") or {}).items()))


def collection(prefix: str, plural: str, scope: str | None) -> str:
    """A collection's URL: in one namespace, or in all (``scope`` None)."""
    return f"{prefix}/namespaces/{scope}/{plural}" if scope else f"{prefix}/{plural}"


class Index:
    """Objects by a key they carry (one object may have several keys), kept current from changes."""

    def __init__(self, keys: Callable[[Object], Iterable[str]]) -> None:
        self.keys = keys
        self._by_key: dict[str, dict[str, Object]] = defaultdict(dict)

    def update(self, change: Change) -> None:
        if change.old is not None:
            uid = change.old["metadata"]["uid"]
            for key in self.keys(change.old):
                self._by_key[key].pop(uid, None)
                if not self._by_key[key]:
                    del self._by_key[key]
        if change.new is not None:
            uid = change.new["metadata"]["uid"]
            for key in self.keys(change.new):
                self._by_key[key][uid] = change.new

    def get(self, key: str) -> list[Object]:
        return list(self._by_key.get(key, {}).values())


def _label(obj: Object, label: str) -> list[str]:
    value = obj["metadata"].get("labels", {}).get(label)
    return [value] if value else []


def _annotation(obj: Object, annotation: str) -> list[str]:
    value = obj["metadata"].get("annotations", {}).get(annotation)
    return [value] if value else []


def _namespaced_name(obj: Object) -> list[str]:
    return [f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"]


def _status_node(obj: Object) -> list[str]:
    node = (obj.get("status") or {}).get("node")
    return [node] if node else []


class ClusterCache:
    """What the operator sees; ``on_change(kind, change)`` hears every change once it is held."""

    def __init__(
        self,
        api: KubeApi,
        namespaces: list[str] | None,
        gpu_count_label: str,
        on_change: Callable[[str, Change], None],
        node_stale_seconds: float = 90.0,
    ) -> None:
        self.on_change = on_change
        self.node_stale_seconds = node_stale_seconds
        scopes: list[str | None] = list(namespaces) if namespaces else [None]

        self.llamamodels = [
            Informer(
                api, collection(LLAMAMODELS, PLURAL, scope), self._heard("llamamodel"), strip=strip_llamamodel
            )
            for scope in scopes
        ]

        def owned(resource: str, kind: str, strip: Callable[[Object], Object]) -> list[Informer]:
            return [
                Informer(
                    api,
                    collection("/api/v1", resource, scope),
                    self._heard(kind),
                    label_selector=OWN,
                    strip=strip,
                )
                for scope in scopes
            ]

        self.pods = owned("pods", "pod", strip_pod)
        self.services = owned("services", "service", strip_service)
        self.nodes = Informer(
            api, "/api/v1/nodes", self._heard("node"), strip=lambda node: strip_node(node, gpu_count_label)
        )
        self.llamanodes = Informer(
            api,
            f"{LLAMAMODELS}/{NODE_PLURAL}",
            self._heard("llamanode"),
            strip=strip_llamanode,
            optional=True,
        )
        self._parsed_llamanodes: dict[str, tuple[str, LlamaNode | None]] = {}  # by name: at a version
        self._llamamodel_by_name = Index(_namespaced_name)
        self._llamamodels_by_status_node = Index(_status_node)
        self._pods_by_owner = Index(lambda pod: _label(pod, names.LABEL_OWNER_UID))
        self._pods_by_node = Index(lambda pod: _annotation(pod, names.ANNOTATION_NODE))
        self._services_by_owner = Index(lambda service: _label(service, names.LABEL_OWNER_UID))
        self._services_by_name = Index(_namespaced_name)
        self._nodes_by_name = Index(lambda node: [node["metadata"]["name"]])
        self._llamanodes_by_name = Index(lambda node: [node["metadata"]["name"]])
        self.indexes: dict[str, list[Index]] = {
            "llamamodel": [self._llamamodel_by_name, self._llamamodels_by_status_node],
            "pod": [self._pods_by_owner, self._pods_by_node],
            "service": [self._services_by_owner, self._services_by_name],
            "node": [self._nodes_by_name],
            "llamanode": [self._llamanodes_by_name],
        }

    def _heard(self, kind: str) -> Callable[[Change], None]:
        def heard(change: Change) -> None:
            for index in self.indexes[kind]:
                index.update(change)
            self.on_change(kind, change)

        return heard

    @property
    def informers(self) -> list[Informer]:
        return [*self.llamamodels, *self.pods, *self.services, self.nodes, self.llamanodes]

    def informer_of(self, kind: str, namespace: str | None) -> Informer:
        """Where the operator's own write of an object goes in."""
        informers = {"pod": self.pods, "service": self.services, "llamamodel": self.llamamodels}[kind]
        if len(informers) == 1:
            return informers[0]
        return next(i for i in informers if f"/namespaces/{namespace}/" in i.path)

    # The questions the decisions ask

    def llamamodel(self, namespace: str, name: str) -> Object | None:
        found = self._llamamodel_by_name.get(f"{namespace}/{name}")
        return found[0] if found else None

    def all_llamamodels(self) -> list[Object]:
        return [lm for informer in self.llamamodels for lm in informer.store.values()]

    def llamamodels_on(self, node: str) -> list[Object]:
        """The LlamaModels whose status names the node: its holders by status, and its queue."""
        return self._llamamodels_by_status_node.get(node)

    def pods_of(self, owner_uid: str) -> list[Object]:
        return self._pods_by_owner.get(owner_uid)

    def pods_on(self, node: str) -> list[Object]:
        return self._pods_by_node.get(node)

    def services_of(self, owner_uid: str) -> list[Object]:
        return self._services_by_owner.get(owner_uid)

    def service(self, namespace: str, name: str) -> Object | None:
        found = self._services_by_name.get(f"{namespace}/{name}")
        return found[0] if found else None

    def node(self, name: str) -> Object | None:
        found = self._nodes_by_name.get(name)
        return found[0] if found else None

    def llamanode_object(self, name: str) -> Object | None:
        found = self._llamanodes_by_name.get(name)
        return found[0] if found else None

    def llamanode(self, name: str) -> LlamaNode | None:
        """The node's LlamaNode, parsed once per version; one that cannot be read counts as none
        (and is logged once)."""
        obj = self.llamanode_object(name)
        if obj is None:
            self._parsed_llamanodes.pop(name, None)
            return None
        version = obj["metadata"].get("resourceVersion", "")
        held = self._parsed_llamanodes.get(name)
        if held is None or held[0] != version:
            try:
                parsed: LlamaNode | None = parse_llamanode(obj)
            except InvalidSpec as exc:
                log.warning("LlamaNode %s cannot be read: %s", name, exc)
                parsed = None
            held = self._parsed_llamanodes[name] = (version, parsed)
        return held[1]

    def fit_inputs(self, body: Object, node: str, now: datetime) -> Hashable:
        """What the fit check of ``body`` on ``node`` reads of its LlamaNode, and whether the node's
        agent is to be trusted at ``now``."""
        obj = self.llamanode_object(node)
        if obj is None:
            return None
        path = ((body.get("spec") or {}).get("model") or {}).get("path")
        trusted = fresh(obj["status"].get("heartbeatAt"), self.node_stale_seconds, now)
        return trusted, llamanode_facts(obj, path)

    def decision_inputs(self, body: Object, node: str | None, now: datetime | None = None) -> Hashable:
        """Everything here that a decision about ``body`` (on ``node``) reads, by version: while it
        stays equal, deciding again decides the same, time apart (reconciler.Reconciler._observe).
        The fit is read only for a LlamaModel without a server (it gates a creation)."""
        uid = body["metadata"]["uid"]
        own_pods = self.pods_of(uid)
        checks_fit = node is not None and not own_pods
        return (
            body["metadata"].get("resourceVersion"),
            versions(own_pods),
            versions(self.services_of(uid)),
            versions(self.pods_on(node)) if node else (),
            versions(self.llamamodels_on(node)) if node else (),
            node_facts(self.node(node)) if node else None,
            self.fit_inputs(body, node, now or datetime.now(UTC)) if checks_fit and node else None,
        )

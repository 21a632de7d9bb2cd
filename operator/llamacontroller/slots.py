"""The slot ledger: which slot a LlamaModel asks for, and who stands in its way. Pure functions.

A slot is a named set of a node's GPUs (slot_table.py). Two claims on one node conflict when
their GPU sets overlap: gpu0 and gpu1 coexist, `both` excludes either.

Holders are the server Pods (a Pod holds its slot until it is gone from the API, even while it
terminates); waiters are the LlamaModels whose status says Waiting. Both are read from the cluster
on every decision, so an operator restart neither frees a held slot nor forgets the queue. Waiters
are served in creation order (creationTimestamp, then the order the operator first saw them wait):
a newer LlamaModel never overtakes an older waiter whose GPUs overlap its own, so a `both` request
is not starved by a stream of single-GPU ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llamacontroller.config import OperatorConfig
from llamacontroller.resource import GpuMode, GpuPlacement, LlamaModel
from llamacontroller.slot_table import slot_names, slot_table, whole_node_slot


class PlacementError(ValueError):
    """The LlamaModel asks for a placement the operator's settings cannot give."""


@dataclass(frozen=True)
class Placement:
    """A slot on a node, resolved from the slot table."""

    node: str
    slot: str
    gpus: frozenset[int]
    port: int
    tensor_split: str


@dataclass(frozen=True)
class Claim:
    """A slot held on a node by a LlamaModel: `holder` names it for people (`namespace/name`),
    `owner_uid` identifies it. A LlamaModel deleted and created again under the same name is
    another owner: its predecessor's Pod, still terminating, stands in its way like anyone's."""

    node: str
    slot: str
    gpus: frozenset[int]
    holder: str
    owner_uid: str


@dataclass(frozen=True, order=True)
class QueueKey:
    """A waiter's place in the queue; smaller is served first."""

    created: str
    waiting_since: str
    who: str


@dataclass(frozen=True)
class Waiter:
    """A LlamaModel waiting for a slot on a node (`who` for people, `owner_uid` to tell it apart)."""

    node: str
    slot: str
    gpus: frozenset[int]
    who: str
    key: QueueKey
    owner_uid: str


@dataclass(frozen=True)
class Verdict:
    """Whether a LlamaModel may take its slot now; if not, who holds it and who is ahead in line."""

    holders: tuple[Claim, ...] = ()
    ahead: tuple[Waiter, ...] = ()

    @property
    def granted(self) -> bool:
        return not self.holders and not self.ahead


def gpu_count_of(node: dict[str, Any] | None, label: str) -> int | None:
    """A node's GPU count from its label (e.g. nvidia.com/gpu.count), None when it does not say."""
    value = ((node or {}).get("metadata", {}).get("labels") or {}).get(label, "")
    return int(value) if value.isdigit() and int(value) > 0 else None


def slot_name(gpu: GpuPlacement, gpu_count: int) -> str:
    """The slot a GPU placement asks for: gpu<N> for one GPU, the whole-node slot for mode both."""
    return whole_node_slot(gpu_count) if gpu.mode is GpuMode.BOTH else f"gpu{gpu.gpu_id}"


def place(lm: LlamaModel, config: OperatorConfig, gpu_count: int | None = None) -> Placement:
    """Resolve a LlamaModel's node and slot; `gpu_count` is the node's (config's gpusPerNode if None)."""
    node = lm.spec.node_name or config.default_node
    if not node:
        raise PlacementError("no node: set spec.nodeName, or defaultNode in the operator's config")
    count = gpu_count or config.gpus_per_node
    name = slot_name(lm.spec.gpu, count)
    table = slot_table(count, config.ports)
    slot = table.get(name)
    if slot is None:
        reason = (
            f"node {node} has {count} GPUs"
            if name not in slot_names(count)
            else "the port table has no port for it"
        )
        field = "spec.gpu.mode" if lm.spec.gpu.mode is GpuMode.BOTH else "spec.gpu.gpuId"
        raise PlacementError(f"{field}: slot {name} is not available: {reason} (slots: {', '.join(table)})")
    if lm.spec.gpu.tensor_split is not None and len(lm.spec.gpu.tensor_split.split(",")) != count:
        ratios = len(lm.spec.gpu.tensor_split.split(","))
        raise PlacementError(f"spec.gpu.tensorSplit has {ratios} ratios; node {node} has {count} GPUs")
    return Placement(
        node=node,
        slot=name,
        gpus=slot.gpus,
        port=slot.port,
        tensor_split=lm.spec.gpu.tensor_split or slot.tensor_split,
    )


def conflicting(wanted: Placement, claims: Iterable[Claim], me: str) -> list[Claim]:
    """The claims of others (an owner UID other than `me`) that overlap the wanted slot's GPUs on
    its node, each once, sorted. One holder may be seen twice (its Pod and its status): one claim."""
    found = {c for c in claims if c.owner_uid != me and c.node == wanted.node and c.gpus & wanted.gpus}
    return sorted(found, key=lambda c: (c.holder, c.slot))


def _named(who: str, slot: str, wanted: Placement) -> str:
    return who if slot == wanted.slot else f"{who} ({slot})"


def describe_holders(wanted: Placement, holders: list[Claim]) -> str:
    """`gpu1 on node-a is held by default/phi-4`, for status messages and events."""
    by = ", ".join(_named(c.holder, c.slot, wanted) for c in holders)
    return f"{wanted.slot} on {wanted.node} is held by {by}"


def judge(
    wanted: Placement, me: str, my_key: QueueKey, claims: Iterable[Claim], waiters: Iterable[Waiter]
) -> Verdict:
    """May `me` (an owner UID) take the wanted slot now? Not while another holds an overlapping slot,
    nor while an older waiter wants overlapping GPUs of the node."""
    ahead = sorted(
        (
            w
            for w in waiters
            if w.owner_uid != me and w.node == wanted.node and w.gpus & wanted.gpus and w.key < my_key
        ),
        key=lambda w: w.key,
    )
    return Verdict(holders=tuple(conflicting(wanted, claims, me)), ahead=tuple(ahead))


def describe_verdict(wanted: Placement, verdict: Verdict) -> str:
    """Why a LlamaModel waits: `gpu1 on node-a is held by default/a; default/b (both) asked first`."""
    queue = ", ".join(_named(w.who, w.slot, wanted) for w in verdict.ahead)
    if not verdict.holders:
        return f"{wanted.slot} on {wanted.node} is free, but {queue} asked first"
    held = describe_holders(wanted, list(verdict.holders))
    return f"{held}; {queue} asked first" if queue else held

"""Slot arithmetic: which slot a LlamaModel asks for, and who stands in its way. Pure functions.

A slot is a named set of a node's GPUs (config/operator.yaml). Two claims on one node conflict when
their GPU sets overlap: gpu0 and gpu1 coexist, `both` excludes either.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from llamacontroller.config import OperatorConfig
from llamacontroller.resource import GpuMode, GpuPlacement, LlamaModel

SLOT_FOR_MODE = {GpuMode.BOTH: "both"}


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
    """A slot held on a node, by a LlamaModel named `namespace/name` (from a running Pod)."""

    node: str
    slot: str
    gpus: frozenset[int]
    holder: str


def slot_name(gpu: GpuPlacement) -> str:
    """The slot table's key for a GPU placement: gpu<N> for one GPU, `both` for the whole node."""
    return SLOT_FOR_MODE.get(gpu.mode, f"gpu{gpu.gpu_id}")


def place(lm: LlamaModel, config: OperatorConfig) -> Placement:
    """Resolve a LlamaModel's node and slot against the slot table."""
    node = lm.spec.node_name or config.default_node
    if not node:
        raise PlacementError("no node: set spec.nodeName, or defaultNode in the operator's config")
    name = slot_name(lm.spec.gpu)
    slot = config.slots.get(name)
    if slot is None:
        known = ", ".join(sorted(config.slots))
        raise PlacementError(f"slot {name} is not in the operator's slot table (known: {known})")
    if lm.spec.gpu.tensor_split is not None:
        wanted, have = len(lm.spec.gpu.tensor_split.split(",")), len(slot.tensor_split.split(","))
        if wanted != have:
            raise PlacementError(f"spec.gpu.tensorSplit has {wanted} ratios; the node has {have} GPUs")
    return Placement(
        node=node,
        slot=name,
        gpus=frozenset(slot.gpus),
        port=slot.port,
        tensor_split=lm.spec.gpu.tensor_split or slot.tensor_split,
    )


def conflicting(wanted: Placement, claims: Iterable[Claim], me: str) -> list[Claim]:
    """The claims of others that overlap the wanted slot's GPUs on its node, holders sorted."""
    return sorted(
        (c for c in claims if c.holder != me and c.node == wanted.node and c.gpus & wanted.gpus),
        key=lambda c: (c.holder, c.slot),
    )


def describe_holders(wanted: Placement, holders: list[Claim]) -> str:
    """`gpu1 on node-a is held by default/phi-4`, for status messages and events."""
    by = ", ".join(f"{c.holder}" + ("" if c.slot == wanted.slot else f" ({c.slot})") for c in holders)
    return f"{wanted.slot} on {wanted.node} is held by {by}"

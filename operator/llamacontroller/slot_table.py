"""The slot table: the slots a node with N GPUs offers, the GPUs each occupies, its port and split.

Pure data from two inputs (the node's GPU count and the configured ports); it imports nothing of
this project, so the settings (config.py) and the ledger's rules (slots.py) both build on it.
"""

from __future__ import annotations

from dataclasses import dataclass

# The slot that spans a whole node: `both` on the common two-GPU node, `all` on any other.
WHOLE_NODE_SLOT = {2: "both"}
DEFAULT_WHOLE_NODE_SLOT = "all"


@dataclass(frozen=True)
class Slot:
    """One way to place a server on a node's GPUs: derived from the node's GPU count and the ports."""

    gpus: frozenset[int]
    port: int
    tensor_split: str


def whole_node_slot(gpu_count: int) -> str:
    return WHOLE_NODE_SLOT.get(gpu_count, DEFAULT_WHOLE_NODE_SLOT)


def slot_names(gpu_count: int) -> list[str]:
    """Every slot of a node: gpu0 .. gpu<N-1>, then the whole node."""
    return [f"gpu{i}" for i in range(gpu_count)] + [whole_node_slot(gpu_count)]


def _ratio(value: float) -> str:
    return f"{value:g}"


def slot_table(gpu_count: int, ports: dict[str, int]) -> dict[str, Slot]:
    """The slots of a node with `gpu_count` GPUs; a slot without a port in the table is not offered.

    A single GPU gets a one-hot split (`0,1`), the whole node an even one (`0.5,0.5`).
    """
    singles = {
        f"gpu{i}": (frozenset({i}), ",".join("1" if j == i else "0" for j in range(gpu_count)))
        for i in range(gpu_count)
    }
    whole = {
        whole_node_slot(gpu_count): (
            frozenset(range(gpu_count)),
            ",".join([_ratio(1 / gpu_count)] * gpu_count),
        )
    }
    return {
        name: Slot(gpus=gpus, port=ports[name], tensor_split=split)
        for name, (gpus, split) in (singles | whole).items()
        if name in ports
    }


def slot_gpus(slot: str, gpu_count: int, ports: dict[str, int]) -> frozenset[int]:
    """The GPUs a slot occupies; a slot unknown to the node's table is taken to span every GPU:
    only that is safe to assume of a server whose slot cannot be read."""
    known = slot_table(gpu_count, ports).get(slot)
    return known.gpus if known else frozenset(range(gpu_count))

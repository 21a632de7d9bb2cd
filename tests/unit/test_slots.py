import pytest

from llamacontroller.resource import parse_llamamodel
from llamacontroller.slots import Claim, PlacementError, conflicting, describe_holders, place
from tests.unit.helpers import llamamodel, repo_config


@pytest.mark.parametrize(
    ("gpu", "slot", "port", "split"),
    [
        ({"mode": "single", "gpuId": 0}, "gpu0", 8081, "1,0"),
        ({"mode": "single", "gpuId": 1}, "gpu1", 8088, "0,1"),
        ({"mode": "both"}, "both", 8081, "0.5,0.5"),
        ({"mode": "both", "tensorSplit": "0.7,0.3"}, "both", 8081, "0.7,0.3"),
        ({}, "gpu0", 8081, "1,0"),
    ],
)
def test_slot_table_gives_port_and_split(gpu, slot, port, split):
    placement = place(parse_llamamodel(llamamodel(gpu=gpu)), repo_config())
    assert (placement.slot, placement.port, placement.tensor_split, placement.node) == (
        slot,
        port,
        split,
        "node-a",
    )


def test_default_node_comes_from_config():
    body = llamamodel()
    del body["spec"]["nodeName"]
    assert place(parse_llamamodel(body), repo_config(default_node="solo")).node == "solo"


def test_no_node_at_all_is_a_placement_error():
    body = llamamodel()
    del body["spec"]["nodeName"]
    with pytest.raises(PlacementError, match=r"set spec\.nodeName"):
        place(parse_llamamodel(body), repo_config(default_node=""))


def test_gpu_outside_the_table_is_a_placement_error():
    with pytest.raises(PlacementError, match=r"slot gpu2 is not in the operator's slot table \(known: both"):
        place(parse_llamamodel(llamamodel(gpu={"gpuId": 2})), repo_config())


def test_tensor_split_must_cover_every_gpu():
    with pytest.raises(PlacementError, match="has 3 ratios; the node has 2 GPUs"):
        place(parse_llamamodel(llamamodel(gpu={"mode": "both", "tensorSplit": "1,1,1"})), repo_config())


def _claim(slot: str, gpus: set[int], holder: str, node: str = "node-a") -> Claim:
    return Claim(node=node, slot=slot, gpus=frozenset(gpus), holder=holder)


@pytest.mark.parametrize(
    ("wanted", "held", "conflict"),
    [
        ({"gpuId": 0}, ("gpu1", {1}), False),
        ({"gpuId": 1}, ("gpu0", {0}), False),
        ({"gpuId": 0}, ("gpu0", {0}), True),
        ({"mode": "both"}, ("gpu0", {0}), True),
        ({"mode": "both"}, ("gpu1", {1}), True),
        ({"gpuId": 1}, ("both", {0, 1}), True),
    ],
)
def test_conflicts_are_overlapping_gpus(wanted, held, conflict):
    placement = place(parse_llamamodel(llamamodel(gpu=wanted)), repo_config())
    holders = conflicting(placement, [_claim(held[0], held[1], "default/other")], me="default/phi-4")
    assert bool(holders) is conflict


def test_own_claims_and_other_nodes_never_conflict():
    placement = place(parse_llamamodel(llamamodel()), repo_config())
    claims = [_claim("gpu0", {0}, "default/phi-4"), _claim("gpu0", {0}, "default/x", node="node-b")]
    assert conflicting(placement, claims, me="default/phi-4") == []


def test_holder_message_names_slot_node_and_holder():
    placement = place(parse_llamamodel(llamamodel(gpu={"mode": "both"})), repo_config())
    holders = conflicting(placement, [_claim("gpu1", {1}, "team/phi-4")], me="default/big")
    assert describe_holders(placement, holders) == "both on node-a is held by team/phi-4 (gpu1)"

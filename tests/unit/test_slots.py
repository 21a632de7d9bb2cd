import pytest

from llamacontroller.resource import parse_llamamodel
from llamacontroller.slot_table import slot_table
from llamacontroller.slots import (
    Claim,
    PlacementError,
    QueueKey,
    Waiter,
    conflicting,
    describe_holders,
    describe_verdict,
    gpu_count_of,
    judge,
    place,
)
from tests.support.builders import llamamodel, repo_config


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
    message = (
        r"^spec\.gpu\.gpuId: slot gpu2 is not available: node node-a has 2 GPUs \(slots: gpu0, gpu1, both\)"
    )
    with pytest.raises(PlacementError, match=message):
        place(parse_llamamodel(llamamodel(gpu={"gpuId": 2})), repo_config())


def test_tensor_split_must_cover_every_gpu():
    with pytest.raises(PlacementError, match="has 3 ratios; node node-a has 2 GPUs"):
        place(parse_llamamodel(llamamodel(gpu={"mode": "both", "tensorSplit": "1,1,1"})), repo_config())


def _claim(slot: str, gpus: set[int], holder: str, node: str = "node-a", uid: str | None = None) -> Claim:
    """A claim whose owner's UID is its name unless given (these tests judge names)."""
    return Claim(node=node, slot=slot, gpus=frozenset(gpus), holder=holder, owner_uid=uid or holder)


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


def test_a_predecessor_of_the_same_name_is_another_holder():
    """Deleted and created again under its name: the old Pod, still terminating, is not `me`."""
    placement = place(parse_llamamodel(llamamodel(gpu={"mode": "both"})), repo_config())
    old = _claim("gpu0", {0}, "default/phi-4", uid="uid-old")
    assert conflicting(placement, [old], me="uid-new") == [old]
    assert conflicting(placement, [old], me="uid-old") == []


def test_holder_message_names_slot_node_and_holder():
    placement = place(parse_llamamodel(llamamodel(gpu={"mode": "both"})), repo_config())
    holders = conflicting(placement, [_claim("gpu1", {1}, "team/phi-4")], me="default/big")
    assert describe_holders(placement, holders) == "both on node-a is held by team/phi-4 (gpu1)"


def _waiter(
    slot: str, gpus: set[int], who: str, created: str, since: str = "", node: str = "node-a"
) -> Waiter:
    key = QueueKey(created, since, who)
    return Waiter(node=node, slot=slot, gpus=frozenset(gpus), who=who, key=key, owner_uid=who)


def _placement(gpu: dict):
    return place(parse_llamamodel(llamamodel(gpu=gpu)), repo_config())


def test_a_free_slot_is_granted():
    verdict = judge(_placement({"gpuId": 0}), "default/me", QueueKey("t1", "", "default/me"), [], [])
    assert verdict.granted


def test_an_older_overlapping_waiter_goes_first_even_if_my_slot_is_free():
    older_both = _waiter("both", {0, 1}, "default/big", "t0")
    placement = _placement({"gpuId": 0})
    verdict = judge(placement, "default/me", QueueKey("t1", "", "default/me"), [], [older_both])
    assert not verdict.granted and verdict.ahead == (older_both,)
    assert (
        describe_verdict(placement, verdict) == "gpu0 on node-a is free, but default/big (both) asked first"
    )


def test_younger_or_unrelated_waiters_do_not_block():
    younger = _waiter("gpu0", {0}, "default/young", "t2")
    other_gpu = _waiter("gpu1", {1}, "default/one", "t0")
    other_node = _waiter("gpu0", {0}, "default/far", "t0", node="node-b")
    verdict = judge(
        _placement({"gpuId": 0}),
        "default/me",
        QueueKey("t1", "", "default/me"),
        [],
        [younger, other_gpu, other_node],
    )
    assert verdict.granted


def test_same_second_waiters_are_ordered_by_when_they_started_waiting():
    first = _waiter("gpu0", {0}, "default/zz", "t0", since="t0.1")
    me = QueueKey("t0", "t0.2", "default/aa")
    assert not judge(_placement({"gpuId": 0}), "default/aa", me, [], [first]).granted
    assert judge(
        _placement({"gpuId": 0}),
        "default/zz",
        first.key,
        [],
        [_waiter("gpu0", {0}, "default/aa", "t0", "t0.2")],
    ).granted


def test_holders_and_queue_are_both_named():
    placement = _placement({"mode": "both"})
    verdict = judge(
        placement,
        "default/me",
        QueueKey("t9", "", "default/me"),
        [_claim("gpu1", {1}, "default/h")],
        [_waiter("gpu0", {0}, "default/w", "t1")],
    )
    assert (
        describe_verdict(placement, verdict)
        == "both on node-a is held by default/h (gpu1); default/w (gpu0) asked first"
    )


PORTS = {"gpu0": 8081, "gpu1": 8088, "both": 8081, "gpu2": 8082, "gpu3": 8083, "all": 8081}


def test_slot_table_of_a_two_gpu_node():
    table = slot_table(2, PORTS)
    assert {name: (sorted(s.gpus), s.port, s.tensor_split) for name, s in table.items()} == {
        "gpu0": ([0], 8081, "1,0"),
        "gpu1": ([1], 8088, "0,1"),
        "both": ([0, 1], 8081, "0.5,0.5"),
    }


def test_slot_table_of_a_four_gpu_node():
    table = slot_table(4, PORTS)
    assert list(table) == ["gpu0", "gpu1", "gpu2", "gpu3", "all"]
    assert table["gpu2"].tensor_split == "0,0,1,0"
    assert table["all"].tensor_split == "0.25,0.25,0.25,0.25" and table["all"].gpus == frozenset(range(4))


def test_slots_without_a_port_are_not_offered():
    assert "gpu2" not in slot_table(3, {"gpu0": 1, "gpu1": 2, "all": 3})


def test_a_four_gpu_node_places_gpu2_and_all():
    config = repo_config()
    gpu2 = place(parse_llamamodel(llamamodel(gpu={"gpuId": 2})), config, gpu_count=4)
    whole = place(parse_llamamodel(llamamodel(gpu={"mode": "both"})), config, gpu_count=4)
    assert (gpu2.slot, gpu2.port, gpu2.tensor_split) == ("gpu2", 8082, "0,0,1,0")
    assert (whole.slot, whole.tensor_split) == ("all", "0.25,0.25,0.25,0.25")


@pytest.mark.parametrize(
    ("labels", "count"),
    [({"nvidia.com/gpu.count": "4"}, 4), ({}, None), ({"nvidia.com/gpu.count": "x"}, None)],
)
def test_gpu_count_from_the_node_label(labels, count):
    assert gpu_count_of({"metadata": {"labels": labels}}, "nvidia.com/gpu.count") == count
    assert gpu_count_of(None, "nvidia.com/gpu.count") is None


def test_config_must_give_every_default_slot_a_port():
    from llamacontroller.config import OperatorConfig

    with pytest.raises(ValueError, match="no port for slot both"):
        OperatorConfig.model_validate(
            {"ports": {"gpu0": 1, "gpu1": 2}, "modelsVolume": {"hostPath": {"path": "/m"}}}
        )

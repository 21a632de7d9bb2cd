"""The memory estimate's rules, on hand-computed cases: where each layer goes, what the KV cache
and the weights take on each device, which arguments count, and the allocator replay's layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamacontroller.demo_model import DemoShape, write_demo_model
from llamacontroller.fit.allocator import Tensor, buffer_size
from llamacontroller.fit.estimate import (
    HOST,
    MiB,
    ServerSettings,
    estimate,
    layer_devices,
    server_settings,
    slot_estimate,
)
from llamacontroller.fit.model import EstimateError, ModelFacts, model_facts
from llamacontroller.gguf_header import read_header
from llamacontroller.resource import ServerParameters, parse_llamamodel
from llamacontroller.slots import place
from tests.support.builders import llamamodel, repo_config

H = HOST


@pytest.fixture(scope="module")
def facts(tmp_path_factory: pytest.TempPathFactory) -> ModelFacts:
    """The demo model with 6 layers and grouped-query attention: 64 wide, 2 heads of 32, 1 KV head."""
    shape = DemoShape(block_count=6, head_count=2, head_count_kv=1)
    path = write_demo_model(tmp_path_factory.mktemp("m") / "m.gguf", shape=shape)
    return model_facts(read_header(path))


@pytest.mark.parametrize(
    ("n_gpu_layers", "split", "devices"),
    [
        (99, (), [H] * 5),  # no GPU: everything on the host
        (0, (1.0,), [H] * 5),
        (99, (1.0,), [0] * 5),
        (1, (1.0,), [H, H, H, H, 0]),  # the output layer is the first to go
        (2, (1.0,), [H, H, H, 0, 0]),
        (99, (0.5, 0.5), [0, 0, 0, 1, 1]),  # 5 of 5: positions 0, .2, .4 | .6, .8
        (99, (0.0, 1.0), [1] * 5),  # a ratio of 0 keeps a GPU free of layers
        (99, (1.0, 0.0), [0] * 5),
        (3, (0.5, 0.5), [H, H, 0, 0, 1]),
        (99, (0.0, 0.0), [0, 0, 0, 1, 1]),  # no ratios given: even
    ],
)
def test_layers_go_to_the_devices_of_their_share(n_gpu_layers: int, split: tuple, devices: list[int]):
    assert layer_devices(4, n_gpu_layers, split) == devices


def test_the_facts_of_a_header(facts: ModelFacts):
    dims = (facts.n_layer, facts.n_embd, facts.n_head[0], facts.n_head_kv[0], facts.head_k)
    assert dims == (6, 64, 2, 1, 32)
    assert facts.n_embd_k_gqa(0) == facts.n_embd_v_gqa(5) == 32
    # per layer: norms 2 x 64, q and o 64x64, k and v 32x64, gate/up/down 3 x 64x128, all f32
    assert facts.layer_bytes[0] == 4 * (2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128)
    assert facts.input_bytes == facts.output_bytes == 4 * 64 * facts.n_vocab and not facts.tied_output
    assert facts.file_bytes == sum(t.nbytes or 0 for t in read_header(facts.path).tensors)


def test_the_kv_cache_of_each_layer_sits_with_it_in_its_cache_types(facts: ModelFacts):
    settings = ServerSettings(ctx_size=1000, parallel=1, n_gpu_layers=3, cache_type_k="q8_0")
    result = estimate(facts, settings, (1.0,), overhead=0)
    assert result.n_ctx == 1024  # padded to 256
    # per cell and layer: 32 keys in q8_0 (one 34-byte block) + 32 values in f16 (64 bytes)
    per_layer = 1024 * (34 + 64)
    assert (result.gpus[0].kv_cache, result.host.kv_cache) == (2 * per_layer, 4 * per_layer)


def test_parallel_sequences_share_the_context_unless_it_is_unified(facts: ModelFacts):
    split = estimate(facts, ServerSettings(ctx_size=1000, parallel=3), (1.0,))
    assert (split.n_ctx_seq, split.n_ctx, split.kv_unified) == (512, 1536, False)  # 1024 / 3, padded
    unified = estimate(facts, ServerSettings(ctx_size=1000, parallel=3, kv_unified=True), (1.0,))
    assert (unified.n_ctx_seq, unified.n_ctx, unified.kv_unified) == (1024, 1024, True)
    auto = estimate(facts, ServerSettings(ctx_size=4096), (1.0,))  # parallel auto: 4 sequences, unified
    assert (auto.n_seq, auto.n_ctx, auto.kv_unified) == (4, 4096, True)


def test_weights_split_by_layer_and_the_token_embeddings_stay_on_the_host(facts: ModelFacts):
    result = estimate(facts, ServerSettings(ctx_size=512, parallel=1), (0.5, 0.5), overhead=7)
    layers = facts.layer_bytes[0]
    outside = facts.output_bytes + facts.other_bytes  # the output layer: with the last GPU
    # 7 of 7 layers: positions 0/7 .. 3/7 on GPU 0, 4/7 .. 6/7 (with the output layer) on GPU 1
    assert (result.gpus[0].weights, result.gpus[1].weights) == (4 * layers, 2 * layers + outside)
    assert result.host.weights == facts.input_bytes
    assert all(gpu.overhead == 7 for gpu in result.gpus) and result.host.overhead == 0
    assert result.notes == (
        "over several GPUs with every layer offloaded llama.cpp pipelines ubatches and keeps up to 4 "
        "copies of each GPU's inputs: its compute buffers grow beyond this estimate",
    )


def test_a_model_without_an_output_head_loads_its_embeddings_again_where_the_output_runs(tmp_path: Path):
    header = read_header(write_demo_model(tmp_path / "m.gguf"))
    tied = model_facts(header)
    object.__setattr__(tied, "tied_output", True)  # the demo model has a head: pretend it had none
    object.__setattr__(tied, "output_bytes", tied.input_bytes)
    on_gpu = estimate(tied, ServerSettings(ctx_size=512), (1.0,))
    assert on_gpu.gpus[0].weights == sum(tied.layer_bytes) + tied.other_bytes + tied.input_bytes
    on_host = estimate(tied, ServerSettings(ctx_size=512, n_gpu_layers=0), (1.0,))
    assert on_host.host.weights == sum(tied.layer_bytes) + tied.other_bytes + tied.input_bytes  # once


def test_extra_args_win_over_the_typed_parameters():
    parameters = ServerParameters(
        ctx_size=4096,
        parallel=2,
        cache_type_k="q4_0",
        extra_args=["--jinja", "-c", "8192", "--cache-type-k=q8_0", "-ctv", "q8_0", "-kvu", "-ub", "256"],
    )
    assert server_settings(parameters) == ServerSettings(
        ctx_size=8192,
        parallel=2,
        kv_unified=True,
        cache_type_k="q8_0",
        cache_type_v="q8_0",
        ubatch_size=256,
    )
    with pytest.raises(EstimateError, match="extraArgs: -c 'lots' is not a number"):
        server_settings(ServerParameters(extra_args=["-c", "lots"]))


def test_a_cache_type_llama_server_does_not_take(facts: ModelFacts, tmp_path: Path):
    with pytest.raises(EstimateError, match="--cache-type-k q3_k: not a KV cache type"):
        estimate(facts, ServerSettings(cache_type_k="q3_k"), ())
    small_heads = model_facts(read_header(write_demo_model(tmp_path / "m.gguf")))  # heads of 16
    with pytest.raises(EstimateError, match="q8_0: its blocks of 32 do not divide the model's heads of 16"):
        estimate(small_heads, ServerSettings(cache_type_v="q8_0"), ())


def test_a_slot_estimate_names_the_node_gpus_the_server_sees(facts: ModelFacts):
    lm = parse_llamamodel(llamamodel(gpu={"mode": "single", "gpuId": 1}))
    for strategy, indices in (("pinned", (1,)), ("allVisible", (0, 1)), ("devicePlugin", (1,))):
        config = repo_config(gpu_strategy=strategy, fit={"gpuOverheadMiB": 5})
        slot = slot_estimate(lm, place(lm, config), config, facts, 2)
        assert slot.gpu_indices == indices, strategy
        assert sum(gpu.weights for gpu in slot.estimate.gpus) == facts.file_bytes - facts.input_bytes
        assert [gpu.overhead for gpu in slot.estimate.gpus] == [5 * MiB] * len(indices)


# --- the allocator replay ------------------------------------------------------------------------


def test_the_allocator_reuses_a_source_in_place_and_frees_what_nobody_reads():
    weights = Tensor("w", 0, external=True)
    x = Tensor("x", 100, input=True)
    a = Tensor("a", 1000, (weights, x))  # 1000 at 128 (x's 100 take 128 at 0, padded to 32)
    b = Tensor("b", 1000, (a,), inplace=True)  # a's only reader: b takes a's memory
    c = Tensor("c", 2000, (b, weights))  # 2000 at 1152
    d = Tensor("d", 500, (c,))  # b is free: the first block that fits (128) takes it
    assert buffer_size([a, b, c, d]) == 128 + 1024 + 2016
    assert (a.offset, b.offset, c.offset, d.offset) == (128, 128, 1152, 128)


def test_a_view_keeps_its_source_until_its_own_readers_are_done():
    a = Tensor("a", 1024, ())
    view = Tensor("view", 1024, (a,), view_of=a)
    b = Tensor("b", 1024, (view,), inplace=True)  # a view's memory is not its own: b gets new memory
    c = Tensor("c", 1024, (b,))  # the view is done: a is free, and c takes it
    assert buffer_size([a, view, b, c]) == 2048
    assert (a.offset, b.offset, c.offset) == (0, 1024, 0)

import pytest

from llamacontroller.render.args import on_this_machine, plan_server, server_args
from llamacontroller.resource import parse_llamamodel
from llamacontroller.slots import place
from tests.support.builders import gpu_flags, llamamodel, repo_config


def _args(strategy: str = "pinned", gpu_count: int | None = None, **spec):
    config = repo_config(gpu_strategy=strategy)
    lm = parse_llamamodel(llamamodel(**spec))
    return server_args(plan_server(lm, place(lm, config, gpu_count), config))


def _value(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_required_flags_come_first_in_a_stable_order():
    args = _args(gpu={"gpuId": 1})
    assert args[:12] == [
        "--model", "/models/phi-4.gguf",
        "--host", "0.0.0.0",
        "--port", "8088",
        "--split-mode", "none",
        "--main-gpu", "0",
        "--alias", "phi-4:latest",
    ]  # fmt: skip
    assert "--metrics" in args


@pytest.mark.parametrize(
    ("strategy", "gpu_count", "gpu", "flags"),
    [
        # pinned: the server sees the slot's GPUs only, and splits over those
        ("pinned", 2, {"gpuId": 0}, "--split-mode none --main-gpu 0"),
        ("pinned", 2, {"gpuId": 1}, "--split-mode none --main-gpu 0"),
        ("pinned", 4, {"gpuId": 3}, "--split-mode none --main-gpu 0"),
        ("pinned", 2, {"mode": "both"}, "--split-mode layer --tensor-split 0.5,0.5"),
        (
            "pinned",
            2,
            {"mode": "both", "tensorSplit": "0.7,0.3"},
            "--split-mode layer --tensor-split 0.7,0.3",
        ),
        ("pinned", 4, {"mode": "both"}, "--split-mode layer --tensor-split 0.25,0.25,0.25,0.25"),
        # allVisible: every GPU is seen, a node-wide one-hot split keeps the layers on the slot's
        ("allVisible", 2, {"gpuId": 0}, "--tensor-split 1,0"),
        ("allVisible", 2, {"gpuId": 1}, "--tensor-split 0,1"),
        ("allVisible", 4, {"gpuId": 2}, "--tensor-split 0,0,1,0"),
        ("allVisible", 2, {"mode": "both"}, "--tensor-split 0.5,0.5"),
        # devicePlugin: the plugin's single device needs no split; the whole node keeps its own
        ("devicePlugin", 2, {"gpuId": 1}, ""),
        ("devicePlugin", 2, {"mode": "both", "tensorSplit": "0.6,0.4"}, "--tensor-split 0.6,0.4"),
    ],
)
def test_gpu_flags_per_strategy_and_slot(strategy: str, gpu_count: int, gpu: dict, flags: str):
    assert gpu_flags(_args(strategy, gpu_count, gpu=gpu)) == flags


def test_config_defaults_fill_unset_parameters():
    args = _args()
    assert (_value(args, "--ctx-size"), _value(args, "--n-gpu-layers"), _value(args, "--parallel")) == (
        "4096",
        "999",
        "1",
    )
    assert "--threads" not in args and "--flash-attn" not in args and "--batch-size" not in args


def test_typed_parameters_override_defaults():
    args = _args(
        parameters={"ctxSize": 1024, "threads": 4, "batchSize": 256, "parallel": 3, "flashAttn": "off"}
    )
    assert [
        _value(args, f) for f in ("--ctx-size", "--threads", "--batch-size", "--parallel", "--flash-attn")
    ] == [
        "1024",
        "4",
        "256",
        "3",
        "off",
    ]


def test_extra_args_come_last_verbatim_so_they_win():
    args = _args(parameters={"ctxSize": 1024, "extraArgs": ["--ctx-size", "2048", "--jinja"]})
    assert args[-3:] == ["--ctx-size", "2048", "--jinja"]


def test_custom_split_for_both():
    assert _value(_args(gpu={"mode": "both", "tensorSplit": "0.7,0.3"}), "--tensor-split") == "0.7,0.3"


def _plan(**spec):
    config = repo_config()
    lm = parse_llamamodel(llamamodel(**spec))
    return plan_server(lm, place(lm, config), config)


def test_on_this_machine_only_host_port_and_model_differ():
    plan = _plan(parameters={"extraArgs": ["--jinja"]})
    pod_args = server_args(plan)
    local = server_args(on_this_machine(plan, "127.0.0.1", 5555, "/tmp/m.gguf", None))
    assert [local[local.index(f) + 1] for f in ("--host", "--port", "--model")] == [
        "127.0.0.1",
        "5555",
        "/tmp/m.gguf",
    ]
    changed = {i for i, (a, b) in enumerate(zip(pod_args, local, strict=True)) if a != b}
    assert {pod_args[i - 1] for i in changed} == {"--host", "--port", "--model"}


def test_a_projector_follows_the_model_from_the_models_volume():
    args = _args(model={"path": "gemma-3-4b.gguf", "projector": "mmproj/gemma-3-4b-f16.gguf"})
    assert args[:4] == [
        "--model",
        "/models/gemma-3-4b.gguf",
        "--mmproj",
        "/models/mmproj/gemma-3-4b-f16.gguf",
    ]
    assert "--mmproj" not in _args()


def test_on_this_machine_maps_the_projector_too():
    plan = _plan(model={"path": "m.gguf", "projector": "p.gguf"})
    local = server_args(on_this_machine(plan, "127.0.0.1", 5555, "/tmp/m.gguf", "/tmp/p.gguf"))
    assert _value(local, "--model") == "/tmp/m.gguf" and _value(local, "--mmproj") == "/tmp/p.gguf"
    changed = [i for i, (a, b) in enumerate(zip(server_args(plan), local, strict=True)) if a != b]
    assert len(changed) == 4


def test_an_embedding_model_gets_the_embeddings_and_pooling_flags():
    args = _args(parameters={"embeddings": True, "pooling": "mean"})
    assert "--embeddings" in args and _value(args, "--pooling") == "mean"
    assert "--embeddings" not in _args() and "--pooling" not in _args()


def test_cache_types_render_as_their_flags():
    args = _args(parameters={"cacheTypeK": "q8_0", "cacheTypeV": "q4_0"})
    assert (_value(args, "--cache-type-k"), _value(args, "--cache-type-v")) == ("q8_0", "q4_0")
    assert "--cache-type-k" not in _args() and "--cache-type-v" not in _args()

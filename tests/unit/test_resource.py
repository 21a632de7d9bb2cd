import pytest

from llamacontroller.resource import InvalidSpec, normalize_model_name, parse_llamamodel
from tests.support.builders import llamamodel


def test_model_name_defaults_to_object_name_with_latest_tag():
    lm = parse_llamamodel(llamamodel(name="phi-4"))
    assert lm.model_name == "phi-4:latest"


def test_explicit_model_name_keeps_its_tag():
    lm = parse_llamamodel(llamamodel(model={"name": "qwen2.5-coder:7b", "path": "q.gguf"}))
    assert lm.model_name == "qwen2.5-coder:7b"


@pytest.mark.parametrize(
    ("name", "normalized"),
    [
        ("llama3.2", "llama3.2:latest"),
        ("llama3.2:latest", "llama3.2:latest"),
        ("registry.local:5000/library/llama3", "registry.local:5000/library/llama3:latest"),
        ("ns/model:q4", "ns/model:q4"),
    ],
)
def test_normalize_model_name(name, normalized):
    assert normalize_model_name(name) == normalized


def test_camel_case_fields_are_read():
    lm = parse_llamamodel(
        llamamodel(gpu={"mode": "single", "gpuId": 1}, parameters={"ctxSize": 2048, "flashAttn": "on"})
    )
    assert lm.spec.gpu.gpu_id == 1
    assert lm.spec.parameters.ctx_size == 2048
    assert lm.spec.parameters.flash_attn == "on"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"gpu": {"mode": "triple"}}, "spec.gpu.mode: Input should be 'single' or 'both'"),
        ({"gpu": {"mode": "single", "tensorSplit": "0.5,0.5"}}, "tensorSplit applies to mode 'both' only"),
        ({"gpu": {"mode": "both", "gpuId": 1}}, "gpuId applies to mode 'single' only"),
        ({"gpu": {"mode": "both", "tensorSplit": "0,0"}}, "at least one non-zero ratio"),
        ({"gpu": {"mode": "both", "tensorSplit": "half"}}, "spec.gpu.tensorSplit: String should match"),
        ({"model": {"path": "/etc/passwd.gguf"}}, "spec.model.path: String should match"),
        ({"model": {"path": "../other/model.gguf"}}, "must stay inside the models volume"),
        ({"model": {"path": "model.bin"}}, "spec.model.path: String should match"),
        ({"model": {"path": "m.gguf", "projector": "../mmproj.gguf"}}, "must stay inside the models volume"),
        (
            {"model": {"path": "m.gguf", "projector": "/mmproj.gguf"}},
            "spec.model.projector: String should match",
        ),
        (
            {"parameters": {"ctxSize": -1}},
            "spec.parameters.ctxSize: Input should be greater than or equal to 0",
        ),
        (
            {"parameters": {"nGpuLayers": "all"}},
            "spec.parameters.nGpuLayers: Input should be a valid integer",
        ),
        ({"parameters": {"pooling": "mean"}}, "pooling applies to embeddings: set embeddings: true"),
        ({"nodeName": "Node_A"}, "spec.nodeName: String should match"),
        ({"unknownField": 1}, "spec.unknownField: Extra inputs are not permitted"),
    ],
)
def test_invalid_specs_say_which_field_and_why(spec, message):
    with pytest.raises(InvalidSpec) as exc:
        parse_llamamodel(llamamodel(**spec))
    assert message in str(exc.value)


def test_object_name_that_is_no_model_name_needs_an_explicit_name():
    with pytest.raises(InvalidSpec, match=r"set spec\.model\.name"):
        parse_llamamodel(llamamodel(name="my model"))

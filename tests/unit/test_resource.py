import pytest

from llamacontroller.fetch.layout import fetch_args, model_path
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
        ({"model": {}}, "spec.model: needs exactly one of path (a file in the models volume) or source"),
        (
            {"model": {"path": "m.gguf", "source": {"url": "https://x.io/m.gguf", "sha256": "0" * 64}}},
            "spec.model: needs exactly one of path (a file in the models volume) or source",
        ),
        ({"model": {"source": {"url": "https://x.io/m.gguf"}}}, "a url needs its sha256"),
        ({"model": {"source": {"sha256": "0" * 64}}}, "needs exactly one of url or huggingFace"),
        (
            {"model": {"source": {"url": "https://x.io/m.gguf", "sha256": "0" * 63}}},
            "spec.model.source.sha256: String should match",
        ),
        (
            {"model": {"source": {"url": "file:///etc/m.gguf", "sha256": "0" * 64}}},
            "spec.model.source.url: String should match",
        ),
        (
            {"model": {"source": {"huggingFace": {"repo": "a/b", "file": "../m.gguf"}}}},
            "spec.model.source.huggingFace.file: '..' is not allowed",
        ),
        (
            {"model": {"source": {"huggingFace": {"repo": "a/b", "file": "m.gguf"}, "sha256": "0" * 64}}},
            "a url needs its sha256 (the hub publishes its own)",
        ),
        ({"unknownField": 1}, "spec.unknownField: Extra inputs are not permitted"),
    ],
)
def test_invalid_specs_say_which_field_and_why(spec, message):
    with pytest.raises(InvalidSpec) as exc:
        parse_llamamodel(llamamodel(**spec))
    assert message in str(exc.value)


def test_a_source_lands_at_its_content_path_and_names_the_fetch():
    sha = "ab" * 32
    url = parse_llamamodel(
        llamamodel(model={"source": {"url": "https://x.io/q/Model%20Q4.gguf?x=1", "sha256": sha}})
    )
    assert url.spec.model.source is not None
    assert model_path(url.spec.model) == f".sources/sha256/{sha}/model.gguf"  # no plain name in the URL
    assert fetch_args(url.spec.model.source, "/models") == [
        "fetch",
        "--models-dir",
        "/models",
        "--url",
        "https://x.io/q/Model%20Q4.gguf?x=1",
        "--sha256",
        sha,
    ]
    hub = {"repo": "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "file": "q4/qwen.gguf", "revision": "refs/pr/1"}
    on_hub = parse_llamamodel(llamamodel(model={"source": {"huggingFace": hub}}))
    assert (
        model_path(on_hub.spec.model)
        == ".sources/huggingface/Qwen/Qwen2.5-0.5B-Instruct-GGUF/refs%2Fpr%2F1/q4/qwen.gguf"
    )
    plain = parse_llamamodel(llamamodel())
    assert model_path(plain.spec.model) == "phi-4.gguf"


def test_object_name_that_is_no_model_name_needs_an_explicit_name():
    with pytest.raises(InvalidSpec, match=r"set spec\.model\.name"):
        parse_llamamodel(llamamodel(name="my model"))


# What the LlamaModel carries into its Pod verbatim is held to what the API server takes in a Pod,
# so the operator never writes a Pod that is refused (the CRD's rules say the same at apply time).
POD_REFUSALS = {
    "an env name with '='": (
        {"env": [{"name": "A=B", "value": "1"}]},
        "spec.env[0].name: String should match",
    ),
    "a non-ASCII env name": ({"env": [{"name": "é", "value": "1"}]}, "spec.env[0].name: String should match"),
    "an empty env name": ({"env": [{"name": "", "value": "1"}]}, "spec.env[0].name: String should match"),
    "a NUL in an env value": ({"env": [{"name": "A", "value": "a\x00"}]}, "spec.env[0].value: String should"),
    "valueFrom without a source": (
        {"env": [{"name": "A", "valueFrom": {}}]},
        "spec.env[0].valueFrom: needs exactly one of secretKeyRef",
    ),
    "valueFrom with two sources": (
        {
            "env": [
                {
                    "name": "A",
                    "valueFrom": {
                        "fieldRef": {"fieldPath": "status.podIP"},
                        "secretKeyRef": {"name": "s", "key": "k"},
                    },
                }
            ]
        },
        "spec.env[0].valueFrom: needs exactly one of",
    ),
    "value and valueFrom": (
        {"env": [{"name": "A", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]},
        "spec.env[0]: value and valueFrom exclude each other",
    ),
    "a field the downward API has not": (
        {"env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.containers"}}}]},
        "spec.env[0].valueFrom.fieldRef.fieldPath: Input should be",
    ),
    "a Secret key starting with '..'": (
        {"env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "..k"}}}]},
        "spec.env[0].valueFrom.secretKeyRef.key: String should match",
    ),
    "too much in env": (
        {"env": [{"name": f"V{i}", "value": "x" * 5000} for i in range(4)]},
        "spec.env: env values may hold 16384 characters in all",
    ),
    "a quantity that is none": (
        {"resources": {"limits": {"cpu": "lots"}}},
        "spec.resources.limits.cpu: 'lots'",
    ),
    "a negative quantity": (
        {"resources": {"limits": {"cpu": -1}}},
        "spec.resources.limits.cpu: -1 is negative",
    ),
    "a fractional number": ({"resources": {"limits": {"cpu": 0.5}}}, "spec.resources.limits.cpu: must be"),
    "a boolean quantity": ({"resources": {"limits": {"cpu": True}}}, "spec.resources.limits.cpu: must be"),
    "a resource a container has not": (
        {"resources": {"limits": {"storage": "1Gi"}}},
        "spec.resources.limits: 'storage' is no resource a container can ask for",
    ),
    "a request over its limit": (
        {"resources": {"limits": {"memory": "1Gi"}, "requests": {"memory": "2Gi"}}},
        "spec.resources: requests.memory: a request may not exceed its limit",
    ),
    "half a GPU": ({"resources": {"limits": {"nvidia.com/gpu": "500m"}}}, "comes in whole units"),
    "a GPU requested without its limit": (
        {"resources": {"requests": {"nvidia.com/gpu": 1}}},
        "spec.resources: requests.nvidia.com/gpu: a request may not exceed its limit",
    ),
    "an image with a space": ({"image": " llama.cpp:server"}, "spec.image: String should match"),
    "an empty image": ({"image": ""}, "spec.image: String should match"),
    "a NUL in extraArgs": ({"parameters": {"extraArgs": ["--x", "a\x00b"]}}, "spec.parameters.extraArgs[1]"),
    "too many extraArgs": (
        {"parameters": {"extraArgs": ["-v"] * 257}},
        "spec.parameters.extraArgs: List should",
    ),
    "too much in extraArgs": (
        {"parameters": {"extraArgs": ["x" * 9000, "y" * 9000]}},
        "spec.parameters.extraArgs: extraArgs may hold 16384 characters in all",
    ),
    "a split over other GPUs in extraArgs": (
        {"parameters": {"extraArgs": ["--jinja", "--tensor-split", "1,1"]}},
        "spec.parameters.extraArgs: extraArgs may not set what the operator sets from the slot",
    ),
    "another port in extraArgs": ({"parameters": {"extraArgs": ["--port=9000"]}}, "may not set"),
    "a device in extraArgs": ({"parameters": {"extraArgs": ["-dev", "CUDA1"]}}, "may not set"),
    "another model file in extraArgs": ({"parameters": {"extraArgs": ["-m", "/etc/x.gguf"]}}, "may not set"),
    "the GPUs a server sees, in env": (
        {"env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "0,1"}]},
        "spec.env[0].name: env may not set what the operator sets from the slot: NVIDIA_VISIBLE_DEVICES",
    ),
    "a context llama-server cannot read": (
        {"parameters": {"ctxSize": 2**31}},
        "spec.parameters.ctxSize: Input should be less than or equal to 2147483647",
    ),
    "a newline in a path": ({"model": {"path": "a\n.gguf"}}, "spec.model.path: String should match"),
}


@pytest.mark.parametrize(("spec", "message"), list(POD_REFUSALS.values()), ids=list(POD_REFUSALS))
def test_what_a_pod_would_refuse_is_refused_naming_the_field(spec, message):
    with pytest.raises(InvalidSpec) as exc:
        parse_llamamodel(llamamodel(**spec))
    assert message in str(exc.value)


def test_their_well_formed_neighbours_are_accepted():
    lm = parse_llamamodel(
        llamamodel(
            env=[
                {"name": "HF HOME.dir", "value": ""},
                {
                    "name": "TOKEN",
                    "value": "",
                    "valueFrom": {"secretKeyRef": {"name": "hf", "key": ".token"}},
                },
                {
                    "name": "POD_IP",
                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP", "apiVersion": "v1"}},
                },
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
            ],
            resources={
                "limits": {"cpu": 4, "memory": "16Gi", "nvidia.com/gpu": "1"},
                "requests": {
                    "cpu": "500m",
                    "memory": "1.5e9",
                    "nvidia.com/gpu": 1,
                    "ephemeral-storage": "1Ti",
                },
            },
            image="registry.example.com:5000/llama.cpp:server-cuda@sha256:0123abcd",
            parameters={
                "ctxSize": 2**31 - 1,
                "extraArgs": [
                    "--chat-template",
                    "é" * 16000,
                    "--jinja",
                    "--ctx-size",
                    "8",
                    "--models-dir",
                    "-ts1",
                ],
            },
            model={"path": "модели/ü .gguf"},
        )
    )
    assert lm.spec.resources is not None and lm.spec.resources.requests is not None
    assert lm.spec.resources.requests["memory"] == "1.5e9"

"""Pod and Service rendering, checked against golden YAML (regenerate: pytest --update-golden)."""

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from llamacontroller.render import names
from llamacontroller.render.children import render_children
from llamacontroller.render.service import service_matches
from llamacontroller.resource import parse_llamamodel
from tests.support.builders import arg, llamamodel, repo_config
from tests.support.hostile import subdomains
from tests.support.paths import REPO

GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def _render_example(path: Path, strategy: str = "pinned") -> list[dict]:
    body = yaml.safe_load(path.read_text())
    body["metadata"].update(namespace="default", uid="00000000-0000-4000-8000-000000000001")
    children = render_children(parse_llamamodel(body), repo_config(gpu_strategy=strategy))
    return [children.pod, children.service]


# Each example with the default strategy; the side-by-side pair and the whole node with the others.
GOLDEN_CASES = [(p, "pinned") for p in EXAMPLES] + [
    (REPO / "examples" / f"{stem}.yaml", strategy)
    for stem in ("gpu1", "both")
    for strategy in ("allVisible", "devicePlugin")
]


@pytest.mark.parametrize(
    ("example", "strategy"),
    GOLDEN_CASES,
    ids=[p.stem if s == "pinned" else f"{p.stem}.{s}" for p, s in GOLDEN_CASES],
)
def test_examples_render_as_golden(example: Path, strategy: str, update_golden: bool):
    rendered = yaml.safe_dump_all(_render_example(example, strategy), sort_keys=False)
    suffix = "" if strategy == "pinned" else f".{strategy}"
    golden = GOLDEN / f"{example.stem}{suffix}.yaml"
    if update_golden:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(rendered)
    assert golden.exists(), f"no golden file {golden}: run pytest --update-golden"
    assert rendered == golden.read_text()


def test_examples_cover_each_placement():
    slots = {_render_example(p)[0]["metadata"]["labels"][names.LABEL_SLOT] for p in EXAMPLES}
    assert slots == {"gpu0", "gpu1", "both"}


def _children(**spec):
    return render_children(parse_llamamodel(llamamodel(**spec)), repo_config())


def test_pod_is_bound_to_its_node_and_owned_by_the_llamamodel():
    pod = _children().pod
    terms = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchFields"][0]["values"] == ["node-a"]
    owner = pod["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "LlamaModel",
        "phi-4",
        "uid-phi-4",
        True,
    )


def test_container_port_and_readiness_follow_the_slot():
    container = _children(gpu={"gpuId": 1}).pod["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == 8088
    assert container["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_models_volume_is_read_only():
    pod = _children().pod
    assert pod["spec"]["containers"][0]["volumeMounts"][0]["readOnly"] is True
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True


HUB = {"repo": "org/m-GGUF", "file": "m-q4.gguf", "tokenSecret": {"name": "hf", "key": "token"}}


def test_only_the_fetch_of_a_source_mounts_the_models_volume_read_write():
    sha = "ab" * 32
    url = {"url": "https://x.io/m-q4.gguf", "sha256": sha}
    pod = _children(model={"source": url}).pod
    (fetch,) = pod["spec"]["initContainers"]
    assert fetch["args"] == [
        "fetch", "--models-dir", "/models", "--url", "https://x.io/m-q4.gguf", "--sha256", sha,
        "--termination-log", "/dev/termination-log",
    ]  # fmt: skip
    assert fetch["volumeMounts"] == [{"name": "models", "mountPath": "/models"}]
    assert fetch["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert "env" not in fetch  # nothing to tell it: no hub, no token
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] is False
    assert all(m["readOnly"] for c in pod["spec"]["containers"] for m in c["volumeMounts"])
    assert arg(pod, "--model") == f"/models/.sources/sha256/{sha}/m-q4.gguf"
    assert "initContainers" not in _children().pod["spec"]  # model.path: nothing is fetched


def test_a_hub_source_gets_its_token_from_its_secret_and_the_configs_mirror():
    config = repo_config(sources={"hubEndpoint": "https://hub.mirror.example"})
    pod = render_children(parse_llamamodel(llamamodel(model={"source": {"huggingFace": HUB}})), config).pod
    (fetch,) = pod["spec"]["initContainers"]
    assert fetch["env"] == [
        {"name": "HF_ENDPOINT", "value": "https://hub.mirror.example"},
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
    ]
    assert fetch["args"][3:9] == [
        "--hf-repo",
        "org/m-GGUF",
        "--hf-file",
        "m-q4.gguf",
        "--hf-revision",
        "main",
    ]
    assert arg(pod, "--model") == "/models/.sources/huggingface/org/m-GGUF/main/m-q4.gguf"
    other = render_children(
        parse_llamamodel(llamamodel(model={"source": {"huggingFace": {**HUB, "file": "n.gguf"}}})), config
    )
    assert other.pod["metadata"]["name"] != pod["metadata"]["name"]  # another file: another server


def _server_env(strategy: str, gpu: dict) -> dict[str, str]:
    config = repo_config(gpu_strategy=strategy)
    container = render_children(parse_llamamodel(llamamodel(gpu=gpu)), config).pod["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container["env"]}


@pytest.mark.parametrize(
    ("strategy", "gpu", "visible"),
    [
        ("pinned", {"gpuId": 0}, "0"),
        ("pinned", {"gpuId": 1}, "1"),
        ("pinned", {"mode": "both"}, "0,1"),
        ("allVisible", {"gpuId": 1}, "all"),
        ("allVisible", {"mode": "both"}, "all"),
        ("devicePlugin", {"gpuId": 1}, None),
        ("devicePlugin", {"mode": "both"}, None),
    ],
)
def test_the_container_sees_the_gpus_its_strategy_gives(strategy: str, gpu: dict, visible: str | None):
    env = _server_env(strategy, gpu)
    assert env.get("NVIDIA_VISIBLE_DEVICES") == visible
    assert ("NVIDIA_DRIVER_CAPABILITIES" in env) is (strategy != "devicePlugin")


def test_pinned_sets_the_visible_gpus_even_when_gpu_env_names_none():
    config = repo_config(gpu_env={"NVIDIA_DRIVER_CAPABILITIES": "compute,utility"})
    container = render_children(parse_llamamodel(llamamodel(gpu={"gpuId": 1})), config).pod["spec"][
        "containers"
    ][0]
    assert container["env"] == [
        {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute,utility"},
        {"name": "NVIDIA_VISIBLE_DEVICES", "value": "1"},
    ]


def test_user_env_wins_over_the_config_env():
    env = _children(env=[{"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute"}]).pod["spec"][
        "containers"
    ][0]["env"]
    assert [e for e in env if e["name"] == "NVIDIA_DRIVER_CAPABILITIES"] == [
        {"name": "NVIDIA_DRIVER_CAPABILITIES", "value": "compute"}
    ]


def test_pod_name_changes_with_the_server_and_only_with_it():
    base = _children(parameters={"ctxSize": 2048}).pod["metadata"]["name"]
    same = _children(parameters={"ctxSize": 2048, "parallel": 1}).pod["metadata"]["name"]  # 1 is the default
    other = _children(parameters={"ctxSize": 4096 * 2}).pod["metadata"]["name"]
    assert base == same
    assert base != other


def test_service_is_named_after_node_and_slot_not_model():
    a = _children().service
    b = render_children(parse_llamamodel(llamamodel(name="other", uid="u2")), repo_config()).service
    assert a["metadata"]["name"] == b["metadata"]["name"] == "llama-node-a-gpu0"
    assert a["spec"]["selector"] == {
        names.LABEL_MANAGED_BY: "llamacontroller",
        names.LABEL_NODE: "node-a",
        names.LABEL_SLOT: "gpu0",
    }
    assert a["spec"]["ports"][0]["port"] == 8081


def test_service_on_default_node_is_named_after_slot():
    body = llamamodel(gpu={"mode": "both"})
    del body["spec"]["nodeName"]
    service = render_children(parse_llamamodel(body), repo_config(default_node="solo")).service
    assert service["metadata"]["name"] == "llama-both"


@pytest.mark.parametrize("node", ["gpu.node.example.com", "n" * 80, "9lives"])
def test_service_names_are_dns_1035(node):
    name = names.service_name(node, "gpu0", node_named=True)
    assert len(name) <= 63
    assert name[0].isalpha() and name[-1].isalnum()
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")


def test_nodes_whose_names_differ_by_a_dot_get_services_of_their_own():
    dotted = names.service_name("gpu.node-1", "gpu0", node_named=True)
    dashed = names.service_name("gpu-node-1", "gpu0", node_named=True)
    assert dashed == "llama-gpu-node-1-gpu0"
    assert dotted.startswith("llama-gpu-node-1-gpu0-") and dotted != dashed
    assert names.service_name("9lives", "gpu0", node_named=True) != names.service_name(
        "x-9lives", "gpu0", node_named=True
    )


def test_service_matches_detects_a_previous_holder():
    mine = _children().service
    theirs = render_children(parse_llamamodel(llamamodel(name="other", uid="u2")), repo_config()).service
    assert service_matches(mine, mine)
    assert not service_matches(theirs, mine)


def test_device_plugin_strategy_requests_gpus_instead_of_pinning():
    config = repo_config(gpu_strategy="devicePlugin")
    single = render_children(parse_llamamodel(llamamodel(gpu={"gpuId": 1})), config).pod["spec"][
        "containers"
    ][0]
    whole = render_children(parse_llamamodel(llamamodel(gpu={"mode": "both"})), config).pod["spec"][
        "containers"
    ][0]
    assert single["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert whole["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert "--tensor-split" not in single["args"]
    assert whole["args"][whole["args"].index("--tensor-split") + 1] == "0.5,0.5"
    assert not any(e["name"] == "NVIDIA_VISIBLE_DEVICES" for e in single["env"])
    assert single["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}


def test_device_plugin_strategy_leaves_the_gpu_request_to_its_limit():
    """A request of GPUs other than the slot's count would make the API server refuse the Pod."""
    config = repo_config(gpu_strategy="devicePlugin")
    resources = {"limits": {"nvidia.com/gpu": 2}, "requests": {"nvidia.com/gpu": 2, "cpu": 1}}
    body = llamamodel(gpu={"gpuId": 1}, resources=resources)
    container = render_children(parse_llamamodel(body), config).pod["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 1}, "requests": {"cpu": 1}}
    only_gpus = llamamodel(resources={"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 1}})
    container = render_children(parse_llamamodel(only_gpus), config).pod["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"nvidia.com/gpu": 1}}


def test_the_adapter_sidecar_fronts_the_slot_on_11434():
    children = _children(gpu={"gpuId": 1})
    adapter = children.pod["spec"]["containers"][1]
    assert adapter["args"] == ["adapter", "--upstream", "http://127.0.0.1:8088", "--listen", "0.0.0.0:11434"]
    assert adapter["volumeMounts"][0] == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert [(p["name"], p["port"]) for p in children.service["spec"]["ports"]] == [
        ("http", 8088),
        ("ollama", 11434),
    ]


def test_api_keys_secret_reaches_the_adapter_as_a_file():
    config = repo_config(api_keys={"secret_name": "llama-keys", "secret_key": "keys"})
    pod = render_children(parse_llamamodel(llamamodel()), config).pod
    adapter = pod["spec"]["containers"][1]
    assert adapter["args"][-2:] == ["--api-keys-file", "/etc/llamacontroller/api-keys/keys"]
    assert {"name": "api-keys", "secret": {"secretName": "llama-keys"}} in pod["spec"]["volumes"]


def test_without_the_adapter_the_service_has_one_port():
    children = render_children(parse_llamamodel(llamamodel()), repo_config(adapter={"enabled": False}))
    assert len(children.pod["spec"]["containers"]) == 1
    assert [p["name"] for p in children.service["spec"]["ports"]] == ["http"]


DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?")
NAMES = st.sampled_from([1, 62, 63, 64, 243, 244, 245, 252, 253]) | st.integers(1, 253)
CONFIG = repo_config()


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(
    name=NAMES.flatmap(subdomains),
    node=NAMES.flatmap(subdomains),
    gpu=st.sampled_from([{"gpuId": 0}, {"gpuId": 1}, {"mode": "both"}]),
)
def test_any_valid_names_make_children_with_valid_names_and_labels(name, node, gpu):
    """A LlamaModel's name may have 253 characters and a node's too, where a label value has at most
    63 and a Service's name as many: what the children are called must stay valid for any of them."""
    children = render_children(parse_llamamodel(llamamodel(name=name, nodeName=node, gpu=gpu)), CONFIG)
    pod, service = children.pod, children.service
    assert len(pod["metadata"]["name"]) <= 253 and DNS_SUBDOMAIN.fullmatch(pod["metadata"]["name"])
    service_name = service["metadata"]["name"]
    assert len(service_name) <= 63 and DNS_1035.fullmatch(service_name), service_name
    for labels in (pod["metadata"]["labels"], service["metadata"]["labels"], service["spec"]["selector"]):
        for value in labels.values():
            assert len(value) <= 63 and LABEL_VALUE.fullmatch(value), value
    assert pod["metadata"]["annotations"][names.ANNOTATION_HOLDER] == f"default/{name}"

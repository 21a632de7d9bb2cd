"""A corpus of hostile and malformed LlamaModels, as hypothesis strategies.

Each `Case` is a LlamaModel with at most one defect, the words that a refusal or a status must use
to name it (the field, as the API server spells it), and where it is caught: refused by the API
server at apply time (the CRD's schema and CEL rules), or accepted and reported Failed by the
operator (what only the cluster can tell: a node it does not have, a GPU its node has not). A case
without a defect is well-formed: the operator serves it (a Pod the API server takes). Well-formed
cases vary everything a LlamaModel may hold up to its limits (names of 253 characters, hundreds of
extraArgs, unicode, quantities), so the defects sit beside values that must pass.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hypothesis import strategies as st

from llamacontroller.resource import INT32_MAX, MAX_ENV_VALUE_CHARS, MAX_EXTRA_ARGS, MAX_EXTRA_ARGS_CHARS
from tests.support.builders import TINY_MODEL

API_VERSION = "llamacontroller.io/v1alpha1"
NAME = "{name}"  # replaced by a unique name when the corpus is put together


class Stage(Enum):
    APPLY = "refused at apply"
    OPERATOR = "reported Failed by the operator"
    SERVED = "served"


@dataclass(frozen=True)
class Case:
    what: str
    body: dict[str, Any]
    stage: Stage
    named: tuple[str, ...] = ()  # a refusal or status names the defect with one of these

    @property
    def name(self) -> str:
        name: str = self.body["metadata"]["name"]
        return name


def body_of(spec: dict[str, Any], name: str = NAME) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": "LlamaModel", "metadata": {"name": name}, "spec": spec}


# -- names -----------------------------------------------------------------------------------------

DNS_LABEL = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=16).map(
    lambda text: text.strip("-") or "0"
)


@st.composite
def subdomains(draw: st.DrawFn, size: int) -> str:
    """A DNS subdomain of exactly `size` characters (names of objects and nodes)."""
    text = ".".join(draw(st.lists(DNS_LABEL, min_size=1, max_size=8)))
    while len(text) < size:
        text = f"{text}-{text}"
    text = text[:size].rstrip("-.")
    return text + "a" * (size - len(text))


def unique_name(index: int, size: int, filler: str) -> str:
    """A valid object name of `size` characters (at least the prefix's), unique by its prefix."""
    prefix = f"c{index}-"
    size = max(size, len(prefix) + 1)
    text = (prefix + filler)[:size].rstrip("-.")
    return text + "z" * (size - len(text))


NAME_SIZES = st.sampled_from([0, 0, 0, 62, 63, 64, 252, 253])

# -- well-formed parts -----------------------------------------------------------------------------

# Text a process can take: any character but NUL (surrogates cannot be sent as UTF-8 at all).
ARG_TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
FILE_PART = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), exclude_characters="/\x7f"), min_size=1, max_size=12
).filter(lambda part: part not in (".", ".."))


@st.composite
def gguf_paths(draw: st.DrawFn) -> str:
    parts = draw(st.lists(FILE_PART, min_size=1, max_size=3))
    return "/".join(parts) + ".gguf"


@st.composite
def extra_args(draw: st.DrawFn) -> list[str]:
    """Few or many (up to the limit), short or long (up to the total), any text."""
    kind = draw(st.sampled_from(["few", "many", "long"]))
    if kind == "few":
        return draw(st.lists(ARG_TEXT, max_size=6))
    if kind == "many":
        return [f"--x{i}" for i in range(MAX_EXTRA_ARGS)]  # 256 items, 1,300 characters
    return [draw(st.sampled_from(["é", "a", "😀", "\\", '"', "\n"])) * (MAX_EXTRA_ARGS_CHARS - 8), "--jinja"]


QUANTITIES = st.sampled_from([1, 2, "500m", "1.5", "8Gi", "1e3", "0", ".5", "64M"])
WHOLE = st.sampled_from([1, 2, "1", "2k"])


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    limits = {
        name: draw(QUANTITIES)
        for name in draw(st.lists(st.sampled_from(["cpu", "memory", "ephemeral-storage"]), unique=True))
    }
    requests: dict[str, Any] = {}
    for name, value in limits.items():
        if draw(st.booleans()):
            requests[name] = value  # at its limit: a request may equal it
    if draw(st.booleans()):
        count = draw(WHOLE)
        limits["example.com/accelerator"] = count
        if draw(st.booleans()):
            requests["example.com/accelerator"] = count
    return {k: v for k, v in (("limits", limits), ("requests", requests)) if v}


ENV_NAME = st.text(st.sampled_from(string.printable[:95].replace("=", "")), min_size=1, max_size=20)


@st.composite
def env(draw: st.DrawFn) -> list[dict[str, Any]]:
    names = draw(st.lists(ENV_NAME, max_size=4, unique=True))
    sources = [
        {"value": draw(ARG_TEXT)},
        {"valueFrom": {"secretKeyRef": {"name": "hf-token", "key": ".token", "optional": True}}},
        {"valueFrom": {"configMapKeyRef": {"name": "a.b-c", "key": "K_1"}}},
        {"valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"valueFrom": {"resourceFieldRef": {"resource": "limits.memory"}}},
        {"value": "", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}},
    ]
    return [{"name": name, **draw(st.sampled_from(sources))} for name in names]


GPUS = st.sampled_from(
    [
        {},
        {"mode": "single"},
        {"gpuId": 0},
        {"gpuId": 1},
        {"mode": "both"},
        {"mode": "both", "tensorSplit": "0.7,0.3"},
    ]
)


@st.composite
def well_formed_specs(draw: st.DrawFn, node: str) -> dict[str, Any]:
    """A spec that the API server and the operator take, on `node`, its optional parts drawn."""
    model: dict[str, Any] = {"path": draw(st.just(TINY_MODEL) | gguf_paths())}
    if draw(st.booleans()):
        model["projector"] = draw(gguf_paths())
    if draw(st.booleans()):
        model["name"] = draw(
            st.sampled_from(["phi-4", "qwen2.5-coder:7b", "library/llama3.2:3b-q4_K_M", "a" * 128])
        )
    spec: dict[str, Any] = {"model": model, "nodeName": node}
    if gpu := draw(GPUS):
        spec["gpu"] = gpu
    parameters: dict[str, Any] = {}
    for key, low in (("ctxSize", 0), ("nGpuLayers", 0), ("threads", 1), ("batchSize", 1), ("parallel", 1)):
        if draw(st.booleans()):
            parameters[key] = draw(st.sampled_from([low, INT32_MAX]) | st.integers(low, 4096))
    if draw(st.booleans()):
        parameters["extraArgs"] = draw(extra_args())
    if draw(st.booleans()):
        parameters |= {
            "embeddings": True,
            "pooling": draw(st.sampled_from(["none", "mean", "cls", "last", "rank"])),
        }
    if parameters:
        spec["parameters"] = parameters
    if draw(st.booleans()):
        spec["env"] = draw(env())
    if draw(st.booleans()):
        spec["resources"] = draw(resources())
    if draw(st.booleans()):
        spec["image"] = draw(
            st.sampled_from(["ghcr.io/ggml-org/llama.cpp:server", "r.example:5000/a/b@sha256:0f"])
        )
    if draw(st.booleans()):
        spec["startupTimeoutSeconds"] = draw(st.sampled_from([1, 86400]) | st.integers(1, 86400))
    return spec


# -- defects ---------------------------------------------------------------------------------------

# Each defect: what it is, where it goes (a path of keys into the body), the value, and the field
# that names it when it is not the path itself (a rule on a whole map names the map).
Path = tuple[str | int, ...]


def _put(body: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    """The body with `value` at `path`, creating what is missing on the way. A defect of the first
    variable replaces it, so that it is the variable's only defect."""
    body = deepcopy(body)
    spec = body["spec"]
    if path[:3] == ("spec", "env", 0):
        first = {"name": "V0"} if path[3:4] == ("valueFrom",) else {"name": "V0", "value": "x"}
        spec["env"] = [first, *spec.get("env", [])[1:]]
    if path[:3] == ("spec", "parameters", "extraArgs") and len(path) == 4:
        spec.setdefault("parameters", {})["extraArgs"] = ["--ok", "--ok"]
    node: Any = body
    for key in path[:-1]:
        if isinstance(node, dict) and not isinstance(node.get(key), dict | list):
            node[key] = {}
        node = node[key]
    node[path[-1]] = value
    return body


def dotted(path: Path) -> str:
    """A path as the API server writes it: spec.env[0].name."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).removeprefix(".")


EXTRA = "spec.parameters.extraArgs"
APPLY_DEFECTS: list[tuple[str, Path, Any] | tuple[str, Path, Any, str]] = [
    # paths out of the models volume, or no file name at all
    ("a parent path", ("spec", "model", "path"), "../x.gguf"),
    ("a parent in the middle", ("spec", "model", "path"), "a/../../b.gguf"),
    ("a parent after a dot", ("spec", "model", "path"), "./../x.gguf"),
    ("an absolute path", ("spec", "model", "path"), "/etc/x.gguf"),
    ("an absolute path twice", ("spec", "model", "path"), "//x.gguf"),
    ("a projector's parent", ("spec", "model", "projector"), "vision/../../mm.gguf"),
    ("an absolute projector", ("spec", "model", "projector"), "/mm.gguf"),
    ("a NUL in a path", ("spec", "model", "path"), "a\x00.gguf"),
    ("a newline in a path", ("spec", "model", "path"), "a\nb.gguf"),
    ("no GGUF file", ("spec", "model", "path"), "notes.txt"),
    ("a path too long", ("spec", "model", "path"), "a" * 1020 + ".gguf"),
    ("a path of a number", ("spec", "model", "path"), 5),
    # model sources: what the schema refuses in them
    ("a source URL of another scheme", ("spec", "model", "source", "url"), "file:///etc/x.gguf"),
    ("a source URL with a space", ("spec", "model", "source", "url"), "https://x.io/a b.gguf"),
    ("a sha256 in capitals", ("spec", "model", "source", "sha256"), "AB" * 32),
    ("a sha256 too short", ("spec", "model", "source", "sha256"), "ab" * 31),
    ("a hub repository without its owner", ("spec", "model", "source", "huggingFace", "repo"), "gguf"),
    ("a hub revision with a space", ("spec", "model", "source", "huggingFace", "revision"), "main x"),
    ("a hub file that is no GGUF", ("spec", "model", "source", "huggingFace", "file"), "README.md"),
    (
        "a token Secret's name in capitals",
        ("spec", "model", "source", "huggingFace", "tokenSecret", "name"),
        "HF-Token",
    ),
    # names
    ("a model name with a space", ("spec", "model", "name"), "my model"),
    ("a unicode model name", ("spec", "model", "name"), "модель"),
    ("a model name too long", ("spec", "model", "name"), "a" * 257),
    ("a node name in capitals", ("spec", "nodeName"), "Node-A"),
    ("a unicode node name", ("spec", "nodeName"), "nöde"),
    ("a node name too long", ("spec", "nodeName"), "n" * 254),
    ("a node name of a list", ("spec", "nodeName"), ["node-a"]),
    # numbers at and beyond their ranges, and of other types
    ("a negative context", ("spec", "parameters", "ctxSize"), -1),
    ("a context past int32", ("spec", "parameters", "ctxSize"), INT32_MAX + 1),
    ("a context past int64", ("spec", "parameters", "ctxSize"), 2**64),
    ("a fractional context", ("spec", "parameters", "ctxSize"), 1.5),
    ("a context of a string", ("spec", "parameters", "ctxSize"), "4096"),
    ("no thread", ("spec", "parameters", "threads"), 0),
    ("layers past int32", ("spec", "parameters", "nGpuLayers"), 2**31),
    ("no batch", ("spec", "parameters", "batchSize"), 0),
    ("parallel past int32", ("spec", "parameters", "parallel"), 2**40),
    ("a negative GPU", ("spec", "gpu", "gpuId"), -1),
    ("a GPU past the CRD's range", ("spec", "gpu", "gpuId"), 16),
    ("a GPU of a string", ("spec", "gpu", "gpuId"), "1"),
    ("a GPU of a boolean", ("spec", "gpu", "gpuId"), True),
    ("no startup time", ("spec", "startupTimeoutSeconds"), 0),
    ("a startup past a day", ("spec", "startupTimeoutSeconds"), 86401),
    ("a mode that is none", ("spec", "gpu", "mode"), "triple"),
    ("flash attention maybe", ("spec", "parameters", "flashAttn"), "maybe"),
    ("embeddings of a string", ("spec", "parameters", "embeddings"), "yes"),
    ("a gpu of a string", ("spec", "gpu"), "gpu0"),
    ("parameters of a list", ("spec", "parameters"), [1]),
    ("a model of a string", ("spec", "model"), "phi.gguf"),
    # unknown fields, at every level
    ("an unknown field in spec", ("spec", "replicas"), 2),
    ("an unknown field in model", ("spec", "model", "sha256"), "ab"),
    ("an unknown field in gpu", ("spec", "gpu", "memory"), "24Gi"),
    ("an unknown field in parameters", ("spec", "parameters", "temperature"), 0.7),
    ("an unknown field in env", ("spec", "env", 0, "valueFromFile"), "/x"),
    ("an unknown field in resources", ("spec", "resources", "claims"), [{"name": "gpu"}]),
    ("an unknown field in valueFrom (a source)", ("spec", "env", 0, "valueFrom", "fileKeyRef"), {"key": "a"}),
    # extraArgs: too many, too long, a NUL
    ("too many extraArgs", ("spec", "parameters", "extraArgs"), ["-v"] * (MAX_EXTRA_ARGS + 1)),
    ("an extraArg too long", ("spec", "parameters", "extraArgs", 0), "a" * (MAX_EXTRA_ARGS_CHARS + 1)),
    ("extraArgs too long together", ("spec", "parameters", "extraArgs"), ["a" * 9000, "b" * 9000]),
    ("a NUL in an extraArg", ("spec", "parameters", "extraArgs", 1), "--alias\x00x"),
    ("a split of other GPUs in extraArgs", ("spec", "parameters", "extraArgs", 1), "--tensor-split", EXTRA),
    ("another port in extraArgs", ("spec", "parameters", "extraArgs", 0), "--port=9000", EXTRA),
    ("a main GPU in extraArgs", ("spec", "parameters", "extraArgs", 1), "-mg", EXTRA),
    ("another model file in extraArgs", ("spec", "parameters", "extraArgs", 0), "--model", EXTRA),
    ("an extraArg of a number", ("spec", "parameters", "extraArgs", 0), 5),
    ("extraArgs of a string", ("spec", "parameters", "extraArgs"), "--jinja"),
    # what a Pod would refuse: env, resources, image
    ("an env name with '='", ("spec", "env", 0, "name"), "A=B"),
    ("a unicode env name", ("spec", "env", 0, "name"), "PÄTH"),
    ("an empty env name", ("spec", "env", 0, "name"), ""),
    ("the GPUs a server sees, in env", ("spec", "env", 0, "name"), "NVIDIA_VISIBLE_DEVICES"),
    ("the GPUs CUDA numbers, in env", ("spec", "env", 0, "name"), "CUDA_VISIBLE_DEVICES"),
    ("a NUL in an env value", ("spec", "env", 0, "value"), "a\x00b"),
    (
        "env values too long together",
        ("spec", "env"),
        [{"name": f"V{i}", "value": "v" * 5000} for i in range(4)],
    ),
    ("an env value too long", ("spec", "env", 0, "value"), "v" * (MAX_ENV_VALUE_CHARS + 1)),
    ("too many env variables", ("spec", "env"), [{"name": f"V{i}", "value": "1"} for i in range(65)]),
    ("a valueFrom without a source", ("spec", "env", 0, "valueFrom"), {}),
    (
        "a valueFrom with two sources",
        ("spec", "env", 0, "valueFrom"),
        {"fieldRef": {"fieldPath": "status.podIP"}, "secretKeyRef": {"name": "s", "key": "k"}},
    ),
    ("a downward field that is none", ("spec", "env", 0, "valueFrom"), {"fieldRef": {"fieldPath": "spec.x"}}),
    ("a Secret key of '..'", ("spec", "env", 0, "valueFrom"), {"secretKeyRef": {"name": "s", "key": ".."}}),
    (
        "a Secret name in capitals",
        ("spec", "env", 0, "valueFrom"),
        {"secretKeyRef": {"name": "S", "key": "k"}},
    ),
    ("a quantity that is none", ("spec", "resources", "limits", "cpu"), "lots"),
    ("a negative quantity", ("spec", "resources", "limits", "memory"), -1),
    ("a signed quantity", ("spec", "resources", "requests", "cpu"), "-500m"),
    ("a fractional number", ("spec", "resources", "limits", "cpu"), 0.5),
    ("a boolean quantity", ("spec", "resources", "limits", "cpu"), False),
    ("a huge exponent", ("spec", "resources", "limits", "memory"), "1e99999"),
    (
        "a resource a container has not",
        ("spec", "resources", "limits", "storage"),
        "1Gi",
        "spec.resources.limits",
    ),
    (
        "a resource of kubernetes.io",
        ("spec", "resources", "limits", "kubernetes.io/x"),
        1,
        "spec.resources.limits",
    ),
    (
        "a resource name in capitals",
        ("spec", "resources", "limits", "Nvidia.com/gpu"),
        1,
        "spec.resources.limits",
    ),
    ("half a GPU", ("spec", "resources", "limits", "nvidia.com/gpu"), "500m", "spec.resources.limits"),
    (
        "a GPU requested without its limit",
        ("spec", "resources", "requests", "nvidia.com/gpu"),
        1,
        "spec.resources.requests",
    ),
    ("too many resources", ("spec", "resources", "limits"), {f"example.com/r{i}": 1 for i in range(17)}),
    ("an image with a space", ("spec", "image"), " ghcr.io/ggml-org/llama.cpp:server"),
    ("an image ending in a newline", ("spec", "image"), "llama.cpp:server\n"),
    ("an empty image", ("spec", "image"), ""),
    ("a unicode image", ("spec", "image"), "ghcr.io/lläma:1"),
]

# Defects of one field against another, the CEL rules' business: the spec after the change, and
# the field that names it.
RULE_DEFECTS: list[tuple[str, dict[str, Any], str]] = [
    ("gpuId with mode both", {"gpu": {"mode": "both", "gpuId": 1}}, "spec.gpu.gpuId"),
    (
        "tensorSplit with mode single",
        {"gpu": {"mode": "single", "tensorSplit": "0.5,0.5"}},
        "spec.gpu.tensorSplit",
    ),
    ("a tensorSplit of zeros", {"gpu": {"mode": "both", "tensorSplit": "0,0.0"}}, "spec.gpu.tensorSplit"),
    ("pooling without embeddings", {"parameters": {"pooling": "mean"}}, "spec.parameters.pooling"),
    (
        "both a path and a source",
        {"model": {"path": "m.gguf", "source": {"url": "https://x.io/m.gguf", "sha256": "0" * 64}}},
        "spec.model",
    ),
    ("a URL without its sha256", {"model": {"source": {"url": "https://x.io/m.gguf"}}}, "spec.model.source"),
    (
        "a hub file out of its repository",
        {"model": {"source": {"huggingFace": {"repo": "a/b", "file": "q/../../m.gguf"}}}},
        "spec.model.source.huggingFace.file",
    ),
    (
        "a request over its limit",
        {"resources": {"limits": {"memory": "1Gi"}, "requests": {"memory": "1025Mi"}}},
        "spec.resources.requests",
    ),
    (
        "a GPU request other than its limit",
        {"resources": {"limits": {"nvidia.com/gpu": 2}, "requests": {"nvidia.com/gpu": 1}}},
        "spec.resources.requests",
    ),
    (
        "value and valueFrom",
        {"env": [{"name": "A", "value": "v", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]},
        "spec.env[0].valueFrom",
    ),
]

# Object names the API server (or kubectl before it) refuses: what kubectl says names them.
BAD_NAMES: list[tuple[str, str, tuple[str, ...]]] = [
    ("a name too long", "n" * 254, ("metadata.name",)),
    ("a name in capitals", "Phi-4", ("metadata.name",)),
    ("a unicode name", "фи-4", ("metadata.name",)),
    ("a name with an underscore", "phi_4", ("metadata.name",)),
    ("a name starting with a dash", "-phi", ("metadata.name",)),
    ("a name with a slash", "a/b", ("invalid resource name",)),
    ("a name of '..'", "..", ("invalid resource name",)),
    ("a name with a percent", "a%2Fb", ("invalid resource name",)),
]


def field_defect(base: dict[str, Any], defect: tuple[Any, ...]) -> Case:
    what, path, value, *field = defect
    named = field[0] if field else dotted(path)
    if what.startswith("an unknown field"):
        named = f'unknown field "{dotted(path)}"'
    return Case(what, _put(base, path, value), Stage.APPLY, (named,))


def rule_defect(base: dict[str, Any], defect: tuple[str, dict[str, Any], str]) -> Case:
    what, change, named = defect
    spec = {k: v for k, v in base["spec"].items() if k not in change} | change
    return Case(what, {**base, "spec": spec}, Stage.APPLY, (named,))


def name_defect(base: dict[str, Any], defect: tuple[str, str, tuple[str, ...]]) -> Case:
    what, name, mentions = defect
    return Case(what, {**base, "metadata": {"name": name}}, Stage.APPLY, mentions)


@dataclass(frozen=True)
class Surroundings:
    """What hypothesis draws for one case: a well-formed spec, a name's length and letters, and the
    values of the defects that are drawn (a GPU, a split, a node the cluster has not)."""

    spec: dict[str, Any]
    name_size: int
    name_letters: str
    gpu: int
    ratios: int
    absent_node: str


@st.composite
def surroundings(draw: st.DrawFn, node: str, absent_node: Callable[[str], bool]) -> Surroundings:
    name_size = draw(NAME_SIZES)
    return Surroundings(
        spec=draw(well_formed_specs(node)),
        name_size=name_size,
        name_letters=draw(subdomains(max(name_size, 1))),
        gpu=draw(st.integers(2, 15)),
        ratios=draw(st.integers(3, 8)),
        absent_node=draw(subdomains(draw(st.sampled_from([1, 12, 63, 253]))).filter(absent_node)),
    )


def _node_absent(base: dict[str, Any], drawn: Surroundings) -> Case:
    body = _put(base, ("spec", "nodeName"), drawn.absent_node)
    return Case("a node the cluster has not", body, Stage.OPERATOR, ("spec.nodeName",))


def _gpu_absent(base: dict[str, Any], drawn: Surroundings) -> Case:
    body = _put(base, ("spec", "gpu"), {"mode": "single", "gpuId": drawn.gpu})
    return Case("a GPU its node has not", body, Stage.OPERATOR, ("spec.gpu.gpuId",))


def _split_too_wide(base: dict[str, Any], drawn: Surroundings) -> Case:
    body = _put(base, ("spec", "gpu"), {"mode": "both", "tensorSplit": ",".join(["1"] * drawn.ratios)})
    return Case("a split over more GPUs than its node's", body, Stage.OPERATOR, ("spec.gpu.tensorSplit",))


def _well_formed(base: dict[str, Any], drawn: Surroundings) -> Case:
    return Case("well-formed", base, Stage.SERVED)


Defect = Callable[[dict[str, Any], Surroundings], Case]

# One round of the corpus: every defect once (those only the operator sees three times each), and
# well-formed LlamaModels.
ROUND: list[Defect] = [
    *[lambda base, _, d=d: field_defect(base, d) for d in APPLY_DEFECTS],
    *[lambda base, _, d=d: rule_defect(base, d) for d in RULE_DEFECTS],
    *[lambda base, _, d=d: name_defect(base, d) for d in BAD_NAMES],
    *[_node_absent, _gpu_absent, _split_too_wide] * 3,
    *[_well_formed] * 20,
]


def corpus(drawn: list[Surroundings]) -> list[Case]:
    """The cases of `drawn` in turn: the i-th takes the i-th defect of the rounds, in the i-th
    well-formed LlamaModel, named uniquely (a name of the drawn length) unless its name is the
    defect."""
    cases = []
    for index, surrounding in enumerate(drawn):
        case = ROUND[index % len(ROUND)](body_of(surrounding.spec), surrounding)
        if case.name == NAME:
            name = unique_name(index, surrounding.name_size, surrounding.name_letters)
            case = Case(case.what, {**case.body, "metadata": {"name": name}}, case.stage, case.named)
        cases.append(case)
    return cases

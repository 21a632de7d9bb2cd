"""The CRD is generated from the pydantic models; the committed file must not drift from them."""

from pathlib import Path

import jsonschema
import pytest
import yaml

from llamacontroller.crd import crd, crd_yaml
from tests.support.paths import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def _schema() -> dict:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.mark.parametrize("kind", ["LlamaModel", "LlamaNode"])
def test_committed_crds_match_the_models(kind: str):
    path = REPO / "crds" / f"{kind.lower()}.yaml"
    assert path.read_text() == crd_yaml(kind), (
        f"crds/{path.name} drifted: run `llamacontroller crd --kind {kind} -o crds/{path.name}`"
    )


def test_the_llamanode_crd_is_cluster_scoped_with_a_column_per_gpu():
    spec = crd("LlamaNode")["spec"]
    assert crd("LlamaNode")["metadata"]["name"] == "llamanodes.llamacontroller.io"
    assert spec["scope"] == "Cluster" and spec["names"]["shortNames"] == ["ln"]
    version = spec["versions"][0]
    assert "spec" not in version["schema"]["openAPIV3Schema"]["properties"]
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["GPU 0", "GPU 1", "NVML", "Heartbeat"]


def test_crd_identity():
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "llamamodels.llamacontroller.io"
    assert spec["names"]["kind"] == "LlamaModel"
    assert spec["names"]["shortNames"] == ["lm"]
    assert spec["names"]["categories"] == ["llama"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Model", "Node", "Slot", "Port", "Phase", "Age"]


def _walk(node: dict, path: str = ""):
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from _walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}{{}}")


def test_schema_is_structural():
    """Every node has a type (or is int-or-string / preserves unknown fields); no JSON Schema leftovers."""
    for path, node in _walk(_schema()):
        assert (
            "type" in node
            or node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ), path
        assert not {"$ref", "anyOf", "title", "const", "$defs"} & node.keys(), path
        assert not isinstance(node.get("additionalProperties"), bool), path


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_are_valid_against_the_crd_schema(example: Path):
    jsonschema.validate(yaml.safe_load(example.read_text()), _schema())


@pytest.mark.parametrize(
    "spec",
    [
        {"model": {"path": "m.gguf"}, "gpu": {"mode": "triple"}},
        {"model": {"path": "m.gguf"}, "gpu": {"gpuId": -1}},
        {"model": {"path": "m.gguf"}, "parameters": {"flashAttn": "maybe"}},
        {"model": {"source": {"url": "ftp://example.com/m.gguf", "sha256": "0" * 64}}},
        {"model": {"source": {"url": "https://example.com/m.gguf", "sha256": "ABC"}}},
        {"model": {"source": {"huggingFace": {"repo": "no-owner", "file": "m.gguf"}}}},
        {"model": {"path": "/abs.gguf"}},
    ],
)
def test_schema_rejects_what_it_can(spec):
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"spec": spec}, _schema())

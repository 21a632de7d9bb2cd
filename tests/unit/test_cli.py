"""The command line, called in-process: render, crd and tiny-model need no cluster."""

import yaml

from llamacontroller.cli import main
from llamacontroller.crd import crd_yaml
from llamacontroller.local.demo import demo_llamamodel
from tests.support.paths import REPO

CONFIG = str(REPO / "config" / "operator.yaml")


def test_render_prints_the_pod_and_service(capsys):
    assert main(["render", "-f", str(REPO / "examples" / "gpu1.yaml"), "--config", CONFIG]) == 0
    pod, service = yaml.safe_load_all(capsys.readouterr().out)
    assert (pod["kind"], service["kind"]) == ("Pod", "Service")
    assert pod["metadata"]["namespace"] == "default"
    server = pod["spec"]["containers"][0]
    assert server["args"][server["args"].index("--split-mode") + 1] == "none"
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "1"} in server["env"]
    assert service["metadata"]["name"] == "llama-gpu-node-1-gpu1"


def test_render_of_an_invalid_file_says_why_and_fails(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: llamacontroller.io/v1alpha1\nkind: LlamaModel\nmetadata: {name: x}\n"
        "spec: {model: {path: m.gguf}, nodeName: n, gpu: {mode: triple}}\n"
    )
    assert main(["render", "-f", str(bad), "--config", CONFIG]) == 2
    assert (
        "LlamaModel default/x: spec.gpu.mode: Input should be 'single' or 'both'" in capsys.readouterr().err
    )


def test_crd_prints_the_generated_crd(capsys):
    assert main(["crd"]) == 0
    assert capsys.readouterr().out == crd_yaml()


def test_the_tiny_model_is_written_where_asked(tmp_path, capsys):
    target = tmp_path / "sub" / "demo.gguf"
    assert main(["tiny-model", str(target)]) == 0
    assert target.read_bytes()[:4] == b"GGUF"
    assert capsys.readouterr().out.strip() == str(target)


def test_render_needs_no_settings_file(capsys):
    """The built-in settings are the documented ones: the same Pod with or without --config."""
    example = str(REPO / "examples" / "gpu1.yaml")
    assert main(["render", "-f", example]) == 0
    without = capsys.readouterr().out
    assert main(["render", "-f", example, "--config", CONFIG]) == 0
    assert capsys.readouterr().out == without


def test_the_demo_example_is_the_demos_llamamodel():
    assert yaml.safe_load((REPO / "examples" / "local" / "demo.yaml").read_text()) == demo_llamamodel()

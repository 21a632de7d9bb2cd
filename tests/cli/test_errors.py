"""Every command, given what a person gets wrong: one clear line on stderr per problem, exit code 2,
no traceback (``--verbose`` adds it). Each runs as a process from an empty folder, as a user would."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from llamacontroller.demo_model import write_demo_model
from tests.ports import free_port

pytestmark = pytest.mark.timeout(120)

VALID = {
    "apiVersion": "llamacontroller.io/v1alpha1",
    "kind": "LlamaModel",
    "metadata": {"name": "tiny"},
    "spec": {"model": {"path": "tiny.gguf"}, "nodeName": "node-a", "parameters": {"ctxSize": 512}},
}


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def llamacontroller(folder: Path, *args: str, env: dict[str, str] | None = None) -> Run:
    result = subprocess.run(
        [sys.executable, "-m", "llamacontroller.cli", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=folder,
        env={**os.environ, **(env or {})},
    )
    return Run(result.returncode, result.stdout, result.stderr)


def assert_user_error(run: Run, *expected: str) -> None:
    """Exit 2; stderr is `error: ...` lines only, each expected text on one of them."""
    assert run.code == 2, (run.code, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert errors and len(errors) == len(run.stderr.strip().splitlines()), run.stderr
    for text in expected:
        assert any(text in line for line in errors), (text, run.stderr)


def write(folder: Path, name: str, text: str) -> str:
    (folder / name).write_text(text)
    return name


def invalid_llamamodel(folder: Path) -> str:
    body = {**VALID, "spec": {**VALID["spec"], "gpu": {"mode": "triple"}}}
    return write(folder, "invalid.yaml", yaml.safe_dump(body))


# --- files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["render", "-f", "nope.yaml"], ["up", "-f", "nope.yaml"]])
def test_a_missing_file(folder: Path, command: list[str]):
    assert_user_error(llamacontroller(folder, *command), "nope.yaml")


@pytest.mark.parametrize("command", ["render", "up", "operator", "demo"])
def test_a_missing_config_file(folder: Path, command: str):
    file = write(folder, "tiny.yaml", yaml.safe_dump(VALID))
    args = {"render": ["-f", file], "up": ["-f", file]}.get(command, [])
    run = llamacontroller(folder, command, *args, "--config", "missing.yaml")
    assert_user_error(run, "--config missing.yaml: No such file or directory")


def test_bad_yaml(folder: Path):
    file = write(folder, "bad.yaml", "kind: LlamaModel\nspec: [unclosed\n")
    for command in (["render", "-f", file], ["up", "-f", file]):
        assert_user_error(llamacontroller(folder, *command), "bad.yaml", "line 3")


def test_a_config_file_with_bad_yaml_or_bad_settings(folder: Path):
    file = write(folder, "tiny.yaml", yaml.safe_dump(VALID))
    write(folder, "bad.yaml", "ports: {gpu0: [\n")
    assert_user_error(llamacontroller(folder, "render", "-f", file, "--config", "bad.yaml"), "not YAML")
    write(folder, "wrong.yaml", "gpusPerNode: 0\nimagePullPolicy: Sometimes\nnoSuchSetting: 1\n")
    run = llamacontroller(folder, "render", "-f", file, "--config", "wrong.yaml")
    assert_user_error(run, "--config wrong.yaml: gpusPerNode: Input should be greater than or equal to 1")
    assert "noSuchSetting: Extra inputs are not permitted" in run.stderr


def test_an_invalid_llamamodel(folder: Path):
    file = invalid_llamamodel(folder)
    expected = "default/tiny: spec.gpu.mode: Input should be 'single' or 'both'"
    assert_user_error(llamacontroller(folder, "render", "-f", file), expected)
    assert_user_error(llamacontroller(folder, "up", "-f", file, "--gateway-listen", "off"), expected)


def test_up_names_a_missing_model_file(folder: Path):
    file = write(folder, "tiny.yaml", yaml.safe_dump(VALID))
    run = llamacontroller(folder, "up", "-f", file, "--gateway-listen", "off", "--models-dir", "models")
    assert_user_error(run, "default/tiny: no model file models/tiny.gguf")


# --- ports ---------------------------------------------------------------------------------------


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def test_a_taken_gateway_port(folder: Path, taken_port: int):
    write_demo_model(folder / "models" / "tiny.gguf")
    file = write(folder, "tiny.yaml", yaml.safe_dump(VALID))
    config = write(folder, "ports.yaml", yaml.safe_dump({"ports": {"gpu0": free_port(), "gpu1": free_port(),
                                                                   "both": free_port()}}))  # fmt: skip
    run = llamacontroller(
        folder, "up", "-f", file, "--config", config, "--gateway-listen", f"127.0.0.1:{taken_port}"
    )
    assert_user_error(run, f"cannot listen on 127.0.0.1:{taken_port}: Address already in use")


def test_a_taken_slot_port(folder: Path, taken_port: int):
    write_demo_model(folder / "models" / "tiny.gguf")
    file = write(folder, "tiny.yaml", yaml.safe_dump(VALID))
    config = write(folder, "ports.yaml", yaml.safe_dump({"ports": {"gpu0": taken_port, "gpu1": free_port(),
                                                                   "both": taken_port}}))  # fmt: skip
    run = llamacontroller(folder, "up", "-f", file, "--config", config, "--gateway-listen", "off")
    assert_user_error(run, f"default/tiny: port {taken_port} of slot gpu0 is in use by another process")


def test_a_taken_adapter_port(folder: Path, taken_port: int):
    run = llamacontroller(
        folder, "adapter", "--upstream", "http://127.0.0.1:1", "--listen", f"127.0.0.1:{taken_port}"
    )
    assert_user_error(run, f"cannot listen on 127.0.0.1:{taken_port}")


# --- llama-server --------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["up", "demo"])
def test_no_llama_server(folder: Path, command: str):
    file = write(folder, "tiny.yaml", yaml.safe_dump(VALID))
    args = ["-f", file] if command == "up" else []
    run = llamacontroller(folder, command, *args, env={"LLAMA_SERVER": str(folder / "no-such-binary")})
    assert_user_error(run, f"$LLAMA_SERVER={folder / 'no-such-binary'}: no executable file there")


# --- Kubernetes ----------------------------------------------------------------------------------


CLUSTER_COMMANDS = [["operator"], ["gateway"], ["node-agent", "--node", "gpu-node-1"]]


@pytest.mark.parametrize("command", CLUSTER_COMMANDS, ids=lambda c: c[0])
def test_no_kubeconfig(folder: Path, command: list[str]):
    env = {"KUBECONFIG": str(folder / "no-kubeconfig"), "KUBERNETES_SERVICE_HOST": ""}
    run = llamacontroller(folder, *command, env=env)
    assert_user_error(run, "no Kubernetes credentials (kubeconfig")


@pytest.mark.parametrize("command", CLUSTER_COMMANDS, ids=lambda c: c[0])
def test_an_unreachable_api_server(folder: Path, command: list[str]):
    port = free_port()  # nobody listens there
    kubeconfig = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = folder / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    run = llamacontroller(folder, *command, env={"KUBECONFIG": str(path), "KUBERNETES_SERVICE_HOST": ""})
    assert_user_error(run, f"the Kubernetes API server at http://127.0.0.1:{port} cannot be reached")


def test_a_node_agent_without_its_node(folder: Path):
    run = llamacontroller(folder, "node-agent", env={"NODE_NAME": ""})
    assert_user_error(run, "node-agent: no node name (--node, or NODE_NAME from the downward API)")
    run = llamacontroller(folder, "node-agent", "--node", "n", "--interval", "10", "--heartbeat", "5")
    assert_user_error(run, "--heartbeat at least --interval")


# --- --verbose -----------------------------------------------------------------------------------


def test_verbose_adds_the_traceback(folder: Path):
    run = llamacontroller(folder, "render", "-f", "nope.yaml", "--verbose")
    assert run.code == 2
    assert "Traceback" in run.stderr and run.stderr.strip().endswith(
        "error: nope.yaml: No such file or directory"
    )


# --- the web console -----------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["gateway", "up"])
def test_a_console_key_that_would_open_the_console_by_mistake(folder: Path, command: str):
    args = ["-f", write(folder, "tiny.yaml", yaml.safe_dump(VALID))] if command == "up" else []
    write(folder, "short", "abc\n")
    run = llamacontroller(folder, command, *args, "--console-key-file", "short")
    assert_user_error(run, "console key file short: the key must be at least 16 characters")
    write(folder, "shared", "the-same-key-as-an-api-key\n")
    run = llamacontroller(folder, command, *args, "--console-key-file", "shared", "--api-keys-file", "shared")
    assert_user_error(run, "console key file shared: the console key is also an API key")


def test_console_writes_without_a_console(folder: Path):
    run = llamacontroller(folder, "gateway", "--console-writes")
    assert_user_error(run, "--console-writes needs a console: --console-key-file or --console-user-header")

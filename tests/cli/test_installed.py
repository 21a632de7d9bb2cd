"""The package as users get it: the wheel built, installed (not editable) into a fresh virtualenv, and
every command that needs no cluster run from an empty folder, with no file of the checkout in reach.

llama-server comes from $LLAMA_SERVER (the fresh virtualenv has no `server` extra); the demo's model
from the shared cache that .ci/setup fills.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest
import yaml

from llamacontroller.crd import crd_yaml
from llamacontroller.local.binary import find_llama_server
from llamacontroller.local.real_model import SMOLLM2, real_model_path
from tests.ports import free_port
from tests.support.builders import visible_gpus
from tests.support.paths import REPO
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `llamacontroller` script of a fresh virtualenv with the built wheel installed."""
    root = tmp_path_factory.mktemp("installed")
    source = root / "source"  # what the Dockerfile copies too: the build leaves the checkout as it is
    shutil.copytree(
        REPO / "operator", source / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    for file in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / file, source / file)
    wheel_command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--quiet",
        "--wheel-dir",
        str(root / "dist"),
    ]
    subprocess.run([*wheel_command, str(source)], check=True, timeout=300)
    (wheel,) = (root / "dist").glob("llamacontroller-*.whl")
    venv.create(root / "venv", with_pip=True)
    pip = [
        str(root / "venv" / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]
    subprocess.run([*pip, str(wheel)], check=True, timeout=300)
    return root / "venv" / "bin" / "llamacontroller"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


@pytest.fixture
def environment(tmp_path: Path) -> dict[str, str]:
    real_model_path()  # in the cache before the installed package looks for it
    env = {k: v for k, v in os.environ.items() if k not in {"VIRTUAL_ENV", "PYTHONPATH"}}
    return {**env, "LLAMA_SERVER": str(find_llama_server())}


def run(
    script: Path, folder: Path, env: dict[str, str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(script), *args], cwd=folder, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"llamacontroller {' '.join(args)}: {result.stdout}{result.stderr}"
    return result


def test_it_is_not_the_checkout(installed: Path):
    where = subprocess.run(
        [str(installed.with_name("python")), "-c", "import llamacontroller; print(llamacontroller.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout
    assert "site-packages" in where and str(REPO) not in where


def test_crd_and_render(installed: Path, folder: Path, environment: dict[str, str]):
    assert run(installed, folder, environment, "crd").stdout == crd_yaml()
    (folder / "lm.yaml").write_text(
        "apiVersion: llamacontroller.io/v1alpha1\nkind: LlamaModel\nmetadata: {name: phi}\n"
        "spec: {model: {path: phi.gguf}, nodeName: gpu-node-1, gpu: {mode: single, gpuId: 1}}\n"
    )
    pod, service = yaml.safe_load_all(run(installed, folder, environment, "render", "-f", "lm.yaml").stdout)
    args = pod["spec"]["containers"][0]["args"]
    assert args[args.index("--split-mode") + 1] == "none" and args[args.index("--port") + 1] == "8088"
    assert visible_gpus(pod) == "1"
    assert service["metadata"]["name"] == "llama-gpu-node-1-gpu1"


def test_up_status_down(installed: Path, folder: Path, environment: dict[str, str]):
    run(installed, folder, environment, "tiny-model", "models/tiny.gguf")
    (folder / "models.yaml").write_text(
        "apiVersion: llamacontroller.io/v1alpha1\nkind: LlamaModel\nmetadata: {name: tiny}\n"
        "spec: {model: {path: tiny.gguf}, parameters: {ctxSize: 512, threads: 1}}\n"
    )
    gateway = f"127.0.0.1:{free_port()}"
    up = subprocess.Popen(
        [
            str(installed),
            "up",
            "-f",
            "models.yaml",
            "--config",
            free_ports(folder),
            "--gateway-listen",
            gateway,
        ],
        cwd=folder,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = lambda: "Ready" in run(installed, folder, environment, "status").stdout  # noqa: E731
        eventually(ready, timeout=60, what="the tiny model to be Ready")
        assert (
            httpx.get(f"http://{gateway}/api/tags", timeout=10).json()["models"][0]["name"] == "tiny:latest"
        )
        assert run(installed, folder, environment, "down").stdout.strip() == "stopped"
        assert up.wait(30) == 0
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def free_ports(folder: Path) -> str:
    """A settings file that gives each slot a free port (this machine may run other servers)."""
    ports = {"gpu0": free_port(), "gpu1": free_port()}
    (folder / "ports.yaml").write_text(yaml.safe_dump({"ports": {**ports, "both": ports["gpu0"]}}))
    return "ports.yaml"


def test_demo_answers_in_english(installed: Path, folder: Path, environment: dict[str, str]):
    gateway = f"127.0.0.1:{free_port()}"
    demo = ["demo", "--gateway-listen", gateway, "--config", free_ports(folder)]
    out = run(installed, folder, environment, *demo, timeout=300).stdout
    answer = next(line for line in out.splitlines() if line.startswith(f"{SMOLLM2.name} answers: "))
    words = answer.removeprefix(f"{SMOLLM2.name} answers: ").lower().split()
    assert len(words) >= 5 and {"the", "sky", "blue"} <= {w.strip(".,;:!?") for w in words}, answer
    assert out.rstrip().endswith("stopped: no llama-server left running")

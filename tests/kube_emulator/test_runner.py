"""The test runner: EmulatorThread helpers, kubeconfig, the kube fixture, and the standalone CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import PODS, pod
from .errors import ApiError
from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(60)
REPO_ROOT = Path(__file__).resolve().parents[2]


def test_fixture_exports_kubeconfig(kube: EmulatorThread) -> None:
    config = yaml.safe_load(Path(os.environ["KUBECONFIG"]).read_text())
    assert config["clusters"][0]["cluster"]["server"] == kube.url
    assert config["contexts"][0]["context"]["namespace"] == "default"
    assert kube.url.startswith("http://127.0.0.1:")


def test_helpers(kube: EmulatorThread) -> None:
    created = kube.create(PODS, pod("p", labels={"app": "x"}))
    assert kube.get("pods", "default", "p") == created
    assert kube.get(PODS, "default", "missing") is None
    assert [p["metadata"]["name"] for p in kube.list(PODS, label_selector="app=x")] == ["p"]
    patched = kube.patch(PODS, "default", "p", {"metadata": {"labels": {"app": "y"}}})
    assert patched["metadata"]["labels"] == {"app": "y"}
    status = kube.patch_status(PODS, "default", "p", {"status": {"phase": "Running", "podIP": "10.1.0.5"}})
    assert status["status"]["podIP"] == "10.1.0.5"
    with pytest.raises(ApiError) as info:
        kube.create(PODS, pod("p"))
    assert info.value.code == 409
    kube.delete(PODS, "default", "p", grace_period_seconds=0)
    assert kube.get(PODS, "default", "p") is None
    assert kube.delete(PODS, "default", "p", missing_ok=True) is None
    assert kube.resource("po").kind == "Pod"
    with pytest.raises(LookupError):
        kube.resource(("nothing.test", "v1", "things"))


def test_wait_for_sees_changes_from_other_threads(kube: EmulatorThread) -> None:
    kube.create(PODS, pod("p"))
    kube.delete(PODS, "default", "p")  # graceful: removed by the emulated kubelet shortly after
    kube.wait_for(lambda: kube.get(PODS, "default", "p") is None, timeout=10)
    with pytest.raises(TimeoutError):
        kube.wait_for(lambda: False, timeout=0.3)


def test_two_emulators_side_by_side() -> None:
    with EmulatorThread() as one, EmulatorThread() as two:
        one.create(PODS, pod("only-here"))
        assert one.port != two.port
        assert two.get(PODS, "default", "only-here") is None


def test_standalone_cli(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.kube_emulator", "--port", "0", "--kubeconfig", str(kubeconfig)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        lines = []
        while time.monotonic() < deadline and not any("Ctrl-C" in line for line in lines):
            lines.append(process.stdout.readline())
        assert any("serving at http://127.0.0.1:" in line for line in lines), lines
        env = dict(os.environ, KUBECONFIG=str(kubeconfig), KUBECACHEDIR=str(tmp_path / "cache"))
        result = subprocess.run(
            ["kubectl", "get", "namespaces", "-o", "name"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "namespace/default" in result.stdout.split(), result.stderr
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "Stopped." in output

"""The real operator (a `llamacontroller operator` process) against the Kubernetes API emulator."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kube_emulator import EmulatorThread
from tests.ports import free_port
from tests.processes import interrupt
from tests.support.paths import REPO

LLAMAMODELS = ("llamacontroller.io", "v1alpha1", "llamamodels")
PODS = ("", "v1", "pods")
SERVICES = ("", "v1", "services")
OPERATOR_AGENT = "llamacontroller"


class Cluster:
    """The emulated API server, plus kubectl wired to it."""

    def __init__(self, emulator: EmulatorThread, kubeconfig: Path) -> None:
        self.emulator = emulator
        self.kubeconfig = kubeconfig

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["kubectl", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def apply(self, body: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))

    def llamamodel(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.emulator.get(LLAMAMODELS, namespace, name)

    def status(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return self.llamamodel(name, namespace).get("status") or {}

    def pods(self, namespace: str | None = None, **labels: str) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in labels.items()) or None
        return self.emulator.list(PODS, namespace, label_selector=selector)

    def server_pods(self, model: str) -> list[dict[str, Any]]:
        return self.pods(**{"llamacontroller.io/llamamodel": model})

    def services(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.emulator.list(SERVICES, namespace)

    def set_pod_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        """What the kubelet would write."""
        meta = pod["metadata"]
        self.emulator.patch_status(PODS, meta["namespace"], meta["name"], {"status": status})


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with EmulatorThread() as emulator:
        kubeconfig = tmp_path / "kubeconfig"
        emulator.write_kubeconfig(kubeconfig)
        cluster = Cluster(emulator, kubeconfig)
        cluster.kubectl("apply", "-f", str(REPO / "crds" / "llamamodel.yaml"))
        cluster.kubectl("wait", "--for", "condition=established", "crd/llamamodels.llamacontroller.io")
        for node in ("gpu-node-1", "gpu-node-2", "node-a"):
            emulator.add_node(node)
        yield cluster


class OperatorProcess:
    """`llamacontroller operator` as a user runs it, logging to a file the test prints on failure."""

    def __init__(self, cluster: Cluster, log_path: Path, config: Path, args: tuple[str, ...] = ()) -> None:
        self.cluster = cluster
        self.args = args
        self.log_path = log_path
        self.config = config
        self.process: subprocess.Popen | None = None
        self.liveness_port = free_port()

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "llamacontroller.cli", "operator",
                    "--config", str(self.config),
                    "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz",
                    "--verbose",
                    *self.args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )  # fmt: skip

    def stop(self) -> None:
        interrupt(self.process)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def operator_config(tmp_path: Path) -> Path:
    """The repo's config; tests that need another write their own file."""
    return REPO / "config" / "operator.yaml"


@pytest.fixture
def operator(cluster: Cluster, tmp_path: Path, operator_config: Path, request) -> Iterator[OperatorProcess]:
    process = OperatorProcess(cluster, tmp_path / "operator.log", operator_config)
    process.start()
    yield process
    process.stop()
    call = getattr(request.node, "rep_call", None)
    if call is not None and call.failed:
        print(f"--- operator log ---\n{process.log()[-20000:]}")
    elif call is not None:
        assert "Traceback" not in process.log(), process.log()[-20000:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)

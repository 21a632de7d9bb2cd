"""LlamaController's processes against a test cluster, as deploy/ runs them: `llamacontroller
operator`, `llamacontroller gateway` and `llamacontroller node-agent`, each with a token of its own
ServiceAccount (so the API server holds it to the ClusterRole of deploy/), logging to a file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.cluster.cluster import LocalCluster
from tests.ports import free_port
from tests.processes import interrupt
from tests.support.fake_nvml import process_environment
from tests.support.kube import service_account_user
from tests.support.polling import eventually

DEPLOY_NAMESPACE = "llamacontroller"  # deploy/'s namespace: the ServiceAccounts live there
OPERATOR_ACCOUNT = "llamacontroller-operator"
GATEWAY_ACCOUNT = "llamacontroller-gateway"
NODE_AGENT_ACCOUNT = "llamacontroller-node-agent"
NODE_AGENT_NAMESPACE = "llamacontroller-node-agent"  # its own: hostPID needs the privileged level
OPERATOR_USER = service_account_user(DEPLOY_NAMESPACE, OPERATOR_ACCOUNT)
GATEWAY_USER = service_account_user(DEPLOY_NAMESPACE, GATEWAY_ACCOUNT)
NODE_AGENT_USER = service_account_user(NODE_AGENT_NAMESPACE, NODE_AGENT_ACCOUNT)


def service_account_kubeconfig(
    cluster: LocalCluster, account: str, path: Path, namespace: str | None = None
) -> Path:
    """A kubeconfig with a fresh token of one of deploy/'s ServiceAccounts (in deploy/'s namespace,
    or the node agent's in its own)."""
    assert cluster.control_plane is not None, "the cluster is not started"
    if namespace is None:
        namespace = NODE_AGENT_NAMESPACE if account == NODE_AGENT_ACCOUNT else DEPLOY_NAMESPACE
    return cluster.control_plane.service_account_kubeconfig(namespace, account, path)


class ComponentProcess:
    """`llamacontroller ARGS` with a kubeconfig; ``prefix`` wraps the command (a network namespace)."""

    def __init__(
        self, args: Sequence[str], kubeconfig: Path, log_path: Path, prefix: Sequence[str] = ()
    ) -> None:
        self.args = list(args)
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.prefix = list(prefix)
        self.process: subprocess.Popen[bytes] | None = None
        self.audit_mark = 0  # where the API server's audit log ended before it started, if one cares

    def start(self) -> None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        for variable in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "LLAMACONTROLLER_API_KEYS"):
            env.pop(variable, None)
        env.update(self.extra_env())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, sys.executable, "-m", "llamacontroller.cli", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    def extra_env(self) -> dict[str, str]:
        return {}

    def stop(self) -> None:
        """Ctrl-C, as a person stops it (its shutdown's API calls happen too); SIGKILL if it lingers."""
        interrupt(self.process)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def check_running(self) -> None:
        assert self.process is not None and self.process.poll() is None, (
            f"llamacontroller {self.args[0]} exited:\n{self.log()[-5000:]}"
        )


class OperatorProcess(ComponentProcess):
    """`llamacontroller operator` with the operator's ServiceAccount; ``wait_ready`` waits for its
    ``/readyz`` (200 once the operator acts; ``/healthz`` and ``/metrics`` are beside it)."""

    def __init__(self, kubeconfig: Path, log_path: Path, config: Path, extra: Sequence[str] = ()) -> None:
        port = free_port()
        self.liveness = f"http://127.0.0.1:{port}/healthz"
        self.readiness = f"http://127.0.0.1:{port}/readyz"
        args = ["operator", "--config", str(config), "--liveness", self.liveness, "--verbose", *extra]
        super().__init__(args, kubeconfig, log_path)

    def wait_ready(self, timeout: float = 60.0) -> None:
        def alive() -> bool:
            self.check_running()
            try:
                return httpx.get(self.readiness, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        eventually(alive, timeout=timeout, what="the operator's readiness endpoint")

    def start_ready(self) -> OperatorProcess:
        """Starts it and waits until it is up; a process that does not come up is not left behind."""
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self


class GatewayProcess(ComponentProcess):
    """`llamacontroller gateway` with the gateway's ServiceAccount, in the cluster's client namespace
    (where the slots' Service names resolve), serving on ``url`` (the client namespace's address,
    which this machine reaches). ``keys``: the API keys the Deployment would set from the Secret."""

    def __init__(
        self,
        cluster: LocalCluster,
        kubeconfig: Path,
        log_path: Path,
        port: int = 11434,
        keys: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        assert cluster.network is not None, "the cluster is not started"
        self.url = f"http://{cluster.network.client_address}:{port}"
        self.keys = keys
        prefix = cluster.client_command([])
        super().__init__(["gateway", "--listen", f"0.0.0.0:{port}", *extra], kubeconfig, log_path, prefix)

    def extra_env(self) -> dict[str, str]:
        return {"LLAMACONTROLLER_API_KEYS": self.keys} if self.keys is not None else {}

    def wait_listening(self, timeout: float = 30.0) -> None:
        def answers() -> bool:
            self.check_running()
            try:
                return httpx.get(self.url, timeout=2).text == "Ollama is running"
            except httpx.HTTPError:
                return False

        eventually(answers, timeout=timeout, what="the gateway to listen")

    def start_listening(self) -> GatewayProcess:
        """Starts it and waits until it answers; a process that does not come up is not left behind."""
        self.start()
        try:
            self.wait_listening()
        except BaseException:
            self.stop()
            raise
        return self


class NodeAgentProcess(ComponentProcess):
    """`llamacontroller node-agent` for one node, with the node agent's ServiceAccount, on this
    machine (whose PIDs are the test nodes' PIDs: their containers are local processes). NVML is the
    fake (tests/support/fake_nvml.py, labelled as one) reading ``recording``, an ``nvidia-smi -q -x``
    document the test writes, read again at every reading."""

    def __init__(
        self, kubeconfig: Path, log_path: Path, node: str, recording: Path, models: Path | None = None
    ) -> None:
        self.recording = recording
        args = ["node-agent", "--node", node, "--interval", "1", "--heartbeat", "5", "--verbose"]
        args += ["--models-dir", str(models) if models else ""]
        super().__init__(args, kubeconfig, log_path)

    def extra_env(self) -> dict[str, str]:
        return process_environment(self.recording)

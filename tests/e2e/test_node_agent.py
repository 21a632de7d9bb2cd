"""The node agent on the test cluster: `llamacontroller node-agent` as a process with deploy/'s
ServiceAccount for it, a slot Pod the real operator made on a test node (its llama-server a real
process, in its Pod's cgroup), a foreign process beside it, and NVML played by the fake of NVML
(labelled as one: tests/support/fake_nvml.py) from an nvidia-smi recording that names those real
PIDs. The LlamaNode it writes is read back with kubectl: the printer columns, the processes told
apart, the models volume's header facts, a change when the foreign process leaves, the heartbeat,
its re-creation when deleted, and a clean stop on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from llamacontroller.fit.model import model_facts
from llamacontroller.gguf_header import read_header
from llamacontroller.llamanode import parse_llamanode
from llamacontroller.render.names import SERVER_NAME
from tests.cluster import cgroups
from tests.cluster.cluster import LocalCluster
from tests.support.builders import TINY_MODEL, lm
from tests.support.components import (
    NODE_AGENT_ACCOUNT,
    NODE_AGENT_USER,
    NodeAgentProcess,
    OperatorProcess,
    service_account_kubeconfig,
)
from tests.support.fake_nvml import recording_with
from tests.support.kube import Kube, refused_by_rbac, requests_of
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(180)

NODE = "node-a"
LLAMANODE = f"/apis/llamacontroller.io/v1alpha1/llamanodes/{NODE}"
SERVER_MIB = 18934
FOREIGN_MIB = 3270


def server_pid(pod: dict) -> int | None:
    """llama-server's PID, from its container's cgroup (where the node agent finds its Pod); None
    before it runs."""
    root = cgroups.root()
    assert root is not None, "no cgroups on this machine: the tests' kubelet runs as root"
    procs = root / f"pod{pod['metadata']['uid']}" / SERVER_NAME / "cgroup.procs"
    try:
        pids = procs.read_text().split()
        for pid in pids:
            if b"llama-server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
    except OSError:  # not started yet, or a launcher that just exec'd
        pass
    return None


def columns(kube: Kube) -> str:
    return kube.kubectl("get", "llamanodes", NODE).stdout


def test_the_node_agent_tells_the_slot_server_from_a_foreign_process(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess, tmp_path: Path
) -> None:
    assert cluster.control_plane is not None and cluster.options.models_dir is not None
    kube.delete(LLAMANODE)  # another test's agent may have left it: this one creates its own
    kube.apply(lm("phi", node=NODE, gpu={"mode": "single", "gpuId": 0}))
    pod = eventually(lambda: kube.one_pod("phi"), what="phi's pod")
    pid = eventually(lambda: server_pid(kube.one_pod("phi")), what="its llama-server running")
    foreign = subprocess.Popen(["sleep", "300"])  # a process in no Pod, "using" GPU 1
    recording = tmp_path / "nvidia-smi.xml"
    recording.write_text(
        recording_with(
            {0: [(pid, "/app/llama-server", SERVER_MIB)], 1: [(foreign.pid, "python3", FOREIGN_MIB)]}
        )
    )
    mark = cluster.control_plane.audit_mark()
    kubeconfig = service_account_kubeconfig(cluster, NODE_AGENT_ACCOUNT, tmp_path / "agent.kubeconfig")
    agent = NodeAgentProcess(kubeconfig, tmp_path / "agent.log", NODE, recording, cluster.options.models_dir)
    holder = f"{kube.namespace}/phi"
    try:
        agent.start()

        def written() -> str | None:
            agent.check_running()
            table = columns(kube) if kube.get(LLAMANODE) else ""
            return table if f"held by {holder}" in table else None

        table = eventually(written, timeout=30, what="the LlamaNode with its holder")
        header, row = table.splitlines()
        assert header.split()[:6] == ["NAME", "GPU", "0", "GPU", "1", "NVML"]
        assert row.startswith(NODE) and "occupied: 3.2 GiB by others" in row and " ok " in row

        status = parse_llamanode(kube.get(LLAMANODE) or {}).status
        first, second = status.gpus
        (server,) = first.processes
        assert (server.pid, server.llama_model) == (pid, holder)
        assert server.pod == f"{kube.namespace}/{pod['metadata']['name']}"
        assert first.holders == [holder] and first.foreign_memory == 0
        (other,) = second.processes
        assert other.pid == foreign.pid and other.foreign and second.foreign_memory == FOREIGN_MIB << 20
        assert status.driver_version == "550.127.05" and status.heartbeat_at and status.agent_version

        tiny = status.model_file(TINY_MODEL)
        assert tiny is not None and tiny.error is None
        expected = model_facts(read_header(cluster.options.models_dir / TINY_MODEL))
        assert tiny.facts == expected.model_copy(update={"path": TINY_MODEL})

        # The foreign process leaves: GPU 1 is idle at the next reading.
        foreign.kill()
        foreign.wait()
        recording.write_text(recording_with({0: [(pid, "/app/llama-server", SERVER_MIB)]}))
        eventually(
            lambda: "occupied" not in columns(kube) and "idle" in columns(kube), timeout=15, what="GPU 1 idle"
        )
        after = parse_llamanode(kube.get(LLAMANODE) or {}).status
        assert after.gpus[1].processes == [] and after.gpus[1].foreign_memory == 0
        assert after.gpus[0].holders == [holder]

        # Nothing changes: the heartbeat (5 s here) writes all the same.
        beat = after.heartbeat_at
        eventually(
            lambda: parse_llamanode(kube.get(LLAMANODE) or {}).status.heartbeat_at != beat,
            timeout=10,
            what="a heartbeat",
        )
        # Someone deletes the LlamaNode: the agent creates it again, with its reading, at its next
        # write (the heartbeat at the latest: 5 s here).
        kube.delete(LLAMANODE)
        back = eventually(lambda: (kube.get(LLAMANODE) or {}).get("status"), timeout=15, what="it back")
        assert back["gpus"][0]["summary"] == f"held by {holder}"

        # SIGTERM (the kubelet's stop) ends it cleanly.
        assert agent.process is not None
        agent.process.send_signal(signal.SIGTERM)
        assert agent.process.wait(timeout=10) == 0
    finally:
        foreign.kill()
        agent.stop()
    log = agent.log()
    assert "Traceback" not in log, log[-10000:]
    assert log.count(f"LlamaNode {NODE} created") == 2, log[-5000:]
    assert log.rstrip().endswith(f"node agent of {NODE} stopped"), log[-2000:]
    calls = requests_of(cluster.control_plane.audit_events(mark), NODE_AGENT_USER)
    refused = refused_by_rbac(calls)
    assert not refused, "the node agent's ClusterRole does not grant:\n" + "\n".join(refused)
    assert calls, "the node agent made no call"

"""The server Pod's life, as a kubelet writes it, told by the LlamaModel's status and events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import yaml

from tests.e2e.conftest import PODS, REPO, SERVICES, Cluster, OperatorProcess
from tests.e2e.test_operator import lm, one_pod
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(120)

RUNNING = {"running": {"startedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}}


def kubelet_writes(cluster: Cluster, pod: dict, phase: str, *, ready: bool = False, **container) -> None:
    conditions = [{"type": "PodScheduled", "status": "True"}]
    conditions.append({"type": "Ready", "status": str(ready), "lastTransitionTime": "2026-01-01T00:01:00Z"})
    status = {"name": "llama-server", "ready": ready, "restartCount": 0, **container}
    cluster.set_pod_status(pod, {"phase": phase, "conditions": conditions, "containerStatuses": [status]})


def phase_is(cluster: Cluster, name: str, phase: str, reason: str | None = None):
    def check():
        status = cluster.status(name)
        ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})
        return status.get("phase") == phase and (reason is None or ready.get("reason") == reason) and status

    return eventually(check, what=f"{name} to be {phase} ({reason})")


def events_of(cluster: Cluster, name: str) -> list[tuple[str, str]]:
    events = cluster.emulator.list(("", "v1", "events"), "default")
    mine = [e for e in events if e["involvedObject"]["name"] == name]
    return [(e["type"], e["reason"]) for e in sorted(mine, key=lambda e: e["metadata"]["resourceVersion"])]


def test_the_story_of_a_server(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("phi", startupTimeoutSeconds=86400))
    pod = eventually(lambda: one_pod(cluster, "phi"))
    phase_is(cluster, "phi", "Pending", "Scheduling")

    cluster.set_pod_status(
        pod,
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ],
        },
    )
    status = phase_is(cluster, "phi", "Pending", "Unschedulable")
    assert "0/3 nodes are available: 3 Insufficient nvidia.com/gpu." in status["message"]

    kubelet_writes(cluster, pod, "Pending", state={"waiting": {"reason": "ContainerCreating"}})
    phase_is(cluster, "phi", "Pending", "ContainerCreating")

    kubelet_writes(cluster, pod, "Running", state=RUNNING)
    phase_is(cluster, "phi", "Loading", "Loading")

    kubelet_writes(cluster, pod, "Running", ready=True, state=RUNNING)
    status = phase_is(cluster, "phi", "Ready", "ServerReady")
    assert status["loadedAt"] == "2026-01-01T00:01:00Z"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    became_ready = ready["lastTransitionTime"]

    crash = {
        "restartCount": 2,
        "state": {
            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}
        },
        "lastState": {
            "terminated": {
                "exitCode": 137,
                "reason": "OOMKilled",
                "message": "llama_model_load: loading tensors\ncudaMalloc failed: out of memory",
                "finishedAt": "2026-01-01T00:02:00Z",
            }
        },
    }
    kubelet_writes(cluster, pod, "Running", **crash)
    status = phase_is(cluster, "phi", "Failed", "CrashLoopBackOff")
    assert (
        "last exit 137 (OOMKilled): llama_model_load: loading tensors\ncudaMalloc failed: out of memory"
        in (status["message"])
    )
    assert status["restarts"] == 2
    assert status["lastTermination"]["reason"] == "OOMKilled" and status["lastTermination"]["exitCode"] == 137

    kubelet_writes(
        cluster, pod, "Running", ready=True, restartCount=2, state=RUNNING, lastState=crash["lastState"]
    )
    status = phase_is(cluster, "phi", "Ready", "ServerReady")
    assert status["restarts"] == 2
    assert next(c for c in status["conditions"] if c["type"] == "Ready")["lastTransitionTime"] >= became_ready

    reasons = eventually(
        lambda: (r := [reason for _, reason in events_of(cluster, "phi")]) and r[-1] == "ServerReady" and r
    )
    assert reasons == [
        "PodCreated",
        "Scheduling",
        "Unschedulable",
        "ContainerCreating",
        "Loading",
        "ServerReady",
        "CrashLoopBackOff",
        "ServerReady",
    ]
    assert ("Warning", "CrashLoopBackOff") in events_of(cluster, "phi")
    described = cluster.kubectl("describe", "lm", "phi").stdout
    assert "CrashLoopBackOff" in described and "OOMKilled" in described


def test_a_load_past_its_budget_is_reported(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("slow", startupTimeoutSeconds=60))
    pod = eventually(lambda: one_pod(cluster, "slow"))
    assert pod["spec"]["containers"][0]["startupProbe"]["failureThreshold"] * 5 >= 60
    kubelet_writes(cluster, pod, "Running", state={"running": {"startedAt": "2020-01-01T00:00:00Z"}})
    status = phase_is(cluster, "slow", "Failed", "StartupTimeout")
    assert "longer than its startup budget of 60 s (spec.startupTimeoutSeconds)" in status["message"]


def test_a_pod_deleted_from_outside_is_recreated_and_keeps_its_slot(
    cluster: Cluster, operator: OperatorProcess
):
    cluster.apply(lm("holder"))
    pod = eventually(lambda: one_pod(cluster, "holder"))
    cluster.apply(lm("waiter"))
    eventually(lambda: cluster.status("waiter").get("phase") == "Waiting")
    cluster.kubectl("delete", "pod", pod["metadata"]["name"])
    new = eventually(
        lambda: [p for p in cluster.server_pods("holder") if p["metadata"]["uid"] != pod["metadata"]["uid"]],
        what="a new pod for the holder",
    )
    assert new[0]["metadata"]["name"] == pod["metadata"]["name"]  # the same server, recreated
    assert cluster.status("waiter")["phase"] == "Waiting" and cluster.server_pods("waiter") == []
    assert [e.name for e in cluster.emulator.events(resource="pods", type="ADDED")].count(
        pod["metadata"]["name"]
    ) == 2


def test_an_evicted_pod_is_replaced(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("phi"))
    pod = eventually(lambda: one_pod(cluster, "phi"))
    cluster.set_pod_status(
        pod, {"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."}
    )
    eventually(
        lambda: [p for p in cluster.server_pods("phi") if p["metadata"]["uid"] != pod["metadata"]["uid"]],
        what="a replacement pod",
    )
    evicted = [
        m
        for m in cluster.emulator.events(resource="llamamodels", name="phi")
        if (m.snapshot.get("status") or {}).get("phase") == "Failed"
    ]
    assert "The node was low on memory.; replacing the pod" in evicted[-1].snapshot["status"]["message"]
    phase_is(cluster, "phi", "Pending")


def test_a_service_deleted_from_outside_is_recreated(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("phi"))
    service = eventually(lambda: cluster.services() and cluster.services()[0])
    cluster.kubectl("delete", "service", service["metadata"]["name"])
    eventually(
        lambda: [s for s in cluster.services() if s["metadata"]["uid"] != service["metadata"]["uid"]],
        what="the service to be recreated",
    )
    assert cluster.emulator.get(SERVICES, "default", service["metadata"]["name"]) is not None
    assert cluster.emulator.list(PODS, "default")


@pytest.fixture
def operator_config(tmp_path):
    """Looks again every second, so time alone (no event) moves a status within the test."""
    config = yaml.safe_load((REPO / "config" / "operator.yaml").read_text()) | {"resyncSeconds": 1}
    path = tmp_path / "operator.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_time_alone_reports_a_load_past_its_budget(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("slow", startupTimeoutSeconds=2))
    pod = eventually(lambda: one_pod(cluster, "slow"))
    kubelet_writes(
        cluster,
        pod,
        "Running",
        state={"running": {"startedAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}},
    )
    phase_is(cluster, "slow", "Loading")
    events_before = len(cluster.emulator.events(resource="pods", name=pod["metadata"]["name"]))
    status = phase_is(cluster, "slow", "Failed", "StartupTimeout")
    assert "longer than its startup budget of 2 s" in status["message"]
    assert len(cluster.emulator.events(resource="pods", name=pod["metadata"]["name"])) == events_before

"""The server Pod's life told by the LlamaModel's status and events: crashes, images that cannot be
pulled, Pods nobody can place, loads past their budget, refusals, Pods and Services lost. The node
agents produce each of these for real; what no local process can show (a kernel's OOM kill, an
eviction) is written on a passive node as its kubelet would, and those tests say so."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from llamacontroller.config import OperatorConfig
from tests.cluster.cluster import LocalCluster
from tests.support.builders import lm, write_settings
from tests.support.components import OperatorProcess
from tests.support.kube import NEVER_READY_IMAGE, SLOW_STOP_IMAGE, Kube
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def operator_config(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """Looks again every second, so time alone (no event) moves a status within the test."""
    return write_settings(tmp_path, resyncSeconds=1, **getattr(request, "param", {}))


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def kubelet_status(
    phase: str, *, ready: bool = False, since: str = "2026-01-01T00:01:00Z", **server: Any
) -> dict[str, Any]:
    """A Pod status as a kubelet writes it: the Pod's conditions, llama-server's container status
    (``server``) and the adapter's (running, ready)."""
    conditions = [
        {"type": kind, "status": str(ready), "lastTransitionTime": since}
        for kind in ("ContainersReady", "Ready")
    ]
    conditions.append({"type": "Initialized", "status": "True", "lastTransitionTime": since})
    running = {"running": {"startedAt": since}}
    settings = OperatorConfig()
    adapter = {"name": "adapter", "image": settings.adapter.image, "ready": True, "restartCount": 0}
    llama = {"name": "llama-server", "image": settings.image, "ready": ready, "restartCount": 0}
    return {
        "phase": phase,
        "conditions": conditions,
        "containerStatuses": [llama | server, adapter | {"state": running, "started": True}],
    }


def test_the_story_of_a_server_as_its_kubelet_tells_it(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess
) -> None:
    """The Pod waits for the scheduler (paused), is bound to the passive node, and from there its
    kubelet's statuses are written by the test: loading, ready, killed by the kernel for want of
    memory (OOMKilled, which the node agent cannot produce), crash-looping, ready again."""
    with cluster.paused("kube-scheduler"):
        kube.apply(lm("phi", node="passive", startupTimeoutSeconds=86400))
        pod = eventually(lambda: kube.one_pod("phi"))["metadata"]["name"]
        status = kube.wait_phase("phi", "Pending", "Scheduling")
        assert status["message"] == f"pod {pod} waits for the scheduler"
    status = kube.wait_phase("phi", "Pending", "ContainerCreating")  # bound; no kubelet news yet
    assert kube.pod(pod)["spec"]["nodeName"] == "passive"  # type: ignore[index]

    started = now()
    cluster.write_pod_status(
        kube.namespace, pod, kubelet_status("Running", state={"running": {"startedAt": started}})
    )
    kube.wait_phase("phi", "Loading", "Loading")

    ready_at = "2026-01-01T00:01:00Z"
    cluster.write_pod_status(
        kube.namespace,
        pod,
        kubelet_status("Running", ready=True, since=ready_at, state={"running": {"startedAt": started}}),
    )
    status = kube.wait_phase("phi", "Ready", "ServerReady")
    assert status["loadedAt"] == ready_at
    became_ready = kube.condition("phi", "Ready")["lastTransitionTime"]

    oom = {
        "exitCode": 137,
        "reason": "OOMKilled",
        "message": "llama_model_load: loading tensors\ncudaMalloc failed: out of memory",
        "startedAt": started,
        "finishedAt": now(),
    }
    crash = {
        "restartCount": 2,
        "state": {
            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}
        },
        "lastState": {"terminated": oom},
    }
    cluster.write_pod_status(
        kube.namespace, pod, kubelet_status("Running", since=now(), state={"terminated": oom})
    )
    status = kube.wait_phase("phi", "Failed", "OOMKilled")
    assert status["message"].startswith(f"llama-server in pod {pod} exited; last exit 137 (OOMKilled): ")
    cluster.write_pod_status(kube.namespace, pod, kubelet_status("Running", since=now(), **crash))
    status = kube.wait_phase("phi", "Failed", "CrashLoopBackOff")
    assert (
        "last exit 137 (OOMKilled): llama_model_load: loading tensors\ncudaMalloc failed: out of memory"
        in status["message"]
    )
    assert status["restarts"] == 2
    assert (status["lastTermination"]["reason"], status["lastTermination"]["exitCode"]) == ("OOMKilled", 137)

    cluster.write_pod_status(
        kube.namespace,
        pod,
        kubelet_status(
            "Running",
            ready=True,
            since=now(),
            restartCount=2,
            state={"running": {"startedAt": now()}},
            lastState={"terminated": oom},
        ),
    )
    status = kube.wait_phase("phi", "Ready", "ServerReady")
    assert status["restarts"] == 2
    assert kube.condition("phi", "Ready")["lastTransitionTime"] >= became_ready

    reasons = eventually(
        lambda: (r := kube.reasons("phi")) and r[-1] == "ServerReady" and r, what="the events"
    )
    assert reasons == [
        "PodCreated",
        "Scheduling",
        "ContainerCreating",
        "Loading",
        "ServerReady",
        "OOMKilled",
        "CrashLoopBackOff",
        "ServerReady",
    ]
    assert ("Warning", "CrashLoopBackOff") in [(e["type"], e["reason"]) for e in kube.events("phi")]
    described = kube.kubectl("describe", "lm", "phi").stdout
    assert "CrashLoopBackOff" in described and "OOMKilled" in described


def test_a_crashing_server_backs_off_says_why_and_recovers_by_itself(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess
) -> None:
    """llama-server exits at once when its model file is missing: the node agent restarts it with
    growing delays (CrashLoopBackOff) and the status quotes llama-server's last words. Once the file
    is there, the next restart serves."""
    assert cluster.options.models_dir is not None
    model = f"late-{uuid.uuid4().hex[:8]}.gguf"
    kube.apply(lm("phi", model={"path": model}))
    status = kube.wait_phase("phi", "Failed", "CrashLoopBackOff", timeout=60)
    assert "last exit 1 (Error)" in status["message"], status["message"]
    assert f"failed to load model '/models/{model}'" in status["message"]
    assert status["lastTermination"]["exitCode"] == 1 and status["restarts"] >= 1

    (cluster.options.models_dir / model).hardlink_to(cluster.options.models_dir / "tiny.gguf")
    status = kube.wait_phase("phi", "Ready", "ServerReady", timeout=60)
    assert status["restarts"] >= 2 and status["lastTermination"]["reason"] == "Error"
    # the operator posts the Event after the status it tells of: wait for it
    eventually(lambda: {"CrashLoopBackOff", "ServerReady"} <= set(kube.reasons("phi")), what="the Events")


def test_an_image_that_cannot_be_pulled_is_reported(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(lm("phi", image="registry.example/llama.cpp:missing"))
    status = kube.wait_phase("phi", "Failed", "ErrImagePull")
    assert "registry.example/llama.cpp:missing" in status["message"]
    assert status["message"].startswith(
        f"llama-server in pod {kube.one_pod('phi')['metadata']['name']}: ErrImagePull"
    )


def test_a_pod_no_node_can_take_says_why(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(lm("phi", resources={"requests": {"cpu": "500"}}))
    status = kube.wait_phase("phi", "Pending", "Unschedulable")
    pod = kube.one_pod("phi")["metadata"]["name"]
    assert status["message"].startswith(f"pod {pod} cannot be scheduled: 0/5 nodes are available:")
    assert "1 Insufficient cpu" in status["message"]  # node-a: the others are not the LlamaModel's node


@pytest.mark.parametrize(
    "operator_config", [{"adapter": {"enabled": False}}], indirect=True, ids=["server only"]
)
def test_time_alone_reports_a_load_past_its_budget(kube: Kube, operator: OperatorProcess) -> None:
    """A server that never answers its probes, and takes seconds to stop once the kubelet gives up on
    it (after two failed probes, at 5 s): past its startup budget of 6 s it is reported, while
    nothing about the Pod changes (the operator's periodic look, not an event, tells it)."""
    kube.apply(lm("slow", image=NEVER_READY_IMAGE, startupTimeoutSeconds=6))
    kube.wait_phase("slow", "Loading", "Loading")
    pod = kube.one_pod("slow")
    status = kube.wait_phase("slow", "Failed", "StartupTimeout")
    assert "startup budget of 6 s (spec.startupTimeoutSeconds)" in status["message"]
    assert pod["metadata"]["name"] in status["message"]
    later = kube.pod(pod["metadata"]["name"])
    assert later is not None and later["metadata"]["resourceVersion"] == pod["metadata"]["resourceVersion"]


def test_a_pod_deleted_from_outside_is_recreated_and_keeps_its_slot(
    kube: Kube, operator: OperatorProcess
) -> None:
    kube.apply(lm("holder", image=SLOW_STOP_IMAGE))
    kube.wait_phase("holder", "Loading")
    pod = kube.one_pod("holder")
    kube.apply(lm("waiter"))
    kube.wait_phase("waiter", "Waiting")
    with kube.watch() as pods:
        kube.kubectl("delete", "pod", pod["metadata"]["name"], "--wait=false")
        status = kube.wait_phase("holder", "Pending", "Terminating")  # its server takes seconds to stop
        assert status["message"] == f"pod {pod['metadata']['name']} is stopping"
        new = eventually(
            lambda: [p for p in kube.server_pods("holder") if p["metadata"]["uid"] != pod["metadata"]["uid"]],
            what="a new pod for the holder",
        )
        changes = pods.changes
    assert new[0]["metadata"]["name"] == pod["metadata"]["name"]  # the same server, recreated
    assert kube.status("waiter")["phase"] == "Waiting" and kube.server_pods("waiter") == []
    added = [c.uid for c in changes if c.type == "ADDED" and c.name == pod["metadata"]["name"]]
    assert added == [pod["metadata"]["uid"], new[0]["metadata"]["uid"]]


def test_a_server_on_a_node_that_stops_responding_is_reported(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess
) -> None:
    """The node's agent stops talking to the API server (its processes go on); once the node is
    Unknown, the status says that the server cannot be reached; once it talks again, all is well."""
    kube.apply(lm("phi", node="gpu-node-2"))
    kube.wait_phase("phi", "Loading")
    cluster.lose_node("gpu-node-2")
    try:
        status = kube.wait_phase("phi", "Failed", "NodeNotResponding", timeout=40)
        assert status["message"].startswith("node gpu-node-2 does not respond since ")
        assert kube.one_pod("phi")["metadata"].get("deletionTimestamp") is None
    finally:
        cluster.recover_node("gpu-node-2")
    kube.wait_phase("phi", "Ready", timeout=60)
    assert "NodeNotResponding" in kube.reasons("phi")


def test_an_evicted_pod_is_replaced(cluster: LocalCluster, kube: Kube, operator: OperatorProcess) -> None:
    """An eviction (the node agent never evicts) written on the passive node as its kubelet would."""
    kube.apply(lm("phi", node="passive"))
    pod = eventually(
        lambda: kube.one_pod("phi")["spec"].get("nodeName") and kube.one_pod("phi"), what="bound"
    )
    evicted = {"phase": "Failed", "reason": "Evicted", "message": "The node was low on memory."}
    cluster.write_pod_status(kube.namespace, pod["metadata"]["name"], evicted)
    eventually(
        lambda: [p for p in kube.server_pods("phi") if p["metadata"]["uid"] != pod["metadata"]["uid"]],
        what="a replacement pod",
    )
    story = [(e["type"], e["reason"], e["message"]) for e in kube.events("phi")]
    name = pod["metadata"]["name"]
    assert (
        "Warning",
        "Evicted",
        f"pod {name} failed: Evicted: The node was low on memory.; replacing the pod",
    ) in story
    kube.wait_phase("phi", "Pending")


def test_a_service_deleted_from_outside_is_recreated(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(lm("phi"))
    service = eventually(lambda: kube.services() and kube.services()[0])
    kube.kubectl("delete", "service", service["metadata"]["name"])
    eventually(
        lambda: [s for s in kube.services() if s["metadata"]["uid"] != service["metadata"]["uid"]],
        what="the service to be recreated",
    )
    assert kube.service(service["metadata"]["name"]) is not None and kube.pods()


def test_a_quota_that_refuses_the_pod_is_reported_until_it_is_lifted(
    kube: Kube, operator: OperatorProcess
) -> None:
    """The API server refuses the Pod (a ResourceQuota allows none): the status says so with the
    server's own words, and the Pod comes once the quota is gone."""
    quota = {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    kube.create(kube.ns_path("resourcequotas"), quota)
    eventually(
        lambda: (kube.get(kube.ns_path("resourcequotas", "no-pods")) or {}).get("status", {}).get("hard"),
        what="the quota counted",
    )
    kube.apply(lm("phi"))
    status = kube.wait_phase("phi", "Failed", "Refused")
    pod = status["podName"]
    assert status["message"].startswith(f"the API server refused to create pod {pod}: 403 Forbidden: ")
    refusal = "exceeded quota: no-pods, requested: pods=1, used: pods=0, limited: pods=0"
    assert f'pods "{pod}" is forbidden: {refusal}' in status["message"]
    assert kube.pods() == []
    kube.delete(kube.ns_path("resourcequotas", "no-pods"))
    eventually(lambda: kube.one_pod("phi"), what="the pod, once the quota is gone")
    kube.wait_phase("phi", "Loading")

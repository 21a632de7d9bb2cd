"""End to end: kubectl applies LlamaModels, the real operator reconciles them on the emulated API."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import REPO, Cluster, OperatorProcess
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(120)

EXAMPLES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((REPO / "examples").glob("*.yaml"))}


def lm(name: str, node: str = "node-a", **spec) -> dict:
    return {
        "apiVersion": "llamacontroller.io/v1alpha1",
        "kind": "LlamaModel",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"model": {"path": f"{name}.gguf"}, "nodeName": node, **spec},
    }


def arg(pod: dict, flag: str) -> str:
    args = pod["spec"]["containers"][0]["args"]
    return args[args.index(flag) + 1]


def one_pod(cluster: Cluster, model: str) -> dict:
    pods = cluster.server_pods(model)
    assert len(pods) == 1, pods
    return pods[0]


@pytest.mark.parametrize(
    ("example", "slot", "port", "split", "service"),
    [
        ("gpu0", "gpu0", 8081, "1,0", "llama-gpu-node-1-gpu0"),
        ("gpu1", "gpu1", 8088, "0,1", "llama-gpu-node-1-gpu1"),
        ("both", "both", 8081, "0.6,0.4", "llama-gpu-node-2-both"),
    ],
)
def test_example_gets_pod_service_and_status(
    cluster: Cluster, operator: OperatorProcess, example, slot, port, split, service
):
    cluster.kubectl("apply", "-f", str(REPO / "examples" / f"{example}.yaml"))
    name = EXAMPLES[example]["metadata"]["name"]
    pod = eventually(lambda: one_pod(cluster, name), what="the server pod")
    assert (arg(pod, "--port"), arg(pod, "--tensor-split")) == (str(port), split)
    assert pod["spec"]["containers"][0]["ports"][0]["containerPort"] == port
    assert pod["metadata"]["ownerReferences"][0]["uid"] == cluster.llamamodel(name)["metadata"]["uid"]

    svc = eventually(
        lambda: {s["metadata"]["name"]: s for s in cluster.services()}.get(service), what="service"
    )
    assert svc["spec"]["ports"][0]["port"] == port
    assert svc["spec"]["selector"]["llamacontroller.io/slot"] == slot

    status = eventually(lambda: cluster.status(name).get("podName") and cluster.status(name), what="status")
    assert status["phase"] == "Pending"
    assert (status["slot"], status["port"], status["serviceName"]) == (slot, port, service)
    assert status["endpoint"] == f"http://{service}.default.svc:{port}"
    assert status["apiEndpoint"] == f"http://{service}.default.svc:11434"
    assert status["observedGeneration"] == cluster.llamamodel(name)["metadata"]["generation"]

    table = cluster.kubectl("get", "lm", name).stdout.split("\n")
    assert table[0].split() == ["NAME", "MODEL", "NODE", "SLOT", "PORT", "PHASE", "AGE"]
    assert table[1].split()[1:6] == [status["model"], status["node"], slot, str(port), "Pending"]


def test_pod_status_flows_into_the_llamamodel(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("phi"))
    pod = eventually(lambda: one_pod(cluster, "phi"))
    cluster.set_pod_status(
        pod, {"phase": "Running", "containerStatuses": [{"name": "llama-server", "state": {"running": {}}}]}
    )
    eventually(lambda: cluster.status("phi")["phase"] == "Loading", what="Loading")
    cluster.set_pod_status(
        pod,
        {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "llama-server", "ready": True, "state": {"running": {}}}],
        },
    )
    eventually(lambda: cluster.status("phi")["phase"] == "Ready", what="Ready")
    ready = next(c for c in cluster.status("phi")["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "ServerReady")


def test_conflicting_model_gets_no_pod_and_names_the_holder(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("holder", gpu={"mode": "single", "gpuId": 1}))
    eventually(lambda: one_pod(cluster, "holder"))
    cluster.apply(lm("neighbour", gpu={"mode": "single", "gpuId": 0}))  # side by side is fine
    eventually(lambda: one_pod(cluster, "neighbour"))
    cluster.apply(lm("second", gpu={"mode": "single", "gpuId": 1}))
    cluster.apply(lm("big", gpu={"mode": "both"}))
    eventually(lambda: cluster.status("second").get("phase") == "Waiting", what="second waiting")
    eventually(lambda: cluster.status("big").get("phase") == "Waiting", what="big waiting")
    assert cluster.status("second")["message"] == "gpu1 on node-a is held by default/holder"
    assert cluster.status("big")["message"] == (
        "both on node-a is held by default/holder (gpu1), default/neighbour (gpu0);"
        " default/second (gpu1) asked first"
    )
    slot = next(c for c in cluster.status("second")["conditions"] if c["type"] == "SlotAvailable")
    assert (slot["status"], slot["reason"]) == ("False", "SlotTaken")
    assert cluster.server_pods("second") == [] and cluster.server_pods("big") == []
    table = cluster.kubectl("get", "lm", "-o", "wide").stdout
    assert "gpu1 on node-a is held by default/holder" in table


def test_waiter_takes_the_slot_when_the_holder_is_deleted(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("holder"))
    eventually(lambda: one_pod(cluster, "holder"))
    cluster.apply(lm("waiter"))
    eventually(lambda: cluster.status("waiter").get("phase") == "Waiting")
    cluster.kubectl("delete", "lm", "holder")
    pod = eventually(lambda: one_pod(cluster, "waiter"), what="the waiter's pod")
    assert cluster.server_pods("holder") == []
    assert arg(pod, "--alias") == "waiter:latest"


def _pod_events(cluster: Cluster, model: str) -> list[tuple[str, str]]:
    return [
        (e.type, e.name)
        for e in cluster.emulator.events(resource="pods")
        if (e.snapshot.get("metadata", {}).get("labels") or {}).get("llamacontroller.io/llamamodel") == model
    ]


def test_switch_deletes_the_old_pod_before_the_new_one_exists(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("phi", parameters={"ctxSize": 2048}))
    old = eventually(lambda: one_pod(cluster, "phi"))["metadata"]["name"]
    cluster.apply(lm("phi", parameters={"ctxSize": 8192}))
    new = eventually(
        lambda: [p for p in cluster.server_pods("phi") if p["metadata"]["name"] != old], what="new pod"
    )
    assert arg(new[0], "--ctx-size") == "8192"
    events = _pod_events(cluster, "phi")
    gone = events.index(("DELETED", old))
    born = events.index(("ADDED", new[0]["metadata"]["name"]))
    assert gone < born, events
    eventually(lambda: cluster.status("phi")["podName"] == new[0]["metadata"]["name"])


def test_no_op_spec_change_restarts_nothing(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("phi"))
    pod = eventually(lambda: one_pod(cluster, "phi"))
    eventually(lambda: cluster.status("phi").get("observedGeneration") == 1)
    cluster.apply(lm("phi", parameters={"parallel": 1}))  # 1 is the configured default
    eventually(lambda: cluster.status("phi").get("observedGeneration") == 2, what="observedGeneration 2")
    assert [p["metadata"]["uid"] for p in cluster.server_pods("phi")] == [pod["metadata"]["uid"]]
    assert [e for e in _pod_events(cluster, "phi") if e[0] == "DELETED"] == []


def test_restart_with_existing_objects_creates_no_duplicates(cluster: Cluster, operator: OperatorProcess):
    for name, gpu_id in (("a", 0), ("b", 1)):
        cluster.apply(lm(name, gpu={"mode": "single", "gpuId": gpu_id}))
    cluster.apply(lm("c", gpu={"mode": "both"}))
    eventually(lambda: cluster.server_pods("a") and cluster.server_pods("b"))
    eventually(lambda: cluster.status("c").get("phase") == "Waiting")
    before = {p["metadata"]["uid"] for p in cluster.pods()}
    mark = len(cluster.emulator.audit_log)
    operator.restart()
    # The restarted operator has looked at every object again before we judge (its debug log).
    eventually(
        lambda: all(f"Reconciled default/{n}: " in operator.log().split("Signal SIGINT")[-1] for n in "abc"),
        what="the restarted operator to resume every LlamaModel",
    )
    assert {p["metadata"]["uid"] for p in cluster.pods()} == before
    creates = [r for r in cluster.emulator.audit_log[mark:] if r.resource == "pods" and r.verb == "create"]
    assert creates == []
    assert cluster.status("c")["phase"] == "Waiting"


def test_deleting_the_llamamodel_removes_its_children(cluster: Cluster, operator: OperatorProcess):
    cluster.apply(lm("phi"))
    eventually(lambda: one_pod(cluster, "phi") and cluster.services())
    cluster.kubectl("delete", "lm", "phi")
    eventually(lambda: cluster.server_pods("phi") == [] and cluster.services() == [], what="children gone")


def test_invalid_object_gets_clear_status_and_others_keep_being_served(
    cluster: Cluster, operator: OperatorProcess
):
    cluster.apply(lm("nowhere", gpu={"mode": "single", "gpuId": 5}))
    eventually(lambda: cluster.status("nowhere").get("phase") == "Failed")
    status = cluster.status("nowhere")
    assert status["message"] == "slot gpu5 is not available: node node-a has 2 GPUs (slots: gpu0, gpu1, both)"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidPlacement")
    cluster.apply(lm("fine"))
    eventually(lambda: one_pod(cluster, "fine"))
    assert cluster.server_pods("nowhere") == []


def test_the_schema_rejects_bad_objects_at_apply(cluster: Cluster):
    bad = lm("bad", gpu={"mode": "triple"})
    result = cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0
    assert 'spec.gpu.mode: Unsupported value: "triple"' in result.stderr


def test_examples_are_accepted_by_the_api(cluster: Cluster, tmp_path: Path):
    for path in sorted((REPO / "examples").glob("*.yaml")):
        cluster.kubectl("apply", "--dry-run=server", "-f", str(path))


def test_spec_is_never_written_by_the_operator(cluster: Cluster, operator: OperatorProcess):
    body = lm("phi")
    cluster.apply(copy.deepcopy(body))
    eventually(lambda: cluster.status("phi").get("podName"))
    writes = [
        r
        for r in cluster.emulator.audit_log
        if r.resource == "llamamodels"
        and r.verb in {"update", "patch"}
        and r.user_agent.startswith("llamacontroller")
    ]
    assert writes and all(r.subresource == "status" for r in writes)
    assert cluster.llamamodel("phi")["spec"]["model"] == body["spec"]["model"]


def test_a_namespaced_operator_serves_only_its_namespaces(cluster: Cluster, tmp_path: Path):
    cluster.kubectl("create", "namespace", "team")
    operator = OperatorProcess(
        cluster, tmp_path / "ns-operator.log", REPO / "config" / "operator.yaml", ("-n", "team")
    )
    operator.start()
    try:
        cluster.apply(lm("outside"))
        inside = lm("inside", node="gpu-node-1")
        inside["metadata"]["namespace"] = "team"
        cluster.apply(inside)
        eventually(lambda: cluster.pods("team"), what="the team's pod")
        service = eventually(lambda: cluster.status("inside", "team").get("serviceName"), what="its status")
        assert service == "llama-gpu-node-1-gpu0"
        assert cluster.status("outside") == {} and cluster.pods("default") == []
    finally:
        operator.stop()
    assert "Traceback" not in operator.log()


def test_a_left_over_service_is_adopted_whole(cluster: Cluster, operator: OperatorProcess):
    stale = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "llama-node-a-gpu0", "namespace": "default", "labels": {"team": "x"}},
        "spec": {
            "selector": {"app": "old-server", "llamacontroller.io/slot": "gpu0"},
            "ports": [{"port": 1}],
        },
    }
    cluster.emulator.create(("", "v1", "services"), stale, "default")
    cluster.apply(lm("phi"))
    eventually(lambda: one_pod(cluster, "phi"))

    def adopted():
        service = cluster.emulator.get(("", "v1", "services"), "default", "llama-node-a-gpu0")
        return service if service["metadata"].get("ownerReferences") else None

    service = eventually(adopted, what="the service adopted")
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/managed-by": "llamacontroller",
        "llamacontroller.io/node": "node-a",
        "llamacontroller.io/slot": "gpu0",
    }
    assert [p["port"] for p in service["spec"]["ports"]] == [8081, 11434]
    assert service["metadata"]["labels"]["team"] == "x"
    patches = len(cluster.emulator.requests(resource="services", verb="patch"))
    cluster.apply(lm("phi", parameters={"parallel": 1}))  # another reconcile: nothing left to patch
    eventually(lambda: cluster.status("phi").get("observedGeneration") == 2)
    assert len(cluster.emulator.requests(resource="services", verb="patch")) == patches


def test_llamamodels_carry_no_finalizer_and_go_while_the_operator_is_down(
    cluster: Cluster, operator: OperatorProcess
):
    cluster.apply(lm("phi"))
    eventually(lambda: cluster.status("phi").get("podName"))
    assert not cluster.llamamodel("phi")["metadata"].get("finalizers")
    operator.stop()
    cluster.kubectl("delete", "lm", "phi", "--wait=true", "--timeout=30s")
    eventually(lambda: cluster.server_pods("phi") == [], what="its pod garbage-collected")

"""End to end: kubectl applies LlamaModels to a real API server, the real operator reconciles them,
the real scheduler places their Pods and the test kubelets run them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from llamacontroller.config import OperatorConfig
from llamacontroller.demo_model import write_demo_model
from llamacontroller.fit.model import model_facts
from llamacontroller.gguf_header import read_header
from llamacontroller.llamanode import Gpu, GpuProcess, LlamaNodeStatus, ModelFile, parse_llamanode
from tests.cluster.cluster import LocalCluster
from tests.support.builders import arg, gpu_flags, lm, visible_gpus
from tests.support.components import OPERATOR_ACCOUNT, OPERATOR_USER, OperatorProcess
from tests.support.components import service_account_kubeconfig as account_kubeconfig
from tests.support.kube import Kube, new_namespace, refused_by_rbac, remove_namespace, requests_of
from tests.support.paths import REPO
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(120)

EXAMPLES = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((REPO / "examples").glob("*.yaml"))}


# -- kubectl and the CRD, without the operator -----------------------------------------------------


def test_kubectl_applies_the_crd_and_explains_the_resource(kube: Kube) -> None:
    """The test cluster was given `kubectl apply -f crds/` as it started (before its controllers, so
    that the garbage collector knows LlamaModels from the start); applied again, nothing changes."""
    applied = kube.cluster.kubectl("apply", "-f", str(REPO / "crds")).stdout
    assert applied.splitlines() == [
        "customresourcedefinition.apiextensions.k8s.io/llamamodels.llamacontroller.io unchanged",
        "customresourcedefinition.apiextensions.k8s.io/llamanodes.llamacontroller.io unchanged",
    ]
    explained = kube.kubectl("explain", "llamamodel.spec.gpu").stdout
    assert "GROUP:      llamacontroller.io" in explained
    assert "Which GPUs of the node the server uses: one of them, or both." in explained
    for field in ("gpuId\t<integer>", "mode\t<string>", "tensorSplit\t<string>"):
        assert field in explained, explained
    assert "enum: single, both" in explained
    resources = kube.kubectl("api-resources", "--api-group=llamacontroller.io", "-o", "wide").stdout
    assert "lm" in resources.split("\n")[1].split() and "LlamaModel" in resources


def test_the_api_server_keeps_a_whole_llamanode_reading(kube: Kube, tmp_path: Path) -> None:
    """The LlamaNode schema loses nothing of what an agent writes (a structural schema prunes unknown
    fields silently): the status read back parses to the reading written, model facts and all."""
    facts = model_facts(read_header(write_demo_model(tmp_path / "tiny.gguf")))
    reading = LlamaNodeStatus(
        nvml="ok",
        gpus=[
            Gpu(
                index=0,
                uuid="GPU-0",
                memory_total=24 << 30,
                memory_used=3 << 30,
                foreign_memory=3 << 30,
                processes=[GpuProcess(pid=7, name="python", used_memory=3 << 30)],
                summary="occupied: 3.0 GiB by others",
            )
        ],
        models=[ModelFile(path="tiny.gguf", size=1, modified="2026-12-07T00:00:00Z", facts=facts)],
    )
    path = "/apis/llamacontroller.io/v1alpha1/llamanodes"
    name = f"node-of-{kube.namespace}"
    kube.create(
        path, {"apiVersion": "llamacontroller.io/v1alpha1", "kind": "LlamaNode", "metadata": {"name": name}}
    )
    try:
        kube.request(
            "PATCH",
            f"{path}/{name}/status",
            {"status": reading.model_dump(by_alias=True, mode="json")},
            content_type="application/merge-patch+json",
        )
        assert parse_llamanode(kube.get(f"{path}/{name}") or {}).status == reading
        row = kube.kubectl("get", "llamanode", name, "--no-headers").stdout.split()
        assert row[:6] == [name, "occupied:", "3.0", "GiB", "by", "others"], row
    finally:
        kube.delete(f"{path}/{name}")


def test_the_examples_are_accepted_by_the_api_server(kube: Kube) -> None:
    done = kube.kubectl("apply", "--dry-run=server", "-f", str(REPO / "examples"))
    names = sorted(line.split()[0] for line in done.stdout.splitlines())
    expected = sorted(f"llamamodel.llamacontroller.io/{e['metadata']['name']}" for e in EXAMPLES.values())
    assert names == expected, done.stdout
    assert "server dry run" in done.stdout and kube.llamamodels() == []


BAD_SPECS = {
    "an unknown mode": ({"gpu": {"mode": "triple"}}, 'spec.gpu.mode: Unsupported value: "triple"'),
    "a path that is no GGUF file": (
        {"model": {"path": "notes.txt"}},
        'spec.model.path: Invalid value: "notes.txt": spec.model.path in body should match',
    ),
    "a GPU out of range": ({"gpu": {"gpuId": 16}}, "spec.gpu.gpuId: Invalid value: 16"),
    "gpuId with mode both": (
        {"gpu": {"mode": "both", "gpuId": 1}},
        "spec.gpu.gpuId: Forbidden: gpuId applies to mode 'single' only",
    ),
    "tensorSplit with mode single": (
        {"gpu": {"mode": "single", "tensorSplit": "0.5,0.5"}},
        "spec.gpu.tensorSplit: Forbidden: tensorSplit applies to mode 'both' only",
    ),
    "tensorSplit of zeros": (
        {"gpu": {"mode": "both", "tensorSplit": "0,0.0"}},
        "spec.gpu.tensorSplit: Invalid value: tensorSplit needs at least one non-zero ratio",
    ),
    "pooling without embeddings": (
        {"parameters": {"pooling": "mean"}},
        "spec.parameters.pooling: Forbidden: pooling applies to embeddings: set embeddings: true as well",
    ),
    "a path out of the models volume": (
        {"model": {"path": "../secrets/model.gguf"}},
        "spec.model.path: Invalid value: must stay inside the models volume: '..' is not allowed",
    ),
    "a projector out of the models volume": (
        {"model": {"path": "m.gguf", "projector": "vision/../../mmproj.gguf"}},
        "spec.model.projector: Invalid value: must stay inside the models volume: '..' is not allowed",
    ),
    "both a path and a source": (
        {"model": {"path": "m.gguf", "source": {"url": "https://x.io/m.gguf", "sha256": "0" * 64}}},
        "spec.model: Invalid value: needs exactly one of path (a file in the models volume) "
        "or source (fetched into it)",
    ),
    "neither a path nor a source": (
        {"model": {"name": "m"}},
        "needs exactly one of path (a file in the models volume) or source (fetched into it)",
    ),
    "a url without its sha256": (
        {"model": {"source": {"url": "https://x.io/m.gguf"}}},
        "spec.model.source.sha256: Invalid value: a url needs its sha256 (the hub publishes its own)",
    ),
    "a hub file out of its repository": (
        {"model": {"source": {"huggingFace": {"repo": "a/b", "file": "../m.gguf"}}}},
        "spec.model.source.huggingFace.file: Invalid value: must be a file of the repository",
    ),
}


@pytest.mark.parametrize("spec, refusal", list(BAD_SPECS.values()), ids=list(BAD_SPECS))
def test_a_bad_spec_is_refused_at_apply_naming_the_field(
    kube: Kube, spec: dict[str, Any], refusal: str
) -> None:
    body = lm("bad", **spec)
    done = kube.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body), check=False)
    assert done.returncode != 0 and refusal in done.stderr, done.stderr
    assert kube.llamamodel("bad") is None


def test_a_good_spec_next_to_each_rule_is_accepted(kube: Kube) -> None:
    """The rules above refuse what they name, not their neighbours."""
    good = [
        lm("both-default-gpu", gpu={"mode": "both", "gpuId": 0}),
        lm("split", gpu={"mode": "both", "tensorSplit": "0,1"}),
        lm("embed", parameters={"embeddings": True, "pooling": "mean"}),
        lm("dots", model={"path": "v1..2/model..q4.gguf", "projector": "mm..proj.gguf"}),
        lm("url", model={"source": {"url": "https://x.io/a..b/m.gguf?v=1", "sha256": "0" * 64}}),
        lm(
            "hub",
            model={"source": {"huggingFace": {"repo": "a/b", "file": "q4/m..gguf", "revision": "refs/pr/1"}}},
        ),
    ]
    for body in good:
        kube.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(body))


# -- the operator ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("example", "slot", "port", "gpus", "split", "service"),
    [
        ("gpu0", "gpu0", 8081, "0", "--split-mode none --main-gpu 0", "llama-gpu-node-1-gpu0"),
        ("gpu1", "gpu1", 8088, "1", "--split-mode none --main-gpu 0", "llama-gpu-node-1-gpu1"),
        ("both", "both", 8081, "0,1", "--split-mode layer --tensor-split 0.6,0.4", "llama-gpu-node-2-both"),
    ],
)
def test_an_example_gets_its_pod_on_its_node_a_service_and_a_status(
    kube: Kube,
    operator: OperatorProcess,
    example: str,
    slot: str,
    port: int,
    gpus: str,
    split: str,
    service: str,
) -> None:
    kube.kubectl("apply", "-f", str(REPO / "examples" / f"{example}.yaml"))
    name, node = EXAMPLES[example]["metadata"]["name"], EXAMPLES[example]["spec"]["nodeName"]
    pod = eventually(lambda: kube.one_pod(name)["spec"].get("nodeName") and kube.one_pod(name), what="bound")
    assert pod["spec"]["nodeName"] == node  # the scheduler followed the node affinity
    assert arg(pod, "--port") == str(port)
    assert (visible_gpus(pod), gpu_flags(pod["spec"]["containers"][0]["args"])) == (gpus, split)
    assert pod["spec"]["containers"][0]["ports"][0]["containerPort"] == port
    owner = pod["metadata"]["ownerReferences"][0]
    assert owner["uid"] == kube.llamamodel(name)["metadata"]["uid"]  # type: ignore[index]

    svc = eventually(lambda: kube.service(service), what="the slot's Service")
    assert svc["spec"]["ports"][0]["port"] == port
    assert svc["spec"]["selector"]["llamacontroller.io/slot"] == slot

    status = eventually(lambda: kube.status(name).get("podName") and kube.status(name), what="a status")
    assert (status["slot"], status["port"], status["serviceName"]) == (slot, port, service)
    assert status["endpoint"] == f"http://{service}.{kube.namespace}.svc:{port}"
    assert status["apiEndpoint"] == f"http://{service}.{kube.namespace}.svc:11434"
    assert status["observedGeneration"] == kube.llamamodel(name)["metadata"]["generation"]  # type: ignore[index]

    table = kube.kubectl("get", "lm", name).stdout.split("\n")
    assert table[0].split() == ["NAME", "MODEL", "NODE", "SLOT", "PORT", "PHASE", "AGE"]
    assert table[1].split()[1:5] == [status["model"], node, slot, str(port)]
    assert "PodCreated" in kube.reasons(name)


def test_the_server_loads_then_serves_and_kubectl_tells_it(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(lm("phi"))
    kube.wait_phase("phi", "Loading", "Loading")
    status = kube.wait_phase("phi", "Ready", "ServerReady")
    pod = kube.one_pod("phi")
    assert status["podName"] == pod["metadata"]["name"] and status["restarts"] == 0
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert status["loadedAt"] == ready["lastTransitionTime"]

    wide = kube.kubectl("get", "lm", "phi", "-o", "wide").stdout.split("\n")
    assert wide[0].split() == ["NAME", "MODEL", "NODE", "SLOT", "PORT", "PHASE", "AGE", "POD", "MESSAGE"]
    assert wide[1].split()[1:6] == ["phi:latest", "node-a", "gpu0", "8081", "Ready"]
    assert f"{pod['metadata']['name']}   llama-server in pod {pod['metadata']['name']} is ready" in wide[1]
    described = kube.kubectl("describe", "lm", "phi").stdout
    for line in ("Phase:", "Ready", "ServerReady", "SlotClaimed", "Events:", "PodCreated", "Loading"):
        assert line in described, described
    assert kube.reasons("phi")[-1] == "ServerReady"


def test_a_conflicting_model_gets_no_pod_and_names_the_holder(kube: Kube, operator: OperatorProcess) -> None:
    ns = kube.namespace
    kube.apply(lm("holder", gpu={"mode": "single", "gpuId": 1}))
    eventually(lambda: kube.one_pod("holder"))
    kube.apply(lm("neighbour", gpu={"mode": "single", "gpuId": 0}))  # side by side is fine
    eventually(lambda: kube.one_pod("neighbour"))
    kube.apply(lm("second", gpu={"mode": "single", "gpuId": 1}))
    kube.apply(lm("big", gpu={"mode": "both"}))
    kube.wait_phase("second", "Waiting", "SlotTaken")
    kube.wait_phase("big", "Waiting", "SlotTaken")
    assert kube.status("second")["message"] == f"gpu1 on node-a is held by {ns}/holder"
    assert kube.status("big")["message"] == (
        f"both on node-a is held by {ns}/holder (gpu1), {ns}/neighbour (gpu0); {ns}/second (gpu1) asked first"
    )
    slot = kube.condition("second", "SlotAvailable")
    assert (slot["status"], slot["reason"]) == ("False", "SlotTaken")
    assert kube.server_pods("second") == [] and kube.server_pods("big") == []
    table = kube.kubectl("get", "lm", "-o", "wide").stdout
    assert f"gpu1 on node-a is held by {ns}/holder" in table


def test_the_waiter_takes_the_slot_when_the_holder_is_deleted(kube: Kube, operator: OperatorProcess) -> None:
    kube.apply(lm("holder"))
    eventually(lambda: kube.one_pod("holder"))
    kube.apply(lm("waiter"))
    kube.wait_phase("waiter", "Waiting")
    kube.kubectl("delete", "lm", "holder", "--wait=false")
    pod = eventually(lambda: kube.one_pod("waiter"), what="the waiter's pod")
    assert kube.server_pods("holder") == []  # the holder's Pod was gone before the waiter's came
    assert arg(pod, "--alias") == "waiter:latest"


def test_a_switch_deletes_the_old_pod_before_the_new_one_exists(
    kube: Kube, operator: OperatorProcess
) -> None:
    kube.apply(lm("phi", parameters={"ctxSize": 2048}))
    old = eventually(lambda: kube.one_pod("phi"))["metadata"]["name"]
    with kube.watch() as pods:
        kube.apply(lm("phi", parameters={"ctxSize": 8192}))
        new = eventually(
            lambda: [p for p in kube.server_pods("phi") if p["metadata"]["name"] != old], what="a new pod"
        )
        assert arg(new[0], "--ctx-size") == "8192"
        added = ("ADDED", new[0]["metadata"]["name"])
        # the watch may lag behind the list that showed the new Pod: wait until it has told it too
        seen = pods.wait_for(
            "the new pod in the watch", lambda found: added in [(c.type, c.name) for c in found]
        )
        changes = [(c.type, c.name) for c in seen]
    gone, born = changes.index(("DELETED", old)), changes.index(added)
    assert gone < born, changes
    eventually(lambda: kube.status("phi")["podName"] == new[0]["metadata"]["name"])
    assert "Switching" in kube.reasons("phi")


def test_a_change_that_renders_the_same_server_restarts_nothing(
    kube: Kube, operator: OperatorProcess
) -> None:
    kube.apply(lm("phi"))
    pod = eventually(lambda: kube.one_pod("phi"))
    eventually(lambda: kube.status("phi").get("observedGeneration") == 1)
    with kube.watch() as pods:
        kube.apply(lm("phi", parameters={"parallel": 1}))  # 1 is the configured default
        eventually(lambda: kube.status("phi").get("observedGeneration") == 2, what="observedGeneration 2")
        changes = pods.changes
    assert [p["metadata"]["uid"] for p in kube.server_pods("phi")] == [pod["metadata"]["uid"]]
    assert [c for c in changes if c.type != "MODIFIED" and c.uid != pod["metadata"]["uid"]] == []
    assert not [c for c in changes if c.type == "DELETED" or c.object["metadata"].get("deletionTimestamp")]


def test_a_restarted_operator_creates_no_duplicates(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess
) -> None:
    assert cluster.control_plane is not None
    for name, gpu_id in (("a", 0), ("b", 1)):
        kube.apply(lm(name, gpu={"mode": "single", "gpuId": gpu_id}))
    kube.apply(lm("c", gpu={"mode": "both"}))
    eventually(lambda: kube.one_pod("a") and kube.one_pod("b"))
    kube.wait_phase("c", "Waiting")
    before = {p["metadata"]["uid"] for p in kube.pods()}
    operator.stop()
    mark = cluster.control_plane.audit_mark()
    operator.start_ready()

    def resumed() -> bool:
        """The restarted operator's debug log says it reconciled each (from its cache)."""
        since_restart = operator.log().split("Signal SIGINT")[-1]
        return all(f"Reconciled {kube.namespace}/{n}: " in since_restart for n in "abc")

    eventually(resumed, what="the restarted operator to look at every LlamaModel again")
    assert {p["metadata"]["uid"] for p in kube.pods()} == before
    calls = requests_of(cluster.control_plane.audit_events(mark), OPERATOR_USER)
    creates = [e for e in calls if e["verb"] == "create" and e["objectRef"]["resource"] == "pods"]
    assert creates == []
    assert kube.status("c")["phase"] == "Waiting"


def test_deleting_the_llamamodel_lets_the_garbage_collector_remove_its_children(
    kube: Kube, operator: OperatorProcess
) -> None:
    kube.apply(lm("phi"))
    eventually(lambda: kube.one_pod("phi") and kube.services())
    kube.kubectl("delete", "lm", "phi")
    eventually(lambda: kube.server_pods("phi") == [] and kube.services() == [], what="children gone")


def test_an_impossible_placement_gets_a_clear_status_and_others_are_served(
    kube: Kube, operator: OperatorProcess
) -> None:
    kube.apply(lm("nowhere", gpu={"mode": "single", "gpuId": 5}))
    status = kube.wait_phase("nowhere", "Failed", "InvalidPlacement")
    assert (
        status["message"]
        == "spec.gpu.gpuId: slot gpu5 is not available: node node-a has 2 GPUs (slots: gpu0, gpu1, both)"
    )
    kube.apply(lm("fine"))
    eventually(lambda: kube.one_pod("fine"))
    assert kube.server_pods("nowhere") == []


def test_the_operator_never_writes_a_spec(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess
) -> None:
    assert cluster.control_plane is not None
    mark = cluster.control_plane.audit_mark()
    body = lm("phi")
    kube.apply(body)
    kube.wait_phase("phi", "Loading")  # the status written a few times over
    stored = kube.llamamodel("phi")
    assert stored is not None
    assert stored["metadata"]["generation"] == 1  # the API server counts every change of the spec
    assert stored["spec"]["model"] == body["spec"]["model"]
    ours = [  # our own client's writes; kopf's (kopf/...) patch its annotations, which generation shows
        e
        for e in requests_of(cluster.control_plane.audit_events(mark), OPERATOR_USER)
        if e["verb"] in {"update", "patch"} and e["userAgent"] == "llamacontroller"
    ]
    assert ours and {(e["objectRef"]["resource"], e["objectRef"].get("subresource")) for e in ours} == {
        ("llamamodels", "status")
    }


@pytest.fixture
def team(cluster: LocalCluster, namespace: str) -> Iterator[str]:
    """A second namespace, served by a namespaced operator."""
    name = new_namespace(cluster, "team")
    yield name
    remove_namespace(cluster, name)


def test_a_namespaced_operator_serves_only_its_namespaces(
    cluster: LocalCluster, kube: Kube, team: str, operator_config: Path, tmp_path: Path
) -> None:
    """`--namespace` with deploy/'s ClusterRole: served at once, and no request refused."""
    assert cluster.control_plane is not None
    mark = cluster.control_plane.audit_mark()
    kubeconfig = account_kubeconfig(cluster, OPERATOR_ACCOUNT, tmp_path / "operator.kubeconfig")
    operator = OperatorProcess(kubeconfig, tmp_path / "team-operator.log", operator_config, ("-n", team))
    operator.start_ready()
    inside = Kube(cluster, team)
    try:
        kube.apply(lm("outside"))
        inside.apply(lm("inside", node="gpu-node-1"))
        eventually(lambda: inside.one_pod("inside"), what="the team's pod")
        service = eventually(lambda: inside.status("inside").get("serviceName"), what="its status")
        assert service == "llama-gpu-node-1-gpu0"
        assert kube.status("outside") == {} and kube.pods() == []
    finally:
        inside.close()
        operator.stop()
    assert "Traceback" not in operator.log()
    refused = refused_by_rbac(requests_of(cluster.control_plane.audit_events(mark), OPERATOR_USER))
    assert not refused, "the operator's ClusterRole does not grant:\n" + "\n".join(refused)


def test_a_left_over_service_is_adopted_whole(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess
) -> None:
    assert cluster.control_plane is not None
    stale = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "llama-node-a-gpu0", "labels": {"team": "x"}},
        "spec": {
            "selector": {"app": "old-server", "llamacontroller.io/slot": "gpu0"},
            "ports": [{"port": 1}],
        },
    }
    kube.create(kube.ns_path("services"), stale)
    kube.apply(lm("phi"))
    eventually(lambda: kube.one_pod("phi"))

    def adopted() -> dict[str, Any] | None:
        service = kube.service("llama-node-a-gpu0")
        return service if service and service["metadata"].get("ownerReferences") else None

    service = eventually(adopted, what="the service adopted")
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/managed-by": "llamacontroller",
        "llamacontroller.io/node": "node-a",
        "llamacontroller.io/slot": "gpu0",
    }
    assert [p["port"] for p in service["spec"]["ports"]] == [8081, 11434]
    assert service["metadata"]["labels"]["team"] == "x"

    def service_patches() -> int:
        calls = requests_of(cluster.control_plane.audit_events(), OPERATOR_USER)  # type: ignore[union-attr]
        return sum(1 for e in calls if e["verb"] == "patch" and e["objectRef"].get("resource") == "services")

    patches = service_patches()
    assert patches >= 1
    kube.apply(lm("phi", parameters={"parallel": 1}))  # another reconcile: nothing left to patch
    eventually(lambda: kube.status("phi").get("observedGeneration") == 2)
    assert service_patches() == patches


def test_llamamodels_carry_no_finalizer_and_go_while_the_operator_is_down(
    kube: Kube, operator: OperatorProcess
) -> None:
    kube.apply(lm("phi"))
    eventually(lambda: kube.status("phi").get("podName"))
    assert not kube.llamamodel("phi")["metadata"].get("finalizers")  # type: ignore[index]
    operator.stop()
    kube.kubectl("delete", "lm", "phi", "--wait=true", "--timeout=30s")
    eventually(lambda: kube.server_pods("phi") == [], what="its pod garbage-collected")
    operator.start_ready()  # the fixture's operator ends the test as it began


@pytest.mark.parametrize("operator_config", [{"resyncSeconds": 1}], indirect=True)
def test_a_resync_decides_again_only_what_may_have_changed(
    cluster: LocalCluster, kube: Kube, operator: OperatorProcess
) -> None:
    """Every second a resync: a holder whose Pod waits for its kubelet (the passive node's) and its
    waiter are not decided again, as nothing they read changes; once the server loads, time alone may
    fail it (its startup budget), so it is looked at again at every resync."""
    kube.apply(lm("holder", node="passive"))
    pod = eventually(lambda: kube.status("holder").get("podName"), what="the holder's pod")
    kube.wait_phase("holder", "Pending", "ContainerCreating")
    kube.apply(lm("waiter", node="passive"))
    kube.wait_phase("waiter", "Waiting", "SlotTaken")

    def decided(name: str, since: int) -> int:
        return operator.log()[since:].count(f"Reconciled {kube.namespace}/{name}: ")

    def quiet(seconds: float = 2.5, timeout: float = 20.0) -> int:
        """Until no decision about either was logged for `seconds` (more than two resyncs): where
        the log then ends. The last writes are each looked at once more, and a decision reads its
        node's LlamaModels, so each may be decided once more after the other's status moved."""
        mark, calm_since, deadline = len(operator.log()), time.monotonic(), time.monotonic() + timeout
        while time.monotonic() - calm_since < seconds:
            assert time.monotonic() < deadline, "decided again and again with nothing changed"
            time.sleep(0.25)
            if decided("holder", mark) + decided("waiter", mark):
                mark, calm_since = len(operator.log()), time.monotonic()
        return mark

    since = quiet()
    time.sleep(2)  # two more resyncs
    assert decided("holder", since) == decided("waiter", since) == 0

    started = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    server = {"name": "llama-server", "image": OperatorConfig().image, "ready": False, "restartCount": 0}
    running = server | {"state": {"running": {"startedAt": started}}}
    cluster.write_pod_status(kube.namespace, pod, {"phase": "Running", "containerStatuses": [running]})
    kube.wait_phase("holder", "Loading", "Loading")
    loading = len(operator.log())
    time.sleep(3.5)
    assert decided("holder", loading) >= 2
    assert decided("waiter", loading) <= 1  # once, for the holder's new status

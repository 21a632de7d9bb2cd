"""The ClusterRoles in deploy/ are minimal, proven against what the real processes call on a real API
server.

The operator, the gateway and the node agent run on the project's test cluster as deploy/ runs them:
as `llamacontroller operator`, `llamacontroller gateway` and `llamacontroller node-agent` (with the
fake of NVML), each with a token of its own ServiceAccount bound by deploy/'s RBAC, the operator
with the config its Deployment mounts. A scenario exercises every code path that talks to the API:
create, adopt a Service, conflict and wait, switch, delete (the waiter takes the slot), a move on a
4-GPU node, a Pod and a Service deleted from outside, events, node reads, and the node agent's
LlamaNode beside the scenario's Pods. The API server's audit log then tells, per ServiceAccount,
each (apiGroup, resource[/subresource], verb) called: RBAC refused none of them (a call without a
grant), and every grant was called (no permission nobody needs).
"""

from __future__ import annotations

import copy
import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from llamacontroller import cli
from llamacontroller.config import load_config
from llamacontroller.demo_model import write_demo_model
from llamacontroller.render.children import render_children
from llamacontroller.resource import parse_llamamodel
from tests.cluster.cluster import LocalCluster
from tests.support.builders import arg, lm, visible_gpus
from tests.support.components import (
    DEPLOY_NAMESPACE,
    GATEWAY_ACCOUNT,
    NODE_AGENT_ACCOUNT,
    NODE_AGENT_NAMESPACE,
    OPERATOR_ACCOUNT,
    GatewayProcess,
    NodeAgentProcess,
    OperatorProcess,
    service_account_kubeconfig,
)
from tests.support.fake_nvml import RECORDINGS
from tests.support.kube import Kube, refused_by_rbac, requests_of, service_account_user
from tests.support.manifests import NAMESPACE, mounted_config, one
from tests.support.manifests import NODE_AGENT_NAMESPACE as MANIFESTS_NODE_AGENT_NAMESPACE
from tests.support.model_server import model_servers
from tests.support.paths import REPO
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(180)

Grant = tuple[str, str, str]  # (apiGroup, resource or resource/subresource, verb)


@dataclass(frozen=True)
class Component:
    """A process of LlamaController that calls the Kubernetes API: its ServiceAccount, its ClusterRole
    and, for what it does in its own namespace only, a Role there."""

    name: str  # `llamacontroller <name>`, in the Deployment (or DaemonSet) llamacontroller-<name>
    account: str
    role: str
    namespaced_role: str | None = None
    namespace: str = DEPLOY_NAMESPACE
    workload: str = "Deployment"

    @property
    def user(self) -> str:
        return service_account_user(self.namespace, self.account)


COMPONENTS = (
    Component("operator", OPERATOR_ACCOUNT, "llamacontroller-operator", "llamacontroller-operator-lease"),
    Component("gateway", GATEWAY_ACCOUNT, "llamacontroller-gateway"),
    Component(
        "node-agent",
        NODE_AGENT_ACCOUNT,
        "llamacontroller-node-agent",
        namespace=NODE_AGENT_NAMESPACE,
        workload="DaemonSet",
    ),
)
AGENT_NODE = "gpu-node-1"  # the node agent's node in the scenario: the examples' models run there

# Requests without a resource: API discovery, which every authenticated client may make (the
# built-in system:discovery ClusterRole), so no role of ours grants it.
DISCOVERY = re.compile(r"^/(version|api|apis|api/v1|apis/[^/]+|apis/[^/]+/[^/]+|openapi/v[23](/.*)?)/?$")


def grant_of(event: dict[str, Any]) -> Grant:
    """What an audit event's request needed of RBAC."""
    ref = event["objectRef"]
    resource = f"{ref['resource']}/{ref['subresource']}" if ref.get("subresource") else ref["resource"]
    return (ref.get("apiGroup", ""), resource, event["verb"])


def granted(role: dict[str, Any]) -> set[Grant]:
    grants = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"no resourceNames or URLs: {rule}"
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], f"no wildcards: {rule}"
        grants |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return grants


def admission_grants(kube: Kube) -> set[Grant]:
    """Grants that admission, not a request, asks for: setting blockOwnerDeletion in an owner
    reference needs `update` on the owner's finalizers (OwnerReferencesPermissionEnforcement, on in
    the test cluster: the creates below passed it)."""
    plurals = {
        (crd["spec"]["group"], crd["spec"]["names"]["kind"]): crd["spec"]["names"]["plural"]
        for crd in kube.items("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    }
    grants = set()
    for child in kube.pods() + kube.services():
        for ref in child["metadata"].get("ownerReferences") or []:
            if ref.get("blockOwnerDeletion"):
                group = ref["apiVersion"].rpartition("/")[0]
                grants.add((group, f"{plurals[group, ref['kind']]}/finalizers", "update"))
    return grants


@pytest.fixture
def operator_config(tmp_path: Path, manifests: list[dict[str, Any]]) -> Path:
    """The operator runs with the config its Deployment mounts."""
    path = tmp_path / "mounted-operator.yaml"
    path.write_text(mounted_config(manifests))
    return path


def previous_holders_service(config: Path, node: str, gpu_id: int) -> dict[str, Any]:
    """The Service another LlamaModel left on a slot: the next holder adopts it (a patch)."""
    body = lm("previous", node=node, gpu={"mode": "single", "gpuId": gpu_id})
    body["metadata"]["namespace"] = "default"  # replaced by the test's namespace when applied
    service = render_children(parse_llamamodel(body), load_config(config)).service
    del service["metadata"]["namespace"]
    return service


def scenario(kube: Kube, config: Path) -> None:
    examples = REPO / "examples"

    # Create: a model on GPU 0 of gpu-node-1 gets its Pod, its Service, a status and events.
    kube.kubectl("apply", "-f", str(examples / "gpu0.yaml"))
    eventually(lambda: kube.one_pod("qwen-coder"), what="qwen-coder's pod")

    # Adopt: a previous holder's Service on GPU 1 is patched to front the new holder.
    kube.apply(previous_holders_service(config, "gpu-node-1", 1))
    kube.kubectl("apply", "-f", str(examples / "gpu1.yaml"))
    phi = eventually(lambda: kube.one_pod("phi-4"), what="phi-4's pod")
    holder = f"{kube.namespace}/phi-4"
    eventually(
        lambda: (
            (kube.service("llama-gpu-node-1-gpu1") or {})["metadata"]["annotations"].get(
                "llamacontroller.io/holder"
            )
            == holder
        ),
        what="the adopted service",
    )

    # Conflict: a second model for GPU 0 waits, naming the holder.
    kube.apply(lm("waiter", node="gpu-node-1", gpu={"mode": "single", "gpuId": 0}))
    kube.wait_phase("waiter", "Waiting")

    # Switch: a changed server replaces the Pod (delete, then create). On GPU 1, which nobody waits
    # for: the scenario proves API calls, not the waiting queue (tests/e2e does).
    changed = yaml.safe_load((examples / "gpu1.yaml").read_text())
    changed["spec"]["parameters"]["ctxSize"] = 8192
    kube.apply(changed)
    eventually(
        lambda: (
            kube.one_pod("phi-4")["metadata"]["name"] != phi["metadata"]["name"]
            and arg(kube.one_pod("phi-4"), "--ctx-size") == "8192"
        ),
        what="the switched pod",
    )

    # Delete: the holder of GPU 0 goes, the waiter takes the slot.
    kube.kubectl("delete", "lm", "qwen-coder", "--wait=false")
    eventually(lambda: kube.one_pod("waiter"), what="the waiter's pod")
    assert kube.server_pods("qwen-coder") == []

    # A 4-GPU node (its label read from the Node): GPU 3, then a move to GPU 2 deletes the old Service.
    kube.apply(lm("wide", node="quad", gpu={"mode": "single", "gpuId": 3}))
    eventually(lambda: visible_gpus(kube.one_pod("wide")) == "3", what="gpu3")
    kube.apply(lm("wide", node="quad", gpu={"mode": "single", "gpuId": 2}))

    def moved() -> bool:
        names = {s["metadata"]["name"] for s in kube.services()}
        pods = kube.server_pods("wide")
        return (
            "llama-quad-gpu2" in names
            and "llama-quad-gpu3" not in names
            and len(pods) == 1
            and visible_gpus(pods[0]) == "2"
        )

    eventually(moved, what="the move to gpu2")

    # A Pod deleted from outside is recreated.
    lost = kube.one_pod("wide")["metadata"]["uid"]
    kube.kubectl("delete", "pod", kube.one_pod("wide")["metadata"]["name"], "--wait=false")
    eventually(lambda: kube.one_pod("wide")["metadata"]["uid"] != lost, what="a new pod")

    # A Service deleted from outside is recreated.
    gone = (kube.service("llama-quad-gpu2") or {})["metadata"]["uid"]
    kube.kubectl("delete", "service", "llama-quad-gpu2")
    eventually(
        lambda: (kube.service("llama-quad-gpu2") or {}).get("metadata", {}).get("uid") not in (None, gone)
    )

    # A model source: while the Pod's init container fetches it, the operator reads the last line of
    # its log (its progress, through pods/log and the test kubelet's API).
    assert kube.cluster.network is not None and kube.cluster.options.models_dir is not None
    seed = int(kube.namespace.rsplit("-", 1)[-1], 16)  # a file no other test fetched this session
    fresh = write_demo_model(kube.cluster.options.models_dir.parent / f"{kube.namespace}.gguf", seed=seed)
    with model_servers(kube.cluster.network.host_address) as files:
        files.served.delay = 0.1
        data = fresh.read_bytes()
        source = {"url": files.add_file("/fresh.gguf", data), "sha256": hashlib.sha256(data).hexdigest()}
        kube.apply(lm("fetched", node="gpu-node-2", model={"source": source}))
        kube.wait_phase("fetched", "Downloading", timeout=60)
        kube.wait_phase("fetched", "Ready", timeout=90)

    # The story is told in Events on the LlamaModels.
    involved = {
        e["involvedObject"]["name"] for e in kube.events() if e["involvedObject"]["kind"] == "LlamaModel"
    }
    assert involved >= {"qwen-coder", "phi-4", "waiter", "wide"}


def test_every_api_call_is_granted_and_every_grant_is_used(
    cluster: LocalCluster, kube: Kube, manifests: list[dict[str, Any]], operator_config: Path, tmp_path: Path
) -> None:
    assert cluster.control_plane is not None
    commands = next(a for a in cli.parser()._actions if a.dest == "command").choices
    assert all(c.name in commands for c in COMPONENTS), "a component's command is gone"
    # An operator that ran before in this session left its Lease: this one must create its own.
    kube.delete(f"/apis/coordination.k8s.io/v1/namespaces/{DEPLOY_NAMESPACE}/leases/llamacontroller-operator")
    # A node agent that ran before left its LlamaNode: this one must create its own.
    kube.delete(f"/apis/llamacontroller.io/v1alpha1/llamanodes/{AGENT_NODE}")
    mark = cluster.control_plane.audit_mark()  # from here on, every call of each is in the log
    operator = OperatorProcess(
        service_account_kubeconfig(cluster, OPERATOR_ACCOUNT, tmp_path / "operator.kubeconfig"),
        tmp_path / "operator.log",
        operator_config,
    )
    gateway = GatewayProcess(
        cluster,
        service_account_kubeconfig(cluster, GATEWAY_ACCOUNT, tmp_path / "gateway.kubeconfig"),
        tmp_path / "gateway.log",
    )
    # The node agent, with the fake of NVML (an idle node), beside the scenario's Pods on its node.
    agent = NodeAgentProcess(
        service_account_kubeconfig(cluster, NODE_AGENT_ACCOUNT, tmp_path / "agent.kubeconfig"),
        tmp_path / "agent.log",
        AGENT_NODE,
        RECORDINGS / "rtx3090x2-idle.xml",
    )
    try:
        operator.start_ready()
        gateway.start_listening()  # its probe path (deploy/gateway-deployment.yaml) answers without a key
        agent.start()
        scenario(kube, operator_config)
        admission = admission_grants(kube)
        written = kube.get(f"/apis/llamacontroller.io/v1alpha1/llamanodes/{AGENT_NODE}") or {}
        assert written.get("status", {}).get("nvml") == "ok", agent.log()[-5000:]
    finally:
        operator.stop()  # their shutdown calls count too
        gateway.stop()
        agent.stop()
    for process in (operator, gateway, agent):
        assert "Traceback" not in process.log(), process.log()[-10000:]

    events = cluster.control_plane.audit_events(mark)
    problems = []
    for component in COMPONENTS:
        calls = requests_of(events, component.user)
        problems += [f"{component.name}: refused {line}" for line in refused_by_rbac(calls)]
        used = {grant_of(e) for e in calls if e.get("objectRef")}
        for e in calls:
            if not e.get("objectRef"):
                path = e["requestURI"].split("?")[0]
                assert DISCOVERY.match(path), f"{component.name}: not discovery: {e['verb']} {path}"
        grants = granted(one(manifests, "ClusterRole", component.role))
        if component.namespaced_role:
            grants |= granted(one(manifests, "Role", component.namespaced_role))
            elsewhere = [e for e in calls if e.get("objectRef", {}).get("resource") == "leases"]
            assert all(e["objectRef"]["namespace"] == DEPLOY_NAMESPACE for e in elsewhere), elsewhere
        needed = used | (admission if component.name == "operator" else set())
        problems += [
            f"{component.name}: {g} is used but not granted by {component.role}"
            for g in sorted(needed - grants)
        ]
        problems += [
            f"{component.name}: {g} is granted by {component.role} but never used"
            for g in sorted(grants - needed)
        ]
        assert used, f"{component.name} made no call: the scenario would prove nothing"
    assert not problems, "\n".join(problems)
    operator_calls = {grant_of(e)[1] for e in requests_of(events, COMPONENTS[0].user) if e.get("objectRef")}
    assert operator_calls >= {"llamamodels", "llamamodels/status", "pods", "services", "events", "nodes"}


def test_blocking_owner_deletion_takes_the_finalizers_grant(
    cluster: LocalCluster, kube: Kube, tmp_path: Path
) -> None:
    """The one grant no request uses: admission (OwnerReferencesPermissionEnforcement, on in the test
    cluster as on OpenShift) lets the operator set blockOwnerDeletion on its children only with
    `update` on llamamodels/finalizers. A ServiceAccount with the operator's ClusterRole but that rule
    is refused the very Pod the operator creates."""
    assert cluster.control_plane is not None
    manifests = [d for d in yaml.safe_load_all((REPO / "deploy" / "operator-rbac.yaml").read_text()) if d]
    role = copy.deepcopy(one(manifests, "ClusterRole", "llamacontroller-operator"))
    role["rules"] = [r for r in role["rules"] if r["resources"] != ["llamamodels/finalizers"]]
    assert len(role["rules"]) == len(one(manifests, "ClusterRole")["rules"]) - 1
    role["metadata"]["name"] = f"without-finalizers-{kube.namespace}"
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "without-finalizers"}}
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "without-finalizers"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": "without-finalizers", "namespace": kube.namespace}],
    }
    kube.apply(role, account, binding)
    try:
        kube.apply(lm("phi"))
        owner = kube.llamamodel("phi")
        assert owner is not None
        body = lm("phi")
        body["metadata"] |= {"namespace": kube.namespace, "uid": owner["metadata"]["uid"]}
        pod = render_children(parse_llamamodel(body), load_config()).pod
        kubeconfig = cluster.control_plane.service_account_kubeconfig(
            kube.namespace, "without-finalizers", tmp_path / "k"
        )
        create = [str(cluster.control_plane.binaries / "kubectl"), f"--kubeconfig={kubeconfig}"]  # type: ignore[operator]
        done = _run([*create, "create", "-f", "-"], yaml.safe_dump(pod))
        assert done.returncode != 0
        refusal = "cannot set blockOwnerDeletion if an ownerReference refers to a resource you can't set"
        assert f"{refusal} finalizers on" in done.stderr, done.stderr
        done = _run([*create, "auth", "can-i", "create", "pods"], None)
        assert done.stdout.strip() == "yes"  # refused by admission, not by RBAC
    finally:
        kube.kubectl("delete", "clusterrole", role["metadata"]["name"])


def _run(argv: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60, check=False)


def test_each_component_runs_as_the_service_account_bound_to_its_role(
    manifests: list[dict[str, Any]],
) -> None:
    bindings = [d for d in manifests if d["kind"] in {"ClusterRoleBinding", "RoleBinding"}]
    roles = [d["metadata"]["name"] for d in manifests if d["kind"] in {"ClusterRole", "Role"}]
    assert sorted(roles) == sorted(r for c in COMPONENTS for r in (c.role, c.namespaced_role) if r), (
        "every role belongs to a component"
    )
    for component in COMPONENTS:
        kinds = {component.role: "ClusterRole"} | (
            {component.namespaced_role: "Role"} if component.namespaced_role else {}
        )
        mine = [b for b in bindings if b["roleRef"]["name"] in kinds]
        assert sorted(b["roleRef"]["name"] for b in mine) == sorted(kinds)
        for binding in mine:
            name = binding["roleRef"]["name"]
            assert binding["roleRef"] == {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": kinds[name],
                "name": name,
            }
            (subject,) = binding["subjects"]
            assert subject == {
                "kind": "ServiceAccount",
                "name": component.account,
                "namespace": component.namespace,
            }
        # The SA has these bindings only: nothing else widens what the component may do.
        subject = mine[0]["subjects"][0]
        others = [b for b in bindings if b not in mine and subject in b["subjects"]]
        assert not others, others
        workload = one(manifests, component.workload, f"llamacontroller-{component.name}")
        assert workload["metadata"]["namespace"] == component.namespace
        pod = workload["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == component.account  # the identity the tests run it with
        assert pod.get("automountServiceAccountToken", True) is True
        assert pod["containers"][0]["args"][0] == component.name
    accounts = {d["metadata"]["name"] for d in manifests if d["kind"] == "ServiceAccount"}
    assert accounts == {c.account for c in COMPONENTS}
    assert DEPLOY_NAMESPACE == NAMESPACE and NODE_AGENT_NAMESPACE == MANIFESTS_NODE_AGENT_NAMESPACE

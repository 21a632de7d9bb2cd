"""The ClusterRoles in deploy/ are minimal, proven against what the real processes call.

The real operator (and the real gateway) run against the API emulator through a scenario that
exercises every code path that talks to the API: create, adopt a Service, conflict and wait, switch,
delete (the waiter takes the slot), a move on a 4-GPU node, a Pod and a Service deleted from outside,
events, node reads. The emulator logs every request with its user agent; each component's requests
become (apiGroup, resource[/subresource], verb) and must equal its ClusterRole's grants: no call
without a grant (it would be refused in a real cluster), no grant without a call (it would be a
permission nobody needs).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from llamacontroller import cli
from llamacontroller.config import load_config
from llamacontroller.render.children import render_children
from llamacontroller.resource import parse_llamamodel
from tests.deploy.conftest import NAMESPACE, mounted_config, one
from tests.e2e.conftest import REPO, SERVICES, Cluster, OperatorProcess
from tests.e2e.test_operator import arg, lm, one_pod
from tests.kube_emulator import AuditRecord
from tests.ports import free_port
from tests.processes import interrupt
from tests.support.polling import eventually

pytestmark = pytest.mark.timeout(180)

Grant = tuple[str, str, str]  # (apiGroup, resource or resource/subresource, verb)


@dataclass(frozen=True)
class Component:
    """A process of LlamaController that calls the Kubernetes API, and the ClusterRole it runs with."""

    name: str
    user_agents: tuple[str, ...]  # exact, or a prefix when it ends with "/" (kopf/1.45.2)
    role: str  # its ClusterRole in deploy/ (bound to the ServiceAccount of its Deployment)
    command: str | None  # `llamacontroller <command>` ({listen}: a free loopback port); None: e2e's fixture


# Our own httpx client (KubeApi.from_environment) sends "llamacontroller", or the agent its caller
# names; kopf sends "kopf/<version>". One row per process that calls the API.
COMPONENTS = (
    Component("operator", ("llamacontroller", "kopf/"), "llamacontroller-operator", None),
    Component(
        "gateway", ("llamacontroller-gateway",), "llamacontroller-gateway", "gateway --listen {listen}"
    ),
)
TEST_CLIENTS = ("kubectl/", "kubectl-dispatcher/")  # the scenario's own calls (kubectl, its version shim)

# Requests without a resource: API discovery, which every authenticated client may make (the
# built-in system:discovery ClusterRole), so no role of ours grants it.
DISCOVERY = re.compile(r"^/(version|api|apis|api/v1|apis/[^/]+|apis/[^/]+/[^/]+|openapi/v[23](/.*)?)/?$")


def agent_matches(agent: str, patterns: tuple[str, ...]) -> bool:
    return any(agent.startswith(p) if p.endswith("/") else agent == p for p in patterns)


def component_of(record: AuditRecord) -> Component | None:
    found = [c for c in COMPONENTS if agent_matches(record.user_agent, c.user_agents)]
    assert len(found) <= 1, f"user agent {record.user_agent!r} is claimed by {[c.name for c in found]}"
    return found[0] if found else None


def grant_of(record: AuditRecord) -> Grant:
    resource = f"{record.resource}/{record.subresource}" if record.subresource else record.resource
    return (record.group or "", resource or "", record.verb or "")


def granted(role: dict[str, Any]) -> set[Grant]:
    grants = set()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, f"no resourceNames or URLs: {rule}"
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"], f"no wildcards: {rule}"
        grants |= {(g, r, v) for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    return grants


def admission_grants(cluster: Cluster) -> set[Grant]:
    """Grants that admission, not a request, asks for: setting blockOwnerDeletion in an owner
    reference needs `update` on the owner's finalizers (OwnerReferencesPermissionEnforcement)."""
    plurals = {
        (crd["spec"]["group"], crd["spec"]["names"]["kind"]): crd["spec"]["names"]["plural"]
        for crd in cluster.emulator.list(("apiextensions.k8s.io", "v1", "customresourcedefinitions"))
    }
    grants = set()
    for resource in (("", "v1", "pods"), SERVICES):
        for child in cluster.emulator.list(resource):
            for ref in child["metadata"].get("ownerReferences") or []:
                if ref.get("blockOwnerDeletion"):
                    group = ref["apiVersion"].rpartition("/")[0]
                    grants.add((group, f"{plurals[group, ref['kind']]}/finalizers", "update"))
    return grants


class ComponentProcess:
    """`llamacontroller <command>` against the emulator, logging to a file."""

    def __init__(self, cluster: Cluster, component: Component, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        args = (component.command or "").format(listen=f"127.0.0.1:{self.port}").split()
        argv = [sys.executable, "-m", "llamacontroller.cli", *args]
        env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        interrupt(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def operator_config(tmp_path: Path, manifests: list[dict[str, Any]]) -> Path:
    """The operator runs with the config its Deployment mounts (overrides the e2e fixture)."""
    path = tmp_path / "mounted-operator.yaml"
    path.write_text(mounted_config(manifests))
    return path


@pytest.fixture
def components(cluster: Cluster, tmp_path: Path) -> Iterator[list[ComponentProcess]]:
    commands = next(a for a in cli.parser()._actions if a.dest == "command").choices
    started = []
    for component in COMPONENTS:
        if component.command is not None:
            command = component.command.split()[0]
            assert command in commands, f"`llamacontroller {command}` is gone"
            started.append(ComponentProcess(cluster, component, tmp_path / f"{component.name}.log"))
    yield started
    for process in started:
        process.stop()
    for process in started:
        assert "Traceback" not in process.log(), process.log()[-10000:]


def previous_holders_service(config: Path, node: str, gpu_id: int) -> dict[str, Any]:
    """The Service another LlamaModel left on a slot: the next holder adopts it (a patch)."""
    body = lm("previous", node=node, gpu={"mode": "single", "gpuId": gpu_id})
    return render_children(parse_llamamodel(body), load_config(config)).service


def scenario(cluster: Cluster, config: Path) -> None:
    kubectl, status = cluster.kubectl, cluster.status
    examples = REPO / "examples"
    cluster.emulator.add_node("gpu-node-4", {"nvidia.com/gpu.count": "4"})

    # Create: a model on GPU 0 of gpu-node-1 gets its Pod, its Service, a status and events.
    kubectl("apply", "-f", str(examples / "gpu0.yaml"))
    eventually(lambda: one_pod(cluster, "qwen-coder"), what="qwen-coder's pod")

    # Adopt: a previous holder's Service on GPU 1 is patched to front the new holder.
    cluster.apply(previous_holders_service(config, "gpu-node-1", 1))
    kubectl("apply", "-f", str(examples / "gpu1.yaml"))
    phi = eventually(lambda: one_pod(cluster, "phi-4"), what="phi-4's pod")
    eventually(
        lambda: [
            s
            for s in cluster.services("default")
            if s["metadata"]["name"] == "llama-gpu-node-1-gpu1"
            and s["metadata"]["annotations"]["llamacontroller.io/holder"] == "default/phi-4"
        ],
        what="the adopted service",
    )

    # Conflict: a second model for GPU 0 waits, naming the holder.
    cluster.apply(lm("waiter", node="gpu-node-1", gpu={"mode": "single", "gpuId": 0}))
    eventually(lambda: status("waiter").get("phase") == "Waiting", what="the waiter to wait")

    # Switch: a changed server replaces the Pod (delete, then create). On GPU 1, which nobody waits
    # for: the scenario proves API calls, not the waiting queue (tests/e2e does).
    changed = yaml.safe_load((examples / "gpu1.yaml").read_text())
    changed["spec"]["parameters"]["ctxSize"] = 8192
    cluster.apply(changed)
    eventually(
        lambda: (
            one_pod(cluster, "phi-4")["metadata"]["name"] != phi["metadata"]["name"]
            and arg(one_pod(cluster, "phi-4"), "--ctx-size") == "8192"
        ),
        what="the switched pod",
    )

    # Delete: the holder of GPU 0 goes (kopf removes its finalizer), the waiter takes the slot.
    kubectl("delete", "lm", "qwen-coder")
    eventually(lambda: one_pod(cluster, "waiter"), what="the waiter's pod")
    assert cluster.server_pods("qwen-coder") == []

    # A 4-GPU node (its label read from the Node): GPU 3, then a move to GPU 2 deletes the old Service.
    cluster.apply(lm("wide", node="gpu-node-4", gpu={"mode": "single", "gpuId": 3}))
    eventually(lambda: arg(one_pod(cluster, "wide"), "--tensor-split") == "0,0,0,1", what="gpu3")
    cluster.apply(lm("wide", node="gpu-node-4", gpu={"mode": "single", "gpuId": 2}))

    def moved() -> bool:
        names = {s["metadata"]["name"] for s in cluster.services("default")}
        pods = cluster.server_pods("wide")
        return (
            "llama-gpu-node-4-gpu2" in names
            and "llama-gpu-node-4-gpu3" not in names
            and len(pods) == 1
            and arg(pods[0], "--tensor-split") == "0,0,1,0"
        )

    eventually(moved, what="the move to gpu2")

    # A Pod deleted from outside is recreated.
    lost = one_pod(cluster, "wide")["metadata"]["uid"]
    kubectl("delete", "pod", one_pod(cluster, "wide")["metadata"]["name"], "--wait=false")
    eventually(lambda: one_pod(cluster, "wide")["metadata"]["uid"] != lost, what="a new pod")

    # A Service deleted from outside is recreated.
    def service_uid() -> str | None:
        found = [s for s in cluster.services("default") if s["metadata"]["name"] == "llama-gpu-node-4-gpu2"]
        return found[0]["metadata"]["uid"] if found else None

    gone = service_uid()
    kubectl("delete", "service", "llama-gpu-node-4-gpu2")
    eventually(lambda: service_uid() not in (None, gone), what="the recreated service")

    # The story is told in Events on the LlamaModels.
    events = cluster.emulator.list(("", "v1", "events"), "default")
    assert {e["involvedObject"]["name"] for e in events} >= {"qwen-coder", "phi-4", "waiter", "wide"}


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read()
    except OSError:
        return None  # not listening yet


def test_every_api_call_is_granted_and_every_grant_is_used(
    cluster: Cluster,
    operator: OperatorProcess,
    components: list[ComponentProcess],
    manifests: list[dict[str, Any]],
    operator_config: Path,
):
    for process in components:
        # The gateway's probe path (deploy/gateway-deployment.yaml) answers without an API key.
        eventually(lambda p=process: _get(f"http://127.0.0.1:{p.port}/") == b"Ollama is running")
    scenario(cluster, operator_config)
    operator.stop()  # their shutdown calls count too
    for process in components:
        process.stop()

    used: dict[str, dict[Grant, AuditRecord]] = {c.name: {} for c in COMPONENTS}
    for record in cluster.emulator.audit_log:
        component = component_of(record)
        if component is None:
            assert agent_matches(record.user_agent, TEST_CLIENTS), f"an unknown client: {record}"
        elif record.verb is None:
            assert DISCOVERY.match(record.path.split("?")[0]), f"{component.name}: not discovery: {record}"
        else:
            used[component.name].setdefault(grant_of(record), record)
    admission = admission_grants(cluster)

    problems = []
    for component in COMPONENTS:
        role = one(manifests, "ClusterRole", component.role)
        grants = granted(role)
        calls = set(used[component.name]) | (admission if component.name == "operator" else set())
        for grant in sorted(calls - grants):
            record = used[component.name].get(grant)
            seen = f" ({record.method} {record.path})" if record else " (admission)"
            problems.append(f"{component.name}: {grant} is used but not granted by {component.role}{seen}")
        for grant in sorted(grants - calls):
            problems.append(f"{component.name}: {grant} is granted by {component.role} but never used")
    assert not problems, "\n".join(problems)
    # The scenario did reach each component's API paths (an empty log would prove nothing).
    assert {g[1] for g in used["operator"]} >= {"llamamodels", "llamamodels/status", "pods", "services"}
    assert used["gateway"]


def test_each_component_runs_as_the_service_account_bound_to_its_role(manifests: list[dict[str, Any]]):
    bindings = [d for d in manifests if d["kind"] in {"ClusterRoleBinding", "RoleBinding"}]
    roles = [d["metadata"]["name"] for d in manifests if d["kind"] in {"ClusterRole", "Role"}]
    assert sorted(roles) == sorted(c.role for c in COMPONENTS), "every role belongs to a component"
    for component in COMPONENTS:
        (binding,) = [b for b in bindings if b["roleRef"]["name"] == component.role]
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": component.role,
        }
        (subject,) = binding["subjects"]
        assert subject == {"kind": "ServiceAccount", "name": subject["name"], "namespace": NAMESPACE}
        # The SA has this one binding: nothing else widens what the component may do.
        others = [b for b in bindings if b is not binding and subject in b["subjects"]]
        assert not others, others
        deployment = one(manifests, "Deployment", f"llamacontroller-{component.name}")
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == subject["name"]
        assert pod.get("automountServiceAccountToken", True) is True
        assert pod["containers"][0]["args"][0] == component.name
    accounts = {d["metadata"]["name"] for d in manifests if d["kind"] == "ServiceAccount"}
    assert accounts == {f"llamacontroller-{c.name}" for c in COMPONENTS}


def test_the_user_agents_tell_the_components_apart():
    def record(agent: str) -> AuditRecord:
        return AuditRecord(0, 0.0, "GET", "get", "", "v1", "pods", None, "default", "p", agent, 200, "/")

    assert component_of(record("llamacontroller")).name == "operator"  # type: ignore[union-attr]
    assert component_of(record("kopf/1.45.2")).name == "operator"  # type: ignore[union-attr]
    assert component_of(record("llamacontroller-gateway")).name == "gateway"  # type: ignore[union-attr]
    assert component_of(record("kubectl/v1.32.4 (linux/amd64)")) is None
    assert grant_of(record("x")) == ("", "pods", "get")

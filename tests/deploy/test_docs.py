"""docs/ matches the code: every phase and reason the operator reports is explained, the messages
quoted are the ones the code writes, commands parse, links resolve, the overlay example builds."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from llamacontroller import cli
from llamacontroller.config import load_config
from llamacontroller.fit.check import IN_USE, OCCUPIED, TOO_LARGE
from llamacontroller.reconcile import Observed, decide, retrying
from llamacontroller.render.children import render_children
from llamacontroller.resource import InvalidSpec, Phase, parse_llamamodel
from llamacontroller.slots import (
    Claim,
    Placement,
    PlacementError,
    QueueKey,
    Verdict,
    Waiter,
    describe_verdict,
)
from llamacontroller.status import FAILING_WAIT_REASONS, observe_pod
from tests.support.manifests import DEPLOY, kustomize_build
from tests.support.paths import REPO

DOCS = REPO / "docs"
PAGES = ("architecture", "install", "gpu-placement", "clients", "metrics", "troubleshooting", "console")
TROUBLESHOOTING = (DOCS / "troubleshooting.md").read_text()
POD = "phi-4-24aede54"  # the Pod name the troubleshooting page uses
NOW = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
CONFIG = load_config(REPO / "config" / "operator.yaml")

# Reasons that come from Kubernetes (the kubelet, the scheduler) through the operator's status.
KUBERNETES_REASONS = {
    Phase.PENDING: {"Unschedulable", "ContainerCreating"},
    Phase.FAILED: {"OOMKilled", "Error", "Evicted", "PodFailed", *FAILING_WAIT_REASONS},
}


def test_the_pages_are_there():
    assert sorted(p.stem for p in DOCS.glob("*.md")) == sorted(PAGES)


def test_the_architecture_has_its_mermaid_diagram():
    text = (DOCS / "architecture.md").read_text()
    (diagram,) = re.findall(r"```mermaid\n(.*?)```", text, re.S)
    assert diagram.startswith("flowchart")
    for node in ("LlamaModel", "operator", "Pod", "Service", "gateway", "clients", ":11434"):
        assert node in diagram, node
    for arrow in re.findall(r"\b(\w+)\b\s*-[-.>]", diagram):  # every node an arrow leaves is declared
        assert re.search(rf"\b{arrow}[\[(]", diagram), arrow


def reasons_in_code() -> dict[Phase, set[str]]:
    """(phase, reason) of every `Report(phase=Phase.X, reason="R", ...)` and `_invalid("R", ...)`."""
    found: dict[Phase, set[str]] = {phase: set() for phase in Phase}
    for module in ("status.py", "reconcile.py"):
        tree = ast.parse((REPO / "operator" / "llamacontroller" / module).read_text())
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            name = getattr(call.func, "id", None)
            keywords = {k.arg: k.value for k in call.keywords}
            phase, reason = keywords.get("phase"), keywords.get("reason")
            if name == "Report" and isinstance(reason, ast.Constant):
                assert isinstance(phase, ast.Attribute)
                found[Phase[phase.attr]].add(reason.value)
            elif name == "_invalid" and call.args and isinstance(call.args[0], ast.Constant):
                found[Phase.FAILED].add(call.args[0].value)
    # the fit check's verdicts, reported as reasons of these phases (reconcile._claim_or_wait)
    found[Phase.WAITING] |= {IN_USE, OCCUPIED}
    found[Phase.FAILED].add(TOO_LARGE)
    return found


def sections(text: str, level: str) -> dict[str, str]:
    parts = re.split(rf"^{level} (.+)$", text, flags=re.M)
    return {title.strip().strip("`"): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_every_phase_and_reason_is_explained_under_its_phase():
    documented = sections(sections(TROUBLESHOOTING, "##")["Phases and reasons"], "###")
    assert list(documented) == [phase.value for phase in Phase]
    in_code = reasons_in_code()
    assert in_code[Phase.FAILED] >= {"InvalidSpec", "InvalidPlacement", "StartupTimeout"}
    for phase in Phase:
        expected = in_code[phase] | KUBERNETES_REASONS.get(phase, set())
        body = documented[phase.value]
        missing = {reason for reason in expected if f"`{reason}`" not in body}
        assert not missing, f"{phase.value}: {sorted(missing)}"
        headings = set(sections(body, "####"))
        assert headings <= expected, f"{phase.value}: no such reason {sorted(headings - expected)}"


def pod(status: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"metadata": {"name": POD, **meta}, "status": status}


def container(state: dict[str, Any], **more: Any) -> list[dict[str, Any]]:
    return [{"name": "llama-server", "state": state, **more}]


SCHEDULED = [{"type": "PodScheduled", "status": "True"}]
OBSERVED = {  # the reason each Pod is reported with
    "Terminating": pod({}, deletionTimestamp="2026-01-01T00:00:00Z"),
    "Scheduling": pod({"phase": "Pending"}),
    "Unschedulable": pod(
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
        }
    ),
    "ContainerCreating": pod(
        {"phase": "Pending", "conditions": SCHEDULED, "containerStatuses": container({"waiting": {}})}
    ),
    "Loading": pod(
        {
            "phase": "Running",
            "conditions": SCHEDULED,
            "containerStatuses": container({"running": {"startedAt": "2026-01-01T00:09:00Z"}}),
        }
    ),
    "StartupTimeout": pod(
        {
            "phase": "Running",
            "conditions": SCHEDULED,
            "containerStatuses": container({"running": {"startedAt": "2026-01-01T00:00:00Z"}}),
        }
    ),
    "ServerReady": pod(
        {
            "phase": "Running",
            "conditions": [*SCHEDULED, {"type": "Ready", "status": "True"}],
            "containerStatuses": container({"running": {}}, ready=True),
        }
    ),
    "CrashLoopBackOff": pod(
        {
            "phase": "Running",
            "containerStatuses": container(
                {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 40s restarting failed container=llama-server",
                    }
                },
                lastState={
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "message": "error: failed to open GGUF file '/models/phi-4-q4_k_m.gguf'",
                    }
                },
            ),
        }
    ),
    "OOMKilled": pod(
        {
            "phase": "Running",
            "containerStatuses": container({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}),
        }
    ),
    "Error": pod(
        {
            "phase": "Running",
            "containerStatuses": container(
                {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "message": "llama_model_load: error loading model",
                    }
                }
            ),
        }
    ),
    "ImagePullBackOff": pod(
        {
            "phase": "Pending",
            "containerStatuses": container(
                {
                    "waiting": {
                        "reason": "ImagePullBackOff",
                        "message": 'Back-off pulling image "ghcr.io/ggml-org/llama.cpp:server-cuda"',
                    }
                }
            ),
        }
    ),
    "Evicted": pod(
        {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}
    ),
    "Downloading": pod(
        {
            "phase": "Pending",
            "containerStatuses": container({"waiting": {"reason": "PodInitializing"}}),
            "initContainerStatuses": [{"name": "fetch", "state": {"running": {}}}],
        }
    ),
    "FetchFailed": pod(
        {
            "phase": "Pending",
            "containerStatuses": container({"waiting": {"reason": "PodInitializing"}}),
            "initContainerStatuses": [
                {
                    "name": "fetch",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {
                            "exitCode": 2,
                            "message": "error: checksum mismatch for https://example.com/phi-4-q4_k_m.gguf: "
                            "expected sha256 9c5e…, got 41b8…",
                        }
                    },
                }
            ],
        }
    ),
}
# The progress the operator read from a running fetch's log, where the docs quote one.
PROGRESS = {"Downloading": "43 % of 4.9 GiB"}


@pytest.mark.parametrize("reason", list(OBSERVED))
def test_the_pod_messages_quoted_are_the_operators(reason: str):
    report = observe_pod(OBSERVED[reason], NOW, 300, None, PROGRESS.get(reason))
    assert report.reason == reason
    assert f"#### `{reason}`" in TROUBLESHOOTING
    assert report.message in TROUBLESHOOTING, report.message


def lm(name: str = "phi-4", **spec: Any) -> dict[str, Any]:
    spec = {"model": {"path": "phi-4-q4_k_m.gguf"}, "nodeName": "gpu-node-1", **spec}
    meta = {"name": name, "namespace": "default", "uid": f"uid-{name}", "generation": 1}
    return {"apiVersion": "llamacontroller.io/v1alpha1", "kind": "LlamaModel", "metadata": meta, "spec": spec}


GPU1 = {"mode": "single", "gpuId": 1}


def decided(body: dict[str, Any], observed: Observed) -> str:
    real = render_children(parse_llamamodel(body), CONFIG).pod["metadata"]["name"]
    return decide(body, CONFIG, observed, NOW).report.message.replace(real, POD)


def test_the_decision_messages_quoted_are_the_operators():
    phi = lm(gpu=GPU1)
    children = render_children(parse_llamamodel(phi), CONFIG)
    messages = [decided(phi, Observed([], [], []))]  # PodCreated
    stale = {"metadata": {"name": POD, "annotations": {"llamacontroller.io/pod-hash": "0"}}}
    messages.append(decided(phi, Observed([stale], [], [stale])))  # Switching
    evicted = {**children.pod, "status": OBSERVED["Evicted"]["status"]}
    messages.append(decided(phi, Observed([evicted], [], [evicted])))  # Evicted: replaced
    messages.append(decided(lm("other", gpu=GPU1), Observed([], [], [children.pod])))  # SlotTaken
    for message in messages:
        assert message in TROUBLESHOOTING, message


def test_the_retrying_message_quoted_is_the_operators():
    decision = decide(lm(gpu=GPU1), CONFIG, Observed([], [], []), NOW)
    failure = f"could not create pod {POD} (500 InternalError: etcdserver: request timed out)"
    report = retrying(decision, failure).report
    body = sections(TROUBLESHOOTING, "##")["Whatever the phase"]
    assert f"### `{report.reason}`" in body
    assert f"`{report.message}`" in body


def test_the_queue_messages_quoted_are_the_operators():
    def placement(node: str, slot: str, gpus: set[int]) -> Placement:
        return Placement(node=node, slot=slot, gpus=frozenset(gpus), port=8081, tensor_split="1,0")

    def waiter(node: str, slot: str, gpus: set[int], who: str) -> Waiter:
        return Waiter(node, slot, frozenset(gpus), who, QueueKey("", "", who), owner_uid=who)

    held = Verdict(
        holders=(
            Claim("node-a", "gpu1", frozenset({1}), "default/holder", owner_uid="u1"),
            Claim("node-a", "gpu0", frozenset({0}), "default/neighbour", owner_uid="u2"),
        ),
        ahead=(waiter("node-a", "gpu1", {1}, "default/second"),),
    )
    free = Verdict(ahead=(waiter("gpu-node-1", "both", {0, 1}, "default/big"),))
    for message in (
        describe_verdict(placement("node-a", "both", {0, 1}), held),
        describe_verdict(placement("gpu-node-1", "gpu0", {0}), free),
    ):
        assert message in TROUBLESHOOTING, message


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        ({"gpu": {"mode": "both", "gpuId": 1}}, InvalidSpec),
        ({"gpu": {"mode": "single", "gpuId": 5}}, PlacementError),
        ({"nodeName": None}, PlacementError),
        ({"gpu": {"mode": "both", "tensorSplit": "1,1,1"}}, PlacementError),
    ],
    ids=["gpuId-with-both", "no-such-slot", "no-node", "tensorSplit"],
)
def test_the_spec_messages_quoted_are_the_operators(spec: dict[str, Any], error: type[Exception]):
    body = lm(**spec)
    body["spec"] = {key: value for key, value in body["spec"].items() if value is not None}
    with pytest.raises(error) as raised:
        render_children(parse_llamamodel(body), CONFIG)
    assert str(raised.value) in TROUBLESHOOTING


def all_docs() -> str:
    return "\n".join((DOCS / f"{page}.md").read_text() for page in PAGES)


def test_relative_links_resolve():
    for page in PAGES:
        text = (DOCS / f"{page}.md").read_text()
        for target in re.findall(r"\]\(([^)]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (DOCS / path) if path else DOCS / f"{page}.md"
            assert linked.is_file(), f"{page}.md: {target}"
            if anchor:
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
                slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
                assert anchor in slugs, f"{page}.md: {target}"


def test_the_llamacontroller_commands_in_the_docs_parse():
    commands = [
        line.strip()
        for block in re.findall(r"```(?:sh|bash)\n(.*?)```", all_docs(), re.S)
        for line in block.splitlines()
        if line.strip().startswith("llamacontroller ")
    ]
    inline = re.findall(r"`(llamacontroller (?:operator|render|gateway)[^`]*)`", all_docs())
    assert commands and inline
    for command in commands + inline:
        words = shlex.split(command.split(" < ")[0])[1:]
        if words == ["operator"] or words == ["render"] or words == ["gateway"]:
            continue  # the command named in a sentence
        cli.parser().parse_args(words)


def test_the_overlay_example_builds(tmp_path: Path):
    text = (DOCS / "install.md").read_text()
    (overlay,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "overlay/kustomization" in b]
    (tmp_path / "overlay").mkdir()
    (tmp_path / "overlay" / "kustomization.yaml").write_text(overlay)
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    mine = (REPO / "config" / "operator.yaml").read_text().replace("gpusPerNode: 2", "gpusPerNode: 4")
    assert mine != (REPO / "config" / "operator.yaml").read_text()
    (tmp_path / "overlay" / "operator.yaml").write_text(mine)
    built = kustomize_build(tmp_path / "overlay")
    images = {
        c["image"]
        for d in built
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert images == {"registry.example.com/llamacontroller:0.1.0"}
    (configmap,) = [d for d in built if d["kind"] == "ConfigMap"]
    assert configmap["data"]["operator.yaml"] == mine
    (operator,) = [
        d for d in built if (d["kind"], d["metadata"]["name"]) == ("Deployment", "llamacontroller-operator")
    ]
    volumes = operator["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": configmap["metadata"]["name"]}} in volumes
    assert yaml.safe_load(mine)["gpusPerNode"] == 4

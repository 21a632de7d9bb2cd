"""Real kubectl 1.32 against the emulator: apply, get, describe, explain, wait, delete, watch."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
import yaml

from .conftest import PODS, WIDGETS, Kubectl, widget, widget_crd
from .runner import EmulatorThread

pytestmark = pytest.mark.timeout(90)


@pytest.fixture()
def applied_crd(kube: EmulatorThread, kubectl: Kubectl) -> None:
    result = kubectl.apply(widget_crd())
    assert result.stdout == "customresourcedefinition.apiextensions.k8s.io/widgets.example.test created\n"
    assert result.stderr == ""
    out = kubectl.ok("wait", "--for", "condition=established", "crd/widgets.example.test", "--timeout=30s")
    assert out == "customresourcedefinition.apiextensions.k8s.io/widgets.example.test condition met\n"


def test_apply_get_and_apply_again(kube: EmulatorThread, kubectl: Kubectl, applied_crd: None) -> None:
    result = kubectl.apply(widget("w1", size=3, color="red"))
    assert (result.stdout, result.stderr) == ("widget.example.test/w1 created\n", "")
    out = kubectl.ok("get", "widgets")
    header, row = out.splitlines()
    assert header.split() == ["NAME", "SIZE", "MODE", "PHASE", "AGE"]
    assert row.split()[:3] == ["w1", "3", "single"]
    wide = kubectl.ok("get", "wd", "-o", "wide").splitlines()
    assert wide[0].split() == ["NAME", "SIZE", "MODE", "PHASE", "COLOR", "AGE"]
    assert wide[1].split()[:4] == ["w1", "3", "single", "red"]  # PHASE is still empty
    assert kubectl.ok("get", "widget", "w1", "-o", "jsonpath={.spec.mode}") == "single"
    first = yaml.safe_load(kubectl.ok("get", "widget", "w1", "-o", "yaml"))
    assert "kubectl.kubernetes.io/last-applied-configuration" in first["metadata"]["annotations"]

    sent: list[Any] = []  # a kmock sink: it records the request and lets the emulator serve it
    kube["patch /apis/example.test/v1/namespaces/default/widgets/w1"] >> sent
    result = kubectl.apply(widget("w1", size=5, color="red"))
    assert (result.stdout, result.stderr) == ("widget.example.test/w1 configured\n", "")
    assert sent[0].headers["Content-Type"] == "application/merge-patch+json"
    assert sent[0].data["spec"] == {"size": 5}
    assert "kubectl.kubernetes.io/last-applied-configuration" in sent[0].data["metadata"]["annotations"]
    patches = kube.requests(verb="patch", resource="widgets", name="w1")
    assert len(patches) == 1 and patches[0].status == 200
    second = kube.get(WIDGETS, "default", "w1")
    assert second is not None
    assert second["spec"]["size"] == 5 and second["metadata"]["generation"] == 2
    assert json.loads(second["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])[
        "spec"
    ] == {"color": "red", "size": 5}
    result = kubectl.apply(widget("w1", size=5, color="red"))
    assert (result.stdout, result.stderr) == ("widget.example.test/w1 unchanged\n", "")


def test_apply_invalid_objects_fails_like_a_cluster(kubectl: Kubectl, applied_crd: None) -> None:
    result = kubectl.apply(widget("bad", size=3, foo="bar"), check=False)
    assert result.returncode == 1
    assert result.stderr == (
        'Error from server (BadRequest): error when creating "STDIN": Widget in version "v1" '
        'cannot be handled as a Widget: strict decoding error: unknown field "spec.foo"\n'
    )
    result = kubectl.apply(widget("bad", size=3, mode="triple"), check=False)
    assert result.returncode == 1
    assert result.stderr == (
        'The Widget "bad" is invalid: spec.mode: Unsupported value: "triple": supported values: '
        '"single", "both"\n'
    )


def test_apply_builtin_objects(kube: EmulatorThread, kubectl: Kubectl) -> None:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cfg", "namespace": "team"},
        "data": {"a": "1"},
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "team", "labels": {"app": "demo"}},
        "spec": {
            "containers": [{"name": "main", "image": "nginx:1.25", "env": [{"name": "A", "value": "1"}]}]
        },
    }
    result = kubectl.apply(namespace, configmap, pod)
    assert result.stderr == ""
    assert result.stdout.splitlines() == ["namespace/team created", "configmap/cfg created", "pod/p created"]
    configmap["data"] = {"a": "2"}
    pod["spec"]["containers"][0]["image"] = "nginx:1.26"
    result = kubectl.apply(namespace, configmap, pod)
    assert result.stderr == ""
    assert result.stdout.splitlines() == [
        "namespace/team unchanged",
        "configmap/cfg configured",
        "pod/p configured",
    ]
    current = kube.get(PODS, "team", "p")
    assert current is not None
    assert current["spec"]["containers"][0]["image"] == "nginx:1.26"
    assert current["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    pod["spec"]["containers"][0]["env"][0]["value"] = "2"
    result = kubectl.apply(pod, check=False)
    assert result.returncode == 1
    assert 'The Pod "p" is invalid: spec: Forbidden: pod updates may not change fields' in result.stderr


def test_create_generators_send_protobuf(kube: EmulatorThread, kubectl: Kubectl) -> None:
    assert kubectl.ok("create", "namespace", "gen") == "namespace/gen created\n"
    assert (
        kubectl.ok("create", "configmap", "c", "-n", "gen", "--from-literal=k=v") == "configmap/c created\n"
    )
    assert (
        kubectl.ok("create", "secret", "generic", "s", "-n", "gen", "--from-literal=p=q")
        == "secret/s created\n"
    )
    assert kubectl.ok("create", "serviceaccount", "robot", "-n", "gen") == "serviceaccount/robot created\n"
    assert (kube.get(("", "v1", "configmaps"), "gen", "c") or {}).get("data") == {"k": "v"}
    assert (kube.get(("", "v1", "secrets"), "gen", "s") or {}).get("data") == {"p": "cQ=="}


def test_describe_explain_and_events(kube: EmulatorThread, kubectl: Kubectl, applied_crd: None) -> None:
    obj = kube.create(WIDGETS, widget("w1", size=4))
    kube.create(
        ("", "v1", "events"),
        {
            "metadata": {"name": "w1.1", "namespace": "default"},
            "involvedObject": {
                "apiVersion": "example.test/v1",
                "kind": "Widget",
                "name": "w1",
                "namespace": "default",
                "uid": obj["metadata"]["uid"],
            },
            "reason": "Reconciled",
            "message": "all good",
            "type": "Normal",
            "count": 1,
            "firstTimestamp": obj["metadata"]["creationTimestamp"],
            "lastTimestamp": obj["metadata"]["creationTimestamp"],
            "source": {"component": "test"},
        },
    )
    out = kubectl.ok("describe", "widget", "w1")
    assert "Name:         w1" in out
    assert "Reconciled" in out and "all good" in out
    explained = kubectl.ok("explain", "widget.spec")
    assert "The desired state of the widget." in explained
    assert "size\t<integer> -required-" in explained
    events = kubectl.ok("get", "events")
    assert "Reconciled" in events and "widget/w1" in events


def test_delete_and_wait(kube: EmulatorThread, kubectl: Kubectl, applied_crd: None) -> None:
    body = widget("w1", size=1)
    body["metadata"]["finalizers"] = ["example.test/hold"]
    kube.create(WIDGETS, body)
    kube.create(
        PODS, {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}
    )
    assert kubectl.ok("delete", "pod", "p") == 'pod "p" deleted\n'
    assert kube.get(PODS, "default", "p") is None
    assert kubectl.ok("delete", "widget", "w1", "--wait=false") == 'widget.example.test "w1" deleted\n'
    waiter = subprocess.Popen(
        ["kubectl", "wait", "--for=delete", "widget/w1", "--timeout=30s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    kube.wait_for(lambda: kube.requests(verb="watch", resource="widgets"), timeout=30)
    kube.patch(WIDGETS, "default", "w1", {"metadata": {"finalizers": None}})
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert out == "widget.example.test/w1 condition met\n"


def test_get_watch(kube: EmulatorThread, kubectl: Kubectl, applied_crd: None) -> None:
    kube.create(WIDGETS, widget("w1", size=1))
    watcher = subprocess.Popen(
        ["kubectl", "get", "widgets", "-w", "--request-timeout=20s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        kube.wait_for(lambda: kube.requests(verb="watch", resource="widgets"), timeout=30)
        kube.patch(WIDGETS, "default", "w1", {"spec": {"size": 2}})
        kube.patch_status(WIDGETS, "default", "w1", {"status": {"phase": "Ready"}})
        deadline = time.monotonic() + 30
        lines: list[str] = []
        assert watcher.stdout is not None
        while len(lines) < 4 and time.monotonic() < deadline:
            line = watcher.stdout.readline()
            if not line:
                break
            lines.append(line)
    finally:
        watcher.terminate()
        _, err = watcher.communicate(timeout=30)
    assert [line.split()[:4] for line in lines] == [
        ["NAME", "SIZE", "MODE", "PHASE"],
        ["w1", "1", "single", "0s"],
        ["w1", "2", "single", "0s"],
        ["w1", "2", "single", "Ready"],
    ] or [line.split()[:3] for line in lines] == [
        ["NAME", "SIZE", "MODE"],
        ["w1", "1", "single"],
        ["w1", "2", "single"],
        ["w1", "2", "single"],
    ]
    assert lines[-1].split()[3] == "Ready"
    assert err == ""


def test_get_nodes_and_cluster_wide_pods(kube: EmulatorThread, kubectl: Kubectl) -> None:
    kube.add_node("gpu-1", {"node-role.kubernetes.io/worker": "", "gpu": "yes"})
    out = kubectl.ok("get", "nodes", "-l", "gpu=yes")
    assert out.splitlines()[1].split()[:3] == ["gpu-1", "Ready", "worker"]
    kube.create(
        PODS,
        {
            "metadata": {"name": "p", "namespace": "kube-system"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}], "nodeName": "gpu-1"},
        },
    )
    rows = kubectl.ok("get", "pods", "-A", "-o", "wide").splitlines()
    assert rows[0].split()[:4] == ["NAMESPACE", "NAME", "READY", "STATUS"]
    assert rows[1].split()[:4] == ["kube-system", "p", "0/1", "Pending"]
    assert "gpu-1" in rows[1]

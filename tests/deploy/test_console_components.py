"""deploy/components/console and console-writes: an overlay of deploy/ with them builds; the gateway
then reads the console key from its Secret and the settings from the operator's ConfigMap, and its
command line parses; the roles grant exactly what the console calls (tests/e2e/test_console.py
proves them used on the real API server), the write verbs only with console-writes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate

from llamacontroller import cli
from tests.deploy.test_rbac import granted
from tests.support.manifests import DEPLOY, kustomize_build, one


def overlay(root: Path, *components: str) -> list[dict[str, Any]]:
    shutil.copytree(DEPLOY, root / "deploy")
    (root / "overlay").mkdir()
    listed = ", ".join(f"../deploy/components/{c}" for c in components)
    (root / "overlay" / "kustomization.yaml").write_text(f"resources: [../deploy]\ncomponents: [{listed}]\n")
    return kustomize_build(root / "overlay")


def gateway(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(manifests, "Deployment", "llamacontroller-gateway")["spec"]["template"]["spec"]
    return spec


def test_the_read_only_console(tmp_path: Path) -> None:
    manifests = overlay(tmp_path, "console")
    spec = gateway(manifests)
    args = spec["containers"][0]["args"]
    parsed = cli.parser().parse_args(args)
    assert parsed.console_key_file == "/etc/llamacontroller/console/key" and not parsed.console_writes
    assert parsed.config == "/etc/llamacontroller/operator.yaml"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["console-key"]["secret"]["secretName"] == "llamacontroller-console"
    config_map = one(manifests, "ConfigMap", "llamacontroller-config")["metadata"]["name"]
    assert volumes["config"]["configMap"]["name"] == config_map  # the generated name, with its hash
    mounts = {m["name"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["console-key"]["readOnly"] and mounts["config"]["subPath"] == "operator.yaml"
    role = one(manifests, "ClusterRole", "llamacontroller-console")
    assert granted(role) == {
        ("", "nodes", "list"),
        ("", "events", "list"),
        ("", "pods/log", "get"),
        ("llamacontroller.io", "llamanodes", "list"),
    }
    binding = one(manifests, "ClusterRoleBinding", "llamacontroller-console")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "llamacontroller-gateway", "namespace": "llamacontroller"}
    ]
    assert not [d for d in manifests if d["metadata"]["name"] == "llamacontroller-console-writes"]
    for doc in manifests:
        kubernetes_validate.validate(doc, "1.37.0", strict=True)


def test_writes_come_only_with_their_component(tmp_path: Path) -> None:
    manifests = overlay(tmp_path, "console", "console-writes")
    parsed = cli.parser().parse_args(gateway(manifests)["containers"][0]["args"])
    assert parsed.console_writes and parsed.console_key_file
    role = one(manifests, "ClusterRole", "llamacontroller-console-writes")
    assert granted(role) == {
        ("llamacontroller.io", "llamamodels", "create"),
        ("llamacontroller.io", "llamamodels", "patch"),
        ("llamacontroller.io", "llamamodels", "delete"),
        ("", "events", "create"),
    }
